"""Flows, their immutable versions, the enrolments the beat scan creates, and the scan's cursor.

A flow is a versioned definition (``version`` is the compare-and-set counter behind its version
token; every change writes a ``FlowVersion``). Its trigger is an event type, optionally anchored
on a date of the event with an offset (24 h before ``appointment_at``, 30 days after a purchase's
``occurred_at``). The beat scan enrols each (flow, event) exactly once -- a unique constraint,
not a check -- and, for date triggers, each (flow, contact, trigger date) once. The tick claims
due enrolments with SKIP LOCKED and sends through the outbound queue
(``gateways.OutboundMessage``), re-checking every rule at send time.

Imported by ``campaigns.automations.models`` (kept in its own module: the events' models belong
to the intake).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from smsplatform.kernel.versioning import VersionSnapshot


class FlowState(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused (pending steps held)"
    ARCHIVED = "archived", "Archived (pending steps dropped)"


class FlowPurpose(models.TextChoices):
    TRANSACTIONAL = "transactional", "Transactional (priority lane, no promotion)"
    MARKETING = "marketing", "Marketing (opt-outs, consent, quiet hours, frequency caps)"


class TriggerAnchor(models.TextChoices):
    OCCURRED_AT = "occurred_at", "When the event occurred"
    APPOINTMENT_AT = "appointment_at", "The event's appointment time"
    PICKUP_AT = "pickup_at", "The event's pickup time"


class Flow(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    state = models.CharField(max_length=10, choices=FlowState.choices, default=FlowState.DRAFT)
    version = models.PositiveIntegerField(default=1)
    purpose = models.CharField(max_length=20, choices=FlowPurpose.choices, default=FlowPurpose.MARKETING)
    # Trigger: events of these types; the first step is due at anchor + offset (a date trigger
    # when the anchor is not occurred_at or the offset is not 0).
    trigger_event_types = models.JSONField(default=list, help_text='e.g. ["cart_abandoned"]')
    trigger_anchor = models.CharField(max_length=20, choices=TriggerAnchor.choices, default=TriggerAnchor.OCCURRED_AT)
    trigger_offset_minutes = models.IntegerField(
        default=0, help_text="Minutes after (positive) or before (negative) the anchor: -1440 = 24 h before."
    )
    trigger_payload_match = models.JSONField(
        default=dict, blank=True, help_text='Equality on the event payload, e.g. {"product": "SKU-1"}.'
    )
    # Contact filter in the criteria language (contacts.criteria), checked at entry and at every send.
    filters = models.JSONField(default=dict, blank=True)
    # Ordered steps: {"kind": "wait", "minutes": N} or {"kind": "send"}.
    steps = models.JSONField(default=list)
    # Exit conditions: [{"event_type": "order_placed", "match": "contact" | "reference"}].
    exit_conditions = models.JSONField(default=list, blank=True)
    # Content and route
    template_version = models.ForeignKey(
        "sms_templates.TemplateVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    variables = models.JSONField(
        default=dict, blank=True, help_text='Template field -> "event.<field>", "payload.<key>" or a literal.'
    )
    sender_id = models.CharField(max_length=16, blank=True)
    gateway = models.ForeignKey("gateways.Gateway", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Rules
    opt_out_exclusion = models.BooleanField(
        default=True, help_text="Opted-out numbers are excluded (required to activate)."
    )
    max_per_period = models.PositiveIntegerField(null=True, blank=True, help_text="At most N sends per contact...")
    period_hours = models.PositiveIntegerField(null=True, blank=True, help_text="...per this many hours.")
    once_per_order = models.BooleanField(default=False, help_text="At most one send per order reference.")
    monthly_budget = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    cost_check = models.JSONField(default=dict, blank=True, help_text="The last cost estimate (recent volume).")
    # What the flow queued this calendar month (UTC), kept by the tick under the flow's row lock:
    # the budget check reads one row instead of summing the month's messages at every claim.
    spent_month = models.DateField(null=True, blank=True)
    spent_amount = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    # Lifecycle
    approval_request_id = models.BigIntegerField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        permissions = [("confirm_flow", "Can confirm a flow activation without a separate approval")]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk}, {self.state})"

    @property
    def is_date_trigger(self) -> bool:
        return self.trigger_anchor != TriggerAnchor.OCCURRED_AT or self.trigger_offset_minutes != 0

    @property
    def reference_prefix(self) -> str:
        return f"automation:{self.pk}:"


class FlowVersion(VersionSnapshot):
    """What the flow looked like after each change, with the state it was in. Never updated."""

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="versions")
    state = models.CharField(max_length=10, choices=FlowState.choices)

    class Meta:
        ordering = ["flow", "-version"]
        constraints = [models.UniqueConstraint(fields=["flow", "version"], name="uniq_flow_version")]

    def __str__(self) -> str:
        return f"flow {self.flow_id} v{self.version}"


class EnrolmentState(models.TextChoices):
    WAITING = "waiting", "Waiting for its next step"
    COMPLETED = "completed", "Completed (every step done)"
    EXITED = "exited", "Exited (an exit event arrived)"
    SKIPPED = "skipped", "Skipped (a rule refused it)"
    DROPPED = "dropped", "Dropped (flow archived)"


class Enrolment(models.Model):
    """One contact's way through one flow, started by one event."""

    flow = models.ForeignKey(Flow, on_delete=models.PROTECT, related_name="enrolments")
    flow_version = models.PositiveIntegerField()
    # No database constraint and no cascade: the retention purge deletes old events, and the
    # enrolment (its numbers, and its (flow, event) uniqueness) outlives them.
    event = models.ForeignKey(
        "automations.CommerceEvent", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    contact = models.ForeignKey("contacts.Contact", on_delete=models.CASCADE, related_name="+")
    # The phone at entry: a send goes out only while the contact's phone is still this one.
    phone = models.CharField(max_length=16)
    reference = models.CharField(max_length=100, blank=True, help_text="The event's order / appointment reference")
    trigger_date = models.DateField(null=True, blank=True, help_text="Date triggers: the date the flow fires")
    trigger_occurred_at = models.DateTimeField()
    state = models.CharField(max_length=10, choices=EnrolmentState.choices, default=EnrolmentState.WAITING)
    step_index = models.PositiveSmallIntegerField(default=0)
    due_at = models.DateTimeField()
    # Messages sent so far; each one's reference is automation:<flow>:<enrolment>:<step>.
    sent = models.PositiveSmallIntegerField(default=0)
    reason = models.CharField(max_length=40, blank=True, help_text="Skip or exit reason code")
    detail = models.CharField(max_length=300, blank=True)
    entered_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Each (flow, event) enrols once, whichever scan (or replay) sees the event first.
            models.UniqueConstraint(fields=["flow", "event"], name="uniq_enrolment_flow_event"),
            # A date trigger fires once per contact and date (a re-sent appointment does not double it).
            models.UniqueConstraint(
                fields=["flow", "contact", "trigger_date"],
                condition=models.Q(trigger_date__isnull=False),
                name="uniq_enrolment_flow_contact_date",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "due_at"], name="enrolment_due", condition=models.Q(state="waiting")),
            # The tick's claim (one flow's waiting rows in due_at, id order, LIMIT): read in index
            # order and stopped at the limit, not every due row of the flow sorted per claim.
            models.Index(
                fields=["flow", "due_at", "id"], name="enrolment_flow_due", condition=models.Q(state="waiting")
            ),
            models.Index(fields=["contact", "flow"], name="enrolment_contact_flow"),
            models.Index(fields=["flow", "entered_at"], name="enrolment_flow_entered"),
        ]

    def __str__(self) -> str:
        return f"enrolment {self.pk} of flow {self.flow_id} ({self.state})"


class ScanCursor(models.Model):
    """How far the beat scan has read the events (by id), per scan name, and the gaps it saw.

    Ids are drawn from a sequence when a batch is inserted, not when it commits: a batch that
    commits after a later one leaves its ids below the cursor. The scan remembers each gap in the
    ids it read (``gaps``: ``[first, last, seen_at]``) and reads those ids again until
    ``GAP_WAIT`` has passed (a rolled-back batch leaves a gap forever)."""

    name = models.CharField(max_length=40, unique=True)
    last_event_id = models.BigIntegerField(default=0)
    gaps = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_event_id}"
