"""REST views for campaigns, cost preview, sending, batches, delivery status and retries (issue 6).

Thin: parse, call the service or selector, serialise. Every rule lives in the services; the
serializers only check shapes, and refuse fields they do not declare, so a misspelt or protected
field (state, approved_version, message_ids, ...) is an error instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.access import VIEW
from campaigns.models import CampaignState
from campaigns.resend_rules import RESEND
from campaigns.retries import retry_preview
from campaigns.selectors import (
    VIEW_BATCHES,
    campaign_get,
    campaigns_list,
    cost_preview,
    delivery_status_get,
    send_batches_list,
)
from campaigns.services import (
    ADD,
    CHANGE,
    SCHEDULE,
    SEND,
    campaign_cancel_schedule,
    campaign_create_draft,
    campaign_schedule,
    campaign_send_approved,
    campaign_update,
    failed_messages_resend,
)
from campaigns.services.writes import WriteArgs, write_args
from campaigns.spec import PROTECTED
from gateways.models import MessageState
from smsplatform.api.base import QUERY_PASSTHROUGH, ServiceApiView
from smsplatform.api.base import StrictInput as BaseStrictInput
from smsplatform.api.schema import governed_responses, read_responses
from smsplatform.api.views import governed_response
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from templates.models import Language


class StrictInput(BaseStrictInput):
    """Campaign inputs: the campaign's protected fields get the pointed hint."""

    protected = frozenset(PROTECTED)


def _query(serializer: type[StrictInput], request: Request) -> dict[str, Any]:
    fields = serializer().fields
    for name, value in request.query_params.items():
        # DRF reads an empty query value of an optional field as absent; for a choice that would
        # accept a value the schema's enum does not list.
        field = fields.get(name)
        if value == "" and isinstance(field, serializers.ChoiceField):
            choices = ", ".join(str(c) for c in field.choices)
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                f"{name} must be one of {choices}.",
                field=name,
                hint=f"Leave {name} out to list all.",
            )
    data = serializer(data=request.query_params)
    data.is_valid(raise_exception=True)
    return dict(data.validated_data)


def _governed_write(
    view: ServiceApiView,
    request: Request,
    serializer: type[StrictInput],
    write: Callable[[WriteArgs], dict[str, Any]],
) -> Response:
    """Every governed write view: check the body's shape, take the envelope off (key, reason,
    base_version_token, confirm; see campaigns.services.writes), call the service as the request's actor,
    answer 200 when executed or 202 when held for approval. Service errors are mapped by
    ServiceApiView like every other view's."""
    data = serializer(data=request.data)
    data.is_valid(raise_exception=True)
    return governed_response(write(write_args(view.actor(request), data.validated_data)))


# --- input shapes (the services check the rules) ---------------------------------------------------


class CampaignContentInput(StrictInput):
    name = serializers.CharField(max_length=100, required=False)
    segment_id = serializers.IntegerField(min_value=1, required=False, help_text="From segments.create.")
    template_version_id = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, help_text="Pin a template version, or give text."
    )
    text = serializers.CharField(
        max_length=5000,
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Free copy; {{link}} places the short link.",
    )
    brand = serializers.CharField(max_length=60, required=False, allow_blank=True, help_text="Named in free copy.")
    language = serializers.ChoiceField(choices=Language.choices, required=False)
    max_segments = serializers.IntegerField(min_value=1, max_value=10, required=False, allow_null=True)
    variables = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False
    )
    short_link_id = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, help_text="From short_links.create."
    )
    sender_id = serializers.CharField(max_length=16, required=False)
    gateway = serializers.CharField(
        max_length=50, required=False, allow_null=True, allow_blank=True, help_text="Empty: preferred per country."
    )
    tracking = serializers.BooleanField(required=False)
    send_goal = serializers.CharField(max_length=300, required=False, allow_blank=True)
    budget = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        required=False,
        allow_null=True,
        help_text="Maximum cost; a schedule or send above it is refused.",
    )


class CampaignScheduleFieldsInput(StrictInput):
    send_at = serializers.CharField(
        required=False, allow_null=True, help_text="ISO 8601; without an offset the time_zone applies."
    )
    time_zone = serializers.CharField(max_length=50, required=False, help_text="IANA zone, e.g. Asia/Hong_Kong.")
    batch_size = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)
    batch_interval_seconds = serializers.IntegerField(min_value=0, max_value=86_400, required=False)
    notify = serializers.ListField(
        child=serializers.CharField(max_length=200), max_length=20, required=False, help_text="Usernames or e-mails."
    )


