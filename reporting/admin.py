"""Report pages in the admin: a campaign's report with a time-series chart of delivered messages,
clicks and conversions (inline SVG drawn here: no script, nothing loaded from elsewhere)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from campaigns.access import campaigns_visible
from reporting.charts import chart_svg
from reporting.models import (
    CampaignReport,
    FlowReport,
    InboxItem,
    NotificationKind,
    PerformanceSnapshot,
    ReportConversion,
    ReviewNotification,
    SnapshotSource,
)
from reporting.notifications import PERMISSION as NOTIFY_PERMISSION
from reporting.notifications import inbox_mark_read, review_notification_send
from reporting.selectors import (
    VIEW_FLOW,
    VIEW_REPORT,
    campaign_report_get,
    conversion_attribution_get,
    flow_report_get,
    link_clicks_list,
)
from reporting.snapshots import PERMISSION as SNAPSHOT_PERMISSION
from reporting.snapshots import performance_snapshot_record
from smsplatform.admin_utils import ReadOnlyAdminMixin, admin_actor, error_text, pretty_json
from smsplatform.kernel.errors import ApplicationError


class _ReportPageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """A list of report subjects whose rows open the subject's report page (report_view) at
    <id>/report/, named admin:<report_url_name>."""

    report_url_name: str
    report_arg: str

    @admin.display(description="Report")
    def report_link(self, obj: Any) -> str:
        return format_html('<a href="{}">report</a>', reverse(f"admin:{self.report_url_name}", args=[obj.pk]))

    def get_urls(self) -> list[Any]:
        view = path(
            f"<int:{self.report_arg}>/report/",
            self.admin_site.admin_view(self.report_view),
            name=self.report_url_name,
        )
        return [view, *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        return HttpResponseRedirect(reverse(f"admin:{self.report_url_name}", args=[int(object_id)]))

    def report_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        raise NotImplementedError


@admin.register(CampaignReport)
class CampaignReportAdmin(_ReportPageAdmin):
    report_url_name, report_arg = "reporting_campaignreport_report", "campaign_id"
    list_display = ["name", "state", "dispatched_at", "report_link"]
    search_fields = ["name"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(VIEW_REPORT)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_REPORT) and request.user.has_perm("campaigns.view_campaign")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return CampaignReport.objects.filter(pk__in=campaigns_visible(admin_actor(request)).values("pk"))

    def report_view(self, request: HttpRequest, campaign_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        actor = admin_actor(request)
        granularity = "day" if request.GET.get("granularity") == "day" else "hour"
        error = None
        report: dict[str, Any] = {}
        attribution: dict[str, Any] = {}
        clicks: dict[str, Any] = {}
        try:
            report = campaign_report_get(
                actor=actor,
                campaign_id=campaign_id,
                date_from=request.GET.get("date_from") or None,
                date_to=request.GET.get("date_to") or None,
                granularity=granularity,
            )
            attribution = conversion_attribution_get(actor=actor, campaign_id=campaign_id)
            clicks = link_clicks_list(actor=actor, campaign_id=campaign_id)
        except ApplicationError as exc:
            error = error_text(exc)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Report: {report.get('scope', {}).get('campaign_name', campaign_id)}",
            "opts": self.model._meta,
            "error": error,
            "report": report,
            "attribution": attribution,
            "clicks": clicks,
            "chart": chart_svg(report.get("trend", [])) if report else "",
            "rules": pretty_json(report.get("attribution", {})) if report else "",
            "latency": pretty_json(report.get("data_latency", {})) if report else "",
            "granularity": granularity,
        }
        return TemplateResponse(request, "admin/reporting/campaign_report.html", context)


FLOW_SERIES = (("delivered", "#2e7d32"), ("opt_outs", "#b71c1c"))


@admin.register(FlowReport)
class FlowReportAdmin(_ReportPageAdmin):
    """Automation-flow reports: needs reporting.view_campaign_report and automations.view_flow."""

    report_url_name, report_arg = "reporting_flowreport_report", "flow_id"

    list_display = ["name", "state", "purpose", "activated_at", "report_link"]
    search_fields = ["name"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(VIEW_REPORT) and request.user.has_perm(VIEW_FLOW)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_REPORT) and request.user.has_perm(VIEW_FLOW)

    def report_view(self, request: HttpRequest, flow_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        granularity = "day" if request.GET.get("granularity") == "day" else "hour"
        error = None
        report: dict[str, Any] = {}
        try:
            report = flow_report_get(
                actor=admin_actor(request),
                flow_id=flow_id,
                date_from=request.GET.get("date_from") or None,
                date_to=request.GET.get("date_to") or None,
                granularity=granularity,
            )
        except ApplicationError as exc:
            error = error_text(exc)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Flow report: {report.get('scope', {}).get('flow_name', flow_id)}",
            "opts": self.model._meta,
            "error": error,
            "report": report,
            "chart": chart_svg(report.get("trend", []), FLOW_SERIES) if report else "",
            "limits": report.get("scope", {}).get("limits", {}) if report else {},
            "latency": pretty_json(report.get("data_latency", {})) if report else "",
            "granularity": granularity,
        }
        return TemplateResponse(request, "admin/reporting/flow_report.html", context)


@admin.register(ReportConversion)
class ReportConversionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["key", "kind", "occurred_at", "rule", "campaign_id", "claimed", "amount", "refunded", "currency"]
    list_filter = ["kind", "rule", "claimed"]
    search_fields = ["key"]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_REPORT) and request.user.has_perm("campaigns.view_all_campaigns")


SERVICE_FORM = "admin/reporting/service_form.html"


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # written by the services only (the record / send pages)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _field_error(form: forms.Form, exc: ApplicationError, aliases: dict[str, str]) -> None:
    """Put a service error on the form field it names (``metrics.delivered`` -> ``delivered``)."""
    name = exc.field or ""
    last = name.split(".")[-1]
    prefix = name.split(".")[0]
    target = aliases.get(name) or (last if last in form.fields else None) or aliases.get(prefix) or prefix
    form.add_error(target if target in form.fields else None, error_text(exc))


# Snapshots ----------------------------------------------------------------------------------------


class SnapshotForm(forms.Form):
    campaign_id = forms.IntegerField(min_value=1)
    source_kind = forms.ChoiceField(choices=SnapshotSource.choices)
    source_name = forms.CharField(max_length=100, help_text="Which portal, platform or export.")
    date_from = forms.DateField(help_text="YYYY-MM-DD")
    date_to = forms.DateField(help_text="YYYY-MM-DD")
    gateway = forms.CharField(max_length=64, required=False, help_text="Gateway code; empty: all gateways.")
    # Whole numbers with no bounds here: the service refuses impossible values with its own codes.
    sent = forms.IntegerField(required=False)
    delivered = forms.IntegerField(required=False)
    failed = forms.IntegerField(required=False)
    clicks = forms.IntegerField(required=False)
    unique_clicks = forms.IntegerField(required=False)
    opt_outs = forms.IntegerField(required=False)
    conversions = forms.IntegerField(required=False)
    cost = forms.CharField(required=False, max_length=40)
    revenue = forms.CharField(required=False, max_length=40)
    currency = forms.CharField(max_length=3, initial="HKD")
    attribution_model = forms.CharField(required=False, max_length=40, help_text="e.g. last_touch")
    click_window_hours = forms.IntegerField(required=False)
    delivery_window_hours = forms.IntegerField(required=False)
    gateway_performance = forms.JSONField(required=False, help_text='{"delivery_rate": 0.97}')
    evidence_file = forms.FileField(required=False, help_text="The export (its sha256 is computed).")
    evidence_url = forms.URLField(
        required=False, max_length=1000, assume_scheme="https", help_text="Or a link (never fetched) ..."
    )
    evidence_sha256 = forms.CharField(required=False, max_length=64, help_text="... with the sha256 of its file.")
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    base_version_token = forms.CharField(
        required=False, max_length=100, help_text="Only to overwrite: the current snapshot's token (goes to approval)."
    )
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Why (audited).")
    idempotency_key = forms.CharField(widget=forms.HiddenInput)

    ALIASES = {
        "subject": "campaign_id",
        "subject.campaign_id": "campaign_id",
        "evidence": "evidence_file",
        "evidence.file_base64": "evidence_file",
        "evidence.file_name": "evidence_file",
        "evidence.url": "evidence_url",
        "evidence.sha256": "evidence_sha256",
        "attribution.model": "attribution_model",
        "attribution.click_window_hours": "click_window_hours",
        "attribution.delivery_window_hours": "delivery_window_hours",
        "metrics": "sent",
    }

    def service_data(self) -> dict[str, Any]:
        c = self.cleaned_data
        evidence: dict[str, Any] = {}
        upload = c.get("evidence_file")
        if upload is not None:
            evidence = {"file_base64": base64.b64encode(upload.read()).decode(), "file_name": upload.name}
        elif c.get("evidence_url"):
            evidence = {"url": c["evidence_url"]}
        if c.get("evidence_sha256"):
            evidence["sha256"] = c["evidence_sha256"]
        attribution = {
            k: v
            for k, v in (
                ("model", c.get("attribution_model") or None),
                ("click_window_hours", c.get("click_window_hours")),
                ("delivery_window_hours", c.get("delivery_window_hours")),
            )
            if v is not None
        }
        metrics = {
            name: c.get(name)
            for name in ("sent", "delivered", "failed", "clicks", "unique_clicks", "opt_outs", "conversions")
            if c.get(name) is not None
        }
        metrics.update({name: c[name] for name in ("cost", "revenue") if c.get(name)})
        return {
            "subject": {"campaign_id": c["campaign_id"]},
            "source_kind": c["source_kind"],
            "source_name": c["source_name"],
            "date_from": c["date_from"].isoformat(),
            "date_to": c["date_to"].isoformat(),
            "gateway": c.get("gateway") or "",
            "attribution": attribution,
            "metrics": metrics,
            "currency": c.get("currency") or "HKD",
            "gateway_performance": c.get("gateway_performance") or {},
            "evidence": evidence,
            "note": c.get("note") or "",
            "base_version_token": c.get("base_version_token") or None,
        }


@admin.register(PerformanceSnapshot)
class PerformanceSnapshotAdmin(_ReadOnly):
    change_list_template = "admin/reporting/performancesnapshot/change_list.html"
    list_display = [
        "key",
        "version",
        "is_current",
        "source_kind",
        "date_from",
        "date_to",
        "delivered",
        "cost",
        "evidence_hash_verified",
        "recorded_by",
        "recorded_at",
    ]
    list_filter = ["is_current", "source_kind", "subject_kind"]
    search_fields = ["key", "source_name"]
    readonly_fields = [f.name for f in PerformanceSnapshot._meta.fields]

    def get_urls(self) -> list[Any]:
        record = path(
            "record/", self.admin_site.admin_view(self.record_view), name="reporting_performancesnapshot_record"
        )
        return [record, *super().get_urls()]

    def record_view(self, request: HttpRequest) -> HttpResponse:
        changelist = reverse("admin:reporting_performancesnapshot_changelist")
        if not request.user.has_perm(SNAPSHOT_PERMISSION):
            messages.error(request, "You lack the permission to record performance snapshots.")
            return HttpResponseRedirect(reverse("admin:index"))
        form = SnapshotForm(
            request.POST or None,
            request.FILES or None,
            initial={"idempotency_key": f"admin-snapshot-{uuid.uuid4()}", "currency": "HKD"},
        )
        if request.method == "POST" and form.is_valid():
            try:
                result = performance_snapshot_record(
                    actor=admin_actor(request),
                    data=form.service_data(),
                    idempotency_key=form.cleaned_data["idempotency_key"],
                    reason=form.cleaned_data.get("reason") or "",
                )
            except ApplicationError as exc:
                _field_error(form, exc, SnapshotForm.ALIASES)
            else:
                if result["status"] == "pending_approval":
                    messages.warning(
                        request,
                        f"The overwrite is held for approval as request #{result['action_request_id']} "
                        f"(role: {result['required_role']}); the current version stays until it is approved.",
                    )
                else:
                    snap = result["result"]["snapshot"]
                    messages.success(request, f"Recorded {snap['key']} (version {snap['version']}).")
                return HttpResponseRedirect(changelist)
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "opts": self.model._meta,
            "title": "Record a performance snapshot",
            "intro": "Figures from a person or an outside source, kept beside the computed ones (never mixed in). "
            "Evidence is required; recording an existing key again is an overwrite and goes through approval.",
            "submit_label": "Record",
        }
        return TemplateResponse(request, SERVICE_FORM, context)


# Notifications ------------------------------------------------------------------------------------


class NotificationForm(forms.Form):
    kind = forms.ChoiceField(choices=NotificationKind.choices)
    campaign_id = forms.IntegerField(min_value=1, required=False)
    action_request_id = forms.IntegerField(min_value=1, required=False, help_text="Or the action request.")
    title = forms.CharField(max_length=200)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), help_text="A summary: no phone numbers, no lists.")
    recipients = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Usernames or e-mail addresses, one a line; empty: everyone responsible.",
    )
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Why (audited).")
    idempotency_key = forms.CharField(widget=forms.HiddenInput)

    ALIASES = {"subject": "campaign_id", "subject.campaign_id": "campaign_id", "recipients": "recipients"}

    def service_data(self) -> dict[str, Any]:
        c = self.cleaned_data
        subject = {k: c[k] for k in ("campaign_id", "action_request_id") if c.get(k) is not None}
        return {
            "kind": c["kind"],
            "subject": subject,
            "title": c["title"],
            "body": c["body"],
            "recipients": [line.strip() for line in (c.get("recipients") or "").splitlines() if line.strip()],
            "idempotency_key": c["idempotency_key"],
            "reason": c.get("reason") or "",
        }


@admin.register(ReviewNotification)
class ReviewNotificationAdmin(_ReadOnly):
    change_list_template = "admin/reporting/reviewnotification/change_list.html"
    list_display = ["created_at", "kind", "origin", "title", "subject_kind", "campaign", "sent_by", "outbox"]
    list_filter = ["kind", "origin"]
    readonly_fields = [f.name for f in ReviewNotification._meta.fields]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Senders see what they sent (the queryset below); the view permission sees all.
        return bool(super().has_view_permission(request, obj) or request.user.has_perm(NOTIFY_PERMISSION))

    def get_queryset(self, request: HttpRequest) -> QuerySet[ReviewNotification]:
        qs = super().get_queryset(request).select_related("campaign", "sent_by", "outbox")
        if request.user.has_perm("reporting.view_reviewnotification"):
            return qs
        return qs.filter(sent_by_id=request.user.pk)

    def get_urls(self) -> list[Any]:
        send = path("send/", self.admin_site.admin_view(self.send_view), name="reporting_reviewnotification_send")
        return [send, *super().get_urls()]

    def send_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm(NOTIFY_PERMISSION):
            messages.error(request, "You lack the permission to send review notifications.")
            return HttpResponseRedirect(reverse("admin:index"))
        form = NotificationForm(request.POST or None, initial={"idempotency_key": f"admin-notify-{uuid.uuid4()}"})
        if request.method == "POST" and form.is_valid():
            try:
                result = review_notification_send(actor=admin_actor(request), **form.service_data())
            except ApplicationError as exc:
                _field_error(form, exc, NotificationForm.ALIASES)
            else:
                if result["status"] == "pending_approval":
                    messages.warning(
                        request,
                        f"Held for approval as request #{result['action_request_id']} "
                        f"(role: {result['required_role']}): external or bulk notifications need one.",
                    )
                else:
                    sent = result["result"]
                    messages.success(request, f"Notified {', '.join(sent['recipients']) or 'nobody'}.")
                return HttpResponseRedirect(reverse("admin:reporting_reviewnotification_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "opts": self.model._meta,
            "title": "Send a review notification",
            "intro": "Only the people responsible for the subject (its owner, the approvers of its requests, the "
            "role holders answering for the kind) may be notified; outside addresses and large lists need approval.",
            "submit_label": "Send",
        }
        return TemplateResponse(request, SERVICE_FORM, context)


# My notifications ---------------------------------------------------------------------------------


@admin.register(InboxItem)
class InboxItemAdmin(_ReadOnly):
    list_display = ["created_at", "kind", "title", "subject", "unread"]
    list_filter = [("read_at", admin.EmptyFieldListFilter)]
    actions = ["mark_read"]
    fields = ("created_at", "kind", "title", "body", "subject", "read_at")
    readonly_fields = fields

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Every active staff user has an inbox; they only ever see their own items (get_queryset).
        user = request.user
        return bool(user.is_active and user.is_staff and (obj is None or obj.user_id == user.pk))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def get_queryset(self, request: HttpRequest) -> QuerySet[InboxItem]:
        return super().get_queryset(request).select_related("notification").filter(user_id=request.user.pk)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # The mark-read action needs no model permission: it touches the user's own items only.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Mark as read")
    def mark_read(self, request: HttpRequest, queryset: QuerySet[InboxItem]) -> None:
        count = inbox_mark_read(actor=admin_actor(request), item_ids=list(queryset.values_list("pk", flat=True)))
        messages.success(request, f"Marked {count} notification(s) read.")

    @admin.display(description="kind")
    def kind(self, obj: InboxItem) -> str:
        return obj.notification.get_kind_display()

    @admin.display(description="title")
    def title(self, obj: InboxItem) -> str:
        return obj.notification.title

    @admin.display(description="body")
    def body(self, obj: InboxItem) -> str:
        return obj.notification.body

    @admin.display(description="about")
    def subject(self, obj: InboxItem) -> str:
        n = obj.notification
        if n.campaign_id:
            return f"campaign #{n.campaign_id}"
        if n.subject_request_id:
            return f"action request #{n.subject_request_id}"
        return f"flow #{n.flow_id}"

    @admin.display(description="unread", boolean=True)
    def unread(self, obj: InboxItem) -> bool:
        return obj.read_at is None
