"""docs/PROTOCOL.md describes everything on the wire, and netcode.js speaks nothing else.

Every message kind, frame type and EXTENSION channel that the Python code declares is
documented, and so is every one that the browser client's tables name (and with the same
numbers as Python's).
"""

from __future__ import annotations

import pathlib
import re

import pytest

from netcode.replication.describe import EventFieldKind, FieldKind
from netcode.replication.schema import GroupKind
from netcode.rooms.protocol import ExtensionChannel, Kind
from netcode.web import asset
from netcode.wire import FrameType

DOC = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "PROTOCOL.md").read_text()
JS = asset("netcode.js").decode()


def js_table(name: str) -> dict[str, int]:
    """The ``export const NAME = Object.freeze({...})`` table of netcode.js."""
    match = re.search(rf"export const {name} = Object\.freeze\(\{{(.*?)\}}\);", JS, re.S)
    assert match, name
    return {k: int(v) for k, v in re.findall(r"(\w+):\s*(\d+)", match.group(1))}


@pytest.mark.parametrize(
    ("table", "python"),
    [
        ("Kind", Kind),
        ("FrameType", FrameType),
        ("ExtensionChannel", ExtensionChannel),
        ("FieldKind", FieldKind),
        ("GroupKind", GroupKind),
        ("EventFieldKind", EventFieldKind),
    ],
)
def test_the_browser_client_numbers_things_as_python_does(table: str, python: type) -> None:
    numbers = {m.name: int(m.value) for m in python}  # type: ignore[attr-defined]
    assert js_table(table).items() <= numbers.items()


def test_every_message_frame_and_channel_is_documented() -> None:
    reliable = DOC[DOC.index("## The reliable channel") :]
    for kind in Kind:
        assert re.search(rf"\| {int(kind)} \| {kind.name} \|", reliable), (
            f"document {kind.name} in docs/PROTOCOL.md, The reliable channel"
        )
    frames = DOC[DOC.index("## Frames") :]
    for frame in FrameType:
        assert re.search(rf"\| {int(frame)} \| `{frame.name}` \|", frames), frame.name
    channels = DOC[DOC.index("## EXTENSION channels") :]
    for channel in ExtensionChannel:
        assert re.search(rf"\| {int(channel)} \| {channel.name} \|", channels), channel.name
    description = DOC[DOC.index("## Schema description") :]
    for field_kind in FieldKind:
        assert f"{field_kind.name} ({int(field_kind)})" in description, field_kind.name
    for group_kind in GroupKind:
        assert f"{group_kind.name} {int(group_kind)}" in description, group_kind.name


def test_the_signaling_fields_the_browser_sends_are_documented() -> None:
    signaling = DOC[DOC.index("## Signaling") : DOC.index("## Datagram")]
    sent = re.search(r"const request = \{(.*?)\};", JS, re.S)
    assert sent is not None
    for field in ("sdp", "type", "token", "room", "resume"):
        assert f'"{field}"' in signaling, field
        assert re.search(rf"\b{field}\b", sent.group(1) + JS[sent.end() : sent.end() + 120])
    resume = DOC[DOC.index("**Resume.**", DOC.index("## Sessions and resume")) :]
    js_resume = re.search(r"const resume = \{(.*?)\};", JS, re.S)
    assert js_resume is not None
    for field in ("session", "secret", "received", "episode"):
        assert f'"{field}"' in resume, field
    assert "received: this._received, episode: this._episode" in js_resume.group(1)
    assert "this._session = { session: body.session, secret: body.resumeSecret }" in JS
