"""Admin for contacts, consent evidence and opt-outs.

Read-mostly: writes go through the services (the opt-out action calls
contacts.opt_out). Phones are masked unless the user has compliance.view_full_phone;
consent evidence and opt-outs are never deleted.
"""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from compliance.models import OptOut
from compliance.optouts import FULL_PHONE_PERMISSION
from contacts.imports import contacts_import
from contacts.models import Audience, ConsentEvidence, Contact, CustomerFact, Segment
from contacts.optouts import contact_opt_out
from contacts.selectors import audiences_visible
from contacts.services import CHANGE_PERMISSION, contact_audiences_change
from smsplatform.admin_utils import ReadOnlyAdminMixin, admin_actor, error_text, pretty_json
from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.phones import phone_mask
from smsplatform.kernel.text import name_check


def _phone(request: HttpRequest, e164: str) -> str:
    return e164 if request.user.has_perm(FULL_PHONE_PERMISSION) else phone_mask(e164)


class MaskedPhoneMixin:
    """Shows ``phone`` masked unless the viewer may see full numbers. The column is built per
    request (admin instances are shared between threads, so nothing is stored on self)."""

    phone_list_display: list[str] = []

    def _phone_column(self, request: HttpRequest) -> Any:
        def phone(obj: Any) -> str:
            return _phone(request, obj.phone)

        phone.short_description = "phone"  # type: ignore[attr-defined]
        return phone

    def get_list_display(self, request: HttpRequest) -> Any:
        return [self._phone_column(request), *self.phone_list_display]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [self._phone_column(request)]


class ImportForm(forms.Form):
    file = forms.FileField(help_text="UTF-8 CSV with a header row")
    source = forms.CharField(max_length=90, help_text="Where the list came from, e.g. pos-2026-01")
    audience = forms.ModelChoiceField(queryset=Audience.objects.all(), required=False)
    consent_wording = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="For rows without consent_* columns"
    )
    consent_source = forms.CharField(required=False)
    consent_obtained_at = forms.CharField(required=False, help_text="ISO 8601 with time zone")
    consent_proof_reference = forms.CharField(required=False)
    reason = forms.CharField(required=False)


class ConsentInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ConsentEvidence
    extra = 0
    fields = ["purpose", "channel", "source", "obtained_at", "proof_reference", "wording", "actor_channel"]
    readonly_fields = ["purpose", "channel", "source", "obtained_at", "proof_reference", "wording", "actor_channel"]


