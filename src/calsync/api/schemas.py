"""The admin API's request and response bodies (pydantic models; they make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OperatorState = Literal["synced", "syncing", "failing", "disabled"]
SubscriptionState = Literal["healthy", "not_yet_heard", "dying", "missing"]


class Problem(BaseModel):
    detail: str
    problems: list[str] | None = None


class Me(BaseModel):
    name: str
    role: str
    token_id: int | None


class Subscription(BaseModel):
    state: SubscriptionState
    subscribed_at: datetime | None = None
    last_heard: datetime | None = None  # the last push (event or heartbeat); None: not yet heard from
    last_heartbeat: datetime | None  # the last heartbeat that came; None: none yet
    expires_at: datetime | None = None  # Graph: when it ends unless renewed (ManagePushSubscriptions renews it)


class Incident(BaseModel):
    code: str
    title: str
    message: str | None
    since: datetime | None
    opened: bool


class LastError(BaseModel):
    code: str | None
    message: str | None
    at: datetime | None


SourceName = Literal["ews", "graph"]


class Operator(BaseModel):
    email: str
    display_name: str | None
    enabled: bool
    source: SourceName = "ews"  # ews: Exchange Server through EWS; graph: Exchange Online through Microsoft Graph
    moving_from: SourceName | None = None  # set from a move until the full read through the new source completes
    state: OperatorState
    subscription: Subscription
    last_sync: datetime | None
    initial_sync_done: bool
    pending_notifications: int
    lag_seconds: float
    appointments: int
    incident: Incident | None
    last_error: LastError | None


class OperatorCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=320, description="The operator's Exchange mailbox address.")
    display_name: str | None = Field(default=None, max_length=256)
    enabled: bool = False
    source: SourceName | None = Field(
        default=None,
        description="ews or graph; default: graph when exchange_version is Exchange365 and Graph is configured, "
        "else ews.",
    )


class OperatorMove(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: SourceName = Field(description="The source to read the mailbox through from now on.")


class OperatorUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(default=None, max_length=256)
    enabled: bool | None = None


class Verification(BaseModel):
    ok: bool
    code: str | None
    message: str | None
    display_name: str | None


class Job(BaseModel):
    name: str
    enabled: bool
    interval_seconds: int
    last_run_at: datetime | None
    last_outcome: str | None
    last_duration_ms: int | None
    next_run_at: datetime
    run_requested: bool
    runs: int


class JobUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    interval_seconds: int | None = Field(default=None, description="1..86400 seconds")


class Failure(BaseModel):
    id: int
    operator: str
    code: str
    title: str
    kind: str
    origin: str
    message: str
    failures: int
    first_failure_at: datetime
    last_failure_at: datetime
    opened_at: datetime | None
    notified_at: datetime | None
    resolved_at: datetime | None
    open: bool


class MinuteCount(BaseModel):
    minute: datetime
    count: int


class OperatorCounts(BaseModel):
    total: int
    synced: int
    syncing: int
    failing: int
    disabled: int
    failing_permanently: int = 0  # enabled, with an open permanent incident: waiting for an administrator


class SubscriptionCounts(BaseModel):
    healthy: int
    not_yet_heard: int = 0  # made less than StatusFrequency ago, nothing pushed on it yet
    dying: int
    missing: int


class Lag(BaseModel):
    max: float


class Dashboard(BaseModel):
    operators: OperatorCounts
    subscriptions: SubscriptionCounts
    notifications_per_minute: list[MinuteCount]
    notifications_last_minute: int
    sync_lag_seconds: Lag
    dirty_mailboxes: int
    open_incidents: int


class SettingsView(BaseModel):
    settings: dict[str, Any]
    changeable: list[str]
    overrides: dict[str, Any]


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]
