"""Opening hours (`[schedule]`): when the show plays, rests, or holds a scene, by weekday and time of day.

A rule covers `days` ("daily", "mon-fri", "sat,sun", "fri-mon") from `from` to `to` ("09:30", "18:00"); a `to`
earlier than `from` runs overnight into the next day (the days name where it starts); `from` = `to` is the whole day.
The first rule that covers a moment decides its mode: "play", "rest" (black picture, silent sound, no models run:
see live/video/chain.py) or "scene:NAME"; no rule covering it means `outside`. The evaluation (`mode_at`) is a pure
function of a datetime, written here with the standard library's datetime and zoneinfo: a weekday set and two clock
times need no cron library. The schedule applies a mode when the mode changes (a rule boundary), so a hand on
/live/rest (OSC) holds until the next boundary.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from datetime import datetime, time as clock_time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from live.errors import LiveError
from live.params import ParamTree

REST = "/live/rest"  # the system control the schedule (and OSC, by hand) sets: the chain and the synth obey it
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Tests only: an ISO time (e.g. 2026-12-05T17:59:55; naive = in the schedule's zone) the schedule's clock starts
#: at, running at real speed from there. Never set in a show: unset, the schedule reads the real clock.
FAKE_START = "LIVE_FAKE_START"
CHECK_S = 0.5  # how often the schedule looks at the clock


def weekdays(days: str) -> frozenset[int]:
    """"daily", "mon-fri", "sat,sun", "fri-mon" -> weekday numbers (Monday 0); ValueError naming the bad part."""
    found: set[int] = set()
    for part in (p.strip().lower() for p in days.split(",")):
        if part == "daily":
            found.update(range(7))
            continue
        ends = [e.strip()[:3] for e in part.split("-")]
        if len(ends) > 2 or any(e not in DAYS for e in ends):
            raise ValueError(f"'{part}' is not a day or range of days (use mon..sun, 'mon-fri', 'sat,sun' or "
                             "'daily')")
        first, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
        found.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset(found)


def clock(text: str) -> clock_time:
    """"09:30" -> 09:30; ValueError saying the form."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"'{text}' is not a time of day (use 24-hour HH:MM, e.g. \"09:30\" or \"22:00\")")
    return clock_time(int(match[1]), int(match[2]))


def _mode(value: str) -> str:
    if value in ("play", "rest") or (value.startswith("scene:") and value[6:].strip()):
        return value
    raise ValueError(f"'{value}' is not a mode (use \"play\", \"rest\" or \"scene:NAME\")")


class RuleSection(BaseModel):
    """One `[[schedule.rule]]`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    days: str = Field("daily", description="\"daily\", \"mon-fri\", \"sat,sun\", \"fri-mon\", ...")
    start: str = Field(alias="from", description="HH:MM, local to the schedule's time zone")
    end: str = Field(alias="to", description="HH:MM; earlier than `from` = overnight into the next day")
    mode: str = Field("play", description="\"play\", \"rest\" or \"scene:NAME\"")

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        if not weekdays(value):
            raise ValueError("names no day (use e.g. \"mon-fri\" or \"daily\")")
        return value

    @field_validator("start", "end")
    @classmethod
    def _times(cls, value: str) -> str:
        clock(value)
        return value

    @field_validator("mode")
    @classmethod
    def _modes(cls, value: str) -> str:
        return _mode(value)

    def covers(self, when: datetime) -> bool:
        days, start, end, now = weekdays(self.days), clock(self.start), clock(self.end), when.time()
        day = when.weekday()
        if start < end:
            return day in days and start <= now < end
        if start == end:
            return day in days
        return (day in days and now >= start) or ((day - 1) % 7 in days and now < end)  # overnight


class ScheduleSection(BaseModel):
    """`[schedule]`: opening hours. No rules and `outside = "play"` (the default): the show always plays."""

    model_config = ConfigDict(extra="forbid")
    rule: list[RuleSection] = Field(default_factory=list, description="the first rule covering a moment decides")
    outside: str = Field("play", description="the mode when no rule covers the moment")
    timezone: str = Field("", description="zoneinfo name (e.g. \"Europe/Berlin\"); \"\" = the machine's own")

    @field_validator("outside")
    @classmethod
    def _outside(cls, value: str) -> str:
        return _mode(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"'{value}' is not a time zone (use a zoneinfo name such as \"Europe/Berlin\", or "
                                 "\"\" for the machine's own)") from None
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.rule) or self.outside != "play"

    @property
    def zone(self) -> tzinfo | None:
        """The schedule's time zone; None = the machine's local one."""
        return ZoneInfo(self.timezone) if self.timezone else None

    def scenes(self) -> list[tuple[str, str]]:
        """(key, scene name) for every mode that names a scene, to check against the show's scenes."""
        keys = [(f"[[schedule.rule]] #{i + 1} mode", r.mode) for i, r in enumerate(self.rule)]
        return [(key, mode[6:].strip()) for key, mode in [*keys, ("[schedule] outside", self.outside)]
                if mode.startswith("scene:")]


def mode_at(schedule: ScheduleSection, when: datetime) -> str:
    """The mode at `when` (an aware datetime, read in the schedule's zone): the first covering rule's, else outside."""
    local = when.astimezone(schedule.zone)
    return next((rule.mode for rule in schedule.rule if rule.covers(local)), schedule.outside)


def wall_clock(zone: tzinfo | None) -> Callable[[], datetime]:
    """Now, as an aware datetime in `zone` (None: local). With LIVE_FAKE_START set (tests), the clock starts at that
    time when this is called and runs at real speed; LiveError if it is not an ISO time."""
    fake = os.environ.get(FAKE_START, "")
    if not fake:
        return lambda: datetime.now().astimezone(zone)
    try:
        start = datetime.fromisoformat(fake)
    except ValueError:
        raise LiveError(f"{FAKE_START}={fake!r} is not an ISO time", "e.g. 2026-12-05T17:59:55, or unset it") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=zone) if zone else start.astimezone()
    origin = time.monotonic()
    return lambda: (start + timedelta(seconds=time.monotonic() - origin)).astimezone(zone)


class Schedule:
    """Applies the schedule's mode at each boundary: rest on or off (/live/rest), and a mode's scene recalled."""

    def __init__(self, section: ScheduleSection, tree: ParamTree, goto: Callable[[str, bool], str],
                 say: Callable[[str], None] = print) -> None:
        self.section, self.tree, self.goto, self.say = section, tree, goto, say
        self.now = wall_clock(section.zone)
        self.mode: str | None = None
        self._checked = -CHECK_S

    def tick(self, now: float) -> bool:
        """At most every CHECK_S (perf_counter `now`): if the mode changed, apply it; True when it did."""
        if now - self._checked < CHECK_S:
            return False
        self._checked = now
        when = self.now()
        mode = mode_at(self.section, when)
        if mode == self.mode:
            return False
        first, self.mode = self.mode is None, mode
        self.tree.set(REST, mode == "rest", "schedule")
        said = f"Schedule: {mode} from {when:%a %H:%M}"
        if mode.startswith("scene:"):
            said += f" ({self.goto(mode[6:].strip(), not first)})"  # the show opens in it at once
        self.say(said)
        return True
