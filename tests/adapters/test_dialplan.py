"""The rendered Asterisk config, read as text: the dialplan's safety rules and the loopback-only,
least-privilege settings. That Asterisk itself loads it is tested in tests/integration/.
"""
from __future__ import annotations

import configparser
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from dialplans.render import CONFIG_FILES, render_all, write_config
from hotline.config import Ports
from ivr import channel_vars
from ivr.handlers import PROOF_PARAM
from ivr.menu import Menu, load_menu

ROOT = Path(__file__).resolve().parents[2]
MENUS = {
    "shipped": ROOT / "ivr" / "menu.toml",
    "test": ROOT / "tests" / "integration" / "menu-test.toml",
}
PORTS = Ports(sip=15060, ami=15038, agi=15073, surgeon_phones=15070, rtp_start=16000, rtp_end=16999)
# Apps whose arguments become a number dialled, a file written, a shell command or a DB key.
SENSITIVE_APP = re.compile(r"\b(Dial|MixMonitor|Record|System|DB|DB_DELETE|DBdeltree|TrySystem|Monitor)\(")
# Values the caller chooses; ${ARG} is safe only through FILTER().
CALLER_CONTROLLED = ("${EXTEN}", "${CALLERID(", "${HOTLINE_CHOICE}", "${HOTLINE_KEY}", "${ARG")
GLOBALS = {"HOTLINE_NODE", "HOTLINE_PROMPTS", "HOTLINE_RECORDINGS", "HOTLINE_FALLBACK", "HOTLINE_STALE_S"}
SERVICE_VARS = {channel_vars.TARGET, channel_vars.RING_S, channel_vars.ATTEMPT,
                channel_vars.WHISPER, channel_vars.PARTNER}


@dataclass(frozen=True)
class Line:
    context: str
    exten: str
    app: str  # the application call, e.g. 'Dial(PJSIP/...)'
    text: str


@dataclass(frozen=True)
class Rendered:
    menu: Menu
    files: dict[str, str]
    dirs: dict[str, Path]

    @property
    def dialplan(self) -> str:
        return self.files["extensions.conf"]

    def lines(self) -> list[Line]:
        return parse_dialplan(self.dialplan)


def parse_dialplan(text: str) -> list[Line]:
    """Every `exten => X,prio,App(...)` and `same => prio,App(...)` line, with its context."""
    found: list[Line] = []
    context, exten = "", ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if header := re.fullmatch(r"\[([^\]]+)\]", line):
            context = header.group(1)
            continue
        if match := re.fullmatch(r"exten\s*=>\s*([^,]+),\s*([^,]+),(.+)", line):
            exten = match.group(1)
            found.append(Line(context, exten, match.group(3), line))
        elif match := re.fullmatch(r"same\s*=>\s*([^,]+),(.+)", line):
            assert exten, f"'same' before any 'exten': {line}"
            found.append(Line(context, exten, match.group(2), line))
        else:
            assert "=>" not in line, f"unparsed dialplan line: {line}"
    return found


def strip_filtered(text: str) -> str:
    """Drop every ${FILTER(charset,...)} (balanced), leaving what is used unfiltered."""
    while (start := text.find("${FILTER(")) >= 0:
        depth, i = 0, start + 1
        while True:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        text = text[:start] + "<filtered>" + text[i + 1:]
    return text


def plain_vars(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))


def render(tmp_path: Path, menu_file: Path) -> Rendered:
    dirs = {name: tmp_path / name for name in ("instance", "prompts", "recordings")}
    menu = load_menu(menu_file)
    files = render_all(
        menu=menu, menu_source=str(menu_file), instance="t", instance_dir=dirs["instance"],
        prompts_dir=dirs["prompts"], recordings_dir=dirs["recordings"], ports=PORTS,
        agi_host="127.0.0.1", ami_secret="ami-secret-x",
        sip_secret="sip-secret-z", console_ami_secret="console-secret-y",
    )
    return Rendered(menu, files, dirs)


