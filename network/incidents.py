"""Major-incident mode (重大突发事件 / 群死群伤模式): which teams are in it at a time.

Pure: the rows come in as `Incident` values and the time as an argument. An
incident names one team, or none (`team is None`): then it covers every team.
Scope rules, shared by the store, the CLI, the console and the call path:

- switching on refuses a second active incident of the same scope, and refuses
  a team already covered by an active all-teams incident (it would change
  nothing, and switching it off later would surprise: the team stays in);
- an all-teams incident may start while single-team ones are active: they stay
  as they are, and switching "all" off leaves them on;
- switching off ends the active incident of exactly that scope: a team covered
  only by the all-teams incident is switched off with `--all`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

ALL = None  # the scope "every team"
_TEAM = re.compile(r"[a-z][a-z0-9_]{0,31}", re.ASCII)
NOTE_MAX = 500


class IncidentError(ValueError):
    """A switch that the incidents in force do not allow; the message says why."""


@dataclass(frozen=True)
class Incident:
    id: int
    team: str | None  # None: every team
    started_at: datetime
    started_by: str
    ended_at: datetime | None = None
    ended_by: str | None = None
    note: str = ""

    def active_at(self, at: datetime) -> bool:
        return self.started_at <= at and (self.ended_at is None or at < self.ended_at)

    def covers(self, team: str) -> bool:
        return self.team is None or self.team == team

    @property
    def scope(self) -> str:
        return "all" if self.team is None else self.team


def check_team(team: str | None) -> str | None:
    """`team` if it is a team code (or None for all); IncidentError otherwise."""
    if team is not None and not (isinstance(team, str) and _TEAM.fullmatch(team)):
        raise IncidentError(f"not a team code: {team!r}"[:80])
    return team


def active(incidents: Iterable[Incident], at: datetime) -> list[Incident]:
    """The incidents in force at `at`, oldest first."""
    return sorted((i for i in incidents if i.active_at(at)), key=lambda i: (i.started_at, i.id))


def in_incident(incidents: Iterable[Incident], team: str, at: datetime) -> bool:
    return any(i.covers(team) for i in active(incidents, at))


def teams_in_incident(incidents: Iterable[Incident], teams: Iterable[str],
                      at: datetime) -> frozenset[str]:
    """Which of `teams` are in major-incident mode at `at`."""
    now = active(incidents, at)
    return frozenset(t for t in teams if any(i.covers(t) for i in now))


def check_switch_on(incidents: Iterable[Incident], team: str | None, at: datetime) -> None:
    """Raise IncidentError if an incident for `team` (None: all) may not start at `at`."""
    check_team(team)
    for incident in active(incidents, at):
        if incident.team == team:
            raise IncidentError(f"major-incident mode is already on for {incident.scope} "
                                f"(since {incident.started_at:%Y-%m-%d %H:%M} UTC)")
        if team is not None and incident.team is None:
            raise IncidentError(f"team {team} is already covered by the all-teams incident")


def to_switch_off(incidents: Iterable[Incident], team: str | None, at: datetime) -> Incident:
    """The active incident of exactly this scope, or IncidentError saying why there is none."""
    check_team(team)
    now = active(incidents, at)
    for incident in now:
        if incident.team == team:
            return incident
    if team is not None and any(i.team is None for i in now):
        raise IncidentError(f"team {team} is in major-incident mode only through the "
                            "all-teams incident: switch that off (--all)")
    raise IncidentError(f"major-incident mode is not on for {'all teams' if team is None else team}")


def affected_teams(team: str | None, known_teams: Iterable[str]) -> tuple[str, ...]:
    """The teams an incident of this scope puts in incident mode (sorted)."""
    known = sorted(set(known_teams))
    if team is None:
        return tuple(known)
    return (team,)
