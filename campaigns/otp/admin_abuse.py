"""Admin of the OTP abuse defence: pumping blocks (lifted through pumping_block_lift, with a
reason) and the velocity counters, read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from campaigns.otp.abuse import LIFT_PERMISSION, pumping_block_lift
from campaigns.otp.models import OtpRateCounter, PumpingBlock
from smsplatform.admin_utils import ReadOnlyAdminMixin, admin_actor, error_text, readable
from smsplatform.kernel.errors import ApplicationError


class LiftForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), help_text="Why the traffic is genuine (audited)."
    )


@admin.register(PumpingBlock)
class PumpingBlockAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["prefix", "country", "reason", "created_at", "active", "lifted_at", "lifted_by"]
    list_filter = ["reason", ("lifted_at", admin.EmptyFieldListFilter), "country"]
    search_fields = ["prefix"]
    actions = ["lift_blocks"]
    fields = ("prefix", "country", "reason", "facts_readable", "created_at", "lifted_at", "lifted_by", "lift_reason")
    readonly_fields = fields

    @admin.display(boolean=True, description="active")
    def active(self, obj: PumpingBlock) -> bool:
        return obj.is_active

    @admin.display(description="facts")
    def facts_readable(self, obj: PumpingBlock) -> str:
        return readable(obj.facts)

    def has_lift_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(LIFT_PERMISSION))

    @admin.action(description="Lift the selected blocks (asks for a reason)", permissions=["lift"])
    def lift_blocks(self, request: HttpRequest, queryset: QuerySet[PumpingBlock]) -> HttpResponse | None:
        form = LiftForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            lifted = []
            for block in queryset.order_by("pk"):
                try:
                    pumping_block_lift(
                        actor=admin_actor(request), block_id=block.pk, reason=form.cleaned_data["reason"]
                    )
                except ApplicationError as exc:
                    self.message_user(request, f"#{block.pk} {block.prefix}: {error_text(exc)}", messages.ERROR)
                else:
                    lifted.append(block.prefix)
            if lifted:
                self.message_user(request, f"Lifted: {', '.join(lifted)}. OTP sends to them are allowed again.")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Lift pumping blocks",
            "opts": self.model._meta,
            "blocks": list(queryset.order_by("pk")),
            "form": form,
        }
        return TemplateResponse(request, "admin/otp/pumpingblock/lift.html", context)


@admin.register(OtpRateCounter)
class OtpRateCounterAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """For diagnosis: phones and IPs appear only as keyed hashes."""

    list_display = ["scope", "key", "window_seconds", "window_start", "count", "expires_at"]
    list_filter = ["scope", "window_seconds"]
    search_fields = ["key"]
