"""Cron expressions and time zones of schedules: what the scheduler accepts, and when an
expression is due after an instant.

An expression has the five classic fields (minute hour day-of-month month day-of-week, as
cron(8) reads them, parsed by cronsim) or is one of the @hourly..@yearly shorthands. A
sixth (seconds) field and @reboot are refused: a schedule is due at wall-clock minutes,
and no backend "boots" once for a whole cluster.

Due times are computed in the schedule's IANA time zone, so "0 3 * * *" in Europe/Paris is
03:00 Paris time in winter and in summer, and returned in UTC, the only zone the database
keeps. Daylight saving time is handled as Debian's cron does for an expression with fixed
minutes and hours: a time the spring change skips runs at the first minute that exists
(02:30 on the change's day runs at 03:00), a time the autumn change repeats runs once (at
its first occurrence).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from backend.errors import Invalid

MAX_CRON_LENGTH = 128
MAX_ZONE_LENGTH = 64
DEFAULT_ZONE = "UTC"
FIELDS = "minute hour day-of-month month day-of-week"
EXAMPLE = "'0 3 * * *' (03:00 every day)"
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Names in the zone database that are no zone of the IANA's: the server's own zone (which
# differs between backends) and tzdata's placeholder.
NOT_ZONES = frozenset({"localtime", "Factory"})


def _expand(expr: str) -> str:
    return ALIASES.get(expr.lower(), expr)


def check_cron(expr: str) -> str:
    """The expression as stored (whitespace collapsed), or Invalid saying what to write."""
    if len(expr) > MAX_CRON_LENGTH:
        raise Invalid(f"a cron expression must be at most {MAX_CRON_LENGTH} characters")
    normal = " ".join(expr.split())
    if not normal:
        raise Invalid(f"the cron expression is empty: give 5 fields ({FIELDS}), e.g. {EXAMPLE}")
    if normal.startswith("@"):
        if normal.lower() not in ALIASES:
            if normal.lower() == "@reboot":
                why = "a schedule is due at times, not when a backend starts"
            else:
                why = "it is not a shorthand the scheduler knows"
            raise Invalid(
                f"cron expression {normal!r} is not supported: {why}; give 5 fields "
                f"({FIELDS}) or one of {', '.join(ALIASES)}"
            )
        return normal.lower()
    count = len(normal.split())
    if count == 6:
        raise Invalid(
            f"cron expression {normal!r} has 6 fields: a seconds field is not supported; "
            f"give 5 ({FIELDS}), e.g. {EXAMPLE}"
        )
    if count != 5:
        raise Invalid(
            f"cron expression {normal!r} has {count} field{'s' if count != 1 else ''}: give 5 "
            f"({FIELDS}), e.g. {EXAMPLE}"
        )
    try:
        CronSim(normal, datetime(2000, 1, 1, tzinfo=UTC))
    except (CronSimError, ValueError, IndexError, OverflowError) as exc:
        raise Invalid(
            f"cron expression {normal!r} is invalid: {exc or 'cannot be read'} (the fields are "
            f"{FIELDS}; e.g. {EXAMPLE})"
        ) from None
    return normal


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - NOT_ZONES


def check_timezone(name: str) -> str:
    """An IANA time zone name the zone database knows, or Invalid."""
    if len(name) > MAX_ZONE_LENGTH or name not in _zone_names():
        shown = repr(name) if len(name) <= MAX_ZONE_LENGTH else "given"
        raise Invalid(
            f"time zone {shown} is unknown: use an IANA name such as 'UTC', 'Europe/Paris' "
            "or 'America/New_York'"
        )
    return name


def _times(cron: str, zone_name: str, after: datetime) -> Iterator[datetime]:
    """The due times strictly after `after`, in the zone."""
    if after.tzinfo is None:
        raise ValueError("naive datetime: use an aware UTC datetime")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):  # checked when stored, since removed
        raise Invalid(f"time zone {zone_name!r} is not in this system's zone database") from None
    # cronsim gives up (ends the iteration) after 50 years without a match.
    for local in CronSim(_expand(cron), after.astimezone(zone)):
        # A wall-clock time the autumn change repeats is read as its first occurrence,
        # which lies before `after` when `after` is in the repeated hour: it is past.
        if local.astimezone(UTC) > after:
            yield local


def next_after(cron: str, zone_name: str, after: datetime) -> datetime:
    """The first due time strictly after `after`, in UTC; Invalid when there is none for 50
    years (e.g. '0 0 31 2 *')."""
    for local in _times(cron, zone_name, after):
        return local.astimezone(UTC)
    raise Invalid(f"cron expression {cron!r} is never due (not within 50 years)")


def upcoming(cron: str, zone_name: str, since: datetime, count: int) -> list[datetime]:
    """The first `count` due times from `since` on (itself included when due), in the
    schedule's zone."""
    out: list[datetime] = []
    for local in _times(cron, zone_name, since - timedelta(microseconds=1)):
        out.append(local)
        if len(out) == count:
            break
    return out


def describe(cron: str) -> str:
    """The expression in words ("At 03:00 on Monday through Friday"); "" when cronsim
    cannot say."""
    try:
        return CronSim(_expand(cron), datetime(2000, 1, 1, tzinfo=UTC)).explain()
    except Exception:  # an explanation is a nicety; the expression was checked already
        return ""
