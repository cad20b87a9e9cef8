"""Issue 9, part 3 -- AMI: loopback only, a generated secret, and what the service's own account cannot do.

Every attack uses the account the service itself logs in with (user and
secret read from the instance's generated manager.conf and ami.secret, as the
service reads them), against the sandboxed Asterisk 22. Each test asserts that
Asterisk refused *on privilege grounds* and that nothing changed or leaked.

The service's account holds ``write = call,agent,originate,reporting`` and
never "system": with it, the account could read every config file (all AMI and
SIP secrets), load modules, add dialplan and Originate System() -- root on the
host (docs/security.md, "AMI"). The heartbeat and the chain mirror it needs
are plain global variables set with Setvar ("call"); that it can still do
exactly that, and no more, is tested here as well.
"""
from __future__ import annotations

import hashlib
import socket
import stat
import subprocess
import time

import pytest

from conftest_support import LogTail, asterisk_globals
from attack_support import (PROJECT_DIR, AmiSession, console_account, fail2ban_regex,
                            manager_conf, refused, require_tools, service_account)
from hotline import instance

pytestmark = pytest.mark.integration

@pytest.fixture
def ami(hotline):
    """A session logged in with the service's own account."""
    user, secret = service_account(hotline.config)
    with AmiSession(hotline.config.ports.ami) as session:
        assert session.login(user, secret)["Response"] == "Success"
        yield session


def _etc_digest(config) -> dict[str, str]:
    etc = config.instance_dir / "etc"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(etc.iterdir())}


def _leaks(response: dict[str, str], config) -> list[str]:
    """The names of the instance's secret files whose secret the response holds (never the secret)."""
    text = "\n".join(f"{k}: {v}" for k, v in response.items())
    return [p.name for p in sorted(config.instance_dir.glob("*.secret"))
            if p.read_text().strip() in text]


# -- where AMI listens and who may log in ----------------------------------------
def test_ami_listens_on_loopback_only(hotline):
    conf = manager_conf(hotline.config)
    assert conf.get("general", "bindaddr") == "127.0.0.1"
    for account in ("hotline", "console"):
        assert conf.get(account, "deny") == "0.0.0.0/0.0.0.0"
        assert conf.get(account, "permit") == "127.0.0.1/255.255.255.255"
    # Another loopback address of this machine is not listened on...
    with socket.socket() as probe:
        probe.settimeout(2)
        assert probe.connect_ex(("127.0.0.2", hotline.config.ports.ami)) != 0
    # ...nor any address of the machine's own interfaces.
    for address in _own_addresses():
        with socket.socket() as probe:
            probe.settimeout(2)
            assert probe.connect_ex((address, hotline.config.ports.ami)) != 0, address


def _own_addresses() -> list[str]:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True)
    return [a for a in out.stdout.split() if ":" not in a and not a.startswith("127.")]


