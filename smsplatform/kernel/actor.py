"""Who acts, and through which interface (ARCHITECTURE, spine 1)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from smsplatform.operations.logs import context_set

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser, AnonymousUser


class Channel(StrEnum):
    MCP = "mcp"
    API = "api"
    ADMIN = "admin"
    FORM = "form"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    """Passed to every service. ``user`` is None only for system tasks."""

    user: Any  # a User instance; typed loosely so system actors need no user row
    channel: Channel
    token_name: str = ""

    @classmethod
    def system(cls, task_name: str) -> Actor:
        return cls(user=None, channel=Channel.SYSTEM, token_name=task_name)

    @classmethod
    def for_request(cls, request: Any, channel: Channel) -> Actor:
        token = getattr(request, "auth", None)
        actor = cls(
            user=request.user,
            channel=channel,
            token_name=getattr(token, "name", "") or "",
        )
        # Every log line of the rest of this request (and of the tasks it queues) names the actor.
        context_set(actor=actor.label, channel=str(channel))
        return actor

    @property
    def user_id(self) -> int | None:
        return getattr(self.user, "pk", None)

    @property
    def label(self) -> str:
        who = getattr(self.user, "username", None) or "system"
        suffix = f" [{self.token_name}]" if self.token_name else ""
        return f"{who} via {self.channel}{suffix}"

    def has_perm(self, perm: str) -> bool:
        if self.user is None:
            # System tasks run only what the scheduler was told to run.
            return self.channel == Channel.SYSTEM
        user: AbstractUser | AnonymousUser = self.user
        return bool(user.is_active and user.has_perm(perm))
