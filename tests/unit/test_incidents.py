"""Major-incident scope rules (network.incidents): who is in incident mode when, and which switches are allowed."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from network.incidents import (Incident, IncidentError, active, affected_teams, check_switch_on,
                               check_team, in_incident, teams_in_incident, to_switch_off)

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
TEAMS = ("facial", "replant", "burns", "referral")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def incident(id: int, team: str | None, start: float, end: float | None = None) -> Incident:
    return Incident(id, team, at(start), "user:sup", None if end is None else at(end),
                    None if end is None else "user:sup")


def test_a_team_incident_covers_that_team_only_and_only_while_it_runs():
    rows = [incident(1, "facial", 0, 30)]
    assert teams_in_incident(rows, TEAMS, at(-1)) == frozenset()
    assert teams_in_incident(rows, TEAMS, at(0)) == {"facial"}  # from the switch on
    assert teams_in_incident(rows, TEAMS, at(29.9)) == {"facial"}
    assert teams_in_incident(rows, TEAMS, at(30)) == frozenset()  # off at the switch off
    assert in_incident(rows, "facial", at(10)) and not in_incident(rows, "replant", at(10))


def test_an_all_teams_incident_covers_every_team():
    rows = [incident(1, None, 0)]
    assert teams_in_incident(rows, TEAMS, at(5)) == set(TEAMS)
    assert in_incident(rows, "a_team_added_later", at(5))


def test_active_lists_the_incidents_in_force_oldest_first():
    rows = [incident(3, "burns", 10), incident(1, "facial", 0, 5), incident(2, None, 2)]
    assert [i.id for i in active(rows, at(20))] == [2, 3]
    assert [i.id for i in active(rows, at(3))] == [1, 2]


def test_a_second_incident_of_the_same_scope_is_refused():
    with pytest.raises(IncidentError, match="already on for facial"):
        check_switch_on([incident(1, "facial", 0)], "facial", at(1))
    with pytest.raises(IncidentError, match="already on for all"):
        check_switch_on([incident(1, None, 0)], None, at(1))


def test_a_team_covered_by_the_all_teams_incident_is_refused():
    with pytest.raises(IncidentError, match="covered by the all-teams incident"):
        check_switch_on([incident(1, None, 0)], "replant", at(1))


def test_all_teams_may_start_over_single_team_incidents_and_an_ended_one_blocks_nothing():
    check_switch_on([incident(1, "facial", 0)], None, at(1))
    check_switch_on([incident(1, "facial", 0, 1)], "facial", at(2))
    check_switch_on([incident(1, "facial", 0)], "replant", at(1))


def test_switching_off_ends_exactly_that_scope():
    rows = [incident(1, "facial", 0), incident(2, None, 1)]
    assert to_switch_off(rows, "facial", at(2)).id == 1
    assert to_switch_off(rows, None, at(2)).id == 2
    with pytest.raises(IncidentError, match="only through the all-teams incident"):
        to_switch_off(rows, "replant", at(2))
    with pytest.raises(IncidentError, match="not on for replant"):
        to_switch_off([], "replant", at(2))
    with pytest.raises(IncidentError, match="not on for all teams"):
        to_switch_off([incident(1, "facial", 0)], None, at(2))


@pytest.mark.parametrize("team", ["Facial", "fa cial", "facial;drop", "", "x" * 40, "1abc", 5])
def test_a_team_code_is_a_strict_identifier(team):
    with pytest.raises(IncidentError):
        check_team(team)
    with pytest.raises(IncidentError):
        check_switch_on([], team, at(0))


def test_affected_teams():
    assert affected_teams("facial", TEAMS) == ("facial",)
    assert affected_teams(None, TEAMS) == tuple(sorted(TEAMS))