@pytest.fixture(params=sorted(MENUS), ids=sorted(MENUS))
def rendered(request, tmp_path) -> Rendered:
    return render(tmp_path, MENUS[request.param])


# --- the dialplan ----------------------------------------------------------------------------

def test_all_config_files_are_rendered(rendered):
    assert set(rendered.files) == set(CONFIG_FILES)
    assert all(text.strip() for text in rendered.files.values())
    assert all("{{" not in text and "{%" not in text for text in rendered.files.values())


REQUESTS = {"call_start", "menu", "route", "attempt_ended", "accepted", "call_end",
            "queue_ring", "queue_ring_ended", "queue_left",  # these three: major incidents
            "callback_start", "callback_accepted", "callback_end"}  # placing a callback


def _requests(rendered) -> list[tuple[str, "Line"]]:
    """(request name, line) for every Gosub into the [hotline-agi] wrapper."""
    found = []
    for line in rendered.lines():
        if line.app.startswith("Gosub(hotline-agi,"):
            match = re.fullmatch(r"Gosub\(hotline-agi,s,1\(([a-z_]+)(,.*)?\)\)", line.app)
            assert match, line.text  # the request name is always a literal of ours
            found.append((match.group(1), line))
    return found


def test_every_request_goes_through_one_heartbeat_gated_agi_line_naming_the_call(rendered):
    agi = [line for line in rendered.lines() if line.app.startswith("AGI(")]
    assert len(agi) == 1 and agi[0].context == "hotline-agi"
    assert agi[0].app.startswith(f"AGI(agi://127.0.0.1:{PORTS.agi}/${{ARG1}}?linkedid=${{CHANNEL(linkedid)}}"
                                 f"&{PROOF_PARAM}=${{SHA1(")
    assert ")}:${CHANNEL(linkedid)}:${ARG1})},${ARG2}," in agi[0].app
    wrapper = [line.app for line in rendered.lines() if line.context == "hotline-agi"]
    assert wrapper[0] == "Set(HOTLINE_OK=)"
    gate = next(i for i, app in enumerate(wrapper) if f"${{GLOBAL({channel_vars.HEARTBEAT})}}" in app)
    at = wrapper.index(agi[0].app)
    assert gate < at and wrapper[gate].startswith("GotoIf(")
    assert wrapper[at + 1] == 'GotoIf($["${HOTLINE_OK}" = "1"]?done)'
    assert {name for name, _ in _requests(rendered)} == REQUESTS


def test_a_cluster_node_asks_each_instance_in_its_order_each_gated_by_its_own_heartbeat():
    # Node b of a two-instance cluster asks instance 2 first, then instance 1;
    # instance n is asked only while HOTLINE_HEARTBEAT_n is fresh.
    menu = load_menu(MENUS["test"])
    files = render_all(menu=menu, menu_source="m", instance="node-b", instance_dir=Path("/v/asterisk/node-b"),
                       prompts_dir=Path("/v/prompts"), recordings_dir=Path("/v/recordings/ha"), ports=PORTS,
                       agi_host="127.0.0.1", ami_secret="a", sip_secret="c", console_ami_secret="d",
                       agi_targets=("127.0.0.1:4573", "127.0.0.1:4574"), agi_first=2, node_name="node-b")
    agi_lines = [line for line in files["extensions.conf"].splitlines()
                 if line.startswith(" same") and "hotline-agi" not in line and ("AGI(" in line or "HEARTBEAT" in line)]
    order = [("HOTLINE_HEARTBEAT_2" in line, "4574/" in line, "HOTLINE_HEARTBEAT_1" in line, "4573/" in line)
             for line in agi_lines]
    assert order == [(True, False, False, False), (False, True, False, False),
                     (False, False, True, False), (False, False, False, True)]
    assert "systemname = node-b" in files["asterisk.conf"]
    assert "HOTLINE_NODE = node-b-" in files["extensions.conf"]
    for bad in ({"agi_targets": ("localhost:4573",)}, {"agi_targets": ("127.0.0.1:4573,x",)},
                {"agi_targets": ("[::1]:4573",)}, {"agi_targets": ("127.0.0.1:0",)},
                {"agi_first": 3}, {"node_name": "Node_B"}, {"node_name": "node-b-"}):
        kwargs = {"agi_targets": ("127.0.0.1:4573", "127.0.0.1:4574"), **bad}
        with pytest.raises(ValueError):
            render_all(menu=menu, menu_source="m", instance="x", instance_dir=Path("/v/x"),
                       prompts_dir=Path("/v/p"), recordings_dir=Path("/v/r"), ports=PORTS,
                       agi_host="127.0.0.1", ami_secret="a", sip_secret="c", console_ami_secret="d", **kwargs)


