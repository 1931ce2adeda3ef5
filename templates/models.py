"""Message content: versioned SMS templates, short links and their clicks."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Purpose(models.TextChoices):
    MARKETING = "marketing", "Marketing"
    TRANSACTIONAL = "transactional", "Transactional"
    OTP = "otp", "One-time password"


class Language(models.TextChoices):
    EN = "en", "English"
    ZH_HANT = "zh-hant", "Traditional Chinese"
    BILINGUAL = "bilingual", "Chinese and English"


class VersionApproval(models.TextChoices):
    NOT_REQUIRED = "not_required", "Saved directly (no approval policy applied)"
    APPROVED = "approved", "Approved by an approver"


class Template(models.Model):
    """A reusable message. Its content lives in immutable ``TemplateVersion`` rows; ``version``
    is the number of the current one and is the compare-and-set counter for updates."""

    name = models.CharField(max_length=100, unique=True)
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    language = models.CharField(max_length=20, choices=Language.choices)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        permissions = [("fit_preview", "Can preview copy fit, segments and cost")]

    def __str__(self) -> str:
        return f"{self.name} (v{self.version})"


class TemplateVersion(models.Model):
    """One saved state of a template. Never updated or deleted: campaigns pin a version id."""

    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    language = models.CharField(max_length=20, choices=Language.choices)
    body = models.TextField()
    brand = models.CharField(max_length=60, blank=True)
    fields = models.JSONField(
        default=list, blank=True, help_text='[{"name", "type", "charset", "max_length", "example"}]'
    )
    max_segments = models.PositiveSmallIntegerField(default=3)
    approval_status = models.CharField(max_length=20, choices=VersionApproval.choices)
    action_request_id = models.BigIntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["template", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["template", "version"], name="uniq_template_version"),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class ShortLink(models.Model):
    """A short URL on the configured short domain that redirects to one stored target."""

    code = models.CharField(max_length=16, unique=True)
    short_domain = models.CharField(max_length=253, help_text="The short host at creation time.")
    original_url = models.TextField()
    target_url = models.TextField(help_text="Where the redirect goes: the original URL with its UTM parameters.")
    landing_host = models.CharField(max_length=253)
    utm = models.JSONField(default=dict, blank=True)
    expires_at = models.DateTimeField()
    campaign_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    tracking = models.BooleanField(default=True)
    per_recipient = models.BooleanField(default=False)
    sensitive = models.BooleanField(default=False, help_text="Payment or finance landing page.")
    preview_id = models.UUIDField(unique=True, help_text="The short_links.preview this link was created from.")
    action_request_id = models.BigIntegerField(null=True, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("preview_shortlink", "Can preview short links")]

    def __str__(self) -> str:
        return f"{self.short_url} -> {self.landing_host}"

    @property
    def short_url(self) -> str:
        return f"https://{self.short_domain}/s/{self.code}"

    def is_expired(self) -> bool:
        return timezone.now() >= self.expires_at


class DeviceClass(models.TextChoices):
    MOBILE = "mobile", "Mobile"
    TABLET = "tablet", "Tablet"
    DESKTOP = "desktop", "Desktop"
    BOT = "bot", "Bot or link scanner"


class LinkClick(models.Model):
    """One redirect. Written with a single INSERT on the hot path (see templates.views)."""

    link = models.ForeignKey(ShortLink, on_delete=models.PROTECT, related_name="clicks", db_index=False)
    clicked_at = models.DateTimeField(default=timezone.now)
    device_class = models.CharField(max_length=10, choices=DeviceClass.choices)
    recipient_token = models.CharField(max_length=32, null=True, blank=True)
    is_unique = models.BooleanField(default=False, help_text="First human click of this recipient on this link.")

    class Meta:
        ordering = ["-clicked_at", "-id"]
        indexes = [models.Index(fields=["link", "clicked_at"], name="linkclick_link_time")]
        constraints = [
            # At most one unique click per recipient and link; it is also the index the
            # redirect's NOT EXISTS check uses.
            models.UniqueConstraint(
                fields=["link", "recipient_token"],
                condition=models.Q(is_unique=True),
                name="uniq_linkclick_first_per_recipient",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.link_id} at {self.clicked_at:%Y-%m-%d %H:%M:%S} ({self.device_class})"


class ClickSpoolSegment(models.Model):
    """Ledger of click spool segments written to ``LinkClick`` (see templates.short_links.clicks).

    A segment's row is inserted in the same transaction as its clicks, so a drain that finds
    the row already there (its writer died between COMMIT and deleting the file) deletes the
    file without writing the clicks twice. The row is deleted once the file is gone; rows
    left by a drain that died in between are pruned by the templates.drain_click_spool task.
    """

    name = models.CharField(max_length=64, primary_key=True)
    clicks = models.PositiveIntegerField()
    written_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} ({self.clicks} clicks)"
