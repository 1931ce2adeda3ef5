"""The short-link redirect as a Django view (/s/<code> and /s/<code>/<recipient token> on the
main domain).

The rules are templates.short_links.rules (the same ones templates.short_links.app serves on
the short domain with its own WSGI application and gunicorn, templates.short_links.server);
this view only turns a Django request into their inputs and their Outcome into a response.
This is the platform's hottest path (every click of every campaign), so in the common case it
makes no database round trip at all: the link comes from the per-process cache it shares with
the short domain's server (templates.short_links.cache) and the click goes to the local click
spool (templates.short_links.clicks, which also describes what a 302 promises about its
click). Without a database round trip Django's CONN_HEALTH_CHECKS probe (a SELECT 1 before a
request's first query) is not paid either; a cache miss pays it once with its one indexed
SELECT.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from templates.short_links.cache import CachedLink, lookup_link
from templates.short_links.rules import (
    Outcome,
    click_record,
    link_outcome,
    page_html,
    parts_valid,
    request_outcome,
)

__all__ = ["short_link_redirect"]


@csrf_exempt
def short_link_redirect(request: HttpRequest, code: str, recipient: str | None = None) -> HttpResponse:
    method = request.method or ""
    # Host: Django's request handling (CommonMiddleware's get_host) has answered a host that is
    # not allowed with 400 before this view runs.
    refusal = request_outcome(method=method, host_ok=True, well_formed=parts_valid(code, recipient))
    if refusal is not None:
        return _response(refusal, None)
    link = lookup_link(code)
    outcome = link_outcome(method=method, link=link, now=timezone.now())
    if outcome.click and link is not None:
        click_record(outcome, link, recipient, request.META.get("HTTP_USER_AGENT", ""))
    return _response(outcome, link)


def _response(outcome: Outcome, link: CachedLink | None) -> HttpResponse:
    response: HttpResponse
    if outcome.redirect and link is not None:
        response = HttpResponseRedirect(link.target_url)  # only ever the stored target
    elif outcome.page is not None:
        response = HttpResponse(page_html(outcome, link), status=outcome.status)
    else:
        response = HttpResponse(status=outcome.status)
    for name, value in outcome.headers:
        response[name] = value
    return response
