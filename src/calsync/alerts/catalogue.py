"""The catalogue of failure messages: one entry per stable code, with the text a person sees, the likely
cause and the fix. Failure e-mails, recovery notices and ``calsync status`` all take their words from here.

The codes are the ``code`` of :class:`calsync.sources.base.SourceError` (see ``classify`` in ``sources/ews/errors.py``
and ``sources/graph/errors.py``)
plus the ones calsync raises itself (``listener_unreachable``, ``internal_error``). A code is never renamed:
administrators search for it and filter their mail on it. An unknown code still gets a generic entry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    code: str
    title: str  # what a person sees: one line, no trailing full stop
    cause: str  # the likely cause
    fix: str  # what to do about it


_ENTRIES = (
    Entry(
        "credentials_rejected",
        "Exchange rejected the service account's credentials",
        "The user name or password (or the OAuth client secret) of the service account calsync signs in with is "
        "wrong, has expired, or the account is locked or disabled; for Microsoft Graph: the app's client secret "
        "or certificate is wrong, expired or was removed from the app registration.",
        "Check the account in Exchange / Entra ID, then set the right credentials (username and password, or "
        "oauth_client_secret; for Graph graph_client_secret or graph_certificate) in calsync's settings and "
        "restart calsync.",
    ),
    Entry(
        "graph_app_not_found",
        "Entra ID does not know calsync's app",
        "graph_client_id is not an application registered in the tenant graph_tenant_id (a typo, the wrong "
        "tenant, or an app registration that was deleted).",
        "Check the application (client) id and the tenant in the Entra admin center (App registrations), set "
        "graph_client_id and graph_tenant_id to them and restart calsync.",
    ),
    Entry(
        "graph_consent_missing",
        "calsync's app may not read the operator's calendar",
        "The app lacks the Calendars.ReadWrite (or Calendars.Read) application permission, an administrator has "
        "not granted admin consent for it, or an application access policy (RBAC for Applications) leaves this "
        "mailbox out.",
        "In the Entra admin center, add the application permission Calendars.ReadWrite to the app and grant admin "
        "consent; if access is limited to some mailboxes, add this one to the group or scope that policy uses.",
    ),
    Entry(
        "mailbox_not_licensed",
        "The operator's mailbox cannot be reached through Microsoft Graph",
        "Graph answers MailboxNotEnabledForRESTAPI: the mailbox is not in Exchange Online (still on an Exchange "
        "Server on premises), has no Exchange Online licence, or is inactive or soft-deleted.",
        "If the mailbox is still on premises, move the operator back to EWS (`calsync operators move EMAIL --to "
        "ews`); otherwise assign it an Exchange Online licence, or disable sync for this operator.",
    ),
    Entry(
        "subscription_validation_failed",
        "Microsoft Graph could not validate calsync's notification URL",
        "When a subscription is made, Graph calls the listener URL (over https, from the internet) and expects its "
        "validation token back within 10 seconds; the URL is not reachable from the internet, is not https, its "
        "certificate is not trusted, or a proxy in front of calsync changed the answer.",
        "Make graph_listener_url (or listener_url) a public https URL that reaches calsync's listener with a "
        "certificate from a public authority; test it from outside with `curl -X POST "
        "'<url>/graph/notifications/<secret>?validationToken=hello'` (it must answer hello).",
    ),
    Entry(
        "source_not_configured",
        "The operator's source has no connection in this deployment",
        "The operator is set to read its mailbox through a source (ews or graph) whose settings this calsync "
        "process does not have: Graph settings missing, or set on some nodes only.",
        "Add the Graph settings (graph_tenant_id, graph_client_id, graph_client_secret) on every node and "
        "restart, or move the operator to the source that is configured (`calsync operators move`).",
    ),
    Entry(
        "mailbox_not_found",
        "The operator's mailbox does not exist on Exchange",
        "The operator's e-mail address is not a mailbox on this Exchange organisation: a typo, a mailbox that "
        "was removed or renamed, or an address that belongs to another organisation.",
        "Correct the operator's address (`calsync operators remove` and `add` with the right one), or create "
        "the mailbox, or disable sync for this operator (`calsync operators disable`).",
    ),
    Entry(
        "impersonation_denied",
        "The service account may not impersonate the operator's mailbox",
        "The service account lacks the ApplicationImpersonation role for this mailbox (or a management scope "
        "leaves the mailbox out).",
        "Ask an Exchange administrator to grant the ApplicationImpersonation role to the service account with a "
        "scope that includes this mailbox (New-ManagementRoleAssignment -Role ApplicationImpersonation).",
    ),
    Entry(
        "access_denied",
        "Exchange denied the service account access to the mailbox",
        "A permission or policy on the mailbox or the organisation forbids the access (for example an EWS "
        "application policy, or a mailbox that blocks EWS).",
        "Ask an Exchange administrator to allow EWS access for the service account to this mailbox "
        "(Get-CASMailbox / Set-CASMailbox -EwsEnabled, EWS application policies).",
    ),
    Entry(
        "server_busy",
        "Exchange has been throttling calsync for longer than the retry timeout",
        "Exchange answers ErrorServerBusy: the service account exceeds its throttling budget, or the server is "
        "overloaded. calsync waits at least as long as Exchange asks before each retry.",
        "Give the service account a throttling policy suited to an application (New-ThrottlingPolicy, "
        "Set-ThrottlingPolicyAssociation), lower the batch size (EWSBatchSize), or check the server's load.",
    ),
    Entry(
        "service_unavailable",
        "Exchange answers 503 Service Unavailable",
        "The EWS endpoint or the load balancer in front of it is down, restarting or overloaded.",
        "Check the Exchange servers and the load balancer; calsync retries on its own and reports when it works again.",
    ),
    Entry(
        "connection_failed",
        "calsync cannot reach Exchange",
        "The network path to the EWS endpoint is broken: DNS, a firewall, a proxy, TLS, or the server is down.",
        "Check that the exchange URL (EWSNotificationsListenerURL) is right and reachable from the calsync "
        "machines (for example with curl), and the firewalls and proxies in between.",
    ),
    Entry(
        "timeout",
        "Exchange does not answer in time",
        "Exchange or the network is too slow for calsync's request timeout, often under heavy load or with a "
        "very large batch.",
        "Check the Exchange servers' load and the network; a smaller batch size (EWSBatchSize) makes each "
        "request shorter.",
    ),
    Entry(
        "mailbox_move_in_progress",
        "Exchange is moving the operator's mailbox",
        "The mailbox is being moved to another database or server; Exchange refuses access until the move ends.",
        "Nothing to do if a move was planned: sync resumes when it completes. Otherwise check the move "
        "request in Exchange (Get-MoveRequest).",
    ),
    Entry(
        "mailbox_store_unavailable",
        "The database holding the operator's mailbox is unavailable",
        "The mailbox database is dismounted, failing over or being repaired.",
        "Check the mailbox database in Exchange (Get-MailboxDatabaseCopyStatus); sync resumes when it is "
        "mounted again.",
    ),
    Entry(
        "server_error",
        "Exchange reports a temporary internal failure",
        "Exchange failed internally (a transient server error, too many open objects, a client access server problem).",
        "Check the Exchange event logs if it persists; calsync retries on its own.",
    ),
    Entry(
        "sync_state_expired",
        "Exchange keeps refusing calsync's sync state",
        "Exchange no longer accepts the stored sync state (ErrorInvalidSyncStateData), so calsync reads the "
        "whole window again; this keeps happening, so the full read does not complete.",
        "Check the other failures reported for this operator and the Exchange logs; `calsync sync --full "
        "OPERATOR` runs a full read by hand and shows where it stops.",
    ),
    Entry(
        "watermark_expired",
        "Exchange keeps refusing the subscription's watermark",
        "Exchange no longer accepts the stored watermark (ErrorInvalidWatermark), so calsync subscribes afresh "
        "and reads the changes since; this keeps happening.",
        "Check that the Exchange servers' clocks are right and the subscription is not removed by a policy.",
    ),
    Entry(
        "listener_unreachable",
        "Exchange cannot reach calsync's listener: subscriptions keep dying",
        "Exchange's push notifications do not arrive: the listener URL (PushNotificationsListener) is wrong, "
        "not reachable from the Exchange servers (firewall, proxy, DNS, TLS certificate), or the listener is "
        "down. Each subscription falls silent and calsync has to recreate it. Changes still arrive, but only "
        "when calsync recreates a subscription or reconciles, not within moments.",
        "From an Exchange server, open the listener URL (it must answer on its secret path); fix the "
        "PushNotificationsListener setting, the firewall or the reverse proxy; check that `calsync serve` runs.",
    ),
    Entry(
        "exchange_never_delivers",
        "Exchange accepts subscriptions but never delivers a notification",
        "calsync's own check of the listener URL passes (it comes back to this listener), yet no notification "
        "or heartbeat has ever arrived on any subscription from this Exchange: the server does not send push "
        "notifications (some EWS servers accept Subscribe and never push), or something between the Exchange "
        "servers and the listener (a firewall, a proxy that only this machine passes) blocks them. calsync "
        "recreates the silent subscriptions and catches up each time, so changes arrive, but late.",
        "Check on the Exchange side that push notifications are sent (its logs for the listener URL; from an "
        "Exchange server, open the listener URL); if the server cannot push, run the Reconciliation job more "
        "often (`calsync jobs set-interval Reconciliation 900`) until it can.",
    ),
    Entry(
        "unreadable_item",
        "Exchange sent items calsync could not read",
        "A value that decides where an appointment lies (its start or end, all-day flag, time zone, recurrence, "
        "or a changed or deleted occurrence) was missing or in a form calsync cannot read. Those items are not "
        "stored (the application keeps their last readable version); everything else syncs. The message lists "
        "each item, the field and the value as Exchange sent it.",
        "Open the items in Outlook: saving them again often makes the server write them anew. If the values "
        "look right, report the message (it holds no secret) so calsync learns the form; calsync reads the "
        "items again every 15 minutes and resolves this incident when they read well or are deleted.",
    ),
    Entry(
        "exchange_error",
        "Exchange answers with an unexpected error",
        "Exchange returned an error calsync does not know how to classify.",
        "Read the message below and the calsync log; if it persists, report it with the log lines around it.",
    ),
    Entry(
        "internal_error",
        "calsync failed internally",
        "A bug or an unexpected condition inside calsync (or its database) broke the sync pass.",
        "Read the calsync log for the traceback around the time below, and report it; check that the "
        "database is reachable and not full.",
    ),
)

CATALOGUE: dict[str, Entry] = {entry.code: entry for entry in _ENTRIES}


def entry(code: str) -> Entry:
    """The catalogue entry for ``code``; a generic one for a code the catalogue does not know."""
    found = CATALOGUE.get(code)
    if found is not None:
        return found
    return Entry(
        code,
        f"Sync fails ({code})",
        "A failure calsync's catalogue does not describe yet.",
        "Read the message below and the calsync log.",
    )
