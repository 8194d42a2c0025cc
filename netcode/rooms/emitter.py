"""A small event emitter in the style of LiveKit's Python SDK (``@room.on("event")``)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["EventEmitter"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class EventEmitter:
    """Handlers registered with :meth:`on` are called with the event's arguments.

    A handler's exception is logged, never raised into netcode. Coroutine handlers are
    scheduled as tasks (kept referenced until they finish).
    """

    #: event names this emitter emits; ``on`` refuses others, catching typos early
    EVENTS: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._handlers: dict[str, list[Callable[..., Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, event: str, handler: F | None = None) -> Any:
        """Register ``handler`` for ``event``; usable as a decorator: ``@obj.on("event")``."""
        if self.EVENTS and event not in self.EVENTS:
            raise ValueError(f"unknown event {event!r}; expected one of {sorted(self.EVENTS)}")

        def register(fn: F) -> F:
            self._handlers.setdefault(event, []).append(fn)
            return fn

        return register if handler is None else register(handler)

    def off(self, event: str, handler: Callable[..., Any]) -> None:
        """Unregister a handler."""
        handlers = self._handlers.get(event, [])
        if handler in handlers:
            handlers.remove(handler)

    def emit(self, event: str, *args: Any) -> None:
        for handler in list(self._handlers.get(event, ())):
            try:
                result = handler(*args)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)
            except Exception:
                logger.exception("%r handler %r raised", event, handler)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("async handler raised", exc_info=task.exception())
