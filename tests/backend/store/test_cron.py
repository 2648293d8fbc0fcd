"""Cron expressions and time zones of schedules: what is refused (and how it is said), and
the due times across daylight saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backend import cron
from backend.errors import Invalid


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("0 0 3 * * *", ["6 fields", "seconds field is not supported", "minute hour"]),
        ("@reboot", ["'@reboot' is not supported", "not when a backend starts", "@daily"]),
        ("@every 5m", ["not a shorthand", "@hourly"]),
        ("", ["empty", "5 fields"]),
        ("   ", ["empty"]),
        ("0 3 * *", ["has 4 fields", "give 5"]),
        ("61 3 * * *", ["is invalid", "Bad minute", "minute hour"]),
        ("0 25 * * *", ["Bad hour"]),
        ("0 3 * * MON-", ["Bad day-of-week"]),
        ("0 0 30 2 *", ["Bad day-of-month"]),
        ("*/0 * * * *", ["Bad minute"]),
        ("0 3 * * * " * 30, ["at most 128 characters"]),
        ("0\n3 * * * *\x01", ["has 6 fields"]),
    ],
)
def test_bad_cron_expressions_say_what_to_write(expr: str, words: list[str]) -> None:
    with pytest.raises(Invalid) as caught:
        cron.check_cron(expr)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_good_expressions_are_kept_with_their_whitespace_collapsed() -> None:
    assert cron.check_cron("  0   3 * *\t1-5 ") == "0 3 * * 1-5"
    assert cron.check_cron("@Daily") == "@daily"
    assert cron.check_cron("30 2 L * *") == "30 2 L * *"  # cronsim's last day of the month
    assert cron.describe("0 3 * * 1-5") == "At 03:00 on Monday through Friday"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "europe/paris", "", "localtime", "x" * 100])
def test_unknown_time_zones_are_refused(zone: str) -> None:
    with pytest.raises(Invalid, match="is unknown: use an IANA name such as 'UTC'"):
        cron.check_timezone(zone)


def test_known_time_zones() -> None:
    for zone in ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"):
        assert cron.check_timezone(zone) == zone


def test_a_zone_s_wall_clock_in_winter_and_summer() -> None:
    assert cron.next_after("0 3 * * *", "Europe/Paris", utc(2026, 1, 10)) == utc(2026, 1, 10, 2)
    assert cron.next_after("0 3 * * *", "Europe/Paris", utc(2026, 7, 10)) == utc(2026, 7, 10, 1)
    assert cron.next_after("0 3 * * *", "UTC", utc(2026, 7, 10)) == utc(2026, 7, 10, 3)


def test_spring_forward_runs_a_skipped_time_at_the_first_minute_that_exists() -> None:
    """Paris, 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that day."""
    zone = "Europe/Paris"
    before = cron.next_after("30 2 * * *", zone, utc(2026, 3, 27, 12))
    assert before == utc(2026, 3, 28, 1, 30)  # 02:30 CET
    on_the_day = cron.next_after("30 2 * * *", zone, before)
    assert on_the_day == utc(2026, 3, 29, 1, 0)  # 03:00 CEST, once
    after = cron.next_after("30 2 * * *", zone, on_the_day)
    assert after == utc(2026, 3, 30, 0, 30)  # 02:30 CEST
    shown = cron.upcoming("30 2 * * *", zone, before, 3)
    assert [t.isoformat() for t in shown] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_fall_back_runs_a_repeated_time_once() -> None:
    """Paris, 2026-10-25: 03:00 CEST goes back to 02:00 CET, so 02:30 happens twice."""
    zone = "Europe/Paris"
    first = cron.next_after("30 2 * * *", zone, utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0, 30)  # 02:30 CEST, the first occurrence
    assert cron.next_after("30 2 * * *", zone, first) == utc(2026, 10, 26, 1, 30)  # CET
    # From inside the repeated hour (02:40 CET, after the first 02:45 passed): the next
    # is tomorrow's, never a time before `after`.
    inside = utc(2026, 10, 25, 1, 40)
    assert cron.next_after("45 2 * * *", zone, inside) == utc(2026, 10, 26, 1, 45)


def test_next_is_strictly_after_the_instant() -> None:
    at = utc(2026, 5, 1, 3, 0)
    assert cron.next_after("0 3 * * *", "UTC", at) == utc(2026, 5, 2, 3, 0)
    assert cron.next_after("* * * * *", "UTC", utc(2026, 5, 1, 3, 0, 0, 500)) == utc(
        2026, 5, 1, 3, 1
    )
    assert cron.upcoming("0 3 * * *", "UTC", at, 2) == [
        utc(2026, 5, 1, 3, 0),
        utc(2026, 5, 2, 3, 0),
    ]


def test_aliases() -> None:
    assert cron.next_after("@hourly", "UTC", utc(2026, 5, 1, 3, 10)) == utc(2026, 5, 1, 4)
    assert cron.next_after("@weekly", "UTC", utc(2026, 5, 1)) == utc(2026, 5, 3)  # a Sunday
