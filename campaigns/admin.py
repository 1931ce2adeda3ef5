"""Campaign admin: the approvers' review page and the marketing staff's forms.

Campaigns and batches are read-only here. Every write (a draft, a schedule or send request, a
cancellation, an approval or rejection) calls the same service as MCP and REST, with the admin
actor, so the same rules, approval policies, idempotency keys and audit rows apply.
"""

from __future__ import annotations

import math
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.utils import flatten_fieldsets, unquote
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _

from campaigns.access import VIEW, campaigns_visible
from campaigns.models import PAST_PRE_SEND_STATES, Campaign, CampaignState, SendBatch
from campaigns.progress import campaign_progress, campaigns_progress, send_batches_progress
from campaigns.selectors import (
    VIEW_BATCHES,
    campaign_action_requests,
    campaign_get,
    cost_preview,
    send_batches_list,
)
from campaigns.services import (
    CANCELLABLE,
    CONFIRM,
    SCHEDULE,
    SEND,
    campaign_cancel_schedule,
    campaign_create_draft,
    campaign_schedule,
    campaign_send_approved,
)
from campaigns.services.common import campaign_review_path
from campaigns.spec import campaign_token
from compliance.admin import admin_decide
from compliance.models import ActionType, RequestState
from compliance.services import APPROVE_PERMISSION
from contacts.models import Segment
from gateways.models import Gateway
from gateways.quotas import account_instance
from smsplatform.admin_utils import (
    ReadOnlyAdminMixin,
    ServiceWriteAdminMixin,
    admin_actor,
    amounts_text,
    error_text,
    pretty_json,
    readable,
)
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.errors import ApplicationError
from templates.models import Language, ShortLink, TemplateVersion

# States from which a schedule or a send may be requested (the services re-check).
REQUESTABLE = (CampaignState.DRAFT, CampaignState.PENDING_APPROVAL, CampaignState.APPROVED, CampaignState.SCHEDULED)

STATE_COLOURS: dict[str, str] = {
    CampaignState.DRAFT: "#555",
    CampaignState.PENDING_APPROVAL: "#b26a00",
    CampaignState.APPROVED: "#1b7f3b",
    CampaignState.SCHEDULED: "#1565c0",
    CampaignState.SENDING: "#1565c0",
    CampaignState.PAUSED: "#b26a00",
    CampaignState.COMPLETED: "#1b7f3b",
    CampaignState.CANCELLED: "#666",
    CampaignState.FAILED: "#a61b1b",
}

# The four bands of the progress bar, each the message states it counts.
PROGRESS_BANDS = (
    ("queued", ("queued", "submitting"), "#9e9e9e"),
    ("submitted", ("submitted", "unknown"), "#1e88e5"),
    ("delivered", ("delivered",), "#2e7d32"),
    ("failed", ("failed", "expired"), "#c62828"),
)


def progress_bar(counts: dict[str, int] | None) -> str:
    """A small bar: queued / submitted (incl. unknown) / delivered / failed (incl. expired)."""
    if not counts:
        return "—"
    bands = [(label, sum(counts.get(s, 0) for s in states), colour) for label, states, colour in PROGRESS_BANDS]
    total = sum(n for _, n, _ in bands)
    if not total:
        return "—"
    bar = format_html_join(
        "",
        '<span title="{}: {}" style="display:inline-block;height:10px;width:{}%;background:{}"></span>',
        ((label, n, f"{100 * n / total:.2f}", colour) for label, n, colour in bands if n),
    )
    legend = " · ".join(f"{n} {label}" for label, n, _ in bands)
    return format_html(
        '<div style="display:flex;width:180px;background:#eee;border-radius:2px;overflow:hidden">{}</div>'
        "<small>{}</small>",
        bar,
        legend,
    )


def _state_badge(state: str, label: str) -> str:
    return format_html('<b style="color:{}">{}</b>', STATE_COLOURS.get(state, "#000"), label)


