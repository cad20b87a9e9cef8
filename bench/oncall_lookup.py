"""Micro-benchmark: "who is on call" on a big roster (issue 4, speed). Not a test.

200 surgeons, 30 teams, two years (2026-2027) of rotations -- primary and
backup daily, attending and department head weekly, a higher holiday layer
around each Spring Festival -- with about 6,000 overrides and 400 leaves; then
`on_call(roster, team, at)` at random instants and teams. The same again with
the two years written out as one-off daily shifts (87,600 of them) plus the
overrides, and with the shifts alone (the old plain-shift loop).

    .venv/bin/python bench/oncall_lookup.py [--lookups 20000] [--seed 96608]

Prints the first-call cost (the per-snapshot index; each team's part is built
on that team's first lookup) and, after that, the median, p99 and max of a
lookup. Goal: median under 1 ms. The max and the first calls include pauses
of Python's cyclic garbage collector, which grow with the live objects
(87,600 shifts are many); `--gc-freeze` shows the figures without them.
"""
from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oncall.lookup import on_call  # noqa: E402  (the routing's entry point)
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team  # noqa: E402
from oncall.rotation import Leave, Override, Rotation  # noqa: E402

SH = ZoneInfo("Asia/Shanghai")
FIRST, LAST = date(2026, 1, 1), date(2028, 1, 1)
SPRING_FESTIVALS = (date(2026, 2, 16), date(2027, 2, 5))
SURGEONS, TEAMS = 200, 30


def build(rng: random.Random) -> tuple[Roster, Roster, Roster]:
    """(rotations + overrides + leave, daily shifts + overrides, daily shifts only)."""
    surgeons = {i: Surgeon(i, f"医生{i}", f"138{i:08d}", rng.choice(list(Rank))) for i in range(1, SURGEONS + 1)}
    teams = {f"t{n:02d}": Team(f"t{n:02d}", f"专业组{n}", f"Team {n}") for n in range(TEAMS)}
    ids = list(surgeons)
    rotations: list[Rotation] = []
    members_of: dict[str, list[int]] = {}
    for n, code in enumerate(teams):
        members = [ids[(n * 7 + k) % SURGEONS] for k in range(8)]  # teams share some surgeons
        members_of[code] = members
        rotations += [
            Rotation.daily(code, Role.PRIMARY, members[0:4], FIRST, until=LAST),
            Rotation.daily(code, Role.BACKUP, members[4:7], FIRST, at=datetime.min.time().replace(hour=8),
                           until=LAST),
            Rotation.weekly(code, Role.ATTENDING, members[5:8], FIRST, until=LAST),
            Rotation.weekly(code, Role.DEPARTMENT_HEAD, members[7:8], FIRST, until=LAST),
        ]
        for festival in SPRING_FESTIVALS:
            rotations.append(Rotation.daily(code, Role.PRIMARY, members[1:3], festival - timedelta(days=3),
                                            layer=1, until=festival + timedelta(days=5)))
    span_s = int((datetime.combine(LAST, datetime.min.time(), SH)
                  - datetime.combine(FIRST, datetime.min.time(), SH)).total_seconds())
    origin = datetime.combine(FIRST, datetime.min.time(), SH)

    def random_span(max_hours: int) -> tuple[datetime, datetime]:
        start = origin + timedelta(minutes=rng.randrange(span_s // 60 // 30) * 30)
        return start, start + timedelta(hours=rng.randint(2, max_hours))

    overrides = []
    for code in teams:
        for _ in range(2 * 104):  # about two a week
            start, end = random_span(72)
            role = rng.choice([Role.PRIMARY, Role.PRIMARY, Role.BACKUP, Role.ATTENDING])
            replaces = rng.choice(members_of[code]) if rng.random() < 0.5 else None
            overrides.append(Override(code, role, rng.choice(ids), start, end, replaces=replaces))
    leave = []
    for _ in range(400):
        start, end = random_span(240)
        leave.append(Leave(rng.choice(ids), start, end))

    shifts = []
    day = FIRST
    while day < LAST:
        start = datetime.combine(day, datetime.min.time().replace(hour=8), SH)
        end = start + timedelta(days=1)
        turn = day.toordinal()
        for code in teams:
            members = members_of[code]
            shifts += [Shift(code, members[turn % 4], Role.PRIMARY, start, end),
                       Shift(code, members[4 + turn % 3], Role.BACKUP, start, end),
                       Shift(code, members[5 + (turn // 7) % 3], Role.ATTENDING, start, end),
                       Shift(code, members[7], Role.DEPARTMENT_HEAD, start, end)]
        day += timedelta(days=1)

    with_rotations = Roster(teams=teams, surgeons=surgeons, rotations=tuple(rotations),
                            overrides=tuple(overrides), leave=tuple(leave))
    with_shifts = Roster(teams=teams, surgeons=surgeons, shifts=tuple(shifts), overrides=tuple(overrides))
    shifts_only = Roster(teams=teams, surgeons=surgeons, shifts=tuple(shifts))
    return with_rotations, with_shifts, shifts_only


def measure(name: str, roster: Roster, probes: list[tuple[str, datetime]]) -> None:
    code, at = probes[0]
    t0 = time.perf_counter()
    on_call(roster, code, at)
    first_ms = (time.perf_counter() - t0) * 1e3
    cold = []  # each team's first lookup builds that team's part of the index
    for team in roster.teams:
        t0 = time.perf_counter()
        on_call(roster, team, at)
        cold.append((time.perf_counter() - t0) * 1e3)
    samples = []
    members = 0
    for code, at in probes:
        t0 = time.perf_counter_ns()
        found = on_call(roster, code, at)
        samples.append(time.perf_counter_ns() - t0)
        members += len(found)
    samples.sort()
    us = [s / 1e3 for s in samples]
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    print(f"{name:<40} first call {first_ms:6.1f} ms, a team's first {max(cold):6.1f} ms max"
          f" | median {statistics.median(us):6.1f} µs | p99 {p99:6.1f} µs | max {us[-1]:8.1f} µs"
          f" | {members / len(probes):.2f} on call")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=96608)
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after building: the built rosters leave the collector's scans")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    with_rotations, with_shifts, shifts_only = build(rng)
    print(f"python {sys.version.split()[0]}; built in {time.perf_counter() - t0:.1f} s: "
          f"{len(with_rotations.surgeons)} surgeons, {len(with_rotations.teams)} teams, "
          f"{len(with_rotations.rotations)} rotations, {len(with_rotations.overrides)} overrides, "
          f"{len(with_rotations.leave)} leaves, {len(with_shifts.shifts)} shifts; "
          f"{args.lookups} lookups each{'; gc frozen' if args.gc_freeze else ''}")
    origin = datetime.combine(FIRST, datetime.min.time(), SH)
    span_us = int((datetime.combine(LAST, datetime.min.time(), SH) - origin) / timedelta(microseconds=1))
    codes = list(with_rotations.teams)
    probes = [(rng.choice(codes), origin + timedelta(microseconds=rng.randrange(span_us)))
              for _ in range(args.lookups)]
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    measure("rotations + overrides + leave", with_rotations, probes)
    measure("daily shifts + overrides (indexed path)", with_shifts, probes)
    measure("daily shifts only (plain-shift loop)", shifts_only, probes[: max(1, args.lookups // 10)])


if __name__ == "__main__":
    main()