class WriteInput(StrictInput):
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
    idempotency_key = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Required: one key per intended write; reuse it only to retry that write.",
    )


class CampaignCreateInput(CampaignContentInput, CampaignScheduleFieldsInput, WriteInput):
    name = serializers.CharField(max_length=100)
    segment_id = serializers.IntegerField(min_value=1, help_text="From segments.create.")
    sender_id = serializers.CharField(max_length=16)


class CampaignChangesInput(CampaignContentInput, CampaignScheduleFieldsInput):
    review_notes = serializers.CharField(max_length=5000, required=False, allow_blank=True)


class CampaignUpdateInput(WriteInput):
    base_version_token = serializers.CharField(required=False, allow_blank=True, help_text="From GET; required.")
    changes = CampaignChangesInput(help_text="Only the fields named here change.")


class CampaignScheduleInput(CampaignScheduleFieldsInput, WriteInput):
    base_version_token = serializers.CharField(required=False, allow_blank=True, help_text="From GET; required.")
    confirm = serializers.BooleanField(
        default=False, help_text="Counts only for holders of campaigns.confirm_campaign; otherwise approval decides."
    )


class CampaignSendInput(WriteInput):
    base_version_token = serializers.CharField(required=False, allow_blank=True, help_text="From GET; required.")
    confirm = serializers.BooleanField(
        default=False, help_text="Counts only for holders of campaigns.confirm_campaign; otherwise approval decides."
    )


class CampaignCancelInput(WriteInput):
    reason = serializers.CharField(max_length=1000, help_text="Why; recorded and sent to the owner.")


class ResendInput(WriteInput):
    retry_preview_id = serializers.CharField(max_length=64, help_text="From campaigns/<id>/retry-preview/ only.")


class CampaignListQuery(StrictInput):
    passthrough = QUERY_PASSTHROUGH
    state = serializers.ChoiceField(choices=CampaignState.choices, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, default=50)


class DeliveryStatusQuery(StrictInput):
    passthrough = QUERY_PASSTHROUGH
    message_id = serializers.IntegerField(min_value=1, required=False)
    phone = serializers.CharField(min_length=3, max_length=32, required=False)
    campaign_id = serializers.IntegerField(min_value=1, required=False)
    batch_id = serializers.IntegerField(min_value=1, required=False)
    state = serializers.ChoiceField(choices=list(MessageState.values), required=False)
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False)
    before_id = serializers.IntegerField(min_value=1, required=False)


class RetryPreviewQuery(StrictInput):
    passthrough = QUERY_PASSTHROUGH
    batch_id = serializers.IntegerField(min_value=1, required=False)


class EmptyQuery(StrictInput):
    passthrough = QUERY_PASSTHROUGH


# --- output shapes (documentation of what the selectors and services return) ------------------------


class CampaignListOutput(serializers.Serializer):
    campaigns = serializers.ListField(child=serializers.DictField())
    count = serializers.IntegerField()
    states = serializers.DictField(child=serializers.CharField())
    note = serializers.CharField()


class CampaignDetailOutput(serializers.Serializer):
    campaign_id = serializers.IntegerField()
    name = serializers.CharField()
    state = serializers.ChoiceField(choices=CampaignState.choices)
    version = serializers.IntegerField()
    base_version_token = serializers.CharField()
    message = serializers.DictField()
    content = serializers.DictField()
    schedule = serializers.DictField()
    review = serializers.DictField()
    approval = serializers.DictField()
    estimate_detail = serializers.DictField()
    short_link_detail = serializers.DictField(allow_null=True)
    versions = serializers.ListField(child=serializers.DictField())


class CostPreviewOutput(serializers.Serializer):
    campaign_id = serializers.IntegerField()
    message = serializers.DictField(help_text="Encoding, segments per message, characters, the parts.")
    matched = serializers.IntegerField()
    sendable = serializers.IntegerField()
    unsendable = serializers.IntegerField()
    exclusions = serializers.DictField(child=serializers.IntegerField())
    by_country = serializers.ListField(child=serializers.DictField())
    estimated_cost = serializers.DictField(child=serializers.CharField())
    short_link_effect = serializers.DictField(allow_null=True)
    budget = serializers.DictField()
    quota = serializers.DictField()
    notices = serializers.ListField(
        child=serializers.DictField(),
        help_text="Quiet hours that would hold this send: kind, country, rule, first_send_at, message.",
    )
    estimate_note = serializers.CharField()


