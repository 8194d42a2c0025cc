"""Topic tables: a topic's name crosses the wire once, then a small id stands for it.

Each direction of each connection has its own table. The sender binds ids
(:class:`OutgoingTopics`); the receiver learns them (:class:`IncomingTopics`), from a TOPIC
message on the reliable channel or from a name carried inline by a lossy frame. Id 0 means
"no topic". Both tables are bounded: a peer cannot grow them without limit.
"""

from __future__ import annotations

from collections.abc import Callable

from netcode.core.events import Delivery
from netcode.errors import ProtocolError
from netcode.rooms.protocol import MAX_TOPIC_CHARS

__all__ = [
    "MAX_TOPICS",
    "IncomingTopics",
    "OutgoingTopics",
    "TooManyTopics",
    "TopicTableFull",
    "check_topic",
]

#: Topics one direction of one connection may bind.
MAX_TOPICS = 1024


class TooManyTopics(ProtocolError):
    """The peer bound more topic names than its budget allows."""


class TopicTableFull(ValueError):
    """This direction of the connection has bound as many topics as it may."""


def check_topic(topic: str) -> str:
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, not {type(topic).__name__}")
    if len(topic) > MAX_TOPIC_CHARS or len(topic.encode()) > 255:
        raise ValueError(f"topic {topic[:20]!r}... exceeds {MAX_TOPIC_CHARS} characters")
    return topic


class OutgoingTopics:
    """Ids we bound for topics we send on."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._confirmed: set[int] = set()
        self._announced: set[int] = set()  # named in a TOPIC message on the reliable channel

    def bind(self, topic: str) -> tuple[int, bool]:
        """The topic's id for the reliable channel, and whether the peer must be told the name
        first (a TOPIC message): the first time the reliable path uses the topic.

        A binding the lossy path made (its name inline) does not count: that datagram may
        never arrive, or arrive after the reliable message that names the id.
        """
        topic_id = self._id(topic)
        if topic_id == 0 or topic_id in self._announced:
            return topic_id, False
        self._announced.add(topic_id)
        return topic_id, True

    def _id(self, topic: str) -> int:
        if not topic:
            return 0
        topic_id = self._ids.get(topic)
        if topic_id is not None:
            return topic_id
        if len(self._ids) >= MAX_TOPICS:
            raise TopicTableFull(f"more than {MAX_TOPICS} topics on one connection")
        topic_id = self._ids[topic] = len(self._ids) + 1
        return topic_id

    def lossy_ref(self, topic: str) -> tuple[int, str | None]:
        """Id and, until the peer is known to hold the binding, the name to send inline."""
        topic_id = self._id(topic)
        if topic_id == 0 or topic_id in self._confirmed:
            return topic_id, None
        return topic_id, topic

    def confirm(self, topic_id: int) -> None:
        """The peer holds this binding (a datagram naming it inline was acknowledged)."""
        self._confirmed.add(topic_id)

    def confirm_when_acked(self, topic_id: int) -> Callable[[Delivery], None]:
        """A delivery callback for a frame naming ``topic_id`` inline: ACKED confirms it."""

        def on_delivery(result: Delivery) -> None:
            if result is Delivery.ACKED:
                self._confirmed.add(topic_id)

        return on_delivery


class IncomingTopics:
    """Ids the peer bound for the topics it sends on."""

    def __init__(
        self, max_topics: int = MAX_TOPICS, admit: Callable[[], str | None] | None = None
    ) -> None:
        #: topic names the peer may bind (its budget)
        self.max_topics = min(max_topics, MAX_TOPICS)
        #: asked before each new binding: None admits it, a reason refuses it (TooManyTopics)
        self.admit = admit
        self._names: dict[int, str] = {0: ""}

    def learn(self, topic_id: int, name: str) -> None:
        """Record a binding; raises ProtocolError on a conflicting or excess binding."""
        known = self._names.get(topic_id)
        if known == name:
            return
        if topic_id == 0 or known is not None:
            raise ProtocolError(f"topic id {topic_id} rebound from {known!r} to {name!r}")
        if len(self._names) > self.max_topics:
            raise TooManyTopics(f"peer bound more than {self.max_topics} topics")
        if len(name) > MAX_TOPIC_CHARS or len(name.encode()) > 255:
            # the bound check_topic puts on our own names: a name we learn is one we may
            # relay inline, in a 1-byte length
            raise ProtocolError(f"topic name exceeds {MAX_TOPIC_CHARS} characters or 255 bytes")
        if self.admit is not None and (refused := self.admit()) is not None:
            raise TooManyTopics(refused)
        self._names[topic_id] = name

    def resolve(self, topic_id: int, inline: str | None = None) -> str:
        """The name of ``topic_id`` (learning ``inline`` first if given)."""
        if inline is not None:
            self.learn(topic_id, inline)
        name = self._names.get(topic_id)
        if name is None:
            raise ProtocolError(f"topic id {topic_id} was never bound")
        return name
