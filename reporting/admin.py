"""Report pages in the admin: a campaign's report with a time-series chart of delivered messages,
clicks and conversions (inline SVG drawn here: no script, nothing loaded from elsewhere)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from campaigns.access import campaigns_visible
from reporting.models import CampaignReport, ReportConversion
from reporting.selectors import VIEW_REPORT, campaign_report_get, conversion_attribution_get, link_clicks_list
from smsplatform.admin_utils import admin_actor, error_text, pretty_json
from smsplatform.kernel.errors import ApplicationError

SERIES = (("delivered", "#2e7d32"), ("clicks", "#1565c0"), ("conversions", "#b26a00"))
WIDTH, HEIGHT, PAD = 720, 220, 30


def chart_svg(trend: list[dict[str, Any]]) -> str:
    """A line per series over the trend's buckets, each scaled to its own maximum."""
    if not trend:
        return ""
    n = len(trend)
    step = (WIDTH - 2 * PAD) / max(n - 1, 1)
    lines = []
    for name, colour in SERIES:
        values = [int(b.get(name, 0)) for b in trend]
        top = max(values) or 1
        points = " ".join(
            f"{PAD + i * step:.1f},{HEIGHT - PAD - (v / top) * (HEIGHT - 2 * PAD):.1f}" for i, v in enumerate(values)
        )
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
            f"<title>{name} (max {top})</title></polyline>"
        )
    legend = "".join(
        f'<text x="{PAD + i * 140}" y="16" fill="{colour}" font-size="12">{name}</text>'
        for i, (name, colour) in enumerate(SERIES)
    )
    labels = (
        f'<text x="{PAD}" y="{HEIGHT - 8}" font-size="10">{trend[0]["bucket"]}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" font-size="10" text-anchor="end">{trend[-1]["bucket"]}</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Delivered, clicks and conversions" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" style="background:#fafafa">'
        f"{legend}{''.join(lines)}{labels}</svg>"
    )


@admin.register(CampaignReport)
class CampaignReportAdmin(admin.ModelAdmin):
    list_display = ["name", "state", "dispatched_at", "report_link"]
    search_fields = ["name"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(VIEW_REPORT)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_REPORT) and request.user.has_perm("campaigns.view_campaign")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return CampaignReport.objects.filter(pk__in=campaigns_visible(admin_actor(request)).values("pk"))

    @admin.display(description="Report")
    def report_link(self, obj: CampaignReport) -> str:
        return format_html('<a href="{}">report</a>', reverse("admin:reporting_campaignreport_report", args=[obj.pk]))

    def get_urls(self) -> list[Any]:
        view = path(
            "<int:campaign_id>/report/",
            self.admin_site.admin_view(self.report_view),
            name="reporting_campaignreport_report",
        )
        return [view, *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:reporting_campaignreport_report", args=[int(object_id)]))

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
            "chart": format_html("{}", chart_svg(report.get("trend", []))) if report else "",
            "rules": pretty_json(report.get("attribution", {})) if report else "",
            "latency": pretty_json(report.get("data_latency", {})) if report else "",
            "granularity": granularity,
        }
        return TemplateResponse(request, "admin/reporting/campaign_report.html", context)


@admin.register(ReportConversion)
class ReportConversionAdmin(admin.ModelAdmin):
    list_display = ["key", "kind", "occurred_at", "rule", "campaign_id", "claimed", "amount", "refunded", "currency"]
    list_filter = ["kind", "rule", "claimed"]
    search_fields = ["key"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_REPORT) and request.user.has_perm("campaigns.view_all_campaigns")