def _field_for(exc: ApplicationError, form: forms.BaseForm, aliases: dict[str, str]) -> str | None:
    name = (exc.field or "").split(".")[0]
    name = aliases.get(name, name)
    return name if name in form.fields else None


# --- the marketing staff's draft form ----------------------------------------------------------------------


class VariablesField(forms.JSONField):
    def prepare_value(self, value: Any) -> Any:
        return value if isinstance(value, str) else super().prepare_value(value or {})


class CampaignDraftForm(forms.ModelForm):
    """Add a campaign: the form parses; the admin view calls campaign_create_draft (every rule
    checked, audited, maybe held) and puts a refused rule back on its field."""

    name = forms.CharField(max_length=100)
    segment = forms.ModelChoiceField(queryset=Segment.objects.order_by("-id"), help_text="From segments.create.")
    template_version = forms.ModelChoiceField(
        queryset=TemplateVersion.objects.order_by("-id"),
        required=False,
        help_text="Pin a template version, or write the text below.",
    )
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 90}),
        required=False,
        strip=False,
        help_text="Free copy: the brand, and the unsubscribe wording in Chinese and English; {{link}} places the link.",
    )
    brand = forms.CharField(max_length=60, required=False, help_text="The brand named in the free copy.")
    max_segments = forms.IntegerField(
        required=False, help_text="Most parts the free copy may take (1 to 10; empty: 3). A template sets its own."
    )
    language = forms.ChoiceField(choices=Language.choices, initial=Language.BILINGUAL)
    variables = VariablesField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 90}),
        help_text='Values for the template\'s fields, e.g. {"offer": "20% off"}.',
    )
    short_link = forms.ModelChoiceField(
        queryset=ShortLink.objects.filter(campaign_id__isnull=True).order_by("-id"),
        required=False,
        help_text="From short_links.create; a link serves one campaign, so only unattached links are listed.",
    )
    sender_id = forms.CharField(max_length=16, help_text="A registered sender ID, e.g. #SHOPHK.")
    gateway = forms.ModelChoiceField(
        queryset=Gateway.objects.order_by("priority", "code"),
        required=False,
        to_field_name="code",
        help_text="Empty: the preferred enabled gateway per country.",
    )
    tracking = forms.BooleanField(required=False, initial=True)
    send_goal = forms.CharField(max_length=300, required=False)
    budget = forms.DecimalField(
        max_digits=14, decimal_places=2, required=False, help_text="Maximum cost; a send above it is refused."
    )
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Why (audited).")
    idempotency_key = forms.CharField(widget=forms.HiddenInput)

    ALIASES = {
        "segment_id": "segment",
        "template_version_id": "template_version",
        "short_link_id": "short_link",
    }

    class Meta:
        model = Campaign
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            # One key per rendered form: a double submit replays the first result.
            self.initial["idempotency_key"] = f"admin-campaign-{uuid.uuid4()}"

    def _post_clean(self) -> None:
        # No model validation or instance building: the service validates, called by the view.
        return None

    def draft_data(self) -> dict[str, Any]:
        """The service's input, from the cleaned form (call after is_valid())."""
        cleaned = self.cleaned_data
        template_version, short_link, gateway = (
            cleaned.get("template_version"),
            cleaned.get("short_link"),
            cleaned.get("gateway"),
        )
        return {
            "name": cleaned["name"],
            "segment_id": cleaned["segment"].pk,
            "template_version_id": template_version.pk if template_version else None,
            "text": cleaned.get("text") or None,
            "brand": cleaned.get("brand", ""),
            "max_segments": cleaned.get("max_segments"),
            "language": cleaned["language"],
            "variables": cleaned.get("variables") or {},
            "short_link_id": short_link.pk if short_link else None,
            "sender_id": cleaned["sender_id"],
            "gateway": gateway.code if gateway else None,
            "tracking": bool(cleaned.get("tracking")),
            "send_goal": cleaned.get("send_goal", ""),
            "budget": str(cleaned["budget"]) if cleaned.get("budget") is not None else None,
        }