def test_ami_secrets_are_generated_private_and_not_in_the_repository(hotline):
    config = hotline.config
    user, secret = service_account(config)
    _, console_secret = console_account(config)
    assert len(secret) >= 32 and len(console_secret) >= 32  # token_urlsafe(24)
    assert secret != console_secret
    for path in (config.instance_dir / "ami.secret", config.instance_dir / "console-ami.secret"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    tracked = subprocess.run(["git", "grep", "-l", "-F", "-e", secret, "-e", console_secret],
                             cwd=PROJECT_DIR, capture_output=True, text=True)
    assert tracked.returncode == 1 and tracked.stdout == "", tracked.stdout  # 1: no match
    service_log = (config.instance_dir / "log" / "service.log").read_text(errors="replace")
    assert secret not in service_log and console_secret not in service_log


def test_live_dangerously_is_not_enabled(hotline):
    """Dialplan functions such as SHELL() and FILE() stay out of reach of AMI.

    Asterisk 12+ defaults to no; the rendered asterisk.conf must not turn it on.
    """
    text = (hotline.config.instance_dir / "etc" / "asterisk.conf").read_text()
    settings = [line.split(";")[0].replace(" ", "").lower() for line in text.splitlines()]
    assert not any(s.startswith("live_dangerously=") and s != "live_dangerously=no" for s in settings)


def test_wrong_secret_and_unknown_user_are_refused_and_logged_for_fail2ban(hotline, tmp_path):
    require_tools("fail2ban-regex")
    config = hotline.config
    log = LogTail(config.instance_dir / "log" / "security.log")
    user, secret = service_account(config)
    forged = 'x",LocalAddress="IPV4/TCP/127.0.0.1/5038",RemoteAddress="IPV4/TCP/198.51.100.7/4444'
    for username, guess in ((user, secret[:-1] + ("A" if secret[-1] != "A" else "B")),
                            ("admin", "admin"), (forged, "x")):
        with AmiSession(config.ports.ami) as session:
            response = session.login(username, guess)
            assert (response["Response"], response["Message"]) == ("Error", "Authentication failed")
            # Asterisk hangs up on a refused login: nothing else can be tried on it.
            with pytest.raises(ConnectionError):
                session.action("Ping")
    text = log.wait_for(lambda t: t.count('Service="AMI"') >= 3)
    assert text.count('SecurityEvent="InvalidPassword"') == 1
    assert text.count('SecurityEvent="InvalidAccountID"') == 2
    captured = tmp_path / "security.log"
    captured.write_text(text, encoding="utf-8")
    result = fail2ban_regex(captured, "hotline-asterisk-ami")
    # The wrong secret and the unknown user; the forged line carries two
    # RemoteAddress fields and is not counted, so 198.51.100.7 is never banned.
    assert result.matched == 2, result.raw["summary"]
    assert result.hosts == {"127.0.0.1": 2}
    assert fail2ban_regex(captured, "hotline-asterisk-sip").matched == 0


# -- what the service's account cannot do ----------------------------------------
def test_service_account_cannot_run_cli_commands(hotline, ami):
    marker = hotline.config.var_dir / "ami-command-ran"
    for command in (f"!touch {marker}", "core show version", "module load app_system.so",
                    "dialplan add extension 666,1,System(id) into hotline-callers"):
        response = ami.action("Command", Command=command)
        assert refused(response) and response["Message"] == "Permission denied", response
    time.sleep(0.5)
    assert not marker.exists()
    assert "app_system.so" not in "\n".join(instance.asterisk_cli(hotline.config, "module show like app_system"))


@pytest.mark.parametrize("filename", [
    "../../../../../../../../../../etc/passwd", "/etc/passwd", "/etc/shadow",
    "../ami.secret", "../../../../../../../../../../proc/self/environ",
])
def test_service_account_cannot_read_files_outside_the_config_dir(hotline, ami, filename):
    response = ami.action("GetConfig", Filename=filename)
    assert refused(response), response
    text = "\n".join(response.values())
    assert "root:" not in text and "PATH=" not in text
    assert not _leaks(response, hotline.config)


@pytest.mark.parametrize("filename", ["manager.conf", "pjsip.conf"])
def test_service_account_cannot_read_config_files(hotline, ami, filename):
    """GetConfig needs system OR config: with "system" the service's account reads every secret."""
    response = ami.action("GetConfig", Filename=filename)
    leaked = _leaks(response, hotline.config)
    assert refused(response) and response["Message"] == "Permission denied", (response.get("Response"), leaked)
    assert not leaked


def test_service_account_cannot_change_config_files(hotline, ami):
    before = _etc_digest(hotline.config)
    attacks = [
        ("UpdateConfig", {"SrcFilename": "extensions.conf", "DstFilename": "extensions.conf",
                          "Reload": "yes", "Action-000000": "Append", "Cat-000000": "hotline-callers",
                          "Var-000000": "exten", "Value-000000": "666,1,System(id)"}),
        ("UpdateConfig", {"SrcFilename": "manager.conf", "DstFilename": "manager.conf",
                          "Action-000000": "Update", "Cat-000000": "console",
                          "Var-000000": "write", "Value-000000": "all"}),
        ("CreateConfig", {"Filename": "evil.conf"}),
        ("ListCategories", {"Filename": "manager.conf"}),
    ]
    for action, headers in attacks:
        response = ami.action(action, **headers)
        assert refused(response) and response["Message"] == "Permission denied", (action, response)
    assert _etc_digest(hotline.config) == before
    assert not (hotline.config.instance_dir / "etc" / "evil.conf").exists()


@pytest.mark.parametrize("application,data", [
    ("System", "touch {marker}"),
    ("Exec", "System(touch {marker})"),
    ("Set", "FILE({marker})=pwned"),
    ("Set", "SHELL(touch {marker})=1"),
])
def test_service_account_cannot_originate_into_a_dangerous_application(hotline, ami, application, data):
    """Originate refuses System/Exec/FILE/SHELL to an account without "system" (CVE-2024-42365).

    The channel is a Local one into a context that only hangs up, so even
    where Asterisk lets the request through, the application never runs.
    """
    marker = hotline.config.var_dir / "originate-ran"
    response = ami.action("Originate", Channel="Local/1@hotline-from-surgeons",
                          Application=application, Data=data.format(marker=marker), Timeout="2000")
    assert refused(response), response
    assert "Forbidden" in response["Message"], response
    assert not marker.exists()


@pytest.mark.parametrize("context,exten", [
    ("default", "s"), ("hotline-callers", "666"), ("hotline-callers", "_X."),
    ("hotline-callers", "500&PJSIP/surgeons/0014165551212"),
])
def test_service_account_cannot_originate_into_arbitrary_dialplan(hotline, ami, line, context, exten):
    response = ami.action("Originate", Channel="Local/1@hotline-from-surgeons",
                          Context=context, Exten=exten, Priority="1", Timeout="2000")
    assert refused(response), response
    assert response["Message"] == "Extension does not exist.", response


def test_service_account_cannot_load_modules_or_add_dialplan(hotline, ami):
    """ModuleLoad and DialplanExtensionAdd need only "system": with it, System() is one step away."""
    responses = []
    try:
        # A module that does not exist: the privilege check is all this asks.
        responses.append(ami.action("ModuleLoad", Module="hotline_no_such_module.so", LoadType="load"))
        responses.append(ami.action("DialplanExtensionAdd", Context="hotline-sec-probe",
                                    Extension="666", Priority="1", Application="NoOp"))
    finally:
        ami.action("DialplanExtensionRemove", Context="hotline-sec-probe", Extension="666")
    for response in responses:
        assert refused(response) and response["Message"] == "Permission denied", response


def test_service_account_sets_plain_globals_only(hotline, ami):
    """What the service needs ("call": Setvar without a channel; "reporting":
    CoreShowChannels) works; Setvar of a function is refused and writes nothing,
    and AstDB stays out of reach (DBPut needs "system")."""
    config = hotline.config
    probe = "HOTLINE_SEC_PROBE"
    try:
        set_ = ami.action("Setvar", Variable=probe, Value="42")
        assert set_["Response"] == "Success", set_
        assert asterisk_globals(config).get(probe) == "42"
    finally:
        ami.action("Setvar", Variable=probe, Value="")  # an empty value removes the global
    assert ami.action("CoreShowChannels")["Response"] == "Success"
    marker = config.var_dir / "setvar-ran"
    for function in ("DB(hotline-sec/probe)", f"FILE({marker})", "SHELL(id)", f"SHELL(touch {marker})"):
        response = ami.action("Setvar", Variable=function, Value="1")
        # Asterisk 22.10: "Variable not set" (AMI threads may not write dangerous functions;
        # DB() also logs "Dangerous function DB write blocked").
        assert refused(response) and response["Message"] == "Variable not set", (function, response)
    dbput = ami.action("DBPut", Family="hotline-sec", Key="probe", Val="1")
    assert refused(dbput) and dbput["Message"] == "Permission denied", dbput
    time.sleep(0.5)
    assert not marker.exists()
    found = instance.asterisk_cli(config, "database get hotline-sec probe")
    assert not any("Value:" in line for line in found), found


def test_console_account_is_read_only(hotline):
    user, secret = console_account(hotline.config)
    marker = hotline.config.var_dir / "console-ran"
    with AmiSession(hotline.config.ports.ami) as session:
        assert session.login(user, secret)["Response"] == "Success"
        attacks = [
            ("GetConfig", {"Filename": "manager.conf"}),
            ("Originate", {"Channel": "Local/1@hotline-from-surgeons", "Application": "System",
                           "Data": f"touch {marker}"}),
            ("Command", {"Command": f"!touch {marker}"}),
            ("DBPut", {"Family": "hotline", "Key": "heartbeat", "Val": "0"}),
            # The heartbeat and the chain mirror: set by the service's account only.
            ("Setvar", {"Variable": "HOTLINE_HEARTBEAT_1", "Value": "0"}),
            ("Setvar", {"Variable": "HOTLINE_CHAIN_facial_1", "Value": "0014165551212"}),
            ("ModuleLoad", {"Module": "app_system.so", "LoadType": "load"}),
            ("Getvar", {"Variable": f"SHELL(touch {marker})"}),
            ("QueueAdd", {"Queue": "hotline-facial", "Interface": "Local/1@hotline-from-surgeons"}),
        ]
        for action, headers in attacks:
            response = session.action(action, **headers)
            # Getvar is allowed (reporting) but a function is refused without "system".
            assert refused(response) or (action == "Getvar" and not response.get("Value")), (action, response)
            assert not _leaks(response, hotline.config)
    time.sleep(0.5)
    assert not marker.exists()
    held = asterisk_globals(hotline.config)
    assert held.get("HOTLINE_HEARTBEAT_1") != "0" and held.get("HOTLINE_CHAIN_facial_1") != "0014165551212"
