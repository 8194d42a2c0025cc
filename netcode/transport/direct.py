"""Direct peer links between two clients, their offer and answer carried by someone else.

In a peer-to-peer room the room server does not answer the offer itself: it relays it,
over each participant's authenticated reliable channel, to the participant it is meant for,
stamped with the sender's identity (see docs/PROTOCOL.md, "Peer-to-peer rooms"). This
module makes the two ends of such a link without any signaling of its own:

- the offerer calls :func:`offer_link` (a :class:`PeerLink` and its SDP offer), sends the
  offer on, and passes the answer it gets back to :func:`accept_answer`;
- the answerer calls :func:`answer_link` with the offer (a :class:`PeerLink` and its SDP
  answer) and sends the answer back.

Both ends then ``await link.wait_open()``. The link is the same :class:`PeerLink` a client
has to the server: the ``reliable`` and ``lossy`` channels pre-negotiated, extra channels
for data tracks. Each SDP carries its end's DTLS certificate fingerprint, and aiortc refuses
a DTLS handshake whose certificate does not match it, so a link made from an offer that
came through the server stamped with a participant's identity talks to that participant
and nobody else.

Gathering is not trickled (aiortc gathers every candidate in ``setLocalDescription``), so
one offer and one answer are all it takes. ``include_loopback`` adds a 127.0.0.1 host
candidate, for peers on the same machine (see :func:`loopback_candidates`).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiortc import RTCSessionDescription

from netcode.transport.ice import IceServerLike
from netcode.transport.impair import ImpairedPath, Impairment
from netcode.transport.peerlink import (
    NO_CANDIDATES,
    ConnectError,
    PeerLink,
    has_candidates,
    loopback_candidates,
    make_peer_connection,
)

__all__ = ["MAX_SDP_CHARS", "accept_answer", "answer_link", "offer_link"]

#: Longest SDP accepted from a peer (an offer with a few candidates is about 1 KB).
MAX_SDP_CHARS = 12 * 1024


def _check_sdp(sdp: str) -> None:
    if not isinstance(sdp, str) or not sdp or len(sdp) > MAX_SDP_CHARS:
        raise ConnectError(f"peer SDP must be 1 to {MAX_SDP_CHARS} characters")


async def _describe(link: PeerLink, answer: bool, include_loopback: bool) -> str:
    """Set the link's local offer or answer (candidates gathered); its SDP. On failure the
    link is closed."""
    pc = link.pc
    try:
        with loopback_candidates(include_loopback):
            description = await (pc.createAnswer() if answer else pc.createOffer())
            await pc.setLocalDescription(description)
        sdp = str(pc.localDescription.sdp)
        if not has_candidates(sdp):
            raise ConnectError(NO_CANDIDATES)
    except BaseException:
        await link.close()
        raise
    return sdp


async def offer_link(
    *,
    name: str = "",
    ice_servers: Iterable[IceServerLike] | None = None,
    include_loopback: bool = False,
    impairment: Impairment | ImpairedPath | None = None,
) -> tuple[PeerLink, str]:
    """A new link and its SDP offer (candidates gathered). Close the link if unused."""
    link = PeerLink(make_peer_connection(ice_servers), name=name, impairment=impairment)
    return link, await _describe(link, False, include_loopback)


async def accept_answer(link: PeerLink, sdp: str) -> None:
    """Apply the peer's SDP answer to a link made by :func:`offer_link`.

    Raises ConnectError if the answer is malformed or not acceptable.
    """
    _check_sdp(sdp)
    try:
        await link.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
    except Exception as exc:  # aiortc's parser raises assorted exceptions on bad input
        raise ConnectError(f"{link.name}: peer's SDP answer not accepted: {exc!r}") from None


async def answer_link(
    offer: str,
    *,
    name: str = "",
    ice_servers: Iterable[IceServerLike] | None = None,
    include_loopback: bool = False,
    impairment: Impairment | ImpairedPath | None = None,
) -> tuple[PeerLink, str]:
    """A new link answering the peer's SDP ``offer``, and its SDP answer.

    Raises ConnectError if the offer is malformed or carries no data channels.
    """
    _check_sdp(offer)
    pc = make_peer_connection(ice_servers)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    except Exception as exc:
        await pc.close()
        raise ConnectError(f"peer's SDP offer not accepted: {type(exc).__name__}") from None
    except BaseException:
        await pc.close()
        raise
    if pc.sctp is None:
        await pc.close()
        raise ConnectError("peer's offer has no data channel (application) section")
    link = PeerLink(pc, name=name, impairment=impairment)
    return link, await _describe(link, True, include_loopback)
