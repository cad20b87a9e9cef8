"""The benchmark's pure helpers (bench/stats.py, bench/agi_client.py): percentiles, SIPp files, AGI env."""
from __future__ import annotations

import pytest

from bench.agi_client import agi_environment
from bench.stats import (
    parse_sipp_log,
    parse_sipp_stats,
    percentile,
    post_dial_delays,
    sipp_totals,
    spread,
    table,
)
from ivr.fastagi import AgiRequest, parse_env_line
from ivr.handlers import ProofCheck


@pytest.mark.parametrize(("samples", "q", "expected"), [
    ([5.0], 50, 5.0),
    ([5.0], 99, 5.0),
    ([1.0, 2.0, 3.0, 4.0], 50, 2.5),  # even size: the mean of the middle two
    ([3.0, 1.0, 2.0], 50, 2.0),  # unsorted input
    (list(range(1, 101)), 99, 99.01),  # numpy's "linear": 1 + 0.99 * 99
    (list(range(1, 101)), 100, 100.0),
    (list(range(1, 101)), 0, 1.0),
])
def test_percentile_interpolates_between_closest_ranks(samples, q, expected):
    assert percentile(samples, q) == pytest.approx(expected)


def test_percentile_refuses_no_samples_and_bad_q():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_spread_is_the_median_and_range_of_runs():
    s = spread([3.0, 1.0, 10.0])
    assert (s.median, s.low, s.high, s.runs) == (3.0, 1.0, 10.0, 3)
    assert s.format("{:.1f}") == "3.0 (1.0–10.0)"
    assert spread([2.0]).format("{:.0f}") == "2"


def test_sipp_logs_pair_key_and_invite_by_caller():
    # As SIPp 3.6 writes [$var] of gettimeofday: floats with six decimals.
    caller_log = ("KEY 13900000001 1796125837.000000 156581.000000\n"
                  "KEY 13900000002 1796125838.000000 900000.000000\n"
                  "KEY 13900000003 1796125839.000000 0.000000\n")
    surgeon_log = ("INVITE 13900000001 1796125837.000000 170000.000000\n"
                   "INVITE 13900000002 1796125839.000000 10000.000000\n"
                   "INVITE 13900000002 1796125845.000000 0.000000\n")  # rung again: ignored
    keys = parse_sipp_log(caller_log, "KEY")
    invites = parse_sipp_log(surgeon_log, "INVITE")
    assert keys["13900000001"] == 1796125837_156581
    assert set(invites) == {"13900000001", "13900000002"}
    delays = sorted(post_dial_delays(keys, invites))
    assert delays == pytest.approx([0.013419, 0.110000])  # caller 3 never reached a surgeon


STAT_HEADER = ("StartTime;CurrentCall;OutgoingCall(C);SuccessfulCall(P);SuccessfulCall(C);"
               "FailedCall(P);FailedCall(C);")


def test_sipp_stat_file_totals_are_the_last_row_and_the_peak():
    text = "\n".join([
        STAT_HEADER,
        "2026-12-01\t11:50:35.34;3;3;0;0;0;0;",
        "2026-12-01\t11:50:36.34;7;8;1;1;0;0;",
        "2026-12-01\t11:50:37.34;2;10;7;8;1;1;",
        "",
    ])
    rows = parse_sipp_stats(text)
    assert len(rows) == 3
    assert sipp_totals(rows) == {"successful": 8, "failed": 1, "created": 10, "peak_concurrent": 7}
    assert sipp_totals([]) == {"successful": 0, "failed": 0, "peak_concurrent": 0, "created": 0}


def test_a_cut_stat_line_is_skipped():
    rows = parse_sipp_stats(STAT_HEADER + "\n2026-12-01;1;1;\n")
    assert rows == []


def test_the_played_agi_environment_reads_as_the_dialplan_request():
    env_bytes = agi_environment("route", "1796125837.42", ["replant", "2"],
                                channel="PJSIP/caller-info-00000001", caller="13900000001",
                                uniqueid="1796125837.42", key="k" * 32)
    assert env_bytes.endswith(b"\n\n")
    env = dict(parse_env_line(line) for line in env_bytes.split(b"\n") if line)
    request = AgiRequest.from_env(env)
    assert request.script == "route"
    assert request.query["linkedid"] == "1796125837.42"
    assert ProofCheck("k" * 32)(request)  # the service would take it for the dialplan's
    # [hotline-agi] always passes ARG2..ARG11: ten arguments, the unused ones empty.
    assert request.args == ["replant", "2"] + [""] * 8


def test_table_lines_up_columns():
    lines = table(["a", "bb"], [[1, "x"], ["long", 2]]).splitlines()
    assert lines[0] == "| a    | bb |"
    assert lines[1] == "|------|----|"
    assert lines[3] == "| long | 2  |"
