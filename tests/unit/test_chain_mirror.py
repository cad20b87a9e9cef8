"""The chain mirror: which globals it sets, that a reconnect re-sends all of it, what it refuses to send."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from ivr import channel_vars
from ivr.ami import Message
from ivr.mirror import ChainMirror, ami_set_global, chain_entries
from oncall.model import Role, Roster, Shift, Surgeon, Team

AT = datetime(2026, 12, 1, 6, 0, tzinfo=timezone.utc)
DAY = (AT - timedelta(hours=1), AT + timedelta(hours=23))


def roster(primary_phone: str = "13700000101") -> Roster:
    return Roster(
        teams={"facial": Team("facial", "颌面部创伤", "Facial trauma", ring_s=20, repeats=0),
               "hand2": Team("hand2", "手外二科", "Hand surgery 2", ring_s=30, repeats=0)},
        surgeons={1: Surgeon(1, "甲", primary_phone), 2: Surgeon(2, "乙", "13700000102"),
                  3: Surgeon(3, "丙", "13700000201")},
        shifts=(Shift("facial", 1, Role.PRIMARY, *DAY), Shift("facial", 2, Role.BACKUP, *DAY),
                Shift("hand2", 3, Role.PRIMARY, *DAY)),
    )


class Asterisk:
    """Plays Asterisk's globals: set_global records; `restart()` loses them all, as a restart does."""

    def __init__(self) -> None:
        self.globals: dict[str, str] = {}
        self.sets: list[tuple[str, str]] = []
        self.up = True

    async def set_global(self, name: str, value: str) -> bool:
        if not self.up:
            raise ConnectionError("AMI down")
        self.sets.append((name, value))
        self.globals[name] = value
        return True

    def restart(self) -> None:
        self.globals.clear()


def test_chain_entries_name_every_step_under_the_team_code_verbatim():
    entries = chain_entries(roster(), ("facial", "hand2", "nurse"), AT)
    assert entries == {
        "HOTLINE_CHAIN_facial_COUNT": "2", "HOTLINE_CHAIN_facial_RING": "20",
        "HOTLINE_CHAIN_facial_1": "13700000101", "HOTLINE_CHAIN_facial_2": "13700000102",
        # A digit in the team code is kept (the dialplan filters the team to a-z0-9_).
        "HOTLINE_CHAIN_hand2_COUNT": "1", "HOTLINE_CHAIN_hand2_RING": "30",
        "HOTLINE_CHAIN_hand2_1": "13700000201",
        # A team with nobody on call: count 0, and the dialplan goes to the fallback.
        "HOTLINE_CHAIN_nurse_COUNT": "0", "HOTLINE_CHAIN_nurse_RING": "25",
    }


@pytest.mark.parametrize("team,part", [
    ("Facial", 1), ("facial)=1,SHELL(id", 1), ("", 1), ("1facial", 1), ("fa cial", 1),
    ("f" * 33, 1), ("facial", 0), ("facial", 11), ("facial", "count"), ("facial", "X"),
    ("facial", True), ("facial", "1"), ("外科", 1),
])
def test_chain_var_refuses_anything_but_a_team_code_and_an_entry(team, part):
    with pytest.raises(ValueError):
        channel_vars.chain_var(team, part)


def test_the_first_round_sends_the_chains_then_the_heartbeat_and_later_only_changes():
    async def scenario():
        asterisk = Asterisk()
        current = {"roster": roster()}
        mirror = ChainMirror(asterisk.set_global, lambda: current["roster"], ("facial",), lambda: AT,
                             heartbeat_s=0.01, chain_check_s=0.0, wall_clock=lambda: 1795636900.7)
        mirror.start()
        await asyncio.sleep(0.05)
        first = list(asterisk.sets)
        current["roster"] = roster(primary_phone="13700000109")
        await asyncio.sleep(0.05)
        await mirror.stop()
        return asterisk, first

    asterisk, first = asyncio.run(scenario())
    names = [name for name, _ in first]
    # The whole chain goes out before the first heartbeat.
    assert names.index(channel_vars.HEARTBEAT) == 4
    assert set(names[:4]) == {"HOTLINE_CHAIN_facial_COUNT", "HOTLINE_CHAIN_facial_RING",
                              "HOTLINE_CHAIN_facial_1", "HOTLINE_CHAIN_facial_2"}
    assert (channel_vars.HEARTBEAT, "1795636900") in first
    chain_sets = [s for s in asterisk.sets if s[0].startswith(channel_vars.CHAIN_PREFIX)]
    # After the first round only the one changed entry was sent again.
    assert chain_sets[4:] == [("HOTLINE_CHAIN_facial_1", "13700000109")]
    assert asterisk.globals["HOTLINE_CHAIN_facial_1"] == "13700000109"


