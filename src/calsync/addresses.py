"""What calsync accepts as an e-mail address and as a host name (settings, operators, failure recipients).

An e-mail address is a plain ``local@domain``: a dot-atom local part of at most 64 characters (RFC 5322's
atext, no quoted strings or comments) and a host name as domain, at most 254 characters in all. A host name is
dot-separated labels of letters, digits and inner hyphens (at most 63 each, 253 in all); a last label of digits
only is an IP address, not a host name.
"""

from __future__ import annotations

import re

__all__ = ["is_email_address", "is_hostname"]

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_EMAIL_RE = re.compile(rf"(?P<local>{_ATEXT}(?:\.{_ATEXT})*)@(?P<domain>{_LABEL}(?:\.{_LABEL})*)")


def is_hostname(host: str) -> bool:
    if len(host) > 253 or not _HOSTNAME_RE.fullmatch(host):
        return False
    return not host.rstrip(".").rsplit(".", 1)[-1].isdigit()  # 1.2.3.4 is an IP address, not a host name


def is_email_address(value: str) -> bool:
    """True for a plain ``local@domain`` address (see the module docstring for what is accepted)."""
    match = _EMAIL_RE.fullmatch(value)
    if match is None or len(value) > 254 or len(match["local"]) > 64:
        return False
    return is_hostname(match["domain"])
