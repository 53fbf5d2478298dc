"""The Exchange versions the emulator can pretend to be, and what differs between them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExchangeVersion:
    name: str
    server_version: dict[str, str]  # attributes of t:ServerVersionInfo
    concurrency_limit: int  # concurrent requests per account before ErrorServerBusy
    soft_delete_moves: bool  # 2013+: a soft delete is a MovedEvent into the dumpster, not a DeletedEvent
    push_request_version: str  # RequestServerVersion in the SendNotification it pushes


def _info(major: int, minor: int, build: int, rev: int, version: str) -> dict[str, str]:
    return {
        "MajorVersion": str(major),
        "MinorVersion": str(minor),
        "MajorBuildNumber": str(build),
        "MinorBuildNumber": str(rev),
        "Version": version,
    }


VERSIONS: dict[str, ExchangeVersion] = {
    v.name: v
    for v in (
        ExchangeVersion("Exchange2010", _info(14, 3, 123, 4, "Exchange2010_SP2"), 10, False, "Exchange2010_SP2"),
        ExchangeVersion("Exchange2013", _info(15, 0, 1497, 2, "Exchange2013_SP1"), 27, True, "Exchange2013"),
        ExchangeVersion("Exchange2016", _info(15, 1, 2507, 6, "V2017_07_11"), 27, True, "Exchange2016"),
        ExchangeVersion("Exchange2019", _info(15, 2, 1118, 7, "V2017_07_11"), 27, True, "Exchange2016"),
        ExchangeVersion("Exchange365", _info(15, 20, 8164, 9, "V2017_07_11"), 27, True, "Exchange2016"),
    )
}


def get(name: str) -> ExchangeVersion:
    try:
        return VERSIONS[name]
    except KeyError:
        allowed = ", ".join(VERSIONS)
        raise ValueError(f"unknown Exchange version '{name}'; allowed: {allowed}") from None
