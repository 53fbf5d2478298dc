"""SyncFolderItems sync states: opaque, self-contained and tamper-evident, as Exchange's are.

A state records which folder it belongs to, the mailbox's sync generation (bumping it expires every
state, like a mailbox move does on Exchange), the change sequence number it covers, and the items the
client has been told about (so a change is reported as Create the first time and Update afterwards).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import zlib
from dataclasses import dataclass

from .soap import EwsError


@dataclass(frozen=True)
class SyncState:
    folder: str
    generation: int
    seq: int
    known: frozenset[int]


def _ranges(numbers: frozenset[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for n in sorted(numbers):
        if out and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


class SyncStateCodec:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, state: SyncState) -> str:
        payload = json.dumps(
            {"f": state.folder, "g": state.generation, "s": state.seq, "k": _ranges(state.known)},
            separators=(",", ":"),
        ).encode()
        body = zlib.compress(payload)
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:16]
        return base64.b64encode(b"\x01" + mac + body).decode()

    def decode(self, text: str) -> SyncState:
        invalid = EwsError("ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid.")
        try:
            raw = base64.b64decode(text.strip().encode(), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise invalid from exc
        if len(raw) < 18 or raw[0] != 1:
            raise invalid
        mac, body = raw[1:17], raw[17:]
        if not hmac.compare_digest(mac, hmac.new(self._key, body, hashlib.sha256).digest()[:16]):
            raise invalid
        try:
            data = json.loads(zlib.decompress(body, bufsize=1 << 16))
            known = frozenset(n for lo, hi in data["k"] for n in range(lo, hi + 1))
            return SyncState(str(data["f"]), int(data["g"]), int(data["s"]), known)
        except (zlib.error, ValueError, KeyError, TypeError) as exc:
            raise invalid from exc