def test_no_caller_controlled_value_reaches_dial_files_shell_or_db(rendered):
    sensitive = [line for line in rendered.lines() if SENSITIVE_APP.search(line.app)]
    assert {m for line in sensitive for m in SENSITIVE_APP.findall(line.app)} >= {"Dial", "Record"}
    for line in sensitive:
        unfiltered = strip_filtered(line.app)
        for value in CALLER_CONTROLLED:
            assert value not in unfiltered, f"{value} in {line.text}"
    apps = "\n".join(line.app for line in rendered.lines())
    assert "System(" not in apps and "SHELL(" not in apps
    # The caller ID is read once, inside FILTER(), to strip control characters.
    unfiltered = "\n".join(strip_filtered(line.app) for line in rendered.lines())
    assert "${EXTEN}" not in unfiltered and "${CALLERID(" not in unfiltered
    assert "${REDIRECTING(" not in unfiltered.replace("${LEN(${REDIRECTING(", "")


def test_the_caller_id_loses_control_characters_before_any_agi_request(rendered):
    inbound = [line.app for line in rendered.lines() if line.context == "hotline-inbound"]
    first_agi = next(i for i, app in enumerate(inbound) if app.startswith("Gosub(hotline-agi,"))
    before = inbound[:first_agi]
    assert "Set(CALLERID(num)=${FILTER(\\x20-\\x7e,${CALLERID(num)})})" in before
    assert any(app.startswith("Set(CALLERID(name)=${FILTER(") for app in before)


def test_the_arguments_of_the_surgeon_leg_are_used_only_filtered(rendered):
    for line in rendered.lines():
        if line.context == "hotline-agi":
            continue  # the request wrapper: its ARGs come from our own Gosub calls (checked above)
        if "${ARG" in line.app:
            unfiltered = strip_filtered(line.app)
            # ARG1 (a channel name) only inside SHARED()'s channel argument; ARG3 only tested for ""
            unfiltered = re.sub(r"SHARED\(HOTLINE_ACCEPTED,\$\{ARG1\}\)", "", unfiltered)
            unfiltered = unfiltered.replace('$["${ARG3}" != ""]', "")
            assert "${ARG" not in unfiltered, line.text


def test_variables_in_dial_files_and_db_come_from_safe_sources_only(rendered):
    """Every variable used by a sensitive app is a global, or every assignment of it is
    filtered, regex-gated, or built from such variables alone."""
    assignments: dict[str, list[tuple[str, str]]] = {}
    for line in rendered.lines():
        for match in re.finditer(r"Set\(([A-Z_][A-Z0-9_]*)=", line.app):
            value = _balanced_tail(line.app, match.end())
            assignments.setdefault(match.group(1), []).append((value, line.app))
    safe = set(GLOBALS) | {"CHANNEL"}  # ${CHANNEL}: Asterisk's own name for the channel
    changed = True
    while changed:
        changed = False
        for name, values in assignments.items():
            if name in safe:
                continue
            # A variable built from itself (a counter) is safe if all else it uses is.
            if all(_safe_assignment(value, app, safe | {name}) for value, app in values):
                safe.add(name)
                changed = True
    for line in rendered.lines():
        if SENSITIVE_APP.search(line.app):
            used = plain_vars(strip_filtered(line.app[line.app.index(SENSITIVE_APP.search(line.app).group(0)):]))
            assert used <= safe, f"{sorted(used - safe)} not known safe in {line.text}"


