"""The approvers' review UI: the approval queue, and approval policies."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.urls import path, reverse
from django.utils.html import format_html

from compliance.governance import payload_shown
from compliance.models import ActionRequest, ApprovalPolicy, RequestState
from compliance.presenters import action_request_presentation
from compliance.selectors import queue_order
from compliance.services import (
    APPROVE_PERMISSION,
    action_request_approve,
    action_request_reject,
    approval_policy_save,
    approval_policy_validate,
)
from smsplatform.admin_utils import (
    ReadOnlyAdminMixin,
    ServiceWriteAdminMixin,
    admin_actor,
    error_text,
    pretty_json,
    readable,
)
from smsplatform.kernel.errors import ApplicationError

STATE_COLOURS: dict[str, str] = {
    RequestState.PENDING: "#b26a00",
    RequestState.EXECUTED: "#1b7f3b",
    RequestState.REJECTED: "#a61b1b",
    RequestState.EXPIRED: "#666",
    RequestState.FAILED: "#a61b1b",
}


def admin_decide(request: HttpRequest, *, request_id: Any, decision: Any, reason: str) -> None:
    """Approve or reject an action request from an admin page (the approval queue, a campaign's
    review page) through the services, and say what happened as an admin message."""
    actor = admin_actor(request)
    try:
        if decision == "approve":
            result = action_request_approve(actor=actor, action_request_id=request_id, reason=reason)
            if result["state"] == RequestState.EXECUTED:
                messages.success(request, f"Request #{request_id} approved and executed.")
            else:
                error = result.get("error") or {}
                messages.error(
                    request, f"Request #{request_id} was approved but failed when re-checked: {error.get('message')}"
                )
        elif decision == "reject":
            action_request_reject(actor=actor, action_request_id=request_id, reason=reason)
            messages.success(request, f"Request #{request_id} rejected.")
        else:
            messages.error(request, "Choose approve or reject.")
    except ApplicationError as exc:
        messages.error(request, error_text(exc))


def _usernames(value: Any) -> Any:
    """A service result names people by user id (``approved_by: 7``); a page names them by username."""
    if isinstance(value, list):
        return [_usernames(item) for item in value]
    if not isinstance(value, dict):
        return value
    ids = {v for k, v in value.items() if k.endswith("_by") and isinstance(v, int) and not isinstance(v, bool)}
    names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username")) if ids else {}
    return {k: names.get(v, v) if k.endswith("_by") and v in ids else _usernames(v) for k, v in value.items()}


@admin.register(ActionRequest)
class ActionRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    change_form_template = "admin/compliance/actionrequest/change_form.html"
    list_display = [
        "id",
        "action",
        "summary",
        "state_badge",
        "requested_by",
        "channel",
        "required_role",
        "created_at",
        "expires_at",
    ]
    list_display_links = ["id", "summary"]
    list_filter = ["state", "action", "channel", "required_role"]
    search_fields = ["summary", "requested_by__username", "token_name"]
    fields = (
        "action",
        "state",
        "summary",
        "requested_by",
        "channel",
        "token_name",
        "request_reason",
        "required_role",
        "policy",
        "created_at",
        "expires_at",
        "facts_pretty",
        "decided_by",
        "decided_at",
        "decision_reason",
        "executed_at",
        "outcome_pretty",
        "payload_pretty",
    )
    readonly_fields = fields

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: ActionRequest) -> str:
        return format_html(
            '<b style="color:{}">{}</b>',
            STATE_COLOURS.get(obj.state, "#000"),
            obj.get_state_display(),
        )

    @admin.display(description="payload (frozen at request time)")
    def payload_pretty(self, obj: ActionRequest) -> str:
        # The page says what it does in human terms above; the exact payload stays one click away.
        return format_html(
            "<details><summary>raw payload (JSON)</summary>{}</details>",
            pretty_json(payload_shown(obj.action, obj.payload)),
        )

    @admin.display(description="facts the policy saw")
    def facts_pretty(self, obj: ActionRequest) -> str:
        return readable(obj.facts)

    @admin.display(description="outcome")
    def outcome_pretty(self, obj: ActionRequest) -> str:
        return readable(_usernames(obj.outcome)) if obj.outcome else "—"

    def get_ordering(self, request: HttpRequest) -> Any:
        # Pending first (annotated in get_queryset), then newest.
        return ["_pending_first", "-created_at", "-id"]

    def get_queryset(self, request: HttpRequest) -> Any:
        # Not super(): it orders by get_ordering() before the annotation exists.
        qs = ActionRequest.objects.select_related("requested_by", "required_role", "decided_by")
        if not request.user.has_perm("compliance.view_all_actionrequests"):
            qs = qs.filter(requested_by_id=request.user.pk)
        return queue_order(qs)

    # Requests are made by write tools and decided here; never added, edited or deleted.
    def get_urls(self) -> list[Any]:
        custom = [
            path(
                "<int:object_id>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="compliance_actionrequest_decide",
            )
        ]
        return custom + super().get_urls()

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        extra_context = extra_context or {}
        obj = self.get_object(request, object_id) if object_id else None
        if obj is not None:
            extra_context["can_decide"] = (
                obj.can_decide()
                and request.user.has_perm(APPROVE_PERMISSION)
                and obj.requested_by_id != request.user.pk
            )
            extra_context["is_own_request"] = obj.requested_by_id == request.user.pk
            extra_context["decide_url"] = reverse("admin:compliance_actionrequest_decide", args=[obj.pk])
            extra_context["presentation"] = action_request_presentation(request=obj, actor=admin_actor(request))
        return super().changeform_view(request, object_id, form_url, extra_context)

    def decide_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        decision = request.POST.get("decision")
        reason = request.POST.get("reason", "")
        admin_decide(request, request_id=object_id, decision=decision, reason=reason)
        return HttpResponseRedirect(reverse("admin:compliance_actionrequest_change", args=[object_id]))


class ApprovalPolicyForm(forms.ModelForm):
    class Meta:
        model = ApprovalPolicy
        fields = [
            "action",
            "condition",
            "threshold_count",
            "threshold_amount",
            "currency",
            "channels",
            "approver_role",
            "request_ttl_hours",
            "enabled",
            "description",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        role = cleaned.get("approver_role")
        if role is not None:
            try:
                approval_policy_validate(ApprovalPolicy(approver_role=role))
            except ApplicationError as exc:
                self.add_error("approver_role", error_text(exc))
        return cleaned


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(ServiceWriteAdminMixin, admin.ModelAdmin):
    form = ApprovalPolicyForm
    list_display = [
        "action",
        "condition",
        "threshold_count",
        "threshold_amount",
        "approver_role",
        "enabled",
        "rule",
    ]
    list_filter = ["action", "enabled", "approver_role"]

    @admin.display(description="rule")
    def rule(self, obj: ApprovalPolicy) -> str:
        return obj.describe()

    def save_model(self, request: HttpRequest, obj: ApprovalPolicy, form: Any, change: bool) -> None:
        approval_policy_save(actor=admin_actor(request), policy=obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Policies are disabled, not deleted, so past requests keep their reference.
        return False
