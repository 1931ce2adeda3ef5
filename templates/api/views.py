"""REST views of the templates app: templates, copy fit preview, short links."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from smsplatform.api.base import ServiceApiView, StrictInput
from smsplatform.api.schema import governed_responses, list_output, read_responses
from smsplatform.api.views import governed_response
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from templates.content_rules import CHARSETS, FIELD_TYPES
from templates.copy_fit import copy_fit_preview
from templates.models import Language, Purpose
from templates.selectors import templates_list
from templates.services import short_link_create, template_save
from templates.short_links.preview import short_link_preview


def _query_int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if not value.isdigit() or int(value) < 1:
        raise ApplicationError(ErrorCode.VALIDATION_ERROR, f"{name} must be a positive integer.", field=name)
    return int(value)


def _query_choice(request: Request, name: str, allowed: list[str]) -> str | None:
    value = request.query_params.get(name)
    # Present but empty is not "no filter": the schema's enum has no "", so it is refused.
    if value is not None and value not in allowed:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"{name} must be one of {', '.join(allowed)}.",
            field=name,
            hint=f"Leave {name} out to list all.",
        )
    return value


class FieldInput(StrictInput):
    name = serializers.CharField(max_length=40)
    type = serializers.ChoiceField(choices=FIELD_TYPES)
    charset = serializers.ChoiceField(choices=CHARSETS, required=False)
    max_length = serializers.IntegerField(min_value=1, max_value=500)
    example = serializers.CharField(max_length=500, trim_whitespace=False)


class _WithFieldsInput(StrictInput):
    """Adds the input key "fields", a name a declared attribute cannot take (Serializer.fields)."""

    def get_fields(self) -> dict[str, serializers.Field]:
        declared = super().get_fields()
        declared["fields"] = FieldInput(many=True, required=False)
        return declared


class TemplateContentInput(_WithFieldsInput):
    # Length and character rules are the service's (clear codes such as text_too_long);
    # the serializer only checks shapes. trim_whitespace=False: the service normalises.
    name = serializers.CharField(required=False, max_length=200, trim_whitespace=False)
    purpose = serializers.ChoiceField(choices=Purpose.choices, required=False)
    language = serializers.ChoiceField(choices=Language.choices, required=False)
    body = serializers.CharField(required=False, max_length=20000, allow_blank=True, trim_whitespace=False)
    brand = serializers.CharField(required=False, max_length=200, allow_blank=True, trim_whitespace=False)
    max_segments = serializers.IntegerField(required=False, min_value=1, max_value=10)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)
    idempotency_key = serializers.CharField(max_length=200)


def _content(data: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "purpose", "language", "body", "brand", "fields", "max_segments")
    content = {k: data[k] for k in keys if k in data}
    if "fields" in content:
        content["fields"] = [dict(f) for f in content["fields"]]
    return content


class TemplatesApi(ServiceApiView):
    required_permissions = {"GET": "sms_templates.view_template", "POST": "sms_templates.add_template"}

    @extend_schema(
        operation_id="templates_list",
        summary="Templates with versions, wording checks and tokens (sms_marketing.templates.list)",
        parameters=[
            OpenApiParameter("purpose", str, enum=list(Purpose.values)),
            OpenApiParameter("language", str, enum=list(Language.values)),
            OpenApiParameter("name_contains", str),
            OpenApiParameter("include_versions", bool),
            OpenApiParameter("limit", int),
        ],
        responses=read_responses(list_output("TemplateListOutput", "templates")),
    )
    def get(self, request: Request) -> Response:
        return Response(
            templates_list(
                purpose=_query_choice(request, "purpose", list(Purpose.values)),
                language=_query_choice(request, "language", list(Language.values)),
                name_contains=request.query_params.get("name_contains") or None,
                include_versions=request.query_params.get("include_versions") in ("1", "true"),
                limit=_query_int(request, "limit") or 50,
            )
        )

    @extend_schema(
        operation_id="templates_create",
        summary="Create a template (sms_marketing.templates.save); may be held for approval (202)",
        request=TemplateContentInput,
        responses=governed_responses(409),
    )
    def post(self, request: Request) -> Response:
        data = TemplateContentInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = template_save(
            actor=self.actor(request),
            idempotency_key=data.validated_data["idempotency_key"],
            content=_content(data.validated_data),
            reason=data.validated_data["reason"],
        )
        return governed_response(result)


class TemplateDetailApi(ServiceApiView):
    required_permissions = {"GET": "sms_templates.view_template", "PUT": "sms_templates.change_template"}

    class UpdateInput(TemplateContentInput):
        base_version_token = serializers.CharField(help_text="From GET; a stale token is refused (409).")

    @extend_schema(
        operation_id="templates_get",
        summary="One template with its versions",
        responses=read_responses(OpenApiTypes.OBJECT, 404, description="The template, its versions and token."),
    )
    def get(self, request: Request, template_id: int) -> Response:
        return Response(templates_list(template_id=template_id)["templates"][0])

    @extend_schema(
        operation_id="templates_save_version",
        summary="Save a new version (sms_marketing.templates.save); omitted properties keep their value",
        request=UpdateInput,
        responses=governed_responses(404, 409),
    )
    def put(self, request: Request, template_id: int) -> Response:
        data = self.UpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = template_save(
            actor=self.actor(request),
            idempotency_key=data.validated_data["idempotency_key"],
            template_id=template_id,
            base_version_token=data.validated_data["base_version_token"],
            content=_content(data.validated_data),
            reason=data.validated_data["reason"],
        )
        return governed_response(result)


class CopyFitPreviewApi(ServiceApiView):
    required_permissions = {"POST": "sms_templates.fit_preview"}

    @extend_schema_serializer(component_name="CopyFitPreviewInput")
    class Input(_WithFieldsInput):
        text = serializers.CharField(required=False, max_length=20000, allow_blank=True, trim_whitespace=False)
        purpose = serializers.ChoiceField(choices=Purpose.choices, required=False)
        brand = serializers.CharField(required=False, max_length=200, allow_blank=True)
        template_id = serializers.IntegerField(required=False, min_value=1)
        template_version_id = serializers.IntegerField(required=False, min_value=1)
        variables = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
        max_segments = serializers.IntegerField(required=False, min_value=1, max_value=10)
        smart_encoding = serializers.BooleanField(required=False, default=False)
        recipients = serializers.IntegerField(required=False, default=1, min_value=1, max_value=10_000_000)
        countries = serializers.ListField(child=serializers.CharField(max_length=2), required=False, max_length=50)
        per_recipient_links = serializers.BooleanField(required=False, allow_null=True, default=None)

    @extend_schema(
        operation_id="copy_fit_preview",
        summary="Encoding, segments, truncation and cost, longest-variable scenario (sms_marketing.copy.fit_preview)",
        request=Input,
        responses=read_responses(description="Encoding, parts, truncation and cost per scenario."),
    )
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        args = dict(data.validated_data)
        if "fields" in args:
            args["fields"] = [dict(f) for f in args["fields"]]
        return Response(copy_fit_preview(**args))


class ShortLinkPreviewApi(ServiceApiView):
    required_permissions = {"POST": "sms_templates.preview_shortlink"}

    @extend_schema_serializer(component_name="ShortLinkPreviewInput")
    class Input(StrictInput):
        url = serializers.CharField(max_length=10000, trim_whitespace=False, allow_blank=True)
        utm = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
        expires_at = serializers.CharField(required=False)
        expiry_days = serializers.IntegerField(required=False, min_value=1, max_value=3650)
        tracking = serializers.BooleanField(required=False, allow_null=True, default=None)
        per_recipient = serializers.BooleanField(required=False, default=False)
        campaign_id = serializers.IntegerField(required=False, min_value=1)

    @extend_schema(
        operation_id="short_links_preview",
        summary="Check a landing page and show its short link (sms_marketing.short_links.preview)",
        request=Input,
        responses=read_responses(description="The checked landing page, the short URL and short_link_preview_id."),
    )
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(short_link_preview(actor=self.actor(request), **data.validated_data))


class ShortLinkCreateApi(ServiceApiView):
    required_permissions = {"POST": "sms_templates.add_shortlink"}

    @extend_schema_serializer(component_name="ShortLinkCreateInput")
    class Input(StrictInput):
        short_link_preview_id = serializers.CharField(max_length=100)
        idempotency_key = serializers.CharField(max_length=200)
        reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)

    @extend_schema(
        operation_id="short_links_create",
        summary="Create the previewed short link (sms_marketing.short_links.create); may be held (202)",
        request=Input,
        responses=governed_responses(404, 409, 410),
    )
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        return governed_response(short_link_create(actor=self.actor(request), **data.validated_data))
