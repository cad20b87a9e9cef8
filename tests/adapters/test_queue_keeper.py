"""The service's major-incident state (hotline.incidents): the network cache's reloads and the
queue keeper's QueueAdd / QueueRemove against a fake AMI that keeps queues as Asterisk does."""
from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

from hotline.incidents import NetworkCache, QueueKeeper, member_changes, wanted_members
from network.incidents import Incident
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from routing.queue import member_interface

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
TEAMS = ("facial", "replant")


def roster(handoff: datetime = T0 + timedelta(hours=8)) -> Roster:
    return Roster(
        teams={t: Team(t, t, t) for t in TEAMS},
        surgeons={1: Surgeon(1, "甲", "13700000101", Rank.ATTENDING),
                  2: Surgeon(2, "乙", "13700000102", Rank.RESIDENT),
                  3: Surgeon(3, "丙", "13700000103", Rank.ATTENDING),
                  4: Surgeon(4, "丁", "13700000201", Rank.ATTENDING)},
        shifts=(Shift("facial", 1, Role.PRIMARY, T0 - timedelta(hours=1), handoff),
                Shift("facial", 2, Role.BACKUP, T0 - timedelta(hours=1), T0 + timedelta(days=1)),
                Shift("facial", 3, Role.PRIMARY, handoff, T0 + timedelta(days=1)),
                Shift("replant", 4, Role.PRIMARY, T0 - timedelta(hours=1), T0 + timedelta(days=1))))


class FakeAmi:
    """QueueStatus / QueueAdd / QueueRemove with Asterisk's answers (and a foreign member)."""

    def __init__(self) -> None:
        self.queues: dict[str, set[str]] = {"hotline-facial": {"SIP/someone-elses"},
                                            "hotline-replant": set(), "other": {"Local/1@x"}}
        self.actions: list[tuple[str, dict]] = []

    async def send(self, action: str, **fields):
        self.actions.append((action, fields))
        members = self.queues[fields["Queue"]]
        if action == "QueueAdd":
            if fields["Interface"] in members:
                return {"Response": "Error", "Message": "Already there"}
            members.add(fields["Interface"])
        elif action == "QueueRemove":
            members.discard(fields["Interface"])
        return {"Response": "Success"}

    async def send_list(self, action: str, **fields):
        self.actions.append((action, fields))
        events = [{"Event": "QueueParams", "Queue": q} for q in self.queues]
        events += [{"Event": "QueueMember", "Queue": q, "Interface": i, "Name": "x"}
                   for q, ms in self.queues.items() for i in sorted(ms)]
        return {"Response": "Success"}, events


class Net:
    def __init__(self, rows=()) -> None:
        self.rows = list(rows)

    def incidents(self):
        return self.rows

    def blocked_numbers(self):
        return frozenset()


def incident(team, start=T0 - timedelta(minutes=1), end=None):
    return Incident(1, team, start, "user:sup", end, None if end is None else "user:sup")


def run(coro):
    return asyncio.run(coro)


def test_switch_on_adds_every_on_call_surgeon_and_leaves_foreign_members_alone():
    ami, net = FakeAmi(), Net([incident("facial")])
    keeper = QueueKeeper(ami.send, ami.send_list, roster, net, TEAMS, lambda: T0)
    assert run(keeper.sync()) == (2, 0)
    assert ami.queues["hotline-facial"] == {"SIP/someone-elses", member_interface("13700000101"),
                                            member_interface("13700000102")}
    assert ami.queues["hotline-replant"] == set()
    adds = [f for a, f in ami.actions if a == "QueueAdd"]
    assert {f["MemberName"] for f in adds} == {"surgeon-1", "surgeon-2"}
    assert run(keeper.sync()) == (0, 0)  # nothing resent: Asterisk's own list is read each time


