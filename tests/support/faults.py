"""The fault-injection campaigns of the integration tests: SMPP gateways on SMSC simulators,
``manage.py smpp_worker`` subprocesses, a consented audience of n numbers and its confirmed draft."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.utils import timezone

from campaigns.models import Campaign
from campaigns.services import campaign_create_draft, campaign_send_approved
from campaigns.spec import campaign_token
from compliance.roles import Role
from contacts.models import Audience, AudienceMembership, ConsentEvidence, ConsentPurpose, Contact
from contacts.services import segment_create, segment_preview
from gateways.models import Gateway, GatewayRate, Provider
from gateways.platform_config import platform_config_update
from gateways.quotas import account_instance
from smsplatform.config_service import platform_config_get
from smsplatform.kernel.actor import Actor, Channel
from tests.support.smsc_setup import PASSWORD, SYSTEM_ID
from tests.support.workers import ROOT, worker_env

TEXT = "【ShopHK】週末8折 回覆STOP退訂 Reply STOP to opt out"  # one UCS-2 segment, required wording
FLUSH = ["--flush-interval", "0.1"]
WINDOW = 10  # the bind worker's window: at most this many submit_sm in flight at a kill or a drop


def _env() -> dict[str, str]:
    return worker_env(TEST_SMPP_PASSWORD=PASSWORD)


class SmppWorkers:
    """``manage.py smpp_worker --gateway CODE`` subprocesses, started, SIGKILLed and stopped by id."""

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.env = env  # None: the test settings' environment (_env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0

    def start(self, code: str) -> None:
        self.started += 1
        log = (self.tmp_path / f"smpp-{code}-{self.started}.log").open("wb")
        self.procs[code] = subprocess.Popen(
            [sys.executable, "manage.py", "smpp_worker", "--gateway", code, "--batch-size", "1000", *FLUSH],
            cwd=ROOT,
            env=self.env if self.env is not None else _env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def kill(self, code: str) -> None:
        proc = self.procs[code]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self, code: str) -> None:
        proc = self.procs.pop(code)
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: the worker finishes what it started and requeues the rest
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for code in list(self.procs):
            self.stop(code)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-1500:] for p in sorted(self.tmp_path.glob("smpp-*.log")))


def smpp_gateway(code: str, server: Any, *, priority: int, fallback: Gateway | None = None) -> Gateway:
    gateway = Gateway.objects.create(
        code=code,
        name=code,
        provider=Provider.SMPP,
        countries=["HK"],
        priority=priority,
        window_size=WINDOW,
        max_rate_per_second=5000,
        encodings=["GSM-7", "UCS-2"],
        fallback=fallback,
        settings={"host": server.host, "port": server.port, "system_id": SYSTEM_ID, "enquire_link_interval": 5},
        credentials_env={"password": "TEST_SMPP_PASSWORD"},
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"), currency="HKD")
    return gateway


def phones(n: int) -> list[str]:
    return [f"+85292{i:06d}" for i in range(n)]  # valid HK mobiles, clear of the simulator's fault prefixes


def send_ready(make_user: Callable[..., Any]) -> Actor:
    """A funded account, no quiet hours (independent of the hour in Hong Kong), and the actor of a
    campaign owner who may confirm a live send itself."""
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("100000"), 10_000_000
    account.save()
    compliance_user = make_user(Role.COMPLIANCE)
    current = platform_config_get()
    schedule = {**current["config"]["schedule"], "quiet_hours": {}}
    platform_config_update(
        actor=Actor(user=compliance_user, channel=Channel.API),
        changes={"schedule": schedule},
        base_version_token=current["base_version_token"],
        idempotency_key="faults-config-0001",
    )
    owner = make_user(Role.MARKETING, Role.APPROVER)
    return Actor(user=owner, channel=Channel.API, token_name="faults")


def consented_audience(numbers: list[str], name: str = "Members") -> Audience:
    """These numbers as consented contacts (marketing) in a new audience."""
    now = timezone.now()
    contacts = Contact.objects.bulk_create(
        [Contact(phone=p, country="HK", source="crm", tags=["member"]) for p in numbers], batch_size=5000
    )
    ConsentEvidence.objects.bulk_create(
        [
            ConsentEvidence(
                contact=c,
                purpose=ConsentPurpose.MARKETING,
                wording="I agree to receive offers by SMS from Shop HK.",
                source="web_form",
                obtained_at=now - timedelta(days=30),
                proof_reference=f"form-{c.pk}",
                actor_channel="api",
            )
            for c in contacts
        ],
        batch_size=5000,
    )
    audience = Audience.objects.create(name=name, source="crm", region="HK")
    AudienceMembership.objects.bulk_create(
        [AudienceMembership(audience=audience, contact=c) for c in contacts], batch_size=5000
    )
    return audience


def campaign_draft(
    actor: Actor,
    audience: Audience,
    n: int,
    *,
    batch_size: int,
    interval: int,
    gateway: str | None = None,
    key: str = "0001",
) -> Campaign:
    """A segment of the audience (n sendable) and its confirmed draft, on ``gateway`` if given."""
    preview = segment_preview(actor=actor, criteria={"audiences": [audience.pk]})
    assert preview["sendable"] == n, preview
    segment = segment_create(
        actor=actor,
        segment_preview_id=preview["segment_preview_id"],
        name=f"{audience.name} {key}",
        idempotency_key=f"faults-seg-{key}",
    )
    data: dict[str, Any] = {
        "name": f"Weekend sale {key}" if key != "0001" else "Weekend sale",
        "segment_id": segment["result"]["segment_id"],
        "text": TEXT,
        "brand": "ShopHK",
        "sender_id": "#SHOPHK",
        "send_goal": "Weekend visits",
        "batch_size": batch_size,
        "batch_interval_seconds": interval,
    }
    if gateway:
        data["gateway"] = gateway
    draft = campaign_create_draft(actor=actor, data=data, idempotency_key=f"faults-draft-{key}")
    assert draft["status"] == "executed", draft
    assert draft["result"]["segments_per_message"] == 1 and draft["result"]["recipients"] == n, draft
    return Campaign.objects.get(pk=draft["result"]["campaign_id"])


def campaign_for(make_user: Callable[..., Any], n: int, *, batch_size: int, interval: int) -> tuple[Campaign, Any]:
    """n consented contacts in an audience, a segment of them and an approved-by-confirmation draft."""
    actor = send_ready(make_user)
    audience = consented_audience(phones(n))
    return campaign_draft(actor, audience, n, batch_size=batch_size, interval=interval), actor


def send(campaign: Campaign, actor: Any, key: str = "0001") -> None:
    """Send now with the owner's explicit confirmation: the dispatch runs in the Celery worker."""
    out = campaign_send_approved(
        actor=actor,
        campaign_id=campaign.pk,
        base_version_token=campaign_token(campaign),
        confirm=True,
        idempotency_key=f"faults-send-{key}",
    )
    assert out["status"] == "executed", out


def submissions(*servers: Any) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Every submit_sm record of these simulators' logs, and per destination the number of
    messages accepted (one segment each here: one accepted submit_sm is one message)."""
    records = [r for server in servers for r in server.submitted()]
    return records, Counter(r["destination"] for r in records if r["outcome"] == "accepted")
