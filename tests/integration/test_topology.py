"""Production's topology on one machine (issue 20, "Brokers and machines"): two web servers
(gunicorn with docs/deploy/gunicorn.conf.py), three Celery workers (the Procfile's queues), two SMPP
bind workers for two gateways (each on an SMSC simulator process of its own) and one beat (the
database scheduler, the real schedule), on PostgreSQL and the test's broker. A 100,000-recipient
send (two campaigns, one per gateway) and an OTP stream through the REST API of both web servers
run while one process of each kind is SIGKILLed: a gunicorn worker with a request in flight (its
master starts another), a Celery worker (its whole process group, as when its machine dies; the
other two carry on), the bind worker of the OTP gateway (started again, as systemd does) and beat
(started again). Then the simulators' records and the database must show: no phone accepted twice,
every message final or 'unknown' (in flight at the bind worker's death: at most its window, never
resent), both campaigns completed, every OTP request answered, each sent at most once and each
answered 'executed' sent exactly once (or left 'unknown' by the bind worker's death), also those
the client had to retry with the same idempotency_key.

The size: TOPOLOGY_RECIPIENTS (default 100,000). Run with ``make test-celery-rabbitmq``
(PostgreSQL + RabbitMQ) or ``make test-celery`` (Redis)."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
import requests
from django.utils import timezone

from campaigns.models import Campaign, CampaignState
from campaigns.otp.models import OtpTemplate
from campaigns.otp.services import otp_template_save
from compliance.roles import Role
from compliance.services import action_request_approve
from gateways.delivery.reconcile import messages_reconcile
from gateways.models import MessagePurpose, MessageState, OutboundMessage
from smsplatform.celery import app
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.models import ApiToken, Heartbeat
from smsplatform.operations.health import BEAT_HEARTBEAT
from smsplatform.schedules import periodic_tasks_ensure
from tests.support.faults import (
    WINDOW,
    SmppWorkers,
    campaign_draft,
    consented_audience,
    phones,
    send,
    send_ready,
    smpp_gateway,
    submissions,
)
from tests.support.smsc_setup import PASSWORD
from tests.support.workers import REAL_WORKER_TEST, ROOT, broker_reset, worker_env

# Not `celery_worker`: it runs once, in make test-celery-rabbitmq (-m "celery_worker or topology").
pytestmark = [pytest.mark.topology, *(mark for mark in REAL_WORKER_TEST if mark.name != "celery_worker")]

RECIPIENTS = int(os.environ.get("TOPOLOGY_RECIPIENTS", "100000"))
DEADLINE_SECONDS = 420  # the send, from the first campaign's confirmation to both completed
GRACE = 3  # SMS_DISPATCH_GRACE_SECONDS: the batch-advance sweep's wait for a lost dispatch
OTP_CLIENTS = 2  # client threads, each sending one OTP request after another
FINAL_OR_UNKNOWN = {MessageState.DELIVERED, MessageState.UNKNOWN}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """One production process (its own session: a kill takes its whole process group, as the
    death of its machine or container would), with its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], tmp_path: Path) -> None:
        self.name, self.command, self.env, self.tmp_path = name, command, env, tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0

    def start(self) -> None:
        self.started += 1
        with (self.tmp_path / f"{self.name}-{self.started}.log").open("wb") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group (a prefork worker's children die with their master)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
            for p in sorted(self.tmp_path.glob(f"{self.name}-*.log"))
        )


def readyz(port: int) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code
    except requests.RequestException:
        return 0


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


@dataclass
class OtpRequest:
    key: str
    phone: str
    client_ip: str
    attempts: list[str] = field(default_factory=list)  # the port of each attempt, and how it failed
    answer: str | None = None  # the answer's status ('executed'), or its error code