class SendBatchListOutput(serializers.Serializer):
    campaign_id = serializers.IntegerField()
    campaign_state = serializers.CharField()
    batches = serializers.ListField(child=serializers.DictField())
    count = serializers.IntegerField()
    message_states = serializers.DictField(child=serializers.CharField())
    batch_states = serializers.DictField(child=serializers.CharField())
    charged_total = serializers.CharField()
    currency = serializers.CharField()
    charged_definition = serializers.CharField()
    charge_rule = serializers.CharField()


class DeliveryStatusOutput(serializers.Serializer):
    messages = serializers.ListField(child=serializers.DictField())
    count = serializers.IntegerField()
    next_before_id = serializers.IntegerField(allow_null=True)
    phones_masked = serializers.BooleanField()
    charge_rule = serializers.CharField()
    note = serializers.CharField()


class RetryPreviewOutput(serializers.Serializer):
    retry_preview_id = serializers.CharField()
    expires_at = serializers.DateTimeField()
    campaign_id = serializers.IntegerField()
    failed = serializers.IntegerField()
    eligible = serializers.IntegerField()
    excluded = serializers.DictField(child=serializers.IntegerField())
    by_country = serializers.ListField(child=serializers.DictField())
    estimated_cost = serializers.DictField(child=serializers.CharField())


# The error shape and the governed write's answer are shared by every app (smsplatform.api.schema).
_read = read_responses
_governed = governed_responses


# --- views ---------------------------------------------------------------------------------------------


class CampaignListApi(ServiceApiView):
    """Campaigns you own or created (all of them with campaigns.view_all_campaigns); new drafts."""

    required_permissions = {"GET": VIEW, "POST": ADD}

    @extend_schema(
        operation_id="campaigns_list",
        summary="Campaigns you may see, with state and progress (sms_marketing.campaigns.list)",
        parameters=[CampaignListQuery],
        responses=_read(CampaignListOutput),
    )
    def get(self, request: Request) -> Response:
        return Response(campaigns_list(actor=self.actor(request), **_query(CampaignListQuery, request)))

    @extend_schema(
        operation_id="campaigns_create_draft",
        summary="Create a campaign draft; every content rule is checked (sms_marketing.campaigns.create_draft)",
        request=CampaignCreateInput,
        responses=_governed(404, 409),
    )
    def post(self, request: Request) -> Response:
        return _governed_write(
            self,
            request,
            CampaignCreateInput,
            lambda w: campaign_create_draft(
                actor=w.actor, data=w.fields, idempotency_key=w.idempotency_key, reason=w.reason
            ),
        )