# --- the request forms on the review page ---------------------------------------------------------------


class _RequestForm(forms.Form):
    base_version_token = forms.CharField(widget=forms.HiddenInput, required=False)
    idempotency_key = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, campaign: Campaign | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if campaign is not None and not self.is_bound:
            # The token of the version on screen: a request never covers a later change.
            self.initial["base_version_token"] = campaign_token(campaign)
            self.initial["idempotency_key"] = f"admin-{type(self).__name__.lower()}-{uuid.uuid4()}"


class ScheduleRequestForm(_RequestForm):
    send_at = forms.CharField(
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}), help_text="In the campaign's time zone."
    )
    time_zone = forms.CharField(max_length=50, required=False)
    batch_size = forms.IntegerField(min_value=1, max_value=1_000_000, required=False)
    batch_interval_seconds = forms.IntegerField(min_value=0, max_value=86_400, required=False)
    confirm = forms.BooleanField(required=False, help_text="Counts only for holders of campaigns.confirm_campaign.")
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    def __init__(self, *args: Any, campaign: Campaign | None = None, **kwargs: Any) -> None:
        super().__init__(*args, campaign=campaign, **kwargs)
        if campaign is not None and not self.is_bound:
            self.initial.update(
                time_zone=campaign.time_zone,
                batch_size=campaign.batch_size,
                batch_interval_seconds=campaign.batch_interval_seconds,
            )
            if campaign.send_at:
                local = campaign.send_at.astimezone(ZoneInfo(campaign.time_zone))
                self.initial["send_at"] = local.strftime("%Y-%m-%dT%H:%M")


class SendRequestForm(_RequestForm):
    confirm = forms.BooleanField(required=False, help_text="Counts only for holders of campaigns.confirm_campaign.")
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))


class CancelRequestForm(_RequestForm):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), help_text="Recorded and sent.")


def _outcome_message(request: HttpRequest, what: str, result: dict[str, Any]) -> None:
    if result.get("status") == "pending_approval":
        messages.warning(
            request,
            f"{what}: held for approval as request #{result['action_request_id']} "
            f"(role: {result.get('required_role')}). Nothing happens until another approver decides it.",
        )
        return
    outcome = result.get("result") or {}
    detail = outcome.get("note") or outcome.get("outcome") or f"campaign is now {outcome.get('state')}"
    messages.success(request, f"{what}: done ({detail}).")


# --- campaigns ---------------------------------------------------------------------------------------------