class OtpClient:
    """The integrator's client: POST /api/v1/otp/verifications/, alternating between the two web
    servers; a request that gets no answer (connection reset, 5xx, timeout) is retried with the
    same idempotency_key, as the README tells integrators. Each request goes to a number range
    and a client IP of its own (the pumping defence blocks bursts into one range)."""

    def __init__(self, ports: list[int], token: str, template_id: int) -> None:
        self.ports, self.token, self.template_id = ports, token, template_id
        # +852 BBBBB000: a range (the number without its last 3 digits) of its own per request, ten
        # requests per conversion prefix (without the last 4), well under its minimum; valid mobile
        # numbers away from the campaign's (+852 92..) and the simulator's fault prefixes (+852 59..).
        self.blocks = [
            f"+852{block}000"
            for block in range(51000, 70000)
            if not str(block).startswith("59") and phonenumbers.is_valid_number(phonenumbers.parse(f"+852{block}000"))
        ]
        self.requests: list[OtpRequest] = []
        self.in_flight: dict[int, int] = {}  # thread index -> port of the request it is waiting for
        self.stopping = threading.Event()
        self.numbers = itertools.count()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(OTP_CLIENTS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in self.threads), "an OTP client thread did not finish"

    def busy_on(self, port: int) -> bool:
        return port in self.in_flight.values()

    def _run(self, index: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token}"
        turn = index
        while not self.stopping.is_set():
            with self.lock:
                n = next(self.numbers)
            if n >= len(self.blocks):
                return
            request = OtpRequest(
                key=f"topology-otp-{n:06d}", phone=self.blocks[n], client_ip=f"10.{n // 250 % 250}.{n % 250}.1"
            )
            self.requests.append(request)
            while request.answer is None and len(request.attempts) < 20:
                port = self.ports[turn % len(self.ports)]
                turn += 1
                self.in_flight[index] = port
                try:
                    response = session.post(
                        f"http://127.0.0.1:{port}/api/v1/otp/verifications/",
                        json={
                            "template_id": self.template_id,
                            "phone": request.phone,
                            "client_ip": request.client_ip,
                            "idempotency_key": request.key,
                        },
                        timeout=30,
                    )
                except requests.RequestException as exc:
                    request.attempts.append(f"{port}: {type(exc).__name__}")
                    time.sleep(0.2)
                    continue
                finally:
                    self.in_flight.pop(index, None)
                body = (
                    response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
                )
                if response.status_code == 200:
                    request.attempts.append(f"{port}: 200")
                    request.answer = str(body.get("status"))
                elif response.status_code >= 500 or (body.get("error") or {}).get("code") == "idempotency_in_progress":
                    request.attempts.append(f"{port}: {response.status_code}")
                    time.sleep(0.2)
                else:
                    request.attempts.append(f"{port}: {response.status_code}")
                    request.answer = str((body.get("error") or {}).get("code") or response.status_code)
            time.sleep(0.05)


def otp_template(compliance: Any, approver: Any) -> OtpTemplate:
    """An approved template on smpp-a with limits far above the stream's (one phone, one IP each)."""
    limits = {
        "phone": {"count": 5, "window_seconds": 3600},
        "ip": {"count": 20, "window_seconds": 3600},
        "token": {"count": 1_000_000, "window_seconds": 3600},
        "country": {"count": 1_000_000, "window_seconds": 3600},
    }
    content = {
        "name": "Login code",
        "purpose": "login",
        "body_en": "Your ShopHK code is {code}. Valid for {minutes} minutes.",
        "body_zh_hant": "你的ShopHK驗證碼是{code}，{minutes}分鐘內有效。",
        "code_length": 6,
        "alphabet": "digits",
        "allowed_countries": ["HK"],
        "sender_id": "#SHOPHK",
        "gateway": "smpp-a",
        "limits": limits,
    }
    held = otp_template_save(
        actor=Actor(user=compliance, channel=Channel.API), idempotency_key="topology-template-0001", content=content
    )
    assert held["status"] == "pending_approval", held
    outcome = action_request_approve(
        actor=Actor(user=approver, channel=Channel.API), action_request_id=held["action_request_id"], reason="ok"
    )
    assert outcome["state"] == "executed", outcome
    return OtpTemplate.objects.get(name="Login code")


