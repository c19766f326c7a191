"""The queue between the requests and the model worker (TEI's ``core/src/queue.rs``).

Requests are scored in arrival order. :meth:`RequestQueue.next_batch` takes the oldest entries
while their tokens fit the token budget, always at least one (a request larger than the budget
goes alone), and stops at the first that does not fit instead of skipping ahead: a small request
queued behind a large one is not overtaken by later ones, it leads the next batch. An entry
whose request was given up (timeout, client gone) is dropped here, so the model never runs it;
one given up once the worker took it sets :attr:`Entry.gone`, which the worker's ``should_stop``
reads from the model thread between batches.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..request_builder import ScoringRequest
from ..results import ScoredDocument

if TYPE_CHECKING:
    from .tracing import EntryTrace


class QueueClosed(Exception):
    """The server is stopping: the queue takes no more requests (those queued are still scored)."""


@dataclass(eq=False)
class Entry:
    """One request waiting for the model; the worker resolves ``future`` with its scores."""

    request: ScoringRequest
    raw: bool
    future: asyncio.Future[list[ScoredDocument]]
    enqueued: float = field(default_factory=time.perf_counter)
    #: set (on the event loop) once the future is cancelled: safe to read from the model thread
    gone: threading.Event = field(default_factory=threading.Event)
    #: taken by :meth:`RequestQueue.next_batch` for a model step (no longer droppable)
    started: bool = False
    #: its spans, when its request is traced (:mod:`.tracing`)
    trace: EntryTrace | None = None

    def __post_init__(self) -> None:
        self.future.add_done_callback(lambda future: self.gone.set() if future.cancelled() else None)

    @property
    def tokens(self) -> int:
        return self.request.num_tokens

    @property
    def abandoned(self) -> bool:
        """Its waiter is gone (the future was cancelled with it): nothing to score it for."""
        return self.future.done()


class RequestQueue:
    """FIFO of :class:`Entry`; one consumer (the worker), any number of producers, one event loop."""

    def __init__(self) -> None:
        self._entries: collections.deque[Entry] = collections.deque()
        self._changed = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        """Entries queued, abandoned ones included until :meth:`next_batch` drops them."""
        return len(self._entries)

    @property
    def live_tokens(self) -> int:
        """Tokens of the entries still wanted."""
        return sum(entry.tokens for entry in self._entries if not entry.abandoned)

    def put(self, request: ScoringRequest, *, raw: bool = False) -> Entry:
        """Queue a prepared request; await the returned entry's ``future`` for its scores."""
        if self._closed:
            raise QueueClosed("the server is stopping")
        entry = Entry(request, raw, asyncio.get_running_loop().create_future())
        self._entries.append(entry)
        self._changed.set()
        return entry

    def next_batch(self, token_budget: int) -> list[Entry]:
        """The oldest live entries whose tokens fit ``token_budget`` (at least one, if any is queued)."""
        batch: list[Entry] = []
        tokens = 0
        while self._entries:
            entry = self._entries[0]
            if entry.abandoned:
                self._entries.popleft()
                continue
            if batch and tokens + entry.tokens > token_budget:
                break
            batch.append(self._entries.popleft())
            entry.started = True
            tokens += entry.tokens
        return batch

    def close(self) -> None:
        """Take no more entries; :meth:`wait_for_entry` answers False once the rest are taken."""
        self._closed = True
        self._changed.set()

    async def wait_for_entry(self) -> bool:
        """Wait until something is queued: True, or False when the queue is closed and empty."""
        await self._wait_until(lambda: bool(self._entries) or self._closed, None)
        return bool(self._entries)

    async def wait_for_tokens(self, tokens: int, timeout: float) -> bool:
        """Wait at most ``timeout`` s for ``tokens`` live tokens to be queued; whether they were."""
        return await self._wait_until(lambda: self.live_tokens >= tokens or self._closed, timeout)

    async def _wait_until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not ready():
            self._changed.clear()
            if deadline is None:
                await self._changed.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return ready()
        return True