@admin.register(Campaign)
class CampaignAdmin(ServiceWriteAdminMixin, admin.ModelAdmin):
    form = CampaignDraftForm
    change_form_template = "admin/campaigns/campaign/change_form.html"
    list_display = [
        "name",
        "state_badge",
        "progress",
        "segment",
        "sender_id",
        "gateway",
        "send_at",
        "owner",
        "updated_at",
    ]
    list_filter = ["state", "gateway", "tracking", "created_at"]
    search_fields = ["name", "sender_id", "segment__name", "owner__username", "send_goal"]
    list_select_related = ["segment", "gateway", "owner"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "name",
        "state_badge",
        "owner",
        "created_by",
        "version",
        "approval",
        "created_at",
        "updated_at",
    ]

    # --- the list ---

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: Campaign) -> str:
        return _state_badge(obj.state, obj.get_state_display())

    @admin.display(description="progress (queued / submitted / delivered / failed)")
    def progress(self, obj: Campaign) -> str:
        return progress_bar(getattr(obj, "_progress", None))

    @admin.display(description="approval")
    def approval(self, obj: Campaign) -> str:
        if obj.approved_version is None:
            return "not approved"
        current = "this version" if obj.approved_version == obj.version else "an earlier version"
        by = obj.approved_by.get_username() if obj.approved_by else "a confirmer"
        return f"version {obj.approved_version} ({current}) by {by} at {obj.approved_at:%Y-%m-%d %H:%M %Z}"

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        # One grouped query for the page's campaigns, not one per row and state. Iterating the
        # page's queryset fills its cache, so the rows rendered are the ones annotated here.
        rows = list(changelist.result_list)
        progress = campaigns_progress([c.pk for c in rows])
        for campaign in rows:
            campaign._progress = progress.get(campaign.pk)
        return changelist

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        # Only what the selectors would show this user (own campaigns, or all with view_all).
        if not request.user.has_perm(VIEW):
            return Campaign.objects.none()
        return campaigns_visible(admin_actor(request)).select_related(
            "segment", "gateway", "owner", "created_by", "approved_by", "short_link", "template_version"
        )

    # --- permissions: read-only pages; writes go through the services ---

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(VIEW))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # campaigns.update is the only editor (MCP, REST)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # campaigns are cancelled, never deleted

    # --- the add form ---

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is not None:
            kwargs["form"] = forms.ModelForm  # the review page has no editable fields
            return super().get_form(request, obj, change, **kwargs)
        return super().get_form(request, obj, change, **kwargs)

    def _changeform_view(
        self, request: HttpRequest, object_id: str | None, form_url: str, extra_context: dict[str, Any] | None
    ) -> Any:
        if object_id is None and request.method == "POST" and self.has_add_permission(request):
            return self._draft_add(request, form_url, extra_context)
        return super()._changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]

    def _draft_add(self, request: HttpRequest, form_url: str, extra_context: dict[str, Any] | None) -> HttpResponse:
        """The add form's view: the form parses, this calls campaign_create_draft once and either
        reports what happened or shows the form again with the refused rule on its field."""
        fieldsets = self.get_fieldsets(request)
        form = self.get_form(request, None, change=False, fields=flatten_fieldsets(fieldsets))(
            request.POST, request.FILES
        )
        if form.is_valid():
            try:
                result = campaign_create_draft(
                    actor=admin_actor(request),
                    data=form.draft_data(),
                    idempotency_key=form.cleaned_data["idempotency_key"],
                    reason=form.cleaned_data.get("reason", ""),
                )
            except ApplicationError as exc:
                form.add_error(_field_for(exc, form, form.ALIASES), error_text(exc))
            else:
                return self._draft_response(request, result)
        admin_form = helpers.AdminForm(form, list(fieldsets), {}, self.get_readonly_fields(request), model_admin=self)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Add %s") % self.opts.verbose_name,
            "subtitle": None,
            "adminform": admin_form,
            "object_id": None,
            "original": None,
            "is_popup": IS_POPUP_VAR in request.POST or IS_POPUP_VAR in request.GET,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            **(extra_context or {}),
        }
        return self.render_change_form(request, context, add=True, change=False, form_url=form_url)

    def _draft_response(self, request: HttpRequest, result: dict[str, Any]) -> HttpResponse:
        if result.get("status") == "pending_approval":
            messages.warning(
                request,
                f"The draft is held for approval as request #{result['action_request_id']} "
                f"(role: {result.get('required_role')}); it is created when approved.",
            )
            return HttpResponseRedirect(reverse("admin:campaigns_campaign_changelist"))
        created = result.get("result", {})
        messages.success(
            request,
            f"Draft #{created.get('campaign_id')} created: {created.get('recipients')} recipients, "
            f"{created.get('segments_per_message')} segments each, "
            f"estimated {amounts_text(created.get('estimated_cost'))}.",
        )
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[created.get("campaign_id")]))

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None:
            return [(None, {"fields": self.readonly_fields})]
        return [
            (
                "Audience and message",
                {"fields": ["name", "segment", "template_version", "text", "brand", "max_segments", "language"]},
            ),
            ("Values and link", {"fields": ["variables", "short_link", "tracking"]}),
            ("Sending", {"fields": ["sender_id", "gateway", "budget", "send_goal"]}),
            (None, {"fields": ["reason", "idempotency_key"]}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # Never the ORM: the add view calls campaign_create_draft (_draft_add), and the review
        # page has nothing to save.
        return None

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        return None

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None  # the platform audit log has the record (campaign.create)

    # --- the review page ---

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        extra_context = dict(extra_context or {})
        if object_id is not None:
            campaign = self.get_object(request, unquote(object_id))
            if campaign is not None and self.has_view_permission(request, campaign):
                extra_context.update(self._review_context(request, campaign))
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _review_context(self, request: HttpRequest, campaign: Campaign) -> dict[str, Any]:
        actor = admin_actor(request)
        user = request.user
        detail = campaign_get(actor=actor, campaign_id=campaign.pk)
        preview: dict[str, Any] | None = None
        live_error = None
        # The live pre-send check is for campaigns not yet sending; once a send started (or the campaign
        # was cancelled) its page shows the send's progress, not a "failed" check.
        live_check = campaign.state not in PAST_PRE_SEND_STATES
        if live_check:
            try:
                # Live: the counts, cost and rules as they stand now, not as they were at drafting.
                preview = cost_preview(actor=actor, campaign_id=campaign.pk)
            except ApplicationError as exc:
                live_error = error_text(exc)
        parts = list(preview["message"]["parts"]) if preview else []
        sendable = preview["sendable"] if preview else int(campaign.estimate.get("recipients") or 0)
        pending = list(campaign_action_requests(campaign_id=campaign.pk))
        may_approve = user.has_perm(APPROVE_PERMISSION)
        requests = [
            {
                "request": r,
                "can_decide": may_approve and r.requested_by_id != user.pk,
                "is_own": r.requested_by_id == user.pk,
                "facts": readable(r.facts),
            }
            for r in pending
        ]
        history = list(
            campaign_action_requests(campaign_id=campaign.pk, pending_only=False).exclude(state=RequestState.PENDING)[
                :10
            ]
        )
        send_at_local = campaign.send_at.astimezone(ZoneInfo(campaign.time_zone)) if campaign.send_at else None
        requestable = campaign.state in REQUESTABLE
        has_batches = SendBatch.objects.filter(campaign=campaign).exists()
        return {
            "review": True,
            "detail": detail,
            "preview": preview,
            "live_error": live_error,
            "live_check": live_check,
            "parts": [{"number": i, "text": text, "characters": len(text)} for i, text in enumerate(parts, 1)],
            "message_changed": bool(parts) and "".join(parts) != campaign.body_preview,
            "exclusions": [(reason, preview["exclusions"].get(reason, 0)) for reason in preview["exclusion_order"]]
            if preview
            else sorted((campaign.estimate.get("exclusions") or {}).items()),
            "send_at_local": send_at_local,
            "batch_count": math.ceil(sendable / campaign.batch_size) if campaign.batch_size and sendable else 0,
            "progress_bar": progress_bar(campaign_progress(campaign.pk)) if has_batches else None,
            "batches_url": (
                reverse("admin:campaigns_sendbatch_changelist") + f"?campaign__id__exact={campaign.pk}"
                if has_batches
                else None
            ),
            "pending_requests": requests,
            "request_history": history,
            "decide_url": reverse("admin:campaigns_campaign_decide", args=[campaign.pk]),
            "can_confirm": user.has_perm(CONFIRM),
            # Which way a schedule or send goes for this user (confirm, held for approval, or none).
            "schedule_path": campaign_review_path(actor, ActionType.CAMPAIGN_SCHEDULE),
            "send_path": campaign_review_path(actor, ActionType.CAMPAIGN_SEND),
            "schedule_form": ScheduleRequestForm(campaign=campaign)
            if requestable and user.has_perm(SCHEDULE)
            else None,
            "send_form": SendRequestForm(campaign=campaign) if requestable and user.has_perm(SEND) else None,
            "cancel_form": CancelRequestForm(campaign=campaign)
            if campaign.state in CANCELLABLE and user.has_perm(SCHEDULE)
            else None,
            "schedule_url": reverse("admin:campaigns_campaign_schedule", args=[campaign.pk]),
            "send_url": reverse("admin:campaigns_campaign_send", args=[campaign.pk]),
            "cancel_url": reverse("admin:campaigns_campaign_cancel", args=[campaign.pk]),
            "stopping": campaign.state == CampaignState.SENDING,
            # Budget and ceiling are in the configuration's cost currency; quota amounts in the account's.
            "cost_currency": platform_config_data()["cost"]["currency"],
            "balance_currency": account_instance().currency,
        }

    # --- the buttons: each a POST that calls one service ---

    def get_urls(self) -> list[Any]:
        def view(name: str, func: Any) -> Any:
            return path(
                f"<path:object_id>/{name}/", self.admin_site.admin_view(func), name=f"campaigns_campaign_{name}"
            )

        return [
            view("decide", self.decide_view),
            view("schedule", self.schedule_view),
            view("send", self.send_view),
            view("cancel", self.cancel_view),
            *super().get_urls(),
        ]

    def _campaign_for_post(self, request: HttpRequest, object_id: str) -> Campaign:
        campaign = self.get_object(request, unquote(object_id))
        if campaign is None or not self.has_view_permission(request, campaign):
            raise Http404("No such campaign.")
        return campaign

    def _back(self, campaign: Campaign) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))

    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        campaign = self._campaign_for_post(request, object_id)
        decision = request.POST.get("decision")
        reason = request.POST.get("reason", "")
        try:
            request_id = int(request.POST.get("action_request_id", ""))
        except ValueError:
            messages.error(request, "Choose a request to decide.")
            return self._back(campaign)
        if not campaign_action_requests(campaign_id=campaign.pk, pending_only=False).filter(pk=request_id).exists():
            messages.error(request, f"Request #{request_id} is not about this campaign.")
            return self._back(campaign)
        admin_decide(request, request_id=request_id, decision=decision, reason=reason)
        return self._back(campaign)

    def _run_request(
        self, request: HttpRequest, object_id: str, form_class: type[_RequestForm], what: str, call: Any
    ) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        campaign = self._campaign_for_post(request, object_id)
        form = form_class(request.POST)
        if not form.is_valid():
            field, problems = next(iter(form.errors.items()))
            messages.error(request, f"{what}: {field}: {' '.join(str(p) for p in problems)}")
            return self._back(campaign)
        try:
            _outcome_message(request, what, call(admin_actor(request), campaign, dict(form.cleaned_data)))
        except ApplicationError as exc:
            messages.error(request, f"{what} refused: {error_text(exc)}")
        return self._back(campaign)

    def schedule_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def call(actor: Any, campaign: Campaign, data: dict[str, Any]) -> dict[str, Any]:
            schedule = {"send_at": data["send_at"]}
            for name in ("time_zone", "batch_size", "batch_interval_seconds"):
                if data.get(name) not in (None, ""):
                    schedule[name] = data[name]
            return campaign_schedule(
                actor=actor,
                campaign_id=campaign.pk,
                base_version_token=data["base_version_token"] or None,
                schedule=schedule,
                confirm=bool(data.get("confirm")),
                idempotency_key=data["idempotency_key"],
                reason=data.get("reason", ""),
            )

        return self._run_request(request, object_id, ScheduleRequestForm, "Schedule request", call)

    def send_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def call(actor: Any, campaign: Campaign, data: dict[str, Any]) -> dict[str, Any]:
            return campaign_send_approved(
                actor=actor,
                campaign_id=campaign.pk,
                base_version_token=data["base_version_token"] or None,
                confirm=bool(data.get("confirm")),
                idempotency_key=data["idempotency_key"],
                reason=data.get("reason", ""),
            )

        return self._run_request(request, object_id, SendRequestForm, "Send request", call)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def call(actor: Any, campaign: Campaign, data: dict[str, Any]) -> dict[str, Any]:
            return campaign_cancel_schedule(
                actor=actor, campaign_id=campaign.pk, reason=data["reason"], idempotency_key=data["idempotency_key"]
            )

        return self._run_request(request, object_id, CancelRequestForm, "Cancel / stop", call)


