"""DRF exception handler: every error leaves as {"error": {code, message, field, hint}}."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response

from smsplatform.kernel.errors import ApplicationError, ErrorCode

logger = logging.getLogger(__name__)


def _first_field_error(detail: Any, prefix: str = "") -> tuple[str | None, str]:
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = prefix + str(key) if key != "non_field_errors" else prefix.rstrip(".")
            return _first_field_error(value, name + "." if name else "")
    if isinstance(detail, list) and detail:
        for index, item in enumerate(detail):
            if isinstance(item, (dict, list)):
                return _first_field_error(item, f"{prefix}{index}.")
            return (prefix.rstrip(".") or None), str(item)
    return (prefix.rstrip(".") or None), str(detail)


def drf_to_application_error(exc: exceptions.APIException) -> ApplicationError:
    if isinstance(exc, exceptions.ValidationError):
        field, message = _first_field_error(exc.detail)
        return ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"{field}: {message}" if field else message,
            field=field,
            hint="Correct the field named and send the request again.",
            details={"problems": exc.detail},
        )
    if isinstance(exc, exceptions.ParseError):
        return ApplicationError(
            ErrorCode.MALFORMED_REQUEST,
            "The request body is not valid JSON.",
            hint="Send a JSON object.",
        )
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        return ApplicationError(
            ErrorCode.AUTHENTICATION_REQUIRED,
            str(exc.detail),
            hint=(
                "Send 'Authorization: Bearer <token>' with a token from an administrator "
                "(manage.py seed_demo prints demo tokens)."
            ),
        )
    if isinstance(exc, exceptions.PermissionDenied):
        return ApplicationError(ErrorCode.PERMISSION_DENIED, str(exc.detail))
    if isinstance(exc, exceptions.NotFound):
        return ApplicationError(ErrorCode.NOT_FOUND, str(exc.detail))
    if isinstance(exc, exceptions.MethodNotAllowed):
        return ApplicationError(ErrorCode.METHOD_NOT_ALLOWED, str(exc.detail))
    return ApplicationError(ErrorCode.INVALID_ARGUMENT, str(exc.detail))


def request_too_large_error() -> ApplicationError:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return ApplicationError(
        ErrorCode.REQUEST_TOO_LARGE,
        f"The request body is larger than {limit:,} bytes." if limit else "The request body is too large.",
        hint="Send less per request; a CSV import can be uploaded as a file (multipart).",
    )


def body_error(exc: BaseException) -> ApplicationError | None:
    """The error shape for a body Django or the parser could not take, else None."""
    if isinstance(exc, RequestDataTooBig):
        return request_too_large_error()
    if isinstance(exc, TooManyFieldsSent):
        return ApplicationError(ErrorCode.MALFORMED_REQUEST, "The request has too many fields.", hint="Send fewer.")
    if isinstance(exc, RecursionError):
        from smsplatform.api.parsers import too_deep_error

        return too_deep_error()
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    rejected = body_error(exc)
    if rejected is not None:
        return Response({"error": rejected.as_dict()}, status=rejected.http_status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    headers: dict[str, str] = {}
    if isinstance(exc, ApplicationError):
        error, http_status = exc, exc.http_status
        retry_after = exc.details.get("retry_after")
        if http_status == 429 and isinstance(retry_after, int) and retry_after >= 0:
            headers["Retry-After"] = str(retry_after)
    elif isinstance(exc, exceptions.APIException):
        error, http_status = drf_to_application_error(exc), exc.status_code
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            http_status = status.HTTP_401_UNAUTHORIZED
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
    else:
        # Never a traceback or raw exception text to a client: log it, answer generically.
        logger.exception("Unhandled error in API view")
        error = ApplicationError(
            ErrorCode.INTERNAL_ERROR,
            "Something went wrong on our side.",
            hint="Try again later.",
        )
        http_status = 500
    return Response({"error": error.as_dict()}, status=http_status, headers=headers)


def json_error(request: HttpRequest, code: str, message: str, status_code: int) -> JsonResponse:
    return JsonResponse(
        {"error": {"code": code, "message": message, "field": None, "hint": None}},
        status=status_code,
    )


def _is_machine_path(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/mcp"))


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_machine_path(request):
        return json_error(request, ErrorCode.NOT_FOUND, "No such endpoint.", 404)
    return defaults.page_not_found(request, exception or Http404())


def handler500(request: HttpRequest) -> HttpResponse:
    if _is_machine_path(request):
        return json_error(request, ErrorCode.INTERNAL_ERROR, "Something went wrong on our side.", 500)
    return defaults.server_error(request)
