"""Short links: the redirect's rules (``rules``), the per-process link cache (``cache``), codes and
recipient tokens (``codes``), click recording (``clicks``), the short domain's WSGI application,
entry and server (``app``, ``wsgi``, ``server``: ``python -m templates.short_links.server``), and
the reads behind short_links.preview and short_links.create (``preview``).

Nothing is imported here: the server module runs before Django is set up.
"""
