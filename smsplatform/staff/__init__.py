"""The staff web app's shell (issue 19): the base layout, login, the language switch and the
navigation registry each app adds its pages to (``<app>/staff/``), all under ``/app/``.

Pages are server-rendered templates with htmx for the live parts; views are thin: they parse a
form, call the same services and selectors as the MCP tools and REST views with a ``form``
actor, and show a service's ApplicationError next to the field it names.
"""