def test_after_a_reconnect_everything_is_sent_again():
    """Asterisk restarted (every global lost) and AMI logged in again: forget() -> all of it, at once."""
    async def scenario():
        asterisk = Asterisk()
        mirror = ChainMirror(asterisk.set_global, roster, ("facial", "hand2"), lambda: AT,
                             heartbeat_s=0.01, chain_check_s=3600.0)
        mirror.start()
        await asyncio.sleep(0.05)
        whole = dict(asterisk.globals)
        asterisk.up = False
        asterisk.restart()
        await asyncio.sleep(0.05)  # beats fail meanwhile; the loop goes on
        asterisk.up = True
        await asyncio.sleep(0.05)
        before_forget = dict(asterisk.globals)
        mirror.forget()  # what AmiClient.on_reconnect calls
        await asyncio.sleep(0.05)
        await mirror.stop()
        return whole, before_forget, dict(asterisk.globals)

    whole, before_forget, after = asyncio.run(scenario())
    chains = {k: v for k, v in whole.items() if k.startswith(channel_vars.CHAIN_PREFIX)}
    assert len(chains) == 7
    # Without forget() only the heartbeat comes back (the chain check is an hour away)...
    assert set(before_forget) == {channel_vars.HEARTBEAT}
    # ...with it, the whole mirror at once.
    assert {k: v for k, v in after.items() if k != channel_vars.HEARTBEAT} == chains


def test_a_push_that_straddles_a_reconnect_is_not_remembered():
    async def scenario():
        sent: list[str] = []
        mirror: ChainMirror

        async def set_global(name: str, value: str) -> bool:
            sent.append(name)
            if name == "HOTLINE_CHAIN_facial_RING":
                mirror.forget()  # the session changed while this one was on its way
            return True

        mirror = ChainMirror(set_global, roster, ("facial",), lambda: AT)
        await mirror.push_chains()
        first = list(sent)
        sent.clear()
        await mirror.push_chains()
        return first, sent

    first, again = asyncio.run(scenario())
    assert len(first) == 4
    # Nothing of the straddling push counts as pushed: all four go again.
    assert sorted(again) == sorted(first)


def test_stopping_sets_the_heartbeat_to_zero():
    async def scenario():
        asterisk = Asterisk()
        mirror = ChainMirror(asterisk.set_global, roster, ("facial",), lambda: AT)
        await mirror.beat()
        await mirror.stopped()
        return asterisk.globals[channel_vars.HEARTBEAT]

    assert asyncio.run(scenario()) == "0"


def test_a_refused_value_skips_that_entry_only():
    async def scenario():
        sent: dict[str, str] = {}

        async def send(action: str, **fields: str) -> Message:
            sent[fields["Variable"]] = fields["Value"]
            return Message([("Response", "Success"), ("Message", "Variable Set")])

        mirror = ChainMirror(ami_set_global(send), lambda: roster(primary_phone="1370000010;1"),
                             ("facial",), lambda: AT)
        count = await mirror.push_chains()
        return count, sent

    count, sent = asyncio.run(scenario())
    assert count == 3 and "HOTLINE_CHAIN_facial_1" not in sent
    assert sent["HOTLINE_CHAIN_facial_2"] == "13700000102"


def test_ami_set_global_is_one_setvar_without_a_channel():
    calls: list[tuple[str, dict[str, str]]] = []

    async def send(action: str, **fields: str) -> Message:
        calls.append((action, fields))
        return Message([("Response", "Success" if fields["Value"] != "9" else "Error"),
                        ("Message", "Variable Set")])

    async def scenario():
        put = ami_set_global(send)
        return await put("HOTLINE_CHAIN_facial_1", "13700000101"), await put("HOTLINE_HEARTBEAT", "9")

    assert asyncio.run(scenario()) == (True, False)
    assert calls[0] == ("Setvar", {"Variable": "HOTLINE_CHAIN_facial_1", "Value": "13700000101"})
    assert all("Channel" not in fields for _, fields in calls)


@pytest.mark.parametrize("name,value", [
    ("DB(hotline/heartbeat)", "1"), ("SHELL(id)", "1"), ("HOTLINE_X)", "1"), ("GLOBAL(X)", "1"),
    ("HOTLINE_", "1"), ("OTHER_VAR", "1"), ("HOTLINE_a b", "1"), ("HOTLINE_X\r\nAction: Originate", "1"),
    ("HOTLINE_HEARTBEAT", "1\r\nAction: Originate"), ("HOTLINE_HEARTBEAT", "${SHELL(id)}"),
    ("HOTLINE_HEARTBEAT", "1" * 33), ("HOTLINE_HEARTBEAT", "-1"), ("HOTLINE_HEARTBEAT", 1),
])
def test_ami_set_global_refuses_functions_foreign_names_and_non_digits(name, value):
    calls: list[str] = []

    async def send(action: str, **fields: str) -> Message:
        calls.append(action)
        return Message([("Response", "Success")])

    with pytest.raises(ValueError):
        asyncio.run(ami_set_global(send)(name, value))
    assert calls == []
