"""The Content-Security-Policy header (Django 5.2 has none built in) and the deployment checks
that `manage.py check --deploy` adds for this platform."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.http import HttpRequest, HttpResponse

API_DOCS_PREFIX = "/api/docs/"


class ContentSecurityPolicyMiddleware:
    """Adds ``settings.SMS_CONTENT_SECURITY_POLICY`` to every response that has none (the API docs
    page gets ``SMS_CONTENT_SECURITY_POLICY_API_DOCS``: Swagger UI comes from its CDN)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        docs = request.path.startswith(API_DOCS_PREFIX)
        policy = settings.SMS_CONTENT_SECURITY_POLICY_API_DOCS if docs else settings.SMS_CONTENT_SECURITY_POLICY
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        return response


@register(Tags.security, deploy=True)
def check_secret_key_not_default(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if settings.SECRET_KEY == settings.DEFAULT_SECRET_KEY:
        return [
            Error(
                "SECRET_KEY is the public embedded default: anyone can forge version tokens and link tokens.",
                hint="Set DJANGO_SECRET_KEY to a long random secret (python -c 'import secrets; "
                "print(secrets.token_urlsafe(50))').",
                id="smsplatform.E001",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_content_security_policy(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not settings.SMS_CONTENT_SECURITY_POLICY:
        return [
            Warning(
                "No Content-Security-Policy is sent (SMS_CONTENT_SECURITY_POLICY is empty).",
                hint="Leave SMS_CONTENT_SECURITY_POLICY unset for the default policy, or set your own.",
                id="smsplatform.W001",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_https_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if settings.HTTPS:
        return []
    return [
        Warning(
            "DJANGO_HTTPS is off: no HSTS, no secure cookies and no HTTPS redirect.",
            hint="Serve the platform over HTTPS and set DJANGO_HTTPS=1 (and DJANGO_SECURE_PROXY_SSL_HEADER=1 "
            "behind a proxy that sets X-Forwarded-Proto).",
            id="smsplatform.W002",
        )
    ]