def _balanced_tail(text: str, start: int) -> str:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            if depth == 0:
                return text[start:i]
            depth -= 1
    raise AssertionError(f"unbalanced: {text}")


def _safe_assignment(value: str, app: str, safe: set[str]) -> bool:
    if app.startswith("ExecIf($[${REGEX(") and "${LEN(" in app:  # gated: plainly safe characters only
        return True
    rest = strip_filtered(value)
    no_functions = not re.search(r"\$\{[A-Za-z_]+\(", rest)  # e.g. ${CALLERID(num)}, ${SHELL(...)}
    return no_functions and plain_vars(rest) <= safe


def test_service_values_are_filtered_again_between_the_request_and_the_dial(rendered):
    """A value set over AGI is re-FILTERed after the last AGI request and before each Dial."""
    lines = rendered.lines()
    for index, line in enumerate(lines):
        if not line.app.startswith("Dial(") or line.context != "hotline-route":
            continue
        used = plain_vars(line.app) & SERVICE_VARS
        assert used, line.text
        filtered: set[str] = set()
        for earlier in reversed(lines[:index]):
            if earlier.context != line.context:
                break
            if "AGI(" in earlier.app or earlier.app.startswith("Gosub(hotline-agi,"):
                break
            if m := re.match(r"Set\(([A-Z_]+)=\$\{FILTER\([^,]+,\$\{\1\}\)\}\)$", earlier.app):
                filtered.add(m.group(1))
        # the labelled 'dial' block may be reached from 'decide' after an AGI; it filters itself
        assert used <= filtered, f"{sorted(used - filtered)} used unfiltered in {line.text}"


def test_only_the_hotline_number_s_named_extensions_and_the_trunk_hangup_pattern(rendered):
    by_context: dict[str, set[str]] = {}
    for line in rendered.lines():
        by_context.setdefault(line.context, set()).add(line.exten)
    assert by_context["hotline-callers"] == {rendered.menu.number}
    assert by_context["hotline-from-surgeons"] == {"_[0-9*#+a-zA-Z]."}
    # The queue members' context takes the phone the service put in the queue
    # (Local/<phone>@hotline-queue-member/n), read only through FILTER().
    assert by_context.pop("hotline-queue-member") == {"_XXX."}
    patterns = {e for extens in by_context.values() for e in extens if e.startswith("_")}
    assert patterns == {"_[0-9*#+a-zA-Z]."}
    named = {e for c, extens in by_context.items() if c != "hotline-callers" for e in extens} - patterns
    assert all(re.fullmatch(r"s|[a-z][a-z0-9-]*", e) for e in named), named
    assert named >= {"s", "nurse", "nurse-after-retries", "english"}
    assert named >= {f"team-{o.team}" for o in rendered.menu.options}
    assert not re.search(r"^\s*include\s*=>", rendered.dialplan, re.M)
    trunk = [line.app for line in rendered.lines() if line.context == "hotline-from-surgeons"]
    assert trunk == ["Hangup(21)"]


def test_every_channel_variable_name_appears_in_the_dialplan(rendered):
    for name in channel_vars.ALL:
        assert re.search(rf"\b{name}\b", rendered.dialplan), name


def test_every_menu_key_is_an_exact_comparison(rendered):
    menu = rendered.menu
    keys = [(o.key, f"team-{o.team}") for o in menu.options]
    keys += [(menu.duty_nurse_key, "nurse"), (menu.english_key, "english")]
    if menu.callback_key:
        keys.append((menu.callback_key, "callback"))
    for key, target in keys:
        expected = f'GotoIf($["${{HOTLINE_CHOICE}}" = "{key}"]?{target},1)'
        assert expected in rendered.dialplan, expected
    comparisons = re.findall(r'\$\["\$\{HOTLINE_CHOICE\}" = "([^"]*)"\]', rendered.dialplan)
    assert sorted(comparisons) == sorted(["", *(k for k, _ in keys)])  # "": no key, a timeout
    # Read() takes one digit, with the menu's timeout, over the greeting
    assert "Set(HOTLINE_GREET=${HOTLINE_PROMPTS}/${HOTLINE_LANG}/greeting)" in rendered.dialplan
    assert f"Read(HOTLINE_CHOICE,${{HOTLINE_GREET}},1,,1,{menu.timeout_s})" in rendered.dialplan


