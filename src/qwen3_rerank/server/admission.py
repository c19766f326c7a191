"""Admission control: at most ``limit`` rerank requests in progress at once; more get 429.

As in text-embeddings-inference (``core/src/infer.rs``), a request takes one :class:`Permit`
when it arrives and holds it until it is answered. The permit is a context manager, so the
place it is taken is also the one place it is given back, on every path out (an answer, a
validation error, a timeout, a cancelled client, a failed model step), and never twice.
"""

from __future__ import annotations

from types import TracebackType

from prometheus_client import Gauge

from .api_errors import ApiError


class Permit:
    """One admitted request's place; given back once, when its ``with`` block ends."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Give the place back; a second call does nothing, so no path can release twice."""
        if not self._released:
            self._released = True
            self._admission._give_back()

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class Admission:
    """Counts the permits out; ``in_use`` is also shown as the ``qwen3_rerank_queue_depth`` gauge."""

    def __init__(self, limit: int, gauge: Gauge | None = None) -> None:
        if limit < 1:
            raise ValueError("the admission limit must be at least 1")
        self.limit = limit
        self._gauge = gauge
        self._in_use = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    def try_acquire(self) -> Permit:
        """A permit, or the 429 error (with ``Retry-After``) when ``limit`` are already out."""
        if self._in_use >= self.limit:
            raise ApiError(
                429,
                "overloaded",
                f"server busy: {self._in_use} requests in progress (limit {self.limit})",
                {"Retry-After": "1"},
            )
        self._in_use += 1
        self._show()
        return Permit(self)

    def _give_back(self) -> None:
        self._in_use -= 1
        self._show()

    def _show(self) -> None:
        if self._gauge is not None:
            self._gauge.set(self._in_use)