# --- send batches ------------------------------------------------------------------------------------------


@admin.register(SendBatch)
class SendBatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "batch",
        "campaign_link",
        "kind",
        "state",
        "size",
        "queued",
        "submitted",
        "delivered",
        "failed",
        "progress",
        "not_before",
        "started_at",
        "completed_at",
    ]
    list_filter = ["state", "kind"]
    search_fields = ["campaign__name"]
    list_select_related = ["campaign"]
    fields = (
        "campaign_link",
        "number",
        "kind",
        "resend_of",
        "state",
        "size",
        "not_before",
        "created_at",
        "started_at",
        "completed_at",
        "stopped_at",
        "stop_reason",
        "progress",
        "delivery_summary",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[SendBatch]:
        if not (request.user.has_perm(VIEW) and request.user.has_perm(VIEW_BATCHES)):
            return SendBatch.objects.none()
        visible = campaigns_visible(admin_actor(request))
        return SendBatch.objects.filter(campaign__in=visible).select_related("campaign", "resend_of")

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        batch = super().get_object(request, object_id, from_field)
        if batch is not None:
            batch._actor = admin_actor(request)  # for delivery_summary, read through the selector
        return batch

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)
        progress = send_batches_progress([b.pk for b in rows])  # one grouped query for the page
        for batch in rows:
            batch._progress = progress.get(batch.pk)
        return changelist

    def _count(self, obj: SendBatch, band: str) -> int:
        counts = getattr(obj, "_progress", None) or {}
        states = next(states for label, states, _ in PROGRESS_BANDS if label == band)
        return sum(counts.get(s, 0) for s in states)

    @admin.display(description="batch", ordering="number")
    def batch(self, obj: SendBatch) -> str:
        return f"#{obj.number}"

    @admin.display(description="campaign", ordering="campaign__name")
    def campaign_link(self, obj: SendBatch) -> str:
        url = reverse("admin:campaigns_campaign_change", args=[obj.campaign_id])
        return format_html('<a href="{}">{}</a>', url, obj.campaign.name)

    @admin.display(description="queued")
    def queued(self, obj: SendBatch) -> int:
        return self._count(obj, "queued")

    @admin.display(description="submitted")
    def submitted(self, obj: SendBatch) -> int:
        return self._count(obj, "submitted")

    @admin.display(description="delivered")
    def delivered(self, obj: SendBatch) -> int:
        return self._count(obj, "delivered")

    @admin.display(description="failed")
    def failed(self, obj: SendBatch) -> int:
        return self._count(obj, "failed")

    @admin.display(description="progress")
    def progress(self, obj: SendBatch) -> str:
        if hasattr(obj, "_progress"):  # the list page: counted for the whole page
            return progress_bar(getattr(obj, "_progress", None))
        return progress_bar(send_batches_progress([obj.pk]).get(obj.pk))

    @admin.display(description="delivery (gateways, charged, errors)")
    def delivery_summary(self, obj: SendBatch) -> str:
        actor = getattr(obj, "_actor", None)
        if actor is None:
            return "—"
        report = send_batches_list(actor=actor, campaign_id=obj.campaign_id)
        entry = next((b for b in report["batches"] if b["batch_id"] == obj.pk), None)
        return pretty_json(entry) if entry else "—"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(VIEW_BATCHES))

    # Batches are written by dispatch and resends only.
