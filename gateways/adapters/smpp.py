"""SMPP 3.4 gateways: sent by the bind worker (manage.py smpp_worker), never from Celery."""

from __future__ import annotations

from collections.abc import Sequence

from gateways.adapters.base import GatewayAdapter, OutgoingSms, SendOutcome, register_adapter


@register_adapter
class SmppAdapter(GatewayAdapter):
    provider = "smpp"
    sends_from_worker = True

    def send(self, batch: Sequence[OutgoingSms]) -> list[SendOutcome]:
        raise RuntimeError("SMPP gateways are sent by their bind worker; queue the messages instead.")
