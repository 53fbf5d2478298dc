"""Failure e-mails: the texts (from the catalogue) and sending them over SMTP.

:class:`Mailer` sends one plain-text message to ``failure_recipients`` (NotifySyncFailureTo) through
``smtp_host``:``smtp_port`` with ``smtp_security`` none (plain SMTP), ``starttls`` (upgrade after EHLO) or
``tls`` (TLS from the first byte), logging in when ``smtp_username`` is set. Without a host or without
recipients, e-mail is off: nothing is sent and that is logged once.

The composing functions (:func:`failure_mail`, :func:`recovery_mail`, :func:`storm_mail`,
:func:`storm_recovery_mail`) take every word from :mod:`calsync.alerts.catalogue`; the only dynamic text is
the operator's address and the error message, both passed through :func:`scrub` first, so no password,
client secret or listener secret reaches a mailbox. Each message carries an ``X-Calsync-Codes`` header
with the catalogue codes, for mail filters.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from typing import Any

from calsync.store.incidents import Notice

from .catalogue import entry

log = logging.getLogger("calsync.alerts")

MAX_LISTED = 200  # operators listed in one summary; the rest are counted
MAX_MESSAGE = 1000  # characters of an error message quoted in an e-mail
# Headers are written with lines up to SMTP's limit, so a subject stays on one line (Python would otherwise
# move a 70-character subject whole onto a continuation line, which some readers show with a leading space).
# The body is encoded under the default policy: quoted-printable lines of at most 76 characters when needed.
HEADER_POLICY = SMTP.clone(max_line_length=998)


class MailError(Exception):
    """The message could not be handed to the SMTP server (the text names no secret)."""


@dataclass(frozen=True)
class Mail:
    subject: str
    body: str
    codes: tuple[str, ...]
    incident_ids: tuple[int, ...]  # the incidents this message tells about


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class Mailer:
    def __init__(
        self,
        *,
        host: str | None,
        port: int = 25,
        security: str = "none",
        username: str | None = None,
        password: str | None = None,
        sender: str = "calsync@localhost",
        recipients: Sequence[str] = (),
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"smtp_security: '{security}' is not one of none, starttls, tls")
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self._password = password
        self.sender = sender
        self.recipients = tuple(recipients)
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._off_logged = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, *, ssl_context: ssl.SSLContext | None = None) -> Mailer:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password is not None else None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=password,
            sender=settings.smtp_sender,
            recipients=settings.failure_recipients,
            ssl_context=ssl_context,
        )

    @property
    def off_reason(self) -> str | None:
        """Why no e-mail is sent, or None when e-mail is on."""
        if not self.host:
            return "smtp_host is not set"
        if not self.recipients:
            return "failure_recipients (NotifySyncFailureTo) is empty"
        return None

    @property
    def enabled(self) -> bool:
        return self.off_reason is None

    def note_off(self) -> None:
        """Log, once per mailer, that failure e-mails are off and why."""
        reason = self.off_reason
        if reason is None or self._off_logged:
            return
        self._off_logged = True
        log.warning("failure e-mails are off: %s; incidents are still tracked (calsync status)", reason)

    def send(self, mail: Mail) -> bool:
        """Send ``mail`` to every recipient; False when e-mail is off. Raises MailError."""
        if not self.enabled:
            self.note_off()
            return False
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Subject"] = mail.subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "calsync")
        message["Auto-Submitted"] = "auto-generated"
        message["X-Calsync-Codes"] = " ".join(mail.codes)
        message.set_content(mail.body)
        message.policy = HEADER_POLICY
        with self._lock:  # one SMTP conversation at a time per process is plenty for alerts
            try:
                self._deliver(message)
            except (smtplib.SMTPException, OSError) as exc:
                detail = scrub(f"{type(exc).__name__}: {exc}", [self._password or ""])
                raise MailError(
                    f"could not send the e-mail through {self.host}:{self.port} ({self.security}): {detail}"
                ) from None
        log.info("e-mail sent", extra={"subject": mail.subject, "recipients": len(self.recipients)})
        return True

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()

    def _deliver(self, message: EmailMessage) -> None:
        assert self.host is not None
        smtp: smtplib.SMTP
        if self.security == "tls":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._context())
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if self.security == "starttls":
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self._password or "")
            smtp.send_message(message, from_addr=self.sender, to_addrs=list(self.recipients))


# --- the texts ----------------------------------------------------------------------------------------


def when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    if seconds < 120:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} minutes"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} hours {minutes} minutes"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} hours"


def _attempts(n: int) -> str:
    return "1 failed attempt" if n == 1 else f"{n} failed attempts"


def _quote(message: str, secrets: Iterable[str]) -> str:
    text = scrub(message, secrets).strip()
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _wrap(label: str, text: str) -> str:
    return f"{label}:\n  {text}"


def _retrying(origin: str, retry_every: timedelta) -> str:
    if origin == "listener":
        return "calsync recreates the subscription whenever it falls silent"
    if origin == "subscribe":
        return "calsync tries to subscribe again at every run of ManagePushSubscriptions"
    return f"calsync keeps retrying about every {duration(retry_every)}"


def failure_mail(notice: Notice, *, retry_every: timedelta, secrets: Iterable[str] = ()) -> Mail:
    about = entry(notice.code)
    email = scrub(notice.email, secrets)
    failing = duration(notice.last_failure_at - notice.first_failure_at)
    why = (
        "This failure needs a person, so it is reported at once."
        if notice.kind == "permanent"
        else f"It has failed without a break for {failing}, longer than calsync retries quietly (StatusFrequency)."
    )
    body = "\n".join(
        [
            f"Calendar sync for {email} has stopped: {about.title}.",
            "",
            f"Code:          {notice.code}",
            f"Operator:      {email}",
            f"Failing since: {when(notice.first_failure_at)} ({_attempts(notice.failures)})",
            f"Last error:    {_quote(notice.message, secrets)}",
            "",
            why,
            "",
            _wrap("Likely cause", about.cause),
            "",
            _wrap("Fix", about.fix),
            "",
            f"{_retrying(notice.origin, retry_every)} and sends one more e-mail when sync works again; no further "
            "e-mail is sent about this failure meanwhile. Nothing is lost: the next successful pass reads every "
            "change made since the last one.",
            "",
            "`calsync status` shows every operator's state.",
        ]
    )
    return Mail(
        f"[calsync] {notice.code}: calendar sync failing for {email}", body + "\n", (notice.code,), (notice.id,)
    )


def recovery_mail(notice: Notice, *, secrets: Iterable[str] = ()) -> Mail:
    about = entry(notice.code)
    email = scrub(notice.email, secrets)
    resolved = notice.resolved_at or notice.last_failure_at
    body = "\n".join(
        [
            f"Calendar sync for {email} works again.",
            "",
            f"Code:      {notice.code} ({about.title})",
            f"Operator:  {email}",
            f"Failing:   from {when(notice.first_failure_at)} to {when(resolved)} "
            f"({duration(resolved - notice.first_failure_at)}, {_attempts(notice.failures)})",
            f"Resolved:  {when(resolved)}",
            "",
            "Nothing to do: the changes made meanwhile have been (or are being) read; the incident is closed.",
        ]
    )
    return Mail(
        f"[calsync] resolved {notice.code}: calendar sync works again for {email}",
        body + "\n",
        (notice.code,),
        (notice.id,),
    )


def _by_code(notices: Sequence[Notice]) -> list[tuple[str, int]]:
    return Counter(n.code for n in notices).most_common()


def storm_mail(notices: Sequence[Notice], *, retry_every: timedelta, secrets: Iterable[str] = ()) -> Mail:
    counts = _by_code(notices)
    n = len(notices)
    lines = [
        f"Calendar sync has stopped for {n} operators at about the same time. This is one summary instead of "
        f"{n} e-mails.",
        "",
    ]
    width = min(40, max(len(scrub(x.email, secrets)) for x in notices))
    for notice in sorted(notices, key=lambda x: (x.code, x.email))[:MAX_LISTED]:
        lines.append(
            f"  {scrub(notice.email, secrets):<{width}}  {notice.code:<24}  since {when(notice.first_failure_at)}  "
            f"{_quote(notice.message, secrets)[:200]}"
        )
    if n > MAX_LISTED:
        lines.append(f"  ... and {n - MAX_LISTED} more (`calsync status` lists them all)")
    for code, count in counts:
        about = entry(code)
        lines += [
            "",
            f"{code}: {about.title} ({count} operator{'s' if count != 1 else ''})",
            _wrap("Likely cause", about.cause),
            _wrap("Fix", about.fix),
        ]
    lines += [
        "",
        f"calsync keeps trying about every {duration(retry_every)} and sends one notice (or one summary) when "
        "sync works again; no further e-mail is sent about these failures meanwhile. Nothing is lost.",
    ]
    codes = ", ".join(f"{code} ({count})" for code, count in counts)
    return Mail(
        f"[calsync] calendar sync failing for {n} operators: {codes}",
        "\n".join(lines) + "\n",
        tuple(code for code, _ in counts),
        tuple(x.id for x in notices),
    )


def storm_recovery_mail(notices: Sequence[Notice], *, secrets: Iterable[str] = ()) -> Mail:
    counts = _by_code(notices)
    n = len(notices)
    lines = [f"Calendar sync works again for {n} operators. This is one summary instead of {n} e-mails.", ""]
    width = min(40, max(len(scrub(x.email, secrets)) for x in notices))
    for notice in sorted(notices, key=lambda x: (x.code, x.email))[:MAX_LISTED]:
        resolved = notice.resolved_at or notice.last_failure_at
        lines.append(
            f"  {scrub(notice.email, secrets):<{width}}  {notice.code:<24}  failing "
            f"{duration(resolved - notice.first_failure_at)}, resolved {when(resolved)}"
        )
    if n > MAX_LISTED:
        lines.append(f"  ... and {n - MAX_LISTED} more")
    lines += ["", "Nothing to do: the changes made meanwhile have been (or are being) read; the incidents are closed."]
    codes = ", ".join(f"{code} ({count})" for code, count in counts)
    return Mail(
        f"[calsync] resolved: calendar sync works again for {n} operators: {codes}",
        "\n".join(lines) + "\n",
        tuple(code for code, _ in counts),
        tuple(x.id for x in notices),
    )
