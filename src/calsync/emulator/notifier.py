"""What the two push wings share (EWS push delivery and Graph change notifications): one asyncio task per
subscription on the server's event loop, an HTTP client to deliver with, and the waking of a subscription's task
when its mailbox changes, when the clock jumps or faults change (``poke_all``), or when asked (``schedule``). The
wings say what a task does; this module only runs, wakes and forgets the tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Iterable
from typing import Any, Generic, Protocol, TypeVar

import httpx

from .exchange import Exchange

MAX_WAIT_SECONDS = 5.0  # a sleeping task looks at the clock at least this often (real seconds)


class Watching(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def mailbox(self) -> uuid.UUID: ...


S = TypeVar("S", bound=Watching)


class Notifier(ABC, Generic[S]):
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._by_mailbox: dict[uuid.UUID, set[str]] = {}
        exchange.on_change(self._changed)

    @abstractmethod
    def live(self) -> Iterable[S]:
        """The subscriptions that need a task when the server starts."""

    @abstractmethod
    def run(self, subscription: S) -> Coroutine[Any, Any, None]:
        """The task of one subscription; it returns when the subscription ends."""

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None, "the notifier is not started"
        return self._client

    # --- lifecycle (called on the server's event loop) ------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(follow_redirects=False)
        for subscription in list(self.live()):
            self._start_task(subscription)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
        self._loop = None

    def poke_all(self) -> None:
        """Wake every task (after the clock jumped or faults changed)."""
        if self._loop is not None:
            for event in list(self._wakeups.values()):
                self._loop.call_soon_threadsafe(event.set)

    def schedule(self, subscription: S) -> None:
        """From any thread: give the subscription a task if it has none, and wake it."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_task, subscription)

    # --- waking ---------------------------------------------------------------------------------

    def _changed(self, mailbox: uuid.UUID) -> None:
        if self._loop is None:
            return
        for sid in list(self._by_mailbox.get(mailbox, ())):
            event = self._wakeups.get(sid)
            if event is not None:
                self._loop.call_soon_threadsafe(event.set)

    def _start_task(self, subscription: S) -> None:
        if subscription.id in self._tasks:
            self._wakeups[subscription.id].set()
            return
        self._wakeups[subscription.id] = asyncio.Event()
        self._by_mailbox.setdefault(subscription.mailbox, set()).add(subscription.id)
        self._tasks[subscription.id] = asyncio.ensure_future(self._guarded(subscription))

    async def _guarded(self, subscription: S) -> None:
        try:
            await self.run(subscription)
        finally:
            self._tasks.pop(subscription.id, None)
            self._wakeups.pop(subscription.id, None)
            ids = self._by_mailbox.get(subscription.mailbox)
            if ids is not None:
                ids.discard(subscription.id)

    async def nap(self, subscription: S, emulated_seconds: float) -> None:
        """Sleep up to ``emulated_seconds`` of emulator clock (at most MAX_WAIT_SECONDS real), or until woken."""
        event = self._wakeups[subscription.id]
        event.clear()
        timeout = min(self.exchange.clock.real_seconds(max(emulated_seconds, 0.0)), MAX_WAIT_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=timeout)