def test_every_request_is_trusted_only_with_hotline_ok(rendered):
    lines = rendered.lines()
    checked = set()
    for name, line in _requests(rendered):
        if name in ("call_start", "route", "attempt_ended", "queue_left"):
            index = lines.index(line)
            after = lines[index + 1].app
            target = "hotline-menu" if name == "call_start" else "hotline-mirror"
            assert after == f'GotoIf($["${{HOTLINE_OK}}" != "1"]?{target},s,1)', line.text
            checked.add(name)
        if name == "queue_ring":  # a member leg without the service's answer rings nobody
            after = lines[lines.index(line) + 1].app
            assert after.startswith('GotoIf($["${HOTLINE_OK}" != "1" |') and after.endswith("?done)")
            checked.add(name)
    assert checked == {"call_start", "route", "attempt_ended", "queue_left", "queue_ring"}


def test_paths_and_globals_are_those_rendered(rendered):
    dialplan = rendered.dialplan
    assert f"HOTLINE_RECORDINGS = {rendered.dirs['recordings']}" in dialplan
    assert f"AGI(agi://127.0.0.1:{PORTS.agi}/" in dialplan and "HOTLINE_HEARTBEAT_2" not in dialplan
    assert f"HOTLINE_FALLBACK = {rendered.menu.duty_nurse_number}" in dialplan


# --- SIP and AMI: loopback only, least privilege -----------------------------------------------

