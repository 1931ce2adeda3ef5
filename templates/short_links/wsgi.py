"""WSGI entry of the short domain (templates.short_links.app): the short-link redirect and nothing else.

Serve it with its own gunicorn (templates.short_links.server builds the command line) on the host
name of the configuration's short_links.domain; the main domain keeps smsplatform.wsgi.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsplatform.settings")
django.setup(set_prefix=False)

from templates.short_links.app import application  # noqa: E402 - needs the apps loaded

__all__ = ["application"]