def test_a_handoff_swaps_the_member_and_switch_off_empties_the_queue():
    ami, net = FakeAmi(), Net([incident(None)])
    now = [T0]
    keeper = QueueKeeper(ami.send, ami.send_list, roster, net, TEAMS, lambda: now[0])
    run(keeper.sync())
    now[0] = T0 + timedelta(hours=8)  # surgeon 3 takes over from surgeon 1
    assert run(keeper.sync()) == (1, 1)
    assert member_interface("13700000103") in ami.queues["hotline-facial"]
    assert member_interface("13700000101") not in ami.queues["hotline-facial"]
    net.rows = [incident(None, end=now[0])]
    assert run(keeper.sync()) == (0, 3)
    assert ami.queues["hotline-facial"] == {"SIP/someone-elses"}
    assert ami.queues["hotline-replant"] == set()
    # with no incident and empty queues, a round costs no AMI traffic at all
    before = len(ami.actions)
    assert run(keeper.sync()) == (0, 0)
    assert len(ami.actions) == before
    keeper.forget()  # an AMI reconnect: Asterisk may have restarted -- read its list again
    run(keeper.sync())
    assert len(ami.actions) == before + 1


def test_the_keeper_runs_on_its_own_and_a_poke_syncs_at_once():
    async def main():
        ami, net = FakeAmi(), Net()
        keeper = QueueKeeper(ami.send, ami.send_list, roster, net, TEAMS, lambda: T0,
                             interval_s=3600)
        keeper.start()
        await asyncio.sleep(0.05)
        net.rows = [incident("replant")]
        keeper.poke()
        for _ in range(100):
            if ami.queues["hotline-replant"]:
                break
            await asyncio.sleep(0.02)
        await keeper.stop()
        return ami.queues["hotline-replant"]

    assert run(main()) == {member_interface("13700000201")}


def test_an_ami_failure_is_retried_at_the_next_round():
    async def main():
        ami, net = FakeAmi(), Net([incident("replant")])
        calls = {"n": 0}

        async def flaky_list(action, **fields):
            calls["n"] += 1
            if calls["n"] == 1:
                raise ConnectionError("AMI away")
            return await ami.send_list(action, **fields)

        keeper = QueueKeeper(ami.send, flaky_list, roster, net, TEAMS, lambda: T0, interval_s=0.05)
        keeper.start()
        for _ in range(200):
            if ami.queues["hotline-replant"]:
                break
            await asyncio.sleep(0.02)
        await keeper.stop()
        return ami.queues["hotline-replant"], calls["n"]

    members, tries = run(main())
    assert members == {member_interface("13700000201")} and tries >= 2


def test_wanted_members_and_changes_are_plain_functions():
    wanted = wanted_members(roster(), [incident("replant")], TEAMS, T0)
    assert set(wanted["hotline-replant"]) == {member_interface("13700000201")}
    assert wanted["hotline-facial"] == {}
    add, remove = member_changes(wanted, {"hotline-facial": {member_interface("13700000101"), "SIP/x"}})
    assert [(q, m.surgeon_id) for q, m in add] == [("hotline-replant", 4)]
    assert remove == [("hotline-facial", member_interface("13700000101"))]


def test_the_cache_reloads_when_a_version_moves_and_keeps_its_snapshot_when_the_database_fails():
    state = {"incidents": [], "blocked": frozenset(), "v": 0, "fail": False}
    refreshed = threading.Event()

    def load_incidents():
        if state["fail"]:
            raise OSError("database away")
        return state["incidents"]

    cache = NetworkCache(load_incidents, lambda: state["v"], lambda: state["blocked"],
                         lambda: 0, lambda: T0, poll_s=0.02, refresh_s=3600,
                         on_refresh=refreshed.set)
    cache.start()
    try:
        assert cache.incidents() == () and not cache.changed()
        refreshed.clear()
        state.update(incidents=[incident("facial")], blocked=frozenset({"13800000000"}), v=1)
        assert refreshed.wait(5)
        assert [i.team for i in cache.incidents()] == ["facial"]
        assert cache.blocked_numbers() == {"13800000000"}
        state.update(fail=True, v=2)
        assert cache.refresh() is False
        assert [i.team for i in cache.incidents()] == ["facial"]  # the last snapshot serves
    finally:
        cache.stop()
