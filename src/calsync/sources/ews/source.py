"""The EWS source: Exchange Server 2010-2019 (and Exchange Online until its EWS is switched off), spoken
through exchangelib with a service account that impersonates each operator's mailbox.

What one sync page costs
    ``changes()`` reads a mailbox's calendar page by page. Each page is one ``SyncFolderItems`` (shape
    ``IdOnly``, no additional fields: ids and change keys only, ``MaxChangesReturned`` = batch size), then
    ONE ``GetItem`` for every item created or changed in the page, with just the fields the mapping needs,
    and — only when a fetched series has modified occurrences — ONE more ``GetItem`` for those exceptions.
    So a page costs 1 request when it only deletes, 2 when it has no exceptions, 3 at most; ``ChangePage.requests``
    says which. Read-flag changes are ignored; items that are not calendar items are skipped; an item
    that was created or changed and then deleted before the ``GetItem`` (``ErrorItemNotFound``) is a delete.
    A page whose sync state did not move, held nothing and still says "more to come" is reported as
    ``done`` (exchangelib's own loop stops there too), so a confused server cannot make a pass spin.

Items that cannot be read
    An item whose start, end, zone, recurrence or changed/deleted occurrences cannot be read (see
    :mod:`calsync.sources.ews.reading`) is not mapped: it is listed in ``ChangePage.unreadable`` with the field
    and the raw text, and the rest of the page goes on. ``read_items()`` reads such items again by id.

Errors
    Every failure leaves as :class:`~calsync.sources.base.SourceError` (see ``errors.classify``); messages name
    the mailbox when there is one and never contain the password.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import requests
from exchangelib import (
    IMPERSONATION,
    OAUTH2,
    Account,
    Configuration,
    Credentials,
    OAuth2Credentials,
    Version,
)
from exchangelib import errors as xerr
from exchangelib.ewsdatetime import EWSTimeZone
from exchangelib.items import ID_ONLY, CalendarItem
from exchangelib.properties import DistinguishedFolderId, ItemId, Mailbox
from exchangelib.services import SyncFolderItems

from calsync.calendar.model import Appointment
from calsync.sources.base import (
    ChangePage,
    ItemsRead,
    MailboxCheck,
    Source,
    SourceError,
    SourceStats,
    Subscription,
    Unreadable,
    UnreadableItem,
)

from .client import (
    AUTH_TYPES,
    BUILDS,
    MAX_BATCH,
    PUSH_EVENT_TYPES,
    FailFastRemembering503,
    GetCalendarItems,
    GetFolderIds,
    SubscribeToPush,
    field_paths,
)
from .errors import classify
from .mapping import EXCEPTION_FIELDS, ITEM_FIELDS, to_appointment
from .reading import ItemTimes

__all__ = ["EwsSource"]

log = logging.getLogger("calsync.sources.ews")

_UTC_EWS = EWSTimeZone("UTC")
Fetched = tuple[Any, ItemTimes | Unreadable]


class EwsSource(Source):
    """Exchange through EWS with an impersonating service account. Thread-safe: one instance serves every
    worker thread; connections are pooled (``max_connections``) and one exchangelib Account kept per mailbox."""

    name = "ews"

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        version: str = "Exchange2016",
        auth_type: str = "basic",
        max_connections: int = 8,
        timeout: float = 30.0,
        oauth: tuple[str, str, str] | None = None,
    ) -> None:
        """``oauth`` = (tenant id, client id, client secret) for auth_type "oauth": OAuth 2 client credentials
        (Exchange Online application impersonation); username and password are then unused."""
        if version not in BUILDS:
            raise ValueError(f"version: '{version}' is not supported; allowed: {', '.join(BUILDS)}")
        if auth_type.lower() not in (*AUTH_TYPES, "oauth"):
            raise ValueError(f"auth_type: '{auth_type}' is not supported; allowed: {', '.join(AUTH_TYPES)}, oauth")
        if auth_type.lower() == "oauth" and oauth is None:
            raise ValueError("auth_type oauth needs oauth=(tenant id, client id, client secret)")
        if max_connections < 1:
            raise ValueError(f"max_connections: must be at least 1, got {max_connections}")
        if timeout <= 0:
            raise ValueError(f"timeout: must be a positive number of seconds, got {timeout}")
        self.url = url
        self.username = username
        self.version = version
        self._secrets: tuple[str, ...] = (password, base64.b64encode(f"{username}:{password}".encode()).decode())
        credentials: Any = Credentials(username, password)
        exchangelib_auth = AUTH_TYPES.get(auth_type.lower())
        if oauth is not None and auth_type.lower() == "oauth":
            tenant_id, client_id, client_secret = oauth
            credentials = OAuth2Credentials(client_id=client_id, client_secret=client_secret, tenant_id=tenant_id)
            exchangelib_auth = OAUTH2
            self._secrets = (*self._secrets, client_secret)
        self._config = Configuration(
            service_endpoint=url,
            credentials=credentials,
            auth_type=exchangelib_auth,
            version=Version(BUILDS[version]),
            retry_policy=FailFastRemembering503(),
            max_connections=max_connections,
        )
        self._timeout = timeout
        self._accounts: dict[str, Account] = {}
        self._lock = threading.Lock()
        self.stats = SourceStats()

    def __repr__(self) -> str:  # never the password
        return f"EwsSource(url={self.url!r}, username={self.username!r}, version={self.version!r})"

    # --- plumbing ------------------------------------------------------------------------------------------------

    def _account(self, mailbox: str) -> Account:
        key = mailbox.strip().lower()
        if "@" not in key or " " in key:
            raise SourceError("permanent", "mailbox_not_found", f"'{mailbox}' is not an e-mail address.")
        with self._lock:
            account = self._accounts.get(key)
            if account is None:
                account = Account(
                    mailbox.strip(),
                    config=self._config,
                    autodiscover=False,
                    access_type=IMPERSONATION,
                    default_timezone=_UTC_EWS,
                )
                account.protocol.TIMEOUT = self._timeout  # per protocol instance; exchangelib's default is 120 s
                self._accounts[key] = account
            return account

    def _count(self, operation: str) -> None:
        with self._lock:
            self.stats.requests += 1
            self.stats.by_operation[operation] = self.stats.by_operation.get(operation, 0) + 1

    def _error(self, exc: BaseException, mailbox: str | None) -> SourceError:
        if not isinstance(exc, xerr.EWSError | requests.RequestException | OSError | SourceError):
            # Not a failure Exchange reported: most likely a bug here or in exchangelib. Keep the traceback.
            log.error("%s: unexpected %s while talking to Exchange", mailbox, type(exc).__name__, exc_info=exc)
        return classify(exc, mailbox=mailbox, secrets=self._secrets)

    @staticmethod
    def _calendar(mailbox: str) -> DistinguishedFolderId:
        return DistinguishedFolderId(id="calendar", mailbox=Mailbox(email_address=mailbox.strip()))

    def _fetch(self, account: Account, ids: Sequence[str], fields: Iterable[str]) -> list[Any]:
        """ONE GetItem for all ``ids``: ``(item, ItemTimes | Unreadable)`` pairs or per-item errors, in the
        order asked."""
        service = GetCalendarItems(account=account, chunk_size=max(1, len(ids)))
        self._count("GetItem")
        return list(
            service.call(items=[ItemId(id=i) for i in ids], additional_fields=field_paths(fields), shape=ID_ONLY)
        )

    # --- Source ------------------------------------------------------------------------------------------------

    def changes(self, mailbox: str, sync_state: str | None, batch_size: int) -> Iterator[ChangePage]:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size: must be from 1 to {MAX_BATCH}, got {batch_size}")
        account = self._account(mailbox)  # SourceError for something that is not an address
        state = sync_state
        while True:
            try:
                page = self._page(account, mailbox, state, batch_size)
            except SourceError:
                raise
            except Exception as exc:
                raise self._error(exc, mailbox) from exc
            yield page
            if page.done:
                return
            state = page.sync_state

    def _page(self, account: Account, mailbox: str, state: str | None, batch_size: int) -> ChangePage:
        service = SyncFolderItems(account=account)
        self._count("SyncFolderItems")
        found = list(
            service.call(
                folder=self._calendar(mailbox),
                shape=ID_ONLY,
                additional_fields=set(),
                sync_state=state,
                ignore=None,
                max_changes_returned=batch_size,
                sync_scope=None,
            )
        )
        requests_made = 1
        new_state, done = service.sync_state, bool(service.includes_last_item_in_range)
        wanted: dict[str, bool] = {}  # item id -> True: upsert, False: delete (the last change of an id wins)
        for change in found:
            if isinstance(change, Exception):
                raise change
            kind, obj = change
            if kind == SyncFolderItems.READ_FLAG_CHANGE:
                continue
            if kind == SyncFolderItems.DELETE:
                wanted.pop(obj.id, None)
                wanted[obj.id] = False
            elif isinstance(obj, CalendarItem):
                wanted.pop(obj.id, None)
                wanted[obj.id] = True
            else:
                log.debug("%s: skipping a %s in the calendar folder", mailbox, type(obj).__name__)
        if not found and new_state == state and not done:
            log.warning(
                "%s: SyncFolderItems returned the same state and no changes but more to come; stopping", mailbox
            )
            done = True
        upsert_ids = [i for i, up in wanted.items() if up]
        deletes = [i for i, up in wanted.items() if not up]
        read, gone, requests_made = self._read(account, upsert_ids, requests_made)
        return ChangePage(
            upserts=read.upserts,
            deletes=tuple(deletes + list(gone)),
            sync_state=new_state,
            done=done,
            requests=requests_made,
            unreadable=read.unreadable,
        )

    def _read(self, account: Account, ids: Sequence[str], requests_made: int = 0) -> tuple[ItemsRead, list[str], int]:
        """Fetch and map ``ids``: what was read, the ids that are gone (``ErrorItemNotFound``: created or changed,
        then deleted before we asked), and the request count so far."""
        if not ids:
            return ItemsRead(), [], requests_made
        requests_made += 1
        fetched: list[tuple[str, Fetched]] = []
        gone: list[str] = []
        for item_id, got in zip(ids, self._fetch(account, ids, ITEM_FIELDS), strict=True):
            if isinstance(got, xerr.ErrorItemNotFound):
                gone.append(item_id)
            elif isinstance(got, Exception):
                raise got
            elif isinstance(got[0], CalendarItem):
                fetched.append((item_id, got))
        exceptions = self._exceptions(account, [pair for _, pair in fetched])
        if exceptions is not None:
            requests_made += 1
        upserts: list[Appointment] = []
        unreadable: list[UnreadableItem] = []
        for item_id, (item, times) in fetched:
            try:
                if isinstance(times, Unreadable):
                    raise times
                upserts.append(to_appointment(item, times, _readable(exceptions or {})))
            except Unreadable as problem:
                log.warning(
                    "item not stored: a value that decides its place could not be read",
                    extra={"item": item_id, "field": problem.field, "raw": problem.raw, "reason": problem.reason},
                )
                unreadable.append(UnreadableItem.of(item_id, problem, getattr(item, "subject", None)))
        return ItemsRead(tuple(upserts), (), tuple(unreadable)), gone, requests_made

    def _exceptions(self, account: Account, items: Sequence[Fetched]) -> dict[str, Fetched] | None:
        """ONE GetItem for every modified occurrence of the fetched series; None when there is none."""
        ids = [
            occ.item_id for _, times in items if isinstance(times, ItemTimes) for occ in times.modified if occ.item_id
        ]
        if not ids:
            return None
        out: dict[str, Fetched] = {}
        for occ_id, got in zip(ids, self._fetch(account, ids, EXCEPTION_FIELDS), strict=True):
            if isinstance(got, xerr.ErrorItemNotFound):
                continue  # changed again meanwhile: the master's next Update brings it
            if isinstance(got, Exception):
                raise got
            out[occ_id] = got
        return out

    def read_items(self, mailbox: str, item_ids: list[str]) -> ItemsRead:
        account = self._account(mailbox)
        try:
            read, gone, _ = self._read(account, item_ids)
        except SourceError:
            raise
        except Exception as exc:
            raise self._error(exc, mailbox) from exc
        return ItemsRead(read.upserts, tuple(gone), read.unreadable)

    def subscribe(
        self, mailbox: str, callback_url: str, status_frequency: int, watermark: str | None = None
    ) -> Subscription:
        if not 1 <= status_frequency <= 1440:
            raise ValueError(f"status_frequency: must be from 1 to 1440 minutes, got {status_frequency}")
        try:
            account = self._account(mailbox)
            self._count("Subscribe")
            subscription_id, new_watermark = SubscribeToPush(account=account).get(
                folders=[self._calendar(mailbox)],
                event_types=PUSH_EVENT_TYPES,
                watermark=watermark,
                status_frequency=status_frequency,  # exchangelib's default is 1 minute
                url=callback_url,
            )
        except Exception as exc:
            raise self._error(exc, mailbox) from exc
        return Subscription(subscription_id=subscription_id, watermark=new_watermark)

    def check_mailbox(self, mailbox: str) -> MailboxCheck:
        address = mailbox.strip()
        try:
            account = self._account(address)
            self._count("ResolveNames")
            resolved = account.protocol.resolve_names([f"smtp:{address}"])
            match = next(
                (r for r in resolved if isinstance(r, Mailbox) and (r.email_address or "").lower() == address.lower()),
                None,
            )
            if match is None:
                failure = next((r for r in resolved if isinstance(r, Exception)), None)
                raise failure or xerr.ErrorNameResolutionNoResults("No mailbox has this address.")
            self._count("GetFolder")
            folders = list(
                GetFolderIds(account=account).call(
                    folders=[self._calendar(address)], additional_fields=[], shape=ID_ONLY
                )
            )
            for folder in folders:
                if isinstance(folder, Exception):
                    raise folder
        except Exception as exc:
            error = self._error(exc, address)
            if error.kind != "permanent":
                raise error from exc
            return MailboxCheck(False, error.code, error.message)
        return MailboxCheck(True, display_name=match.name or None)

    def close(self) -> None:
        with self._lock:
            accounts, self._accounts = list(self._accounts.values()), {}
        for protocol in {id(a.protocol): a.protocol for a in accounts}.values():
            protocol.close()


def _readable(exceptions: dict[str, Fetched]) -> dict[str, tuple[Any, ItemTimes]]:
    """The fetched exceptions, where one that cannot be read makes its series unreadable."""
    out: dict[str, tuple[Any, ItemTimes]] = {}
    for occ_id, (occ, times) in exceptions.items():
        if isinstance(times, Unreadable):
            raise Unreadable(f"ModifiedOccurrences/Occurrence ({times.field})", times.raw, times.reason)
        out[occ_id] = (occ, times)
    return out
