"""Bearer token authentication for REST and MCP, on named, hashed API tokens."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models.expressions import RawSQL
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from smsplatform.models import ApiToken

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"

# The user's permissions ("app_label.codename", direct and through groups), read in the token's
# own statement: a REST call (an OTP check) then costs one query for authentication, not three
# (the token, then ModelBackend's user and group permission reads). Same request, same rows: no
# cache across requests, so a revoked token or a removed role takes effect on the next call.
_PERMISSIONS_SQL = (
    "SELECT coalesce(array_agg(ct.app_label || '.' || p.codename), ARRAY[]::text[]) "
    "FROM auth_permission p JOIN django_content_type ct ON ct.id = p.content_type_id "
    "WHERE p.id IN (SELECT up.permission_id FROM auth_user_user_permissions up "
    'WHERE up.user_id = "smsplatform_apitoken"."user_id" '
    "UNION SELECT gp.permission_id FROM auth_user_groups ug "
    "JOIN auth_group_permissions gp ON gp.group_id = ug.group_id "
    'WHERE ug.user_id = "smsplatform_apitoken"."user_id")'
)


def _permissions_inline() -> bool:
    return (
        connection.vendor == "postgresql"
        and list(settings.AUTHENTICATION_BACKENDS) == [MODEL_BACKEND]
        and settings.AUTH_USER_MODEL == "auth.User"
        and ApiToken._meta.db_table == "smsplatform_apitoken"
    )


class BearerTokenAuthentication(TokenAuthentication):
    """``Authorization: Bearer <key>``. ``request.auth`` is the ApiToken (its name goes in the audit log)."""

    keyword = "Bearer"
    model = ApiToken

    def authenticate_credentials(self, key: str) -> tuple[Any, ApiToken]:
        tokens = ApiToken.objects.select_related("user").filter(
            key_hash=ApiToken.hash_key(key), revoked_at__isnull=True
        )
        inline = _permissions_inline()
        if inline:
            tokens = tokens.annotate(user_permissions_inline=RawSQL(_PERMISSIONS_SQL, []))  # noqa: S611 - no input
        token = tokens.first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if inline and not token.user.is_superuser:
            # ModelBackend's own per-user cache, filled as it would fill it (a superuser has every
            # permission: ModelBackend answers that without this).
            token.user._perm_cache = set(token.user_permissions_inline)  # type: ignore[attr-defined]
        now = timezone.now()
        # Touch last_used_at at most once a minute: no write on every request.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token
