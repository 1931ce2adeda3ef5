"""REST views for contacts, consent, opt-outs and frequency caps. Thin: parse, call, serialise."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from compliance.models import OptOutReason
from compliance.optouts import opt_outs_list
from contacts.imports import contacts_import
from contacts.models import ConsentPurpose
from contacts.optouts import contact_opt_out
from contacts.selectors import audiences_list, contact_get, contacts_search
from contacts.services import LANGUAGES, contacts_upsert, customer_facts_ingest, segment_create, segment_preview
from gateways.frequency import frequency_caps_get
from smsplatform.api.base import ServiceApiView, StrictInput
from smsplatform.api.schema import governed_responses, list_output, read_responses
from smsplatform.api.views import governed_response
from smsplatform.kernel.errors import ApplicationError, ErrorCode


def _bool(request: Request, name: str) -> bool | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if value.lower() in {"true", "1", "yes"}:
        return True
    if value.lower() in {"false", "0", "no"}:
        return False
    raise ApplicationError(ErrorCode.VALIDATION_ERROR, f"{name} must be true or false.", field=name)


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        raise ApplicationError(ErrorCode.VALIDATION_ERROR, f"{name} must be an integer.", field=name) from None


class ConsentInput(StrictInput):
    purpose = serializers.ChoiceField(choices=ConsentPurpose.values, default=ConsentPurpose.MARKETING)
    channel = serializers.CharField(max_length=20, default="sms")
    wording = serializers.CharField(max_length=2000)
    source = serializers.CharField(max_length=200)  # type: ignore[assignment]  # a field, not Field.source
    obtained_at = serializers.CharField(help_text="ISO 8601 with time zone")
    proof_reference = serializers.CharField(max_length=200)


class ContactListApi(ServiceApiView):
    required_permissions = {"GET": "contacts.view_contact", "POST": "contacts.change_contact"}

    class UpsertInput(StrictInput):
        phone = serializers.CharField(max_length=32, required=False)
        contact_id = serializers.IntegerField(required=False)
        base_version_token = serializers.CharField(required=False)
        source = serializers.CharField(max_length=100)  # type: ignore[assignment]
        language = serializers.ChoiceField(choices=list(LANGUAGES), required=False)
        name = serializers.CharField(max_length=100, required=False, allow_blank=True)
        tags = serializers.ListField(child=serializers.CharField(max_length=50), max_length=50, required=False)
        crm_key = serializers.CharField(max_length=100, required=False, allow_blank=True)
        consent = ConsentInput(required=False)
        lift_opt_out = serializers.BooleanField(default=False)
        audiences = serializers.JSONField(
            required=False,
            help_text="Audience ids or names to add the contact to (a list), or {add: [...], remove: [...]}; "
            "checked by the service (a contact in no audience is in no segment).",
        )
        reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
        idempotency_key = serializers.CharField(max_length=200)

    @extend_schema(
        operation_id="contacts_search",
        summary="Search contacts, minimal and masked (sms_marketing.contacts.search)",
        parameters=[
            OpenApiParameter("phone", str),
            OpenApiParameter("crm_key", str),
            OpenApiParameter("tag", str),
            OpenApiParameter("audience_id", int),
            OpenApiParameter("opted_out", bool),
            OpenApiParameter("has_consent", bool),
            OpenApiParameter("sent_within_days", int),
            OpenApiParameter("limit", int),
        ],
        responses=read_responses(description="Matching contacts, minimal and masked, with the count."),
    )
    def get(self, request: Request) -> Response:
        q = request.query_params
        result = contacts_search(
            actor=self.actor(request),
            phone=q.get("phone") or None,
            crm_key=q.get("crm_key") or None,
            tag=q.get("tag") or None,
            audience_id=_int(request, "audience_id"),
            opted_out=_bool(request, "opted_out"),
            has_consent=_bool(request, "has_consent"),
            sent_within_days=_int(request, "sent_within_days"),
            limit=_int(request, "limit") or 20,
        )
        return Response(result)

    @extend_schema(
        operation_id="contacts_upsert",
        summary="Create or update a contact with consent evidence (sms_marketing.contacts.upsert)",
        request=UpsertInput,
        responses=governed_responses(409),
    )
    def post(self, request: Request) -> Response:
        data = self.UpsertInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields: dict[str, Any] = dict(data.validated_data)
        key = fields.pop("idempotency_key")
        if "consent" in fields:
            fields["consent"] = dict(fields["consent"])
        return governed_response(contacts_upsert(actor=self.actor(request), idempotency_key=key, **fields))


class ContactDetailApi(ServiceApiView):
    required_permissions = {"GET": "contacts.view_contact"}

    @extend_schema(
        operation_id="contacts_get",
        summary="One contact, version token (sms_marketing.contacts.get)",
        responses=read_responses(
            OpenApiTypes.OBJECT, 404, description="The contact, its consent evidence and base_version_token."
        ),
    )
    def get(self, request: Request, contact_id: int) -> Response:
        return Response(contact_get(actor=self.actor(request), contact_id=contact_id))


class OptOutListApi(ServiceApiView):
    required_permissions = {"GET": "compliance.view_optout", "POST": "compliance.add_optout"}

    class OptOutInput(StrictInput):
        contact_id = serializers.IntegerField(required=False)
        phone = serializers.CharField(max_length=32, required=False)
        reason = serializers.ChoiceField(choices=OptOutReason.values, required=False)
        source = serializers.CharField(max_length=100, required=False, default="")  # type: ignore[assignment]
        message_text = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
        language = serializers.CharField(max_length=10, required=False, allow_blank=True, default="")
        note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
        idempotency_key = serializers.CharField(max_length=200)

    @extend_schema(
        operation_id="opt_outs_list",
        summary="Opt-outs and suppression (sms_marketing.opt_outs.list)",
        parameters=[
            OpenApiParameter("reason", str, enum=list(OptOutReason.values)),
            OpenApiParameter("phone", str),
            OpenApiParameter("include_lifted", bool),
            OpenApiParameter("limit", int),
        ],
        responses=read_responses(description="Opt-outs (phones masked unless you may see them), with the count."),
    )
    def get(self, request: Request) -> Response:
        q = request.query_params
        result = opt_outs_list(
            actor=self.actor(request),
            # Present but empty is refused by the service (no "" in the enum), not read as "all".
            reason=q.get("reason"),
            phone=q.get("phone") or None,
            include_lifted=bool(_bool(request, "include_lifted")),
            limit=_int(request, "limit") or 100,
        )
        return Response(result)

    @extend_schema(
        operation_id="contacts_opt_out",
        summary="Opt a phone out, at once (sms_marketing.contacts.opt_out)",
        request=OptOutInput,
        responses=read_responses(description="The opt-out recorded (it takes effect at once)."),
    )
    def post(self, request: Request) -> Response:
        data = self.OptOutInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields: dict[str, Any] = dict(data.validated_data)
        key = fields.pop("idempotency_key")
        # Never held (an opt-out takes effect at once): the write envelope, always 200.
        return Response(contact_opt_out(actor=self.actor(request), idempotency_key=key, **fields))


class FrequencyCapsApi(ServiceApiView):
    required_permissions = {"GET": "smsplatform.view_platformconfig"}

    @extend_schema(
        operation_id="frequency_caps_get",
        summary="Frequency caps (sms_marketing.frequency_caps.get)",
        responses=read_responses(description="The caps per window and where to change them."),
    )
    def get(self, request: Request) -> Response:
        return Response(frequency_caps_get())


class AudienceListApi(ServiceApiView):
    required_permissions = {"GET": "contacts.view_audience"}

    @extend_schema(
        operation_id="audiences_list",
        summary="Audiences you may see (sms_marketing.audiences.list)",
        responses=read_responses(list_output("AudienceListOutput", "audiences")),
    )
    def get(self, request: Request) -> Response:
        return Response(audiences_list(actor=self.actor(request)))


class SegmentPreviewApi(ServiceApiView):
    required_permissions = {"POST": "contacts.view_segment"}

    class PreviewInput(StrictInput):
        criteria = serializers.DictField(help_text="The criteria language (see contacts/criteria.py)")

    @extend_schema(
        operation_id="segments_preview",
        summary="Preview a segment: counts, exclusions, cost (sms_marketing.segments.preview)",
        request=PreviewInput,
        responses=read_responses(
            description="matched = sendable + exclusions by reason, by country, cost; segment_preview_id."
        ),
    )
    def post(self, request: Request) -> Response:
        data = self.PreviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(segment_preview(actor=self.actor(request), criteria=data.validated_data["criteria"]))


class SegmentListApi(ServiceApiView):
    required_permissions = {"POST": "contacts.add_segment"}

    class CreateInput(StrictInput):
        segment_preview_id = serializers.CharField()
        name = serializers.CharField(max_length=100)
        reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
        idempotency_key = serializers.CharField(max_length=200)

    @extend_schema(
        operation_id="segments_create",
        summary="Create a segment from a preview id (sms_marketing.segments.create)",
        request=CreateInput,
        responses=governed_responses(404, 409, 410),
    )
    def post(self, request: Request) -> Response:
        # Unknown fields (criteria, audiences, ...) are refused: a create never widens the preview.
        extra = sorted(set(request.data) - set(self.CreateInput().fields))
        if extra:
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                f"segments.create takes only the preview id and a name, not {extra[0]!r}.",
                field=extra[0],
                hint="Change the criteria with sms_marketing.segments.preview and use its new id.",
            )
        data = self.CreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields: dict[str, Any] = dict(data.validated_data)
        key = fields.pop("idempotency_key")
        return governed_response(segment_create(actor=self.actor(request), idempotency_key=key, **fields))


class CustomerFactIngestApi(ServiceApiView):
    required_permissions = {"POST": "contacts.add_customerfact"}

    class IngestInput(StrictInput):
        facts = serializers.ListField(child=serializers.DictField(), max_length=10_000)
        idempotency_key = serializers.CharField(max_length=200)

    @extend_schema(
        operation_id="customer_facts_ingest",
        summary="Bulk ingest orders, payments, pickups, offers, appointments, repurchase dates",
        request=IngestInput,
        responses=read_responses(description="How many facts were written, and any refused rows."),
    )
    def post(self, request: Request) -> Response:
        data = self.IngestInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(
            customer_facts_ingest(
                actor=self.actor(request),
                facts=[dict(f) for f in data.validated_data["facts"]],
                idempotency_key=data.validated_data["idempotency_key"],
            )
        )


class ContactImportApi(ServiceApiView):
    required_permissions = {"POST": "contacts.add_contact"}

    class ImportInput(StrictInput):
        csv = serializers.CharField(required=False, trim_whitespace=False, help_text="The CSV text (or upload file)")
        file = serializers.FileField(required=False)
        source = serializers.CharField(max_length=90)  # type: ignore[assignment]
        audience_id = serializers.IntegerField(required=False)
        consent = ConsentInput(required=False, help_text="Evidence for rows without consent_* columns")
        reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
        idempotency_key = serializers.CharField(max_length=200)

    @extend_schema(
        operation_id="contacts_import",
        summary="Import contacts from CSV with consent evidence (all or nothing; may need approval)",
        request=ImportInput,
        responses=governed_responses(409),
    )
    def post(self, request: Request) -> Response:
        data = self.ImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields: dict[str, Any] = dict(data.validated_data)
        upload = fields.pop("file", None)
        text = fields.pop("csv", None)
        if upload is not None:
            try:
                text = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ApplicationError(
                    ErrorCode.VALIDATION_ERROR, "The file is not UTF-8 text.", field="file"
                ) from None
        if not text:
            raise ApplicationError(ErrorCode.VALIDATION_ERROR, "Send the CSV as csv or as a file.", field="csv")
        key = fields.pop("idempotency_key")
        if "consent" in fields:
            fields["consent"] = dict(fields["consent"])
        return governed_response(
            contacts_import(actor=self.actor(request), csv_text=text, idempotency_key=key, **fields)
        )
