"""The rendered config of major-incident mode, read as text: one ring-all queue per team with
positions announced, the queue path in the dialplan, the members' context, the blocked-caller
path, and the AMI account's least privilege. That Asterisk runs it: tests/integration/test_incidents_live.py."""
from __future__ import annotations

import configparser

import pytest

from dialplans.render import CONFIG_FILES, MODULES
from routing.queue import MEMBER_CONTEXT, QUEUE_SETTINGS, member_interface
from tests.adapters.test_dialplan import MENUS, _sections, parse_dialplan, render


@pytest.fixture(params=sorted(MENUS), ids=sorted(MENUS))
def rendered(request, tmp_path):
    return render(tmp_path, MENUS[request.param])


def queues(rendered) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",))
    parser.read_string(rendered.files["queues.conf"])
    return parser


def context(rendered, name: str) -> list[str]:
    return [line.app for line in parse_dialplan(rendered.dialplan) if line.context == name]


def test_app_queue_and_its_config_are_part_of_the_instance(rendered):
    assert "app_queue" in MODULES and "queues.conf" in CONFIG_FILES
    assert "load = app_queue.so" in rendered.files["modules.conf"]


def test_one_ring_all_queue_per_team_announcing_positions(rendered):
    conf = queues(rendered)
    assert conf["general"]["persistentmembers"] == "no"  # the service owns membership
    assert set(conf.sections()) == {"general"} | {f"hotline-{t}" for t in rendered.menu.teams}
    for team in rendered.menu.teams:
        q = conf[f"hotline-{team}"]
        assert q["strategy"] == "ringall"
        assert q["announce-position"] == "yes"
        assert int(q["announce-frequency"]) == QUEUE_SETTINGS.announce_every_s
        # a member is answered only after the whisper and the key: room for both
        assert int(q["timeout"]) == QUEUE_SETTINGS.member_ring_s >= 30
        assert q["ringinuse"] == "no"
        # nobody to ring: never stuck -- but busy surgeons ("inuse") still count
        for option in ("joinempty", "leavewhenempty"):
            conditions = set(q[option].split(","))
            assert {"paused", "invalid", "unavailable"} <= conditions and "inuse" not in conditions
        assert "member" not in q  # members come and go over AMI, never from the file


def test_the_queue_path_sets_the_priority_and_falls_back_through_the_service(rendered):
    route = context(rendered, "hotline-route")
    assert 'GotoIf($["${HOTLINE_ACTION}" = "queue"]?queue)' in route
    start = next(i for i, app in enumerate(route) if app.startswith("Set(HOTLINE_TARGET=${FILTER(a-z0-9_"))
    block = route[start:]
    queue_at = next(i for i, app in enumerate(block) if app.startswith("Queue("))
    assert "Set(QUEUE_PRIO=${HOTLINE_QPRIO})" in block[:queue_at]
    assert "Set(HOTLINE_QPRIO=${FILTER(0123456789,${HOTLINE_QPRIO})})" in block[:queue_at]
    assert any('"${HOTLINE_TARGET:0:8}" != "hotline-"' in app for app in block[:queue_at])
    assert block[queue_at] == f"Queue(${{HOTLINE_TARGET}},,,,{QUEUE_SETTINGS.max_wait_s})"
    assert block[queue_at + 1] == "Gosub(hotline-agi,s,1(queue_left,${QUEUESTATUS}))"
    assert block[queue_at + 3] == "Goto(decide)"  # nurse or voicemail, as the service says


def test_a_member_leg_rings_only_the_phone_the_service_confirmed_with_the_whisper(rendered):
    member = context(rendered, MEMBER_CONTEXT)
    interface = member_interface("13700000101")
    assert interface.split("@")[1] == f"{MEMBER_CONTEXT}/n"
    assert member[0] == "Set(HOTLINE_QPHONE=${FILTER(0123456789,${EXTEN})})"
    assert "Set(CHANNEL(hangup_handler_push)=hotline-queue-member-end,s,1)" in member
    [dial] = [app for app in member if app.startswith("Dial(")]
    assert dial.startswith("Dial(PJSIP/${HOTLINE_TARGET}@surgeons,,U(hotline-whisper^${CHANNEL}^")
    before = member[:member.index(dial)]
    assert 'GotoIf($["${HOTLINE_TARGET}" != "${HOTLINE_QPHONE}"]?done)' in before
    end = context(rendered, "hotline-queue-member-end")
    assert any(app.startswith("Gosub(hotline-agi,s,1(queue_ring_ended,${HOTLINE_DIALING},")
               for app in end)


def test_a_blocked_caller_hears_goodbye_and_is_hung_up_before_any_prompt_or_ring(rendered):
    inbound = context(rendered, "hotline-inbound")
    goto = inbound.index('GotoIf($["${HOTLINE_ROUTE}" = "blocked"]?blocked)')
    announce = next(i for i, app in enumerate(inbound) if "/incident)" in app)
    assert goto < announce  # nor the incident announcement
    blocked = next(i for i, line in enumerate(parse_dialplan(rendered.dialplan))
                   if line.context == "hotline-inbound" and "(blocked)," in line.text)
    tail = [line.app for line in parse_dialplan(rendered.dialplan)[blocked:blocked + 3]]
    assert tail == ["Playback(${HOTLINE_PROMPTS}/${HOTLINE_LANG}/goodbye)",
                    "Set(HOTLINE_SYSTEM_HANGUP=1)", "Hangup()"]


def test_the_incident_announcement_plays_before_the_greeting_when_the_service_says_so(rendered):
    inbound = context(rendered, "hotline-inbound")
    # A partner caller presses nothing: the announcement plays on its own ...
    assert ('ExecIf($["${HOTLINE_INCIDENT}" = "1"]?Playback(${HOTLINE_PROMPTS}/${HOTLINE_LANG}'
            '/incident))') in inbound
    # ... everyone else hears it inside the menu's Read(), so a key pressed during it counts.
    menu = context(rendered, "hotline-menu")
    opener = next(i for i, app in enumerate(menu) if "/incident&" in app)
    read = next(i for i, app in enumerate(menu) if app.startswith("Read(HOTLINE_CHOICE,"))
    assert opener < read and menu[read].startswith("Read(HOTLINE_CHOICE,${HOTLINE_GREET},")
    assert not any(app.startswith("Playback(") and "/incident" in app for app in menu)
    for lang in ("zh", "en"):
        assert rendered.menu.prompts[lang]["incident"] and rendered.menu.prompts[lang]["incident_queue"]


def test_the_service_may_manage_queue_members_but_still_not_run_commands(rendered):
    # ("originate" is the callbacks' grant -- network/callbacks.py -- not this feature's.)
    keys = dict(_sections(rendered.files["manager.conf"]))["hotline"]
    write = {p.strip() for p in keys["write"][0].split(",")}
    assert "agent" in write
    assert not write & {"command", "all", "config"}
