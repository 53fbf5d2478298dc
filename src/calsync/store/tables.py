"""The database tables, as SQLAlchemy 2 declarative models. Every schema change comes with an Alembic
migration in ``store/migrations`` (a test checks the two agree).

Tables: ``operators`` (the application's users and their sync flag), ``appointments`` (the application
calendar: one row per Exchange item, series kept whole), ``sync_states`` (the per-mailbox cursor),
``subscriptions`` (Exchange's promise to notify us), ``notifications`` (the listener's inbox),
``mailbox_work`` (dirty flag, lease and fencing token per mailbox), ``jobs`` (schedule and state of
the jobs, changeable at run time), ``incidents`` (failure streaks and the e-mails sent about them),
``api_tokens`` (who may use the admin API, hashed), ``audit_log`` (every change made through it),
``setting_overrides`` (settings changed at run time, applied by every node), ``unreadable_items`` (items a
pass could not read, until they read well) and ``listener_checks`` (whether the listener URL comes back to us).

Two-way sync (a later step) fits in: appointments carry ``origin`` and ``app_version``/``pushed_version``,
so application-made changes can be queued for writing to Exchange without a new table shape.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite stores them naive; we put the zone back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_app_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Operator(Base):
    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(256))
    sync_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="ews")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_sync_at: Mapped[datetime | None] = mapped_column()
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    last_error_message: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column()


class AppointmentRow(Base):
    __tablename__ = "appointments"
    __table_args__ = (
        UniqueConstraint("operator_id", "item_id", name="uq_appointments_operator_item"),
        Index("ix_appointments_range", "operator_id", "range_start", "range_end"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    # calsync's own id, what the application sees: kept when the source's id changes (a move EWS -> Graph)
    app_id: Mapped[str] = mapped_column(String(36), unique=True, default=new_app_id)
    item_id: Mapped[str] = mapped_column(String(512))  # the source's id (EWS ItemId, Graph event id)
    change_key: Mapped[str | None] = mapped_column(String(512))
    uid: Mapped[str | None] = mapped_column(String(512))
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(Text)
    start_utc: Mapped[datetime] = mapped_column()
    end_utc: Mapped[datetime] = mapped_column()
    start_tz: Mapped[str] = mapped_column(String(128), default="UTC")
    end_tz: Mapped[str] = mapped_column(String(128), default="UTC")
    all_day: Mapped[bool] = mapped_column(Boolean, default=False)
    organizer_email: Mapped[str | None] = mapped_column(String(320))
    organizer_name: Mapped[str | None] = mapped_column(String(256))
    attendees: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="confirmed")
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    show_as: Mapped[str] = mapped_column(String(32), default="busy")
    categories: Mapped[list[Any]] = mapped_column(default=list)
    recurrence: Mapped[dict[str, Any] | None] = mapped_column()
    overrides: Mapped[list[Any]] = mapped_column(default=list)
    deleted_occurrences: Mapped[list[Any]] = mapped_column(default=list)
    # The span any occurrence can touch: lets a range query skip rows without expanding them.
    range_start: Mapped[datetime] = mapped_column()
    range_end: Mapped[datetime | None] = mapped_column()  # None: a series without end
    last_modified: Mapped[datetime | None] = mapped_column()
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)
    origin: Mapped[str] = mapped_column(String(16), default="exchange")  # "app" for two-way sync
    app_version: Mapped[int] = mapped_column(Integer, default=0)
    pushed_version: Mapped[int] = mapped_column(Integer, default=0)


class SyncStateRow(Base):
    __tablename__ = "sync_states"

    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    initial_done: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set while a full sync runs: appointments not seen since then are swept when it completes.
    full_sync_started_at: Mapped[datetime | None] = mapped_column()
    # Set while the operator moves to another source: the full read adopts stored appointments by UID.
    moving_from: Mapped[str | None] = mapped_column(String(16))


class SubscriptionRow(Base):
    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), unique=True)
    subscription_id: Mapped[str] = mapped_column(String(512), unique=True)
    watermark: Mapped[str | None] = mapped_column(Text)
    status_frequency: Mapped[int] = mapped_column(Integer)
    callback_url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heard_at: Mapped[datetime] = mapped_column(default=utcnow)  # a push, or its creation (silence clock)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column()  # the last StatusEvent that came, if any
    heartbeats: Mapped[int] = mapped_column(Integer, default=0)
    events: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column()  # Graph: renewed before then; EWS: None
    client_state: Mapped[str | None] = mapped_column(String(128))  # Graph: sent back with every notification
    lifecycle_event: Mapped[str | None] = mapped_column(String(32))  # Graph: reauthorizationRequired, ... to act on
    source: Mapped[str] = mapped_column(String(16), default="ews", server_default="ews")  # the source that made it


class NotificationRow(Base):
    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_pending", "operator_id", "processed"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    subscription_id: Mapped[str] = mapped_column(String(512))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    item_id: Mapped[str | None] = mapped_column(String(512))
    watermark: Mapped[str | None] = mapped_column(Text)
    processed: Mapped[bool] = mapped_column(Boolean, default=False)


class MailboxWork(Base):
    """Per mailbox: whether a pass is owed (``dirty_gen`` > ``done_gen``) and who holds it (lease + fence)."""

    __tablename__ = "mailbox_work"
    __table_args__ = (Index("ix_mailbox_work_due", "dirty_gen", "done_gen", "lease_until"),)

    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), primary_key=True)
    dirty_gen: Mapped[int] = mapped_column(BigInteger, default=0)
    done_gen: Mapped[int] = mapped_column(BigInteger, default=0)
    dirty_since: Mapped[datetime | None] = mapped_column()
    full_sync: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column()
    fence: Mapped[int] = mapped_column(BigInteger, default=0)
    not_before: Mapped[datetime | None] = mapped_column()  # retry back-off
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_pass_started: Mapped[datetime | None] = mapped_column()
    last_pass_finished: Mapped[datetime | None] = mapped_column()
    passes: Mapped[int] = mapped_column(BigInteger, default=0)


class JobRow(Base):
    __tablename__ = "jobs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    interval_seconds: Mapped[int] = mapped_column(Integer)
    next_run_at: Mapped[datetime] = mapped_column(default=utcnow)
    run_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    last_run_at: Mapped[datetime | None] = mapped_column()
    last_outcome: Mapped[str | None] = mapped_column(Text)
    last_duration_ms: Mapped[int | None] = mapped_column(Integer)
    runs: Mapped[int] = mapped_column(BigInteger, default=0)


class IncidentRow(Base):
    """One streak of failures of one operator (see ``calsync.alerts.tracker``).

    While ``opened_at`` is unset the operator is only *failing* (transient failures, retried quietly);
    ``opened_at`` is when the streak became an *incident* (it lasted StatusFrequency minutes, or a failure was
    permanent). ``notified_at`` / ``recovery_notified_at``: when the failure e-mail / the recovery notice went
    out (set by the node that sends it; claimed before sending, so several nodes never send it twice).
    """

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_operator_open", "operator_id", "resolved_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64))  # a catalogue code (calsync.alerts.catalogue)
    kind: Mapped[str] = mapped_column(String(16))  # transient | permanent
    origin: Mapped[str] = mapped_column(String(16))  # what failed last: sync (a pass) | subscribe | listener
    message: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime | None] = mapped_column()
    first_failure_at: Mapped[datetime] = mapped_column()
    last_failure_at: Mapped[datetime] = mapped_column()
    failures: Mapped[int] = mapped_column(Integer, default=1)
    notified_at: Mapped[datetime | None] = mapped_column()
    resolved_at: Mapped[datetime | None] = mapped_column()
    recovery_notified_at: Mapped[datetime | None] = mapped_column()


class ApiTokenRow(Base):
    """An admin API token. Only a SHA-256 hash of the token is kept (tokens are 256-bit random strings, so a
    fast hash is enough); ``prefix`` is its first characters, to tell tokens apart in listings."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class AuditRow(Base):
    """One change made through the admin API: who, what, when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(512))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class SettingOverrideRow(Base):
    """A setting changed at run time (through the admin API); it wins over the file and the environment."""

    __tablename__ = "setting_overrides"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column()  # {"value": <JSON value>}
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_by: Mapped[str] = mapped_column(String(256))


class UnreadableItemRow(Base):
    """An item a sync pass could not read (a value that decides its place was missing or unreadable): it is not
    stored, the application keeps its last readable version, and the operator's ``unreadable_item`` incident
    lists it until it reads well (read again by id every :data:`calsync.engine.sync.REREAD_AFTER`)."""

    __tablename__ = "unreadable_items"

    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    subject: Mapped[str | None] = mapped_column(Text)
    field: Mapped[str] = mapped_column(String(256))
    raw: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column()
    last_tried_at: Mapped[datetime] = mapped_column()


class ListenerCheckRow(Base):
    """The latest check that the listener URL comes back to this deployment's listener (one row per URL)."""

    __tablename__ = "listener_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    checked_at: Mapped[datetime] = mapped_column()
    ok: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text)