@admin.register(Contact)
class ContactAdmin(MaskedPhoneMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    phone_list_display = ["id", "country", "language", "source", "crm_key", "version", "updated_at"]
    list_filter = ["country", "language"]
    search_fields = ["=crm_key"]
    inlines = [ConsentInline]
    actions = ["opt_out_selected"]
    exclude = ["phone"]

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> Any:
        # Searching by phone finds the exact E.164 number, never a partial match that would reveal others.
        from smsplatform.kernel.phones import phone_parse

        try:
            return queryset.filter(phone=phone_parse(search_term).e164), False
        except ApplicationError:
            return super().get_search_results(request, queryset, search_term)

    def get_urls(self) -> list[Any]:
        view = path("import/", self.admin_site.admin_view(self.import_view), name="contacts_contact_import")
        return [view, *super().get_urls()]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """CSV import through contacts_import: the same rules, approval and audit as the API."""
        if not request.user.has_perm("contacts.add_contact"):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        errors: list[dict[str, Any]] = []
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            consent = {
                k.removeprefix("consent_"): data[k]
                for k in ("consent_wording", "consent_source", "consent_obtained_at", "consent_proof_reference")
            }
            try:
                result = contacts_import(
                    actor=admin_actor(request),
                    csv_text=data["file"].read().decode("utf-8-sig"),
                    source=data["source"],
                    audience_id=data["audience"].pk if data["audience"] else None,
                    consent=consent if any(consent.values()) else None,
                    reason=data["reason"],
                    idempotency_key=f"admin-import-{uuid.uuid4()}",
                )
            except (ApplicationError, UnicodeDecodeError) as exc:
                if isinstance(exc, ApplicationError):
                    errors = exc.details.get("errors", [])
                    form.add_error(None, error_text(exc))
                else:
                    form.add_error("file", "The file is not UTF-8 text.")
            else:
                if result["status"] == "pending_approval":
                    messages.warning(request, f"Held for approval as request #{result['action_request_id']}.")
                else:
                    done = result["result"]
                    messages.success(
                        request,
                        f"Imported {done['rows']} rows: {done['created']} new, {done['existing']} existing, "
                        f"{done['consent_evidence']} consent records.",
                    )
                return HttpResponseRedirect(reverse("admin:contacts_contact_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "errors": errors,
            "opts": self.model._meta,
            "title": "Import contacts from CSV",
        }
        return TemplateResponse(request, "admin/contacts/contact/import.html", context)

    # Audience membership: one "add to" and one "remove from" action per audience the user may see
    # (the first AUDIENCE_ACTIONS by name), each calling contact_audiences_change (audited).
    AUDIENCE_ACTIONS = 20

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not request.user.has_perm(CHANGE_PERMISSION):
            return actions
        try:
            visible = list(audiences_visible(admin_actor(request)).order_by("name")[: self.AUDIENCE_ACTIONS])
        except ApplicationError:  # no permission to see audiences: no membership actions
            return actions
        for audience in visible:
            for verb in ("add", "remove"):
                name = f"audience_{verb}_{audience.pk}"
                where = "Add the selected contacts to" if verb == "add" else "Remove the selected contacts from"
                label = f"{where} audience {audience.name!r}"
                actions[name] = (self._audience_action(audience.pk, verb), name, label)
        return actions

    @staticmethod
    def _audience_action(audience_id: int, verb: str) -> Any:
        def run(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
            try:
                done = contact_audiences_change(
                    actor=admin_actor(request),
                    contact_ids=list(queryset.values_list("pk", flat=True)),
                    audiences={verb: [audience_id]},
                    idempotency_key=f"admin-audiences-{uuid.uuid4()}",
                    reason="admin",
                )
            except ApplicationError as exc:
                messages.error(request, error_text(exc))
                return
            messages.success(request, f"{done['changed']} of {done['contacts']} contact(s) changed.")

        return run

    @admin.action(description="Opt out the selected contacts (at once, audited)")
    def opt_out_selected(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        if not request.user.has_perm("compliance.add_optout"):
            messages.error(request, "You lack the permission compliance.add_optout.")
            return
        done = 0
        for contact_id in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                contact_opt_out(
                    actor=admin_actor(request),
                    idempotency_key=f"admin-optout-{uuid.uuid4()}",
                    contact_id=contact_id,
                    source="admin",
                )
                done += 1
            except ApplicationError as exc:
                messages.error(request, error_text(exc))
        messages.success(request, f"{done} contact(s) opted out.")


# The suppression list is compliance's model; its read-only page shares the phone masking above.
@admin.register(OptOut)
class OptOutAdmin(MaskedPhoneMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    phone_list_display = ["id", "reason", "source", "language", "occurred_at", "sync_state", "lifted_at"]
    list_filter = ["reason", "sync_state", "language"]
    exclude = ["phone"]


@admin.register(ConsentEvidence)
class ConsentEvidenceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "contact", "purpose", "channel", "source", "obtained_at", "proof_reference"]
    list_filter = ["purpose", "channel"]


class AudienceForm(forms.ModelForm):
    class Meta:
        model = Audience
        fields = [
            "name",
            "description",
            "source",
            "region",
            "sync_source",
            "purchase_behaviour",
            "visible_to",
            "created_at",
        ]

    def clean_name(self) -> str:
        name = str(self.cleaned_data.get("name") or "").strip()
        try:
            return name_check(name, field="name")
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(Audience)
class AudienceAdmin(admin.ModelAdmin):
    form = AudienceForm
    list_display = ["name", "source", "region", "sync_source", "created_at"]
    filter_horizontal = ["visible_to"]


@admin.register(Segment)
class SegmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "name", "matched_count", "sendable_count", "created_by", "created_at"]
    readonly_fields = ["criteria_pretty", "exclusions_pretty"]

    @admin.display(description="criteria")
    def criteria_pretty(self, obj: Segment) -> str:
        return pretty_json(obj.criteria)

    @admin.display(description="exclusions")
    def exclusions_pretty(self, obj: Segment) -> str:
        return pretty_json(obj.exclusions)


@admin.register(CustomerFact)
class CustomerFactAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "contact", "kind", "external_id", "status", "occurred_at", "due_at"]
    list_filter = ["kind", "status"]
    search_fields = ["=external_id"]