class CampaignDetailApi(ServiceApiView):
    """One campaign; updates name only the fields they change and send its base_version_token back."""

    required_permissions = {"GET": VIEW, "PATCH": CHANGE}

    @extend_schema(
        operation_id="campaigns_get",
        summary="One campaign with its base_version_token and versions (sms_marketing.campaigns.get)",
        responses=_read(CampaignDetailOutput, 404),
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        _query(EmptyQuery, request)
        return Response(campaign_get(actor=self.actor(request), campaign_id=campaign_id))

    @extend_schema(
        operation_id="campaigns_update",
        summary="Change only the named fields; a stale token is refused (sms_marketing.campaigns.update)",
        request=CampaignUpdateInput,
        responses=_governed(404, 409),
    )
    def patch(self, request: Request, campaign_id: int) -> Response:
        return _governed_write(
            self,
            request,
            CampaignUpdateInput,
            lambda w: campaign_update(
                actor=w.actor,
                campaign_id=campaign_id,
                base_version_token=w.base_version_token,
                changes=dict(w.fields["changes"]),
                idempotency_key=w.idempotency_key,
                reason=w.reason,
            ),
        )


class CampaignCostPreviewApi(ServiceApiView):
    """What a send would cost now, per country, with every exclusion counted. Writes nothing."""

    required_permissions = {"GET": VIEW}

    @extend_schema(
        operation_id="cost_preview",
        summary="Cost per country, exclusions, short-link effect, quota and budget (sms_marketing.cost_preview)",
        responses=_read(CostPreviewOutput, 404),
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        _query(EmptyQuery, request)
        return Response(cost_preview(actor=self.actor(request), campaign_id=campaign_id))


class CampaignScheduleApi(ServiceApiView):
    """Schedule a send. A live send needs an approval by someone else or a confirmer's confirm=true."""

    required_permissions = {"POST": SCHEDULE}

    @extend_schema(
        operation_id="campaigns_schedule",
        summary="Schedule an approved send; held for approval per policy (sms_marketing.campaigns.schedule)",
        request=CampaignScheduleInput,
        responses=_governed(404, 409),
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        return _governed_write(
            self,
            request,
            CampaignScheduleInput,
            lambda w: campaign_schedule(
                actor=w.actor,
                campaign_id=campaign_id,
                base_version_token=w.base_version_token,
                schedule=w.fields,
                confirm=w.confirm,
                idempotency_key=w.idempotency_key,
                reason=w.reason,
            ),
        )


class CampaignCancelScheduleApi(ServiceApiView):
    """Cancel before sending starts; once sending, the remaining batches are stopped instead."""

    required_permissions = {"POST": SCHEDULE}

    @extend_schema(
        operation_id="campaigns_cancel_schedule",
        summary="Cancel before sending, or stop the remaining batches (sms_marketing.campaigns.cancel_schedule)",
        request=CampaignCancelInput,
        responses=_governed(404, 409),
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        return _governed_write(
            self,
            request,
            CampaignCancelInput,
            lambda w: campaign_cancel_schedule(
                actor=w.actor, campaign_id=campaign_id, reason=w.reason, idempotency_key=w.idempotency_key
            ),
        )


class CampaignSendApi(ServiceApiView):
    """Send now. A marketer's confirm=true does not count: the approval policy decides."""

    required_permissions = {"POST": SEND}

    @extend_schema(
        operation_id="campaigns_send_approved",
        summary="Send now: needs an approval or a confirmer's confirm=true (sms_marketing.campaigns.send_approved)",
        request=CampaignSendInput,
        responses=_governed(404, 409),
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        return _governed_write(
            self,
            request,
            CampaignSendInput,
            lambda w: campaign_send_approved(
                actor=w.actor,
                campaign_id=campaign_id,
                base_version_token=w.base_version_token,
                confirm=w.confirm,
                idempotency_key=w.idempotency_key,
                reason=w.reason,
            ),
        )


class SendBatchListApi(ServiceApiView):
    """A campaign's batches with per-state counts. Pending is not delivered."""

    required_permissions = {"GET": VIEW_BATCHES}

    @extend_schema(
        operation_id="send_batches_list",
        summary="Batches with delivered, failed, pending, charged and errors (sms_marketing.send_batches.list)",
        responses=_read(SendBatchListOutput, 404),
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        _query(EmptyQuery, request)
        return Response(send_batches_list(actor=self.actor(request), campaign_id=campaign_id))


class DeliveryStatusApi(ServiceApiView):
    """Per message or phone; phones are masked unless you may see them in full."""

    required_permissions = {"GET": VIEW_BATCHES}

    @extend_schema(
        operation_id="delivery_status_get",
        summary="Delivery status by message, phone, campaign or batch, masked (sms_marketing.delivery_status.get)",
        parameters=[DeliveryStatusQuery],
        responses=_read(DeliveryStatusOutput, 404),
    )
    def get(self, request: Request) -> Response:
        return Response(delivery_status_get(actor=self.actor(request), **_query(DeliveryStatusQuery, request)))


class RetryPreviewApi(ServiceApiView):
    """Stores a preview of the failed messages that may be resent; resend takes only its id."""

    required_permissions = {"GET": RESEND}

    @extend_schema(
        operation_id="failed_messages_retry_preview",
        summary="Which failed messages may be resent, at what cost; stores a preview id "
        "(sms_marketing.failed_messages.retry_preview)",
        parameters=[RetryPreviewQuery],
        responses=_read(RetryPreviewOutput, 404),
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        query = _query(RetryPreviewQuery, request)
        return Response(
            retry_preview(actor=self.actor(request), campaign_id=campaign_id, batch_id=query.get("batch_id"))
        )


class FailedMessagesResendApi(ServiceApiView):
    """Resends exactly what a retry preview showed (re-checked now); never more."""

    required_permissions = {"POST": RESEND}

    @extend_schema(
        operation_id="failed_messages_resend",
        summary="Resend exactly what a retry preview showed, by its id only (sms_marketing.failed_messages.resend)",
        request=ResendInput,
        responses=_governed(404, 409, 410),
    )
    def post(self, request: Request) -> Response:
        return _governed_write(
            self,
            request,
            ResendInput,
            lambda w: failed_messages_resend(
                actor=w.actor,
                retry_preview_id=w.fields["retry_preview_id"],
                idempotency_key=w.idempotency_key,
                reason=w.reason,
            ),
        )
