"""``netcode-load --soak``: the server's memory over a long run, and every event accounted for.

::

    netcode-load --duration 600 --impair "loss=5%" --clients 16 --soak

Beside the load test's figures, a soak reports the server process's resident memory,
sampled every ``--rss-every`` seconds from ``/proc/<pid>/status``, its growth after the
first minute (after a third of the run if that is shorter: the warm-up, when encoders,
histories, queues and the allocator find their size), in percent; and the game events the
bots sent each other against those that arrived: every Chat a bot sends goes to every other
bot, so each must arrive once at each of them, and ``events_lost`` must be 0 (resends and
resumes included: a session outlives its links). After the run, the events still in flight
are given ``DRAIN_S`` seconds to arrive.

The bots must run in this process (``--bot-processes 1``, the default): the ledger counts
what each bot's room sends and receives.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from netcode.rooms.events import Chat

__all__ = ["DRAIN_S", "EventLedger", "RssSampler", "SoakMonitor", "rss_mib"]

#: Seconds the events in flight at the end of the run get to arrive.
DRAIN_S = 10.0


def rss_mib(pid: int) -> float | None:
    """Resident memory of process ``pid`` (MiB), or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Samples a process's RSS every ``every`` seconds until stopped."""

    def __init__(self, pid: int, every: float) -> None:
        self.pid = pid
        self.every = every
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._started = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    def sample(self) -> None:
        rss = rss_mib(self.pid)
        if rss is not None:
            self.samples.append((time.monotonic() - self._started, rss))

    def stop(self) -> None:
        self._task.cancel()
        self.sample()

    def figures(self) -> dict[str, Any]:
        samples = self.samples
        if not samples:
            return {"rss_samples_mib": []}
        duration = samples[-1][0]
        warmup = min(60.0, duration / 3)
        after = [rss for t, rss in samples if t >= warmup] or [samples[-1][1]]
        base = after[0]
        return {
            "rss_every_s": self.every,
            "rss_samples_mib": [[round(t, 1), round(rss, 1)] for t, rss in samples],
            "rss_warmup_s": round(warmup, 1),
            "rss_after_warmup_mib": round(base, 1),
            "rss_end_mib": round(samples[-1][1], 1),
            "rss_peak_mib": round(max(rss for _, rss in samples), 1),
            # end against the first sample after the warm-up; the peak after it too
            "rss_growth_after_warmup_pct": round((samples[-1][1] - base) / base * 100, 2),
            "rss_peak_growth_after_warmup_pct": round((max(after) - base) / base * 100, 2),
        }


class EventLedger:
    """Counts the Chat events each bot sends and what each receives from whom."""

    def __init__(self, bots: list[Any]) -> None:
        self.bots = bots
        self.sent: Counter[str] = Counter()
        #: (receiver, sender) -> events received
        self.received: Counter[tuple[str, str]] = Counter()
        for bot in bots:
            self._watch(bot)

    def _watch(self, bot: Any) -> None:
        room = bot.room
        me = f"bot{bot.index}"
        send = room.send_event

        def counted_send(event: Any, **options: Any) -> None:
            send(event, **options)
            if isinstance(event, Chat) and event.text.startswith("t="):
                self.sent[me] += 1

        room.send_event = counted_send

        def on_chat(event: Chat, participant: Any, topic: str) -> None:
            if participant is not None and event.text.startswith("t="):
                self.received[(me, participant.identity)] += 1

        room.on_event(Chat, on_chat)

    def figures(self) -> dict[str, Any]:
        names = [f"bot{bot.index}" for bot in self.bots]
        expected = lost = duplicated = 0
        for receiver in names:
            for sender in names:
                if sender == receiver:
                    continue
                n, got = self.sent[sender], self.received[(receiver, sender)]
                expected += n
                lost += max(0, n - got)
                duplicated += max(0, got - n)
        return {
            "events_sent": sum(self.sent.values()),
            "events_expected": expected,
            "events_arrived": sum(self.received.values()),
            "events_lost": lost,
            "events_duplicated": duplicated,
        }

    async def drain(self, timeout: float) -> None:
        """Wait until every event sent arrived everywhere (or ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and self.figures()["events_lost"]:
            await asyncio.sleep(0.1)


class SoakMonitor:
    """RSS of the server process and the event ledger of the bots, for one run."""

    def __init__(self, pid: int | None, bots: list[Any], every: float) -> None:
        self.sampler = RssSampler(pid, every) if pid is not None else None
        self.ledger = EventLedger(bots)

    async def finish(self) -> dict[str, Any]:
        """After the run: let the events in flight arrive, stop sampling; the figures."""
        await self.ledger.drain(DRAIN_S)
        soak: dict[str, Any] = {}
        if self.sampler is not None:
            self.sampler.stop()
            soak.update(self.sampler.figures())
        soak.update(self.ledger.figures())
        reconnects = sum(bot.room.reconnects for bot in self.ledger.bots)
        soak["bot_reconnects"] = reconnects
        return {"soak": soak}