def _sections(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """Asterisk config sections in order (names may repeat), each key's values in order."""
    sections: list[tuple[str, dict[str, list[str]]]] = []
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if m := re.fullmatch(r"\[([^\]]+)\]", line):
            sections.append((m.group(1), {}))
            continue
        key, sep, value = line.partition("=")
        assert sep and sections, f"unparsed line {raw!r}"
        sections[-1][1].setdefault(key.strip(), []).append(value.strip().lstrip(">").strip())
    return sections


def test_pjsip_binds_to_loopback_only(rendered):
    sections = _sections(rendered.files["pjsip.conf"])
    binds = [v for _, keys in sections for v in keys.get("bind", [])]
    transports = [keys for _, keys in sections if keys.get("type") == ["transport"]]
    assert binds == [f"127.0.0.1:{PORTS.sip}"] and len(transports) == 1
    assert all(keys.get("external_media_address") is None for _, keys in sections)
    for _, keys in sections:  # every endpoint but the surgeons' trunk authenticates
        if keys.get("type") == ["endpoint"] and keys.get("context") != ["hotline-from-surgeons"]:
            assert keys.get("auth") and keys.get("context") == ["hotline-callers"]


def test_no_endpoint_is_identified_by_a_name_the_request_carries(rendered):
    """Issue 18 item 1: callers by their digest user, the trunk by its address, nobody by From."""
    sections = _sections(rendered.files["pjsip.conf"])
    general = dict(sections)["global"]
    assert general["endpoint_identifier_order"] == ["auth_username,ip"]
    endpoints = {name: keys for name, keys in sections if keys.get("type") == ["endpoint"]}
    for name, keys in endpoints.items():
        assert keys.get("identify_by") in (["auth_username"], ["ip"]), name
        # RTP on the SIP address, never 0.0.0.0 (item 8; item 10's DNS lookups).
        assert keys["media_address"] == ["127.0.0.1"] and keys["bind_rtp_to_media_address"] == ["yes"]
    identifies = [keys for _, keys in sections if keys.get("type") == ["identify"]]
    assert identifies == [{"type": ["identify"], "endpoint": ["surgeons"], "match": ["127.0.0.2"]}]
    assert endpoints["surgeons"]["identify_by"] == ["ip"]
    contacts = [keys["contact"] for name, keys in sections
                if name == "surgeons" and keys.get("type") == ["aor"]]
    assert contacts == [[f"sip:127.0.0.2:{PORTS.surgeon_phones}"]]
    assert "icesupport = no" in rendered.files["rtp.conf"]


@pytest.mark.parametrize("host", ["127.0.0.1", "trunk.example.org", "127.0.0.2:5070", "::1"])
def test_the_trunk_address_is_an_ipv4_literal_other_than_the_callers(tmp_path, host):
    with pytest.raises(ValueError):
        render_all(menu=load_menu(MENUS["shipped"]), menu_source="m", instance="t", ports=PORTS,
                   instance_dir=tmp_path / "i", prompts_dir=tmp_path / "p",
                   recordings_dir=tmp_path / "r", agi_host="127.0.0.1", ami_secret="a",
                   sip_secret="s", console_ami_secret="c", surgeon_host=host)


def test_manager_binds_to_loopback_and_permits_loopback_only(rendered):
    sections = _sections(rendered.files["manager.conf"])
    general = dict(sections)["general"]
    assert general["bindaddr"] == ["127.0.0.1"] and general["port"] == [str(PORTS.ami)]
    assert general.get("webenabled", ["no"]) == ["no"]
    users = [(name, keys) for name, keys in sections if name != "general"]
    # The service and the console; the harness uses asterisk -rx.
    assert [name for name, _ in users] == ["hotline", "console"]
    secrets = {"hotline": ["ami-secret-x"], "console": ["console-secret-y"]}
    for name, keys in users:
        assert keys["deny"] == ["0.0.0.0/0.0.0.0"], name
        assert keys["permit"] == ["127.0.0.1/255.255.255.255"], name
        assert keys["secret"] == secrets[name], name


def test_the_hotline_ami_user_cannot_run_commands_and_originates_from_loopback_only(rendered):
    keys = dict(_sections(rendered.files["manager.conf"]))["hotline"]
    write = {p.strip() for p in keys["write"][0].split(",")}
    # "system" would open GetConfig, ModuleLoad and Originate of System (docs/security.md).
    assert not write & {"system", "command", "all", "config", "dialplan", "user"}, write
    # call: Setvar of the mirror's globals; reporting: CoreShowChannels;
    # agent: queue members; originate: callbacks. Nothing else.
    assert write == {"call", "agent", "originate", "reporting"}, write
    # "originate" (callbacks) is as strong as "system": loopback only.
    assert keys["deny"] == ["0.0.0.0/0.0.0.0"]
    assert keys["permit"] == ["127.0.0.1/255.255.255.255"]
    assert keys["secret"] == ["ami-secret-x"]


def test_the_console_ami_user_only_reads_calls_and_lists_channels(rendered):
    keys = dict(_sections(rendered.files["manager.conf"]))["console"]
    # CoreShowChannels needs "reporting"; nothing that writes (system, call,
    # originate, command, config, dialplan, agent, user, all) is granted.
    assert keys["write"] == ["reporting"]
    assert keys["read"] == ["call"]
    assert keys["secret"] == ["console-secret-y"]
    assert set(keys) == {"secret", "deny", "permit", "read", "write", "writetimeout"}


def test_asterisk_is_not_told_to_live_dangerously(rendered):
    for text in rendered.files.values():
        assert not re.search(r"live_dangerously\s*=\s*(yes|true|1)", text, re.I)


# --- render_all's inputs and write_config ------------------------------------------------------

@pytest.mark.parametrize("bad", [",", ";", "$", " ", "|", "&", "(", ")", "[", "{", "'", '"', "\n", "\r"])
@pytest.mark.parametrize("which", ["instance_dir", "prompts_dir", "recordings_dir"])
def test_render_all_refuses_paths_the_dialplan_would_split(tmp_path, bad, which):
    dirs = {"instance_dir": tmp_path / "i", "prompts_dir": tmp_path / "p", "recordings_dir": tmp_path / "r"}
    dirs[which] = tmp_path / f"x{bad}y"
    with pytest.raises(ValueError, match="path not usable"):
        render_all(menu=load_menu(MENUS["shipped"]), menu_source="m", instance="t", ports=PORTS,
                   agi_host="127.0.0.1", ami_secret="a", sip_secret="c", console_ami_secret="d",
                   **dirs)


def test_write_config_writes_private_files_in_a_private_dir(tmp_path):
    files = render(tmp_path, MENUS["shipped"]).files
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    (etc / "manager.conf").write_text("old")
    (etc / "manager.conf").chmod(0o644)
    write_config(files, etc)
    assert stat.S_IMODE(etc.stat().st_mode) == 0o700
    assert sorted(p.name for p in etc.iterdir()) == sorted(files)  # no .tmp left over
    for name, text in files.items():
        path = etc / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        assert path.read_text(encoding="utf-8") == text
    write_config(files, etc)  # again: same result
    assert stat.S_IMODE((etc / "manager.conf").stat().st_mode) == 0o600


def test_write_config_creates_a_missing_dir_private(tmp_path):
    etc = tmp_path / "a" / "etc"
    write_config({"x.conf": "[general]\n"}, etc)
    assert stat.S_IMODE(etc.stat().st_mode) == 0o700
    assert stat.S_IMODE((etc / "x.conf").stat().st_mode) == 0o600


def test_ini_like_files_parse(rendered):
    """A cheap syntax check of the files Asterisk reads as ini (no '=>' continuation tricks)."""
    for name in ("rtp.conf", "cdr.conf", "cel.conf"):
        parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=(";",),
                                           inline_comment_prefixes=(";",))
        parser.read_string(rendered.files[name])


