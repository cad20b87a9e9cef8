"""The front door's rendered Kamailio config and dispatcher list, and the values it refuses."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cluster.kamailio import (
    PROBE_ALIVE_CODES,
    FrontDoor,
    Node,
    parse_dispatcher_list,
    render_files,
    states_from_flags,
)

RUN = Path("/run/hotline/fd")


def front(**changes) -> FrontDoor:
    values = dict(host="10.0.0.5", port=5060, run_dir=RUN,
                  nodes=[("ast-1", "10.0.0.11", 5080), ("ast-2", "10.0.0.12", 5080)])
    values.update(changes)
    return FrontDoor(**values)


def test_dispatcher_list_names_every_node_in_order_probed_from_the_start() -> None:
    text = render_files(front())["dispatcher.list"]
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines == ["1 sip:10.0.0.11:5080 8 0 duid=ast-1", "1 sip:10.0.0.12:5080 8 0 duid=ast-2"]


def test_config_listens_udp_and_tcp_and_keeps_its_files_in_the_run_dir() -> None:
    cfg = render_files(front())["kamailio.cfg"]
    assert "listen=udp:10.0.0.5:5060\n" in cfg
    assert "listen=tcp:10.0.0.5:5060\n" in cfg
    assert 'modparam("ctl", "binrpc", "unixs:/run/hotline/fd/kamailio.ctl")' in cfg
    assert 'modparam("dispatcher", "list_file", "/run/hotline/fd/dispatcher.list")' in cfg
    assert "{{" not in cfg and "}}" not in cfg


def test_config_carries_the_probe_and_failover_numbers() -> None:
    cfg = render_files(front(probe_interval_s=3, failover_timeout_s=1.5))["kamailio.cfg"]
    assert 'modparam("dispatcher", "ds_ping_interval", 3)' in cfg
    assert 'modparam("tm", "fr_timer", 1500)' in cfg
    assert 'modparam("dispatcher", "ds_probing_mode", 1)' in cfg
    defaults = render_files(front())["kamailio.cfg"]
    assert 'modparam("dispatcher", "ds_ping_interval", 2)' in defaults
    assert 'modparam("tm", "fr_timer", 2000)' in defaults


def test_probe_answers_2xx_to_4xx_count_as_alive_but_not_kamailios_own_408() -> None:
    cfg = render_files(front())["kamailio.cfg"]
    assert f'"ds_ping_reply_codes", "{PROBE_ALIVE_CODES}"' in cfg
    codes = PROBE_ALIVE_CODES.split(";")
    assert {"class=2", "class=3", "code=401", "code=404", "code=499"} <= set(codes)
    assert "code=408" not in codes and "class=4" not in codes
    assert len([c for c in codes if c.startswith("code=4")]) == 99


def test_routing_dispatches_by_call_id_and_fails_over_on_timeout_5xx_408() -> None:
    cfg = render_files(front())["kamailio.cfg"]
    assert 'ds_select_dst("1", "0")' in cfg  # algorithm 0: hash over Call-ID
    assert 'modparam("dispatcher", "flags", 2)' in cfg  # failover list kept
    failure = cfg[cfg.index("failure_route[FAILOVER]"):]
    assert 't_check_status("408|5[0-9][0-9]")' in failure
    assert "t_branch_timeout() && !t_branch_replied()" in failure
    assert 'ds_mark_dst("ip")' in failure and "ds_next_dst()" in failure
    assert "record_route();" in cfg and "loose_route()" in cfg
    # No request URI user, From or Contact is rewritten anywhere.
    for rewrite in ("$rU =", "$ru =", "uac_replace_from", "$fu =", "set_contact", "fix_contact"):
        assert rewrite not in cfg


def test_log_lines_never_carry_caller_values() -> None:
    cfg = render_files(front())["kamailio.cfg"]
    logged = re.findall(r'xlog\("[^"]*", "([^"]*)"\)', cfg)
    assert logged, "the script logs its failovers"
    for line in logged:
        for caller_value in ("$fU", "$fu", "$rU", "$ru", "$ci", "$tU", "$hdr", "$ct", "$ai"):
            assert caller_value not in line, line


def test_ipv6_addresses_are_bracketed() -> None:
    fd = front(host="2001:db8::5", nodes=[("a", "2001:db8::11", 5080)])
    files = render_files(fd)
    assert "listen=udp:[2001:db8::5]:5060\n" in files["kamailio.cfg"]
    assert "1 sip:[2001:db8::11]:5080 8 0 duid=a" in files["dispatcher.list"]


def test_nodes_are_held_as_named_tuples() -> None:
    fd = front()
    assert fd.nodes == (Node("ast-1", "10.0.0.11", 5080), Node("ast-2", "10.0.0.12", 5080))
    assert fd.nodes[0].name == "ast-1"


@pytest.mark.parametrize("changes, message", [
    (dict(host="hotline.example.cn"), "not an IP literal"),
    (dict(host="0.0.0.0"), "not a usable address"),
    (dict(host="10.0.0.5\nlisten=udp:1.2.3.4"), "not an IP literal"),
    (dict(port=0), "not a port"),
    (dict(port=70000), "not a port"),
    (dict(port="5060"), "not a port"),
    (dict(port=True), "not a port"),
    (dict(nodes=[]), "at least one"),
    (dict(nodes=[("Ast_1", "10.0.0.11", 5080)]), "not a node name"),
    (dict(nodes=[("a;duid=x", "10.0.0.11", 5080)]), "not a node name"),
    (dict(nodes=[("-a", "10.0.0.11", 5080)]), "not a node name"),
    (dict(nodes=[("a", "evil.example.com", 5080)]), "not an IP literal"),
    (dict(nodes=[("a", "10.0.0.11", 65536)]), "not a port"),
    (dict(nodes=[("a", "10.0.0.11", 5080), ("a", "10.0.0.12", 5080)]), "repeat"),
    (dict(nodes=[("a", "10.0.0.11", 5080), ("b", "10.0.0.11", 5080)]), "share one address"),
    (dict(nodes=[("a", "10.0.0.5", 5060)]), "own address"),
    (dict(nodes=[("a", "10.0.0.11")]), "tuples"),
    (dict(run_dir=Path("relative/dir")), "absolute path"),
    (dict(run_dir=Path('/tmp/x"; loadmodule "exec.so')), "absolute path"),
    (dict(run_dir=Path("/tmp/$var(x)")), "absolute path"),
    (dict(run_dir=Path("/tmp/" + "d" * 110)), "too long"),
    (dict(probe_interval_s=0), "probe interval"),
    (dict(probe_interval_s=1.5), "probe interval"),
    (dict(failover_timeout_s=0), "failover timeout"),
    (dict(failover_timeout_s=600), "failover timeout"),
])
def test_refuses_values_that_are_not_ours(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        front(**changes)


KAMCMD_LIST = """{
\tNRSETS: 1
\tRECORDS: {
\t\tSET: {
\t\t\tID: 1
\t\t\tTARGETS: {
\t\t\t\tDEST: {
\t\t\t\t\tURI: sip:10.0.0.12:5080
\t\t\t\t\tFLAGS: IP
\t\t\t\t\tPRIORITY: 0
\t\t\t\t\tATTRS: {
\t\t\t\t\t\tBODY: duid=ast-2
\t\t\t\t\t\tDUID: ast-2
\t\t\t\t\t}
\t\t\t\t}
\t\t\t\tDEST: {
\t\t\t\t\tURI: sip:10.0.0.11:5080
\t\t\t\t\tFLAGS: AP
\t\t\t\t\tPRIORITY: 0
\t\t\t\t}
\t\t\t}
\t\t}
\t}
}
"""


def test_node_states_read_from_kamcmd_dispatcher_list() -> None:
    flags = parse_dispatcher_list(KAMCMD_LIST)
    assert flags == {"sip:10.0.0.12:5080": "IP", "sip:10.0.0.11:5080": "AP"}
    assert states_from_flags(front(), flags) == {"ast-1": "active", "ast-2": "inactive"}


@pytest.mark.parametrize("flag, state", [("AP", "active"), ("AX", "active"), ("IP", "inactive"),
                                         ("TP", "probing"), ("DX", "disabled"), ("", "unknown")])
def test_each_dispatcher_flag_maps_to_a_state(flag, state) -> None:
    flags = {"sip:10.0.0.11:5080": flag} if flag else {}
    assert states_from_flags(front(), flags)["ast-1"] == state
