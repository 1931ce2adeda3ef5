"""Actors as the tests act: a user through an interface."""

from __future__ import annotations

from typing import Any

from smsplatform.kernel.actor import Actor, Channel


def actor(user: Any, channel: Channel = Channel.API, token_name: str = "") -> Actor:
    return Actor(user=user, channel=channel, token_name=token_name)