def test_the_mirror_and_the_heartbeat_are_globals_that_survive_a_dialplan_reload(rendered):
    """Read with GLOBAL() under the names ivr/channel_vars.py builds; no AstDB anywhere.

    DB() would need the service to hold AMI "system"; clearglobalvars = no keeps
    what the service set when the dialplan is reloaded.
    """
    general = dict(_sections(rendered.dialplan))["general"]
    assert general["clearglobalvars"] == ["no"]
    apps = "\n".join(line.app for line in rendered.lines())
    assert "DB(" not in apps and "DB_DELETE(" not in apps and "DBdeltree(" not in apps
    mirror = [line.app for line in rendered.lines() if line.context == "hotline-mirror"]
    team = "${HOTLINE_MTEAM}"
    # The same names as channel_vars.chain_var(team, part) builds, for the dialplan's team variable.
    for part in (channel_vars.CHAIN_COUNT, channel_vars.CHAIN_RING, "${HOTLINE_MI}"):
        name = f"{channel_vars.CHAIN_PREFIX}{team}_{part}"
        assert any(f"${{FILTER(0-9,${{GLOBAL({name})}})}}" in app for app in mirror), name
    assert channel_vars.chain_var("facial", 3) == "HOTLINE_CHAIN_facial_3"
    # The team part of the name: exactly the characters a team code may hold.
    assert "Set(HOTLINE_MTEAM=${FILTER(a-z0-9_,${HOTLINE_TEAM})})" in mirror
    # Every GLOBAL() read is filtered to digits, and no global is ever set by the dialplan.
    for line in rendered.lines():
        for match in re.finditer(r"\$\{GLOBAL\(", line.app):
            assert line.app[:match.start()].endswith("${FILTER(0-9,"), line.text
        assert "Set(GLOBAL(" not in line.app, line.text
    # The stale gate reads the heartbeat as a number, also when it was never set.
    agi = [line.app for line in rendered.lines() if line.context == "hotline-agi"]
    assert any(f"0${{FILTER(0-9,${{GLOBAL({channel_vars.HEARTBEAT})}})}}" in app for app in agi)
