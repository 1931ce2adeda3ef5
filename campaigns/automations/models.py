"""Models of the automations app: the sources that send commerce events, and the events.

Events are the conversion data reporting attributes (reporting reads ``CommerceEvent``), and
what flows enrol on. They arrive in signed batches (``campaigns.automations.intake``); each is
unique per (source, event id), so a retried batch stores nothing twice.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from contacts.models import Contact
from smsplatform.kernel.phones import phone_mask


def event_source_secret_new() -> str:
    return secrets.token_urlsafe(32)


# How long the secret before a rotation is still accepted: the business's systems are
# reconfigured by hand, and events queued on their side before the switch keep arriving.
EVENT_SOURCE_SECRET_GRACE = timedelta(hours=48)


class EventSource(models.Model):
    """A business system that sends events (a shop, a POS, a booking system). It signs each
    batch with its ``secret`` (HMAC-SHA256 of ``f"{t}.{body}"``). The secret is generated, never
    chosen; admins with ``view_event_source_secret`` read it; rotation keeps the previous one
    valid for ``EVENT_SOURCE_SECRET_GRACE``."""

    code = models.SlugField(max_length=64, unique=True, help_text="Sent in the X-Event-Source header.")
    name = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    secret = models.CharField(max_length=100, default=event_source_secret_new, editable=False)
    secret_previous = models.CharField(max_length=100, blank=True, editable=False)
    secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        permissions = [("view_event_source_secret", "Can read an event source's signing secret")]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    def secrets_accepted(self) -> list[str]:
        """The secrets a batch may be signed with: the current one, and the one before the last
        rotation while its grace period lasts."""
        accepted = [self.secret]
        rotated = self.secret_rotated_at
        if self.secret_previous and rotated and timezone.now() - rotated < EVENT_SOURCE_SECRET_GRACE:
            accepted.append(self.secret_previous)
        return accepted


class EventType(models.TextChoices):
    ORDER_PLACED = "order_placed", "Order placed"
    ORDER_PAID = "order_paid", "Order paid"
    ORDER_SHIPPED = "order_shipped", "Order shipped"
    ORDER_DELIVERED = "order_delivered", "Order delivered"
    ORDER_REFUNDED = "order_refunded", "Order refunded"
    PAYMENT_RECEIVED = "payment_received", "Payment received"
    APPOINTMENT_BOOKED = "appointment_booked", "Appointment booked"
    APPOINTMENT_CHANGED = "appointment_changed", "Appointment changed"
    APPOINTMENT_CANCELLED = "appointment_cancelled", "Appointment cancelled"
    PICKUP_READY = "pickup_ready", "Pickup ready"
    PRODUCT_VIEWED = "product_viewed", "Product viewed"
    CART_ABANDONED = "cart_abandoned", "Cart abandoned"
    LINK_CLICKED = "link_clicked", "Link clicked"
    CUSTOM = "custom", "Custom (named)"


# Types that carry money (amount + currency required).
MONEY_TYPES = frozenset({EventType.ORDER_PAID, EventType.ORDER_REFUNDED, EventType.PAYMENT_RECEIVED})
ORDER_TYPES = frozenset(
    {
        EventType.ORDER_PLACED,
        EventType.ORDER_PAID,
        EventType.ORDER_SHIPPED,
        EventType.ORDER_DELIVERED,
        EventType.ORDER_REFUNDED,
    }
)
APPOINTMENT_TYPES = frozenset(
    {EventType.APPOINTMENT_BOOKED, EventType.APPOINTMENT_CHANGED, EventType.APPOINTMENT_CANCELLED}
)


class CommerceEvent(models.Model):
    """One event of a business system about one contact, kept for ``EVENTS_RETENTION_DAYS``
    (by ``occurred_at``). Written only by ``events_ingest``, in bulk; never updated."""

    # Not indexed alone: uniq_event_source_event_id leads with it.
    source = models.ForeignKey(EventSource, on_delete=models.PROTECT, related_name="events", db_index=False)
    event_id = models.CharField(max_length=100, help_text="The source's id of the event (idempotency key).")
    type = models.CharField(max_length=30, choices=EventType.choices)
    name = models.CharField(max_length=100, blank=True, help_text="A custom event's name (type custom).")
    # Not indexed alone: event_contact_occurred leads with it. Deleting a contact (erasure) deletes
    # their events; reporting's aggregates are kept.
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="commerce_events", db_index=False)
    phone = models.CharField(max_length=16, blank=True, help_text="E.164 as the event named it (blank: by external id)")
    external_id = models.CharField(max_length=100, blank=True, help_text="The contact's CRM key as the event named it")
    occurred_at = models.DateTimeField(help_text="The business's time of the event")
    received_at = models.DateTimeField(default=timezone.now)
    order_ref = models.CharField(max_length=100, blank=True, help_text="Order id / reference")
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    refund_of = models.CharField(max_length=100, blank=True, help_text="The order reference a refund refunds")
    coupon_code = models.CharField(max_length=50, blank=True)
    channel = models.CharField(max_length=20, blank=True, help_text="The touch's channel: sms, email, web")
    click_token = models.CharField(max_length=32, blank=True, help_text="LinkClick.recipient_token")
    link_code = models.CharField(max_length=16, blank=True, help_text="A short link's code (ShortLink.code)")
    appointment_at = models.DateTimeField(null=True, blank=True)
    pickup_at = models.DateTimeField(null=True, blank=True, help_text="Pickup ready from / by")
    payload = models.JSONField(default=dict, blank=True, help_text="The event's other fields")
    # sha256 of the event as received (canonical JSON): a duplicate with another payload says so.
    payload_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["source", "event_id"], name="uniq_event_source_event_id"),
        ]
        indexes = [
            models.Index(fields=["contact", "occurred_at"], name="event_contact_occurred"),
            models.Index(fields=["type", "occurred_at"], name="event_type_occurred"),
            models.Index(fields=["order_ref"], condition=~models.Q(order_ref=""), name="event_order_ref"),
            models.Index(fields=["refund_of"], condition=~models.Q(refund_of=""), name="event_refund_of"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"

    @property
    def phone_masked(self) -> str:
        return phone_mask(self.phone) if self.phone else ""


# Flows, enrolments and the scan cursor (their own module; imported here so Django registers them).
from campaigns.automations.flow_models import (  # noqa: E402
    Enrolment,
    EnrolmentState,
    Flow,
    FlowPurpose,
    FlowState,
    FlowVersion,
    ScanCursor,
    TriggerAnchor,
)

__all__ = [
    "CommerceEvent",
    "Enrolment",
    "EnrolmentState",
    "EventSource",
    "EventType",
    "Flow",
    "FlowPurpose",
    "FlowState",
    "FlowVersion",
    "ScanCursor",
    "TriggerAnchor",
]
