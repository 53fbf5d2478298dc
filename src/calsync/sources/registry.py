"""The sources of a deployment and the one each operator uses: one connection per protocol, made from the
settings, picked by the operator's ``source`` (``ews`` or ``graph``). The only module that knows every backend;
the jobs, the engine and the API receive a :class:`Sources` and ask it for an operator's source.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from .base import Source, SourceError

if TYPE_CHECKING:
    from calsync.listener.protocol import PushReader

__all__ = ["Sources", "push_readers"]


class Sources:
    """Sources by name. ``Sources.only(source)`` serves every operator from one source (tests, tools)."""

    def __init__(self, by_name: Mapping[str, Source | Callable[[], Source]], *, default: str = "ews") -> None:
        self._made: dict[str, Source] = {}
        self._makers: dict[str, Callable[[], Source]] = {}
        for name, source in by_name.items():
            if isinstance(source, Source):
                self._made[name] = source
            else:
                self._makers[name] = source  # made when first needed (a listener-only process never needs it)
        self.default = default
        self._only: Source | None = None
        self._lock = threading.Lock()  # worker threads ask at once; each source is made once

    @classmethod
    def only(cls, source: Source) -> Sources:
        sources = cls({source.name: source}, default=source.name)
        sources._only = source
        return sources

    @property
    def names(self) -> list[str]:
        return sorted({*self._made, *self._makers})

    def for_operator(self, name: str | None) -> Source:
        """The source an operator with this ``source`` uses; SourceError (permanent, ``source_not_configured``)
        when the deployment has no connection for it."""
        if self._only is not None:
            return self._only
        wanted = name or self.default
        found = self._made.get(wanted)
        if found is None:
            with self._lock:
                found = self._made.get(wanted)
                if found is None and wanted in self._makers:
                    found = self._made[wanted] = self._makers[wanted]()
                    del self._makers[wanted]
        if found is None:
            configured = ", ".join(self.names) or "none"
            raise SourceError(
                "permanent",
                "source_not_configured",
                f"the operator uses the {wanted} source, but this deployment has no {wanted} connection "
                f"(configured: {configured}); add its settings or move the operator",
            )
        return found

    def __iter__(self) -> Iterator[Source]:
        """The sources made so far."""
        return iter(list(self._made.values()))

    def close(self) -> None:
        for source in self:
            source.close()


def push_readers() -> dict[str, PushReader]:
    """The listener's reader of each protocol's push bodies, by source name."""
    from .ews.notifications import SendNotificationReader
    from .graph.notifications import GraphNotificationReader

    return {"ews": SendNotificationReader(), "graph": GraphNotificationReader()}