class Topology:
    """The processes of one host running every kind."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        (tmp_path / "var").mkdir()
        (tmp_path / "journal").mkdir()
        # Production settings (not the tests'), on the test database and broker.
        self.env = worker_env(
            DJANGO_SETTINGS_MODULE="smsplatform.settings",
            TEST_SMPP_PASSWORD=PASSWORD,
            SMS_DISPATCH_GRACE_SECONDS=str(GRACE),
            SMS_SMPP_JOURNAL_DIR=str(tmp_path / "journal"),
            SMS_VAR_DIR=str(tmp_path / "var"),
            LOG_LEVEL="WARNING",
            LOG_FORMAT="plain",
        )
        self.web_ports = [free_port(), free_port()]
        self.web = [
            Process(
                f"web{i}",
                [sys.executable, "-m", "gunicorn", "smsplatform.wsgi", "-c", "docs/deploy/gunicorn.conf.py"],
                {**self.env, "SMS_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1", "SMS_WEB_THREADS": "4"},
                tmp_path,
            )
            for i, port in enumerate(self.web_ports)
        ]
        # The Procfile's worker, with one child each: three of them on two cores.
        self.workers = [
            Process(
                f"worker{i}",
                [
                    *(sys.executable, "-m", "celery", "-A", "smsplatform", "worker"),
                    *("-Q", "sms_priority,celery", "--prefetch-multiplier", "1", "-O", "fair", "--concurrency", "1"),
                    *("--loglevel", "WARNING", "-n", f"topology{i}-{os.getpid()}@%h"),
                ],
                self.env,
                tmp_path,
            )
            for i in range(3)
        ]
        self.beat = Process(
            "beat",
            [
                *(sys.executable, "-m", "celery", "-A", "smsplatform", "beat", "--loglevel", "WARNING"),
                *("--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
            ],
            self.env,
            tmp_path,
        )
        self.smpp = SmppWorkers(tmp_path, env=self.env)

    def start(self) -> None:
        for process in [*self.web, *self.workers, self.beat]:
            process.start()
        for code in ("smpp-a", "smpp-b"):
            self.smpp.start(code)
        deadline = time.monotonic() + 60
        for process, port in zip(self.web, self.web_ports, strict=True):
            while not self._healthy(port):
                assert process.alive() and time.monotonic() < deadline, f"web did not start: {process.logs()}"
                time.sleep(0.2)
        while len(app.control.ping(timeout=1.0) or []) < len(self.workers):
            assert time.monotonic() < deadline, f"the Celery workers did not start: {self.logs()}"

    @staticmethod
    def _healthy(port: int) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        self.smpp.stop_all()
        for process in [self.beat, *self.workers, *self.web]:
            process.stop()

    def logs(self) -> str:
        parts = [p.logs() for p in [*self.web, *self.workers, self.beat]]
        return "\n".join([*parts, self.smpp.logs()])


@pytest.fixture
def topology(transactional_db: Any, tmp_path: Path) -> Iterator[Topology]:
    broker_reset()
    previous, app.conf.task_always_eager = app.conf.task_always_eager, False
    hosts = Topology(tmp_path)
    try:
        yield hosts
    finally:
        hosts.stop()
        app.conf.task_always_eager = previous
        broker_reset()


def test_topology_kills_one_process_of_each_kind_mid_send_nothing_sent_twice_or_lost(
    topology: Topology, smsc_factory: Any, make_user: Any
) -> None:
    total = RECIPIENTS
    half = total // 2
    periodic_tasks_ensure()  # what migrate does: the real schedule, read by beat from the database
    smsc_a = smsc_factory(mode="process", receipt_delay=(0.0, 0.02), keep_records=1000)
    smsc_b = smsc_factory(mode="process", receipt_delay=(0.0, 0.02), keep_records=1000)
    smpp_gateway("smpp-a", smsc_a, priority=1)
    smpp_gateway("smpp-b", smsc_b, priority=2)
    setup_started = time.monotonic()
    owner = send_ready(make_user)
    numbers = phones(total)
    campaigns = [
        campaign_draft(
            owner,
            consented_audience(numbers[:half], "Members A"),
            half,
            batch_size=max(1000, half // 10),
            interval=1,
            gateway="smpp-a",
            key="000a",
        ),
        campaign_draft(
            owner,
            consented_audience(numbers[half:], "Members B"),
            total - half,
            batch_size=max(1000, (total - half) // 10),
            interval=1,
            gateway="smpp-b",
            key="000b",
        ),
    ]
    template = otp_template(make_user(Role.COMPLIANCE), make_user(Role.APPROVER))
    _, token = ApiToken.issue(user=make_user(Role.TECHNICAL), name="topology-otp")
    setup_seconds = time.monotonic() - setup_started

    topology.start()
    otp = OtpClient(topology.web_ports, token, template.pk)
    otp.start()
    started = time.monotonic()
    for campaign, key in zip(campaigns, ("000a", "000b"), strict=True):
        send(campaign, owner, key=key)

    def accepted() -> int:
        return sum(int(s.stats().get("accepted", 0)) for s in (smsc_a, smsc_b))

    def completed() -> bool:
        return all(
            state == CampaignState.COMPLETED
            for state in Campaign.objects.filter(pk__in=[c.pk for c in campaigns]).values_list("state", flat=True)
        )

    killed: dict[str, float] = {}
    beat_restarted = timezone.now()
    deadline = started + DEADLINE_SECONDS
    web_worker = 0
    while time.monotonic() < deadline:
        done = accepted()
        if "web" not in killed and done >= 0.15 * total and otp.busy_on(topology.web_ports[0]):
            # A gunicorn worker with an OTP request in flight; its master starts another.
            (web_worker,) = children(topology.web[0].pid)
            os.kill(web_worker, signal.SIGKILL)
            killed["web"] = done / total
        elif "web" in killed and "worker" not in killed and done >= 0.3 * total:
            topology.workers[0].kill()  # the other two carry on; the broker redelivers its task
            killed["worker"] = done / total
        elif "worker" in killed and "smpp" not in killed and done >= 0.45 * total:
            topology.smpp.kill("smpp-a")  # the OTP gateway's bind worker
            killed["smpp"] = done / total
            time.sleep(2)  # RestartSec
            topology.smpp.start("smpp-a")
        elif "smpp" in killed and "beat" not in killed and done >= 0.6 * total:
            topology.beat.kill()
            killed["beat"] = done / total
            time.sleep(2)
            topology.beat.start()
            beat_restarted = timezone.now()
        elif len(killed) == 4 and completed():
            break
        time.sleep(0.05)
    send_seconds = time.monotonic() - started
    otp.stop()
    # The stream's last messages: sent, and their receipts in.
    settle = time.monotonic() + 30
    while (
        time.monotonic() < settle
        and OutboundMessage.objects.filter(state__in=[MessageState.QUEUED, MessageState.SUBMITTED]).exists()
    ):
        time.sleep(0.2)
    time.sleep(1.0)
    web_respawned = children(topology.web[0].pid)
    ready = {port: readyz(port) for port in topology.web_ports}  # both web servers: broker, beat, database
    topology.smpp.stop_all()  # SIGTERM: requeues what it claimed and never wrote
    # What the killed bind worker left 'submitting' becomes 'unknown' (the periodic reconciler, now).
    messages_reconcile(actor=Actor.system("test"), older_than=timedelta(0))

    records, per_phone = submissions(smsc_a, smsc_b)
    messages = list(
        OutboundMessage.objects.filter(batch__campaign__in=campaigns).values_list(
            "destination", "state", "gateway__code"
        )
    )
    states = Counter(state for _d, state, _g in messages)
    by_gateway = Counter(g for _d, _s, g in messages)
    campaign_states = dict(Campaign.objects.filter(pk__in=[c.pk for c in campaigns]).values_list("name", "state"))
    otp_messages = dict(OutboundMessage.objects.filter(purpose=MessagePurpose.OTP).values_list("destination", "state"))
    otp_per_phone = Counter(
        OutboundMessage.objects.filter(purpose=MessagePurpose.OTP).values_list("destination", flat=True)
    )
    retried = [r for r in otp.requests if len(r.attempts) > 1]
    answers = Counter(r.answer for r in otp.requests)
    context = (
        f"{total} recipients, setup {setup_seconds:.0f}s, send {send_seconds:.0f}s, killed at {killed}, "
        f"states={dict(states)}, gateways={dict(by_gateway)}, campaigns={campaign_states}, "
        f"otp={len(otp.requests)} answers={dict(answers)} retried={len(retried)}, "
        f"load={os.getloadavg()}"
    )
    print(context)

    problems = []
    if len(killed) != 4:
        problems.append(f"not every kind was killed before the deadline: {killed}")
    if not web_respawned or web_respawned == [web_worker]:
        problems.append("the killed gunicorn worker was not replaced")
    heartbeat = Heartbeat.objects.filter(name=BEAT_HEARTBEAT).values_list("at", flat=True).first()
    if heartbeat is None or heartbeat <= beat_restarted:
        problems.append(f"no beat heartbeat since beat was started again ({heartbeat}, restarted {beat_restarted})")
    if set(ready.values()) != {200}:
        problems.append(f"/readyz after the kills: {ready}")
    # Campaigns: each opted-in contact accepted once, none lost.
    campaign_phones = {n.lstrip("+") for n in numbers}
    twice = [d for d, n in per_phone.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} phones accepted twice by the SMSCs, e.g. {twice[:3]}")
    if len(messages) != total or len({d for d, _s, _g in messages}) != total:
        problems.append(f"{len(messages)} campaign messages for {total} recipients")
    if by_gateway != {"smpp-a": half, "smpp-b": total - half}:
        problems.append(f"the campaigns were not spread over both gateways: {dict(by_gateway)}")
    unfinished = {s: n for s, n in states.items() if s not in FINAL_OR_UNKNOWN}
    if unfinished:
        problems.append(f"campaign messages neither delivered nor unknown: {unfinished}")
    if set(campaign_states.values()) != {CampaignState.COMPLETED}:
        problems.append(f"campaigns not completed: {campaign_states}")
    delivered = {d.lstrip("+") for d, s, _g in messages if s == MessageState.DELIVERED}
    unknown = {d.lstrip("+") for d, s, _g in messages if s == MessageState.UNKNOWN}
    unknown |= {d.lstrip("+") for d, s in otp_messages.items() if s == MessageState.UNKNOWN}
    if any(per_phone[d] != 1 for d in delivered):
        problems.append("a 'delivered' campaign message the SMSC did not accept exactly once")
    # 'unknown': claimed by the killed bind worker and written to the SMSC (its journal says so), its
    # outcome not committed. Never resent; it reached the SMSC, except what was still in the socket
    # when the worker died (at most its window). One that never left is lost.
    never_sent = sorted(d for d in unknown if not per_phone[d])
    if len(never_sent) > WINDOW:
        problems.append(
            f"{len(never_sent)} of {len(unknown)} 'unknown' messages never reached the SMSC: {never_sent[:3]}"
        )
    if any(per_phone[d] > 1 for d in unknown):
        problems.append("an 'unknown' message was resent")
    accepted_phones = {d for d, n in per_phone.items() if n}
    strays = accepted_phones - campaign_phones - {d.lstrip("+") for d in otp_messages}
    if strays:
        problems.append(f"the SMSCs accepted messages the platform has no row for: {sorted(strays)[:3]}")
    # OTP: every request answered; each sent at most once; each answered 'executed' exactly once.
    if not otp.requests or answers != {"executed": len(otp.requests)}:
        problems.append(f"OTP requests not all executed: {dict(answers)}")
    if not retried:
        problems.append("no OTP request had to be retried: the web kill hit nothing in flight")
    for request in otp.requests:
        phone = request.phone.lstrip("+")
        if otp_per_phone[request.phone] > 1 or per_phone[phone] > 1:
            problems.append(f"OTP {request.key} sent twice (retried: {request.attempts})")
        elif (
            request.answer == "executed"
            and otp_messages.get(request.phone) != MessageState.UNKNOWN
            and (per_phone[phone] != 1 or otp_messages.get(request.phone) != MessageState.DELIVERED)
        ):
            problems.append(
                f"OTP {request.key} answered 'executed' but accepted {per_phone[phone]} times, "
                f"message {otp_messages.get(request.phone)} (attempts: {request.attempts})"
            )
    if problems:
        pytest.fail(f"{context}\n" + "\n".join(problems[:20]) + f"\n{topology.logs()}")
    assert len(records) >= total
