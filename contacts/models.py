"""Contacts, consent evidence, audiences, customer facts and segments.

The suppression list (``OptOut``) is compliance's (compliance/models.py); its table
keeps its first name, ``contacts_optout``.

Sendable for marketing is never stored: it is derived in SQL as "has marketing
consent evidence and no active opt-out for the phone", so no path can create a
sendable number without evidence, and no contact write can clear an opt-out.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from smsplatform.kernel.phones import phone_mask


class Contact(models.Model):
    """One phone number, whatever lists it arrives through (duplicates are one phone)."""

    # Unique through Meta.constraints (uniq_contact_phone), not unique=True, which on PostgreSQL
    # adds a second (LIKE) index that nothing uses. Country and language are not indexed: they
    # select most of the table and every filter on them runs inside a larger scan. Each index
    # costs every bulk import (measured: without these five, inserting 100k contacts is ~2x faster).
    phone = models.CharField(max_length=16, help_text="E.164, validated with phonenumbers")
    country = models.CharField(max_length=2)
    language = models.CharField(max_length=10, default="zh-hant")
    name = models.CharField(max_length=100, blank=True)
    tags = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=100, help_text="Where the data came from (crm, web_form, import:...)")
    crm_key = models.CharField(max_length=100, blank=True, help_text="The CRM's id for this customer (sync key)")
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # Checked set-based, per statement (contacts/migrations/0004_import_set_based_keys), as the
    # keys of ConsentEvidence: an import writes one per row. Not indexed: nothing looks contacts
    # up by their creator (only a user's deletion, which is refused anyway while they exist).
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["phone"], name="uniq_contact_phone"),
            models.UniqueConstraint(fields=["crm_key"], condition=~models.Q(crm_key=""), name="uniq_contact_crm_key"),
        ]

    def __str__(self) -> str:
        # Masked: __str__ ends up in admin titles, logs and breadcrumbs.
        return f"#{self.pk} {phone_mask(self.phone)}"


class ConsentPurpose(models.TextChoices):
    MARKETING = "marketing", "Marketing"
    TRANSACTIONAL = "transactional", "Transactional"


class ConsentEvidence(models.Model):
    """What was shown, when and how consent was given (PDPO Part 6A). Never deleted."""

    # Indexed by consent_contact_purpose (contact first), which serves the foreign key too.
    # No per-row foreign-key trigger (an import writes 100k rows and the per-row checks cost more
    # than the writes): the key is checked set-based, once per statement, by the triggers of
    # contacts/migrations/0004_import_set_based_keys (PostgreSQL), and contacts are never deleted
    # (PROTECT in the ORM, no delete path; a raw DELETE is refused by the same triggers).
    contact = models.ForeignKey(
        Contact, on_delete=models.PROTECT, related_name="consents", db_index=False, db_constraint=False
    )
    channel = models.CharField(max_length=20, default="sms")
    purpose = models.CharField(max_length=20, choices=ConsentPurpose.choices, default=ConsentPurpose.MARKETING)
    wording = models.TextField(help_text="The exact notice / wording shown when consent was given")
    source = models.CharField(max_length=100, help_text="web_form, pos, sms_start, import:..., crm")
    obtained_at = models.DateTimeField()
    proof_reference = models.CharField(max_length=200, help_text="Form submission id, recording, inbound SMS id")
    recorded_at = models.DateTimeField(default=timezone.now)
    # Checked and not indexed as Contact.created_by.
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    actor_channel = models.CharField(max_length=16)
    actor_token_name = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-obtained_at", "-id"]
        indexes = [
            models.Index(fields=["contact", "purpose"], name="consent_contact_purpose"),
            # "Has marketing consent" for a million contacts is one ordered index-only scan
            # (segment previews and audience counts merge-join it by contact id).
            models.Index(fields=["contact"], condition=models.Q(purpose="marketing"), name="consent_marketing_contact"),
        ]
        verbose_name_plural = "consent evidence"

    def __str__(self) -> str:
        return f"{self.purpose} consent of contact {self.contact_id} ({self.obtained_at:%Y-%m-%d})"

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("Consent evidence is kept; it is never deleted.")


class Audience(models.Model):
    """A list of contacts (a CRM list, an import, a store's members). One phone may sit in many."""

    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=300, blank=True)
    source = models.CharField(max_length=100, help_text="crm, import, web_form, pos, ...")
    region = models.CharField(max_length=50, blank=True)
    sync_source = models.CharField(max_length=100, blank=True, help_text="The system it is synced from, if any")
    purchase_behaviour = models.CharField(max_length=200, blank=True)
    visible_to = models.ManyToManyField(
        "auth.Group", blank=True, related_name="+", help_text="Roles that may see it; empty: every contact viewer"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AudienceMembership(models.Model):
    # Both keys are indexed by a two-column index that leads with them (uniq_audience_contact,
    # membership_contact_audience), which serves the foreign keys too: one index less per import.
    # Both keys are checked set-based, once per statement, not by per-row foreign-key triggers
    # (see ConsentEvidence.contact and contacts/migrations/0004_import_set_based_keys).
    audience = models.ForeignKey(
        Audience, on_delete=models.CASCADE, related_name="memberships", db_index=False, db_constraint=False
    )
    contact = models.ForeignKey(
        Contact, on_delete=models.PROTECT, related_name="memberships", db_index=False, db_constraint=False
    )
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["audience", "contact"], name="uniq_audience_contact")]
        indexes = [
            # (contact, audience): a preview counts each contact's memberships in the scope with an
            # index-only scan in contact order, merged with the contacts, no hash of a million rows.
            models.Index(fields=["contact", "audience"], name="membership_contact_audience"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.audience_id}"


# Order statuses that are not a purchase (days_since_last_purchase ignores them).
NOT_A_PURCHASE = ("cancelled", "refunded")


class FactKind(models.TextChoices):
    ORDER = "order", "Order"
    PAYMENT = "payment", "Payment"
    PICKUP = "pickup", "Pickup"
    OFFER = "offer", "Offer used"
    APPOINTMENT = "appointment", "Appointment"
    REPURCHASE = "repurchase", "Repurchase due"


class CustomerFact(models.Model):
    """A business fact about a contact that segments (and later automations) filter on."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="facts")
    kind = models.CharField(max_length=20, choices=FactKind.choices)
    external_id = models.CharField(max_length=100, help_text="The source system's id; re-ingesting updates it")
    status = models.CharField(max_length=30, blank=True, help_text="e.g. paid, pending, cancelled, collected")
    amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    offer_code = models.CharField(max_length=50, blank=True)
    occurred_at = models.DateTimeField()
    due_at = models.DateTimeField(null=True, blank=True, help_text="Appointment or repurchase date")
    data = models.JSONField(default=dict, blank=True)
    ingested_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "external_id"], name="uniq_fact_kind_external_id")]
        indexes = [
            models.Index(fields=["contact", "kind", "-occurred_at"], name="fact_contact_kind"),
            # The last purchase per contact (days_since_last_purchase), index-only.
            models.Index(
                fields=["contact", "occurred_at"],
                condition=models.Q(kind="order") & ~models.Q(status__in=NOT_A_PURCHASE),
                name="fact_purchase_last",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.external_id}"


class Segment(models.Model):
    """A named audience selection created from a stored preview; it never widens that preview."""

    name = models.CharField(max_length=100)
    criteria = models.JSONField()
    preview_id = models.UUIDField(unique=True)
    matched_count = models.PositiveIntegerField()
    sendable_count = models.PositiveIntegerField()
    exclusions = models.JSONField(default=dict)
    estimated_cost = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name
