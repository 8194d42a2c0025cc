"""ICE consent freshness that tolerates slow answers (netcode.transport.consent), on real
aiortc links whose UDP datagrams are delayed."""

from __future__ import annotations

import asyncio

import aioice.ice
import pytest
from helpers import linked_pair

from netcode.transport import consent
from netcode.transport.impair import ImpairedPath, Impairment
from netcode.transport.peerlink import PeerLink

pytestmark = pytest.mark.webrtc


def _ice(link: PeerLink) -> aioice.ice.Connection:
    sctp = link.pc.sctp
    assert sctp is not None
    return sctp.transport.transport.iceGatherer._connection


async def test_consent_answered_late_keeps_the_link(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers 800 ms late (aioice's check gives up after 500 ms): consent stands."""
    monkeypatch.setattr(consent, "CONSENT_INTERVAL_S", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)  # aioice's own, were it used
    path = ImpairedPath(Impairment())
    a, b = await linked_pair(path)
    try:
        assert isinstance(_ice(a).__dict__.get("query_consent"), type(lambda: 0))
        path.configure(Impairment(latency_ms=400))  # each way: consent answers come 0.8 s late
        got: list[bytes] = []
        b.on_lossy(got.append)
        for _ in range(60):  # 6 s: about 25 checks, each answered only after its first try
            a.send_lossy(b"still here")
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        assert a.pc.connectionState == "connected" and b.pc.connectionState == "connected"
        assert len(got) == 60
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_consent_still_expires_when_the_peer_goes_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consent, "CONSENT_INTERVAL_S", 0.1)
    monkeypatch.setattr(consent, "CONSENT_RETRANSMISSIONS", 0)  # 500 ms per check
    path = ImpairedPath(Impairment())
    a, b = await linked_pair(path)
    try:
        path.configure(Impairment(loss=1.0))  # a hears nothing from b, and b nothing from a
        for _ in range(100):
            if a.pc.connectionState != "connected":
                break
            await asyncio.sleep(0.1)
        # six checks of 0.5 s each, 0.1 s apart
        assert a.pc.connectionState in ("failed", "closed")
    finally:
        await asyncio.gather(a.close(), b.close())
