"""An Exchange in memory: a :class:`~calsync.sources.base.Source` twin for tests and trials, like vdirsyncer's
memory storage. Mailboxes hold :class:`~calsync.calendar.model.Appointment` values; every change is numbered,
so a sync state (``"<mailbox>:<number>"``) reads exactly what changed since, page by page; subscriptions are
recorded; and the test decides what fails.

- :meth:`MemorySource.put` / :meth:`MemorySource.delete` change a mailbox as a user would;
  :meth:`MemorySource.report_unreadable` makes an item unreadable (it comes in ``ChangePage.unreadable``).
- :meth:`MemorySource.fail` makes the next calls of an operation (``changes``, ``subscribe``,
  ``check_mailbox``, ``read_items``) raise an error; :meth:`MemorySource.interrupt` makes a pass die after some
  pages, like a worker killed mid-pass.
- :attr:`MemorySource.calls` lists every call, so a test can also check that nothing called Exchange.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from calsync.calendar.model import Appointment

from .base import ChangePage, ItemsRead, MailboxCheck, Source, SourceError, Subscription, UnreadableItem

__all__ = ["MemorySource"]

_SUBSCRIPTION_NUMBERS = itertools.count(1)


@dataclass
class _Mailbox:
    display_name: str
    items: dict[str, Appointment] = field(default_factory=dict)
    unreadable: dict[str, UnreadableItem] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)  # item id -> number of its last change (delete too)
    number: int = 0


class MemorySource(Source):
    def __init__(self, name: str = "memory", mailboxes: tuple[str, ...] | list[str] = ()) -> None:
        self.name = name
        self.calls: list[tuple[str, str]] = []  # (operation, mailbox)
        self.subscriptions: list[tuple[str, str, int, str | None]] = []  # (mailbox, callback, frequency, watermark)
        self._mailboxes: dict[str, _Mailbox] = {}
        self._failures: dict[str, list[BaseException]] = {}
        self._interrupt: tuple[int, BaseException] | None = None
        self._lock = threading.Lock()
        for mailbox in mailboxes:
            self.add_mailbox(mailbox)

    # --- as a user would ---------------------------------------------------------------------------------------

    def add_mailbox(self, mailbox: str, display_name: str | None = None) -> None:
        with self._lock:
            self._mailboxes.setdefault(mailbox.lower(), _Mailbox(display_name or mailbox.split("@")[0]))

    def put(self, mailbox: str, appointment: Appointment) -> None:
        """Create or change an item."""
        with self._lock:
            box = self._box(mailbox)
            box.items[appointment.item_id] = appointment
            box.unreadable.pop(appointment.item_id, None)
            self._touch(box, appointment.item_id)

    def delete(self, mailbox: str, item_id: str) -> None:
        with self._lock:
            box = self._box(mailbox)
            box.items.pop(item_id, None)
            box.unreadable.pop(item_id, None)
            self._touch(box, item_id)

    def report_unreadable(self, mailbox: str, problem: UnreadableItem) -> None:
        """The item changes into one that cannot be read."""
        with self._lock:
            box = self._box(mailbox)
            box.items.pop(problem.item_id, None)
            box.unreadable[problem.item_id] = problem
            self._touch(box, problem.item_id)

    def items(self, mailbox: str) -> list[Appointment]:
        with self._lock:
            return list(self._box(mailbox).items.values())

    # --- scripting ---------------------------------------------------------------------------------------------

    def fail(self, operation: str, error: BaseException, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` raise ``error``."""
        with self._lock:
            self._failures.setdefault(operation, []).extend([error] * times)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()
            self._interrupt = None

    def interrupt(self, after_pages: int, error: BaseException) -> None:
        """The next pass raises ``error`` after yielding ``after_pages`` pages."""
        with self._lock:
            self._interrupt = (after_pages, error)

    # --- Source ------------------------------------------------------------------------------------------------

    def changes(self, mailbox: str, sync_state: str | None, batch_size: int) -> Iterator[ChangePage]:
        self._called("changes", mailbox)
        since = self._since(mailbox, sync_state)
        with self._lock:
            interrupt, self._interrupt = self._interrupt, None
        yielded = 0
        while True:
            with self._lock:
                box = self._box(mailbox)
                pending = sorted((n, i) for i, n in box.changed.items() if n > since)
                batch = pending[:batch_size]
                done = len(batch) == len(pending)
                upserts = tuple(box.items[i] for _, i in batch if i in box.items)
                unreadable = tuple(box.unreadable[i] for _, i in batch if i in box.unreadable)
                deletes = tuple(i for _, i in batch if i not in box.items and i not in box.unreadable)
                since = batch[-1][0] if batch else since
                if done:
                    since = max(since, box.number)
            if interrupt is not None and yielded >= interrupt[0]:
                raise interrupt[1]
            yield ChangePage(upserts, deletes, f"{mailbox.lower()}:{since}", done, requests=1, unreadable=unreadable)
            yielded += 1
            if done:
                return

    def read_items(self, mailbox: str, item_ids: list[str]) -> ItemsRead:
        self._called("read_items", mailbox)
        with self._lock:
            box = self._box(mailbox)
            return ItemsRead(
                upserts=tuple(box.items[i] for i in item_ids if i in box.items),
                gone=tuple(i for i in item_ids if i not in box.items and i not in box.unreadable),
                unreadable=tuple(box.unreadable[i] for i in item_ids if i in box.unreadable),
            )

    def subscribe(
        self, mailbox: str, callback_url: str, status_frequency: int, watermark: str | None = None
    ) -> Subscription:
        self._called("subscribe", mailbox)
        with self._lock:
            self._box(mailbox)
            self.subscriptions.append((mailbox, callback_url, status_frequency, watermark))
            # like Exchange, never the same subscription id twice (in this process)
            return Subscription(f"{self.name}-sub-{next(_SUBSCRIPTION_NUMBERS):06d}-{mailbox.split('@')[0]}", "wm")

    def check_mailbox(self, mailbox: str) -> MailboxCheck:
        self._called("check_mailbox", mailbox)
        with self._lock:
            found = self._mailboxes.get(mailbox.strip().lower())
        if found is None:
            return MailboxCheck(False, "mailbox_not_found", f"{mailbox} is not a mailbox here")
        return MailboxCheck(True, display_name=found.display_name)

    # --- plumbing ----------------------------------------------------------------------------------------------

    def _called(self, operation: str, mailbox: str) -> None:
        with self._lock:
            self.calls.append((operation, mailbox))
            queued = self._failures.get(operation)
            error = queued.pop(0) if queued else None
        if error is not None:
            raise error

    def _box(self, mailbox: str) -> _Mailbox:
        box = self._mailboxes.get(mailbox.strip().lower())
        if box is None:
            raise SourceError("permanent", "mailbox_not_found", f"{mailbox} is not a mailbox here")
        return box

    def _since(self, mailbox: str, sync_state: str | None) -> int:
        if sync_state is None:
            return 0
        owner, _, number = sync_state.rpartition(":")
        if owner != mailbox.lower() or not number.isdigit():
            raise SourceError("sync_state_invalid", "sync_state_expired", f"the sync state is not {mailbox}'s")
        return int(number)

    @staticmethod
    def _touch(box: _Mailbox, item_id: str) -> None:
        box.number += 1
        box.changed[item_id] = box.number
