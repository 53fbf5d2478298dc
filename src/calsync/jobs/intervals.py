"""How often each job runs at first: from the settings, until an administrator changes an interval at run time
(afterwards the database holds it). Light on purpose: every CLI command that opens the database needs it."""

from __future__ import annotations

from typing import Any

from calsync.store import jobs as job_store

RECONCILIATION_CHECK_SECONDS = 900  # how often Reconciliation looks for mailboxes without a recent pass


def job_intervals(settings: Any) -> dict[str, int]:
    """The jobs' initial intervals, by job name."""
    return {
        job_store.PROCESS_NOTIFICATIONS: settings.process_notifications_interval_seconds,
        job_store.MANAGE_SUBSCRIPTIONS: settings.manage_subscriptions_interval_seconds,
        job_store.RECONCILIATION: RECONCILIATION_CHECK_SECONDS,
    }
