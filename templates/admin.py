"""Admin for message content: templates (saved through the governed service), short links (read-only)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from smsplatform.admin_utils import ReadOnlyAdminMixin, ServiceWriteAdminMixin, admin_actor, error_text
from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.versioning import version_token
from templates.content_rules import content_of, current_version
from templates.models import Language, Purpose, ShortLink, Template, TemplateVersion
from templates.selectors import LABEL
from templates.services import template_save

CONTENT_FIELDS = ["name", "purpose", "language", "brand", "body", "fields", "max_segments"]
# The form calls the dynamic fields "dynamic_fields": "fields" is a Form attribute.
FORM_FIELDS = ["name", "purpose", "language", "brand", "body", "dynamic_fields", "max_segments"]


class FieldsJSONField(forms.JSONField):
    def prepare_value(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        return json.dumps(value or [], indent=2, ensure_ascii=False)


class TemplateForm(forms.ModelForm):
    """Every save is template_save: validated, versioned, audited, maybe held for approval."""

    name = forms.CharField(max_length=100)
    purpose = forms.ChoiceField(choices=Purpose.choices)
    language = forms.ChoiceField(choices=Language.choices)
    brand = forms.CharField(max_length=60, required=False, help_text="Marketing: must appear in the body.")
    body = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 90}),
        strip=False,
        help_text="Placeholders as {{field}}. Marketing: brand and the unsubscribe statement in Chinese and English.",
    )
    dynamic_fields = FieldsJSONField(
        label="Fields",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 90}),
        help_text='[{"name": "first_name", "type": "name", "max_length": 20, "example": "陳大文"}]',
    )
    max_segments = forms.IntegerField(min_value=1, max_value=10, initial=3)
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Why (audited).")
    base_version_token = forms.CharField(widget=forms.HiddenInput, required=False)
    idempotency_key = forms.CharField(widget=forms.HiddenInput)

    class Meta:
        model = Template
        fields: list[str] = []

    request: HttpRequest
    result: dict[str, Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["idempotency_key"] = f"admin-template-{uuid.uuid4()}"
            if self.instance.pk:
                self.initial["base_version_token"] = version_token(LABEL, self.instance.pk, self.instance.version)
                content = content_of(current_version(self.instance))
                content["dynamic_fields"] = content.pop("fields")
                self.initial.update(content)

    def validate_unique(self) -> None:
        # Uniqueness is the service's rule, and it has already written in clean(): a model
        # check here would find the template the service just created.
        return None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        content = {name: cleaned.get(name) for name in CONTENT_FIELDS if name != "fields"}
        content["fields"] = cleaned.get("dynamic_fields") or []
        try:
            self.result = template_save(
                actor=admin_actor(self.request),
                idempotency_key=cleaned["idempotency_key"],
                template_id=self.instance.pk,
                base_version_token=cleaned.get("base_version_token") or None,
                content=content,
                reason=cleaned.get("reason", ""),
            )
        except ApplicationError as exc:
            field = (exc.field or "").split(".")[0].replace("fields", "dynamic_fields")
            self.add_error(field if field in self.fields else None, error_text(exc))
        return cleaned


class TemplateVersionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = TemplateVersion
    extra = 0
    can_delete = False
    show_change_link = False
    fields = ("version", "approval_status", "action_request_id", "body", "brand", "created_at", "created_by", "reason")
    readonly_fields = fields
    ordering = ["-version"]

    # Versions are immutable: shown to whoever may see the template, never added, edited or deleted here.
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("sms_templates.view_template")


@admin.register(Template)
class TemplateAdmin(ServiceWriteAdminMixin, admin.ModelAdmin):
    form = TemplateForm
    list_display = ["name", "purpose", "language", "version", "updated_at"]
    list_filter = ["purpose", "language"]
    search_fields = ["name"]
    inlines = [TemplateVersionInline]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change, **kwargs)
        return type("BoundTemplateForm", (form_class,), {"request": request})

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return [
            (
                None,
                {
                    "fields": [
                        *FORM_FIELDS,
                        "reason",
                        "base_version_token",
                        "idempotency_key",
                    ]
                },
            )
        ]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # The service already wrote (or queued) the version in form.clean(); report what happened.
        result = form.result or {}
        if result.get("status") == "pending_approval":
            messages.warning(
                request,
                f"Held for approval as request #{result['action_request_id']} (role: {result['required_role']}); "
                "the version is saved when it is approved.",
            )
            return
        saved = result.get("result", {})
        obj.pk = saved.get("template_id")
        messages.success(request, f"Saved version {saved.get('version')} (version id {saved.get('version_id')}).")

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        return None  # versions are written by the service only

    def construct_change_message(self, request: HttpRequest, form: Any, formsets: Any, add: bool = False) -> Any:
        return []  # nothing is logged here (below); the service wrote the audit row

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None  # the platform audit log has the record

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: str | None = None) -> HttpResponse:
        if obj.pk is None:
            return HttpResponseRedirect(reverse("admin:sms_templates_template_changelist"))
        return HttpResponseRedirect(reverse("admin:sms_templates_template_change", args=[obj.pk]))

    def response_change(self, request: HttpRequest, obj: Any) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:sms_templates_template_change", args=[obj.pk]))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # campaigns pin versions; templates are never deleted


@admin.register(ShortLink)
class ShortLinkAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "code",
        "short_link",
        "landing_host",
        "campaign_id",
        "expires_at",
        "tracking",
        "per_recipient",
        "sensitive",
        "owner",
        "click_count",
        "unique_click_count",
    ]
    list_filter = ["tracking", "per_recipient", "sensitive"]
    search_fields = ["code", "landing_host", "target_url"]
    readonly_fields = [
        "code",
        "short_domain",
        "original_url",
        "target_url",
        "landing_host",
        "utm",
        "expires_at",
        "campaign_id",
        "tracking",
        "per_recipient",
        "sensitive",
        "preview_id",
        "action_request_id",
        "owner",
        "created_by",
        "created_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ShortLink]:
        return (
            super()
            .get_queryset(request)
            .select_related("owner")
            .annotate(_clicks=Count("clicks"), _unique=Count("clicks", filter=Q(clicks__is_unique=True)))
        )

    @admin.display(description="short URL")
    def short_link(self, obj: ShortLink) -> str:
        return format_html("<code>{}</code>", obj.short_url)

    @admin.display(description="clicks", ordering="_clicks")
    def click_count(self, obj: Any) -> int:
        return int(obj._clicks)

    @admin.display(description="unique clicks", ordering="_unique")
    def unique_click_count(self, obj: Any) -> int:
        return int(obj._unique)

    # Links are created only through short_links.create (from a preview): read-only here.
