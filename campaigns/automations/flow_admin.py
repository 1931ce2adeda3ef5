"""Admin for flows: the list with state and numbers, a flow's rules, per-step funnel and dry run,
the governed state changes as actions, and enrolments (by flow, state or contact). Every change
goes through the services (automations.update_state); the admin edits nothing directly."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html

from campaigns.automations.flow_models import Enrolment, Flow, FlowVersion
from campaigns.automations.flow_services import CHANGE, VIEW, flow_update_state
from campaigns.automations.selectors import flow_dry_run, flow_funnel, flow_summary
from campaigns.automations.spec import flow_token
from smsplatform.admin_utils import ReadOnlyAdminMixin, admin_actor, error_text, readable
from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.phones import phone_mask


class FlowVersionInline(admin.TabularInline):
    model = FlowVersion
    extra = 0
    can_delete = False
    fields = ("version", "state", "changed_fields", "reason", "created_by", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _operation(operation: str) -> Any:
    def action(modeladmin: FlowAdmin, request: HttpRequest, queryset: QuerySet[Flow]) -> None:
        for flow in queryset.order_by("pk"):
            try:
                answer = flow_update_state(
                    actor=admin_actor(request),
                    flow_id=flow.pk,
                    operation=operation,
                    base_version_token=flow_token(flow),
                    confirm=True,
                    idempotency_key=f"admin-{uuid.uuid4()}",
                    reason=f"admin action: {operation}",
                )
            except ApplicationError as exc:
                modeladmin.message_user(request, f"{flow.name}: [{exc.code}] {error_text(exc)}", messages.ERROR)
                continue
            if answer["status"] == "pending_approval":
                modeladmin.message_user(
                    request,
                    f"{flow.name}: held for approval (request #{answer['action_request_id']}).",
                    messages.WARNING,
                )
            else:
                modeladmin.message_user(request, f"{flow.name}: {operation} done.", messages.SUCCESS)

    action.__name__ = f"flow_{operation}"
    action.short_description = f"{operation.capitalize()} selected flows (governed)"  # type: ignore[attr-defined]
    action.allowed_permissions = ("flow_change",)  # type: ignore[attr-defined]
    return action


@admin.register(Flow)
class FlowAdmin(admin.ModelAdmin):
    list_display = ("name", "state", "purpose", "version", "trigger", "template_version", "gateway", "updated_at")
    list_filter = ("state", "purpose")
    search_fields = ("name",)
    inlines = [FlowVersionInline]
    actions = [_operation("activate"), _operation("pause"), _operation("archive")]
    readonly_fields = ("rules_and_numbers", "funnel", "dry_run_link")
    fields = readonly_fields

    @admin.display(description="Trigger")
    def trigger(self, obj: Flow) -> str:
        offset = f" {obj.trigger_offset_minutes:+d} min from {obj.trigger_anchor}" if obj.is_date_trigger else ""
        return f"{', '.join(obj.trigger_event_types)}{offset}"

    @admin.display(description="Rules and numbers (7 and 30 days)")
    def rules_and_numbers(self, obj: Flow) -> Any:
        return readable(flow_summary(obj))

    @admin.display(description="Funnel per step")
    def funnel(self, obj: Flow) -> Any:
        return readable(flow_funnel(obj))

    @admin.display(description="Dry run")
    def dry_run_link(self, obj: Flow) -> Any:
        url = reverse("admin:automations_flow_dry_run", args=[obj.pk])
        return format_html('<a href="{}?days=7">Who would enter from the last 7 days</a> (add ?days=N)', url)

    def has_flow_change_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(CHANGE))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(VIEW))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # drafts are created through the API (validated by the service)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # changes go through automations.update_state (the actions)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        own = [
            path(
                "<int:flow_id>/dry-run/",
                self.admin_site.admin_view(self.dry_run_view),
                name="automations_flow_dry_run",
            )
        ]
        return own + super().get_urls()

    def dry_run_view(self, request: HttpRequest, flow_id: int) -> HttpResponse:
        if not request.user.has_perm(VIEW):
            return HttpResponse("Forbidden", status=403)
        flow = Flow.objects.filter(pk=flow_id).first()
        if flow is None:
            return HttpResponse("No such flow", status=404)
        try:
            days = int(request.GET.get("days", "7"))
            result: Any = flow_dry_run(flow=flow, days=days)
        except ValueError:
            return HttpResponse("days must be a whole number", status=400)
        except ApplicationError as exc:
            return HttpResponse(f"[{exc.code}] {error_text(exc)}", status=400)
        return HttpResponse(format_html("<h1>Dry run of {}</h1>{}", flow.name, readable(result)))


@admin.register(Enrolment)
class EnrolmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "flow", "contact_id", "masked_phone", "state", "step_index", "due_at", "sent", "reason")
    list_filter = ("state", "flow")
    search_fields = ("=contact__id", "=reference")
    fields = (
        "flow",
        "flow_version",
        "event",
        "contact",
        "masked_phone",
        "reference",
        "trigger_date",
        "state",
        "step_index",
        "due_at",
        "sent",
        "reason",
        "detail",
        "entered_at",
        "finished_at",
    )
    readonly_fields = fields
    raw_id_fields = ("event", "contact")

    @admin.display(description="Phone")
    def masked_phone(self, obj: Enrolment) -> str:
        return phone_mask(obj.phone)
