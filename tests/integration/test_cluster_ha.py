"""The hotline as a cluster survives losing any one part (issue 10, docs/deployment.md).

Real pieces only: Kamailio (Debian) as the front door, two sandboxed Asterisk
22 nodes, two `hotline serve` instances, one PostgreSQL database of the test's
own. SIPp callers dial 96608 through Kamailio and press 2 (replantation); a
SIPp UAS answers as every surgeon, presses 1 and talks. While the calls flow
one part is SIGKILLed. Each test reports calls placed, calls completed and
cases recorded, and requires that nothing the design keeps is lost:

- a service instance dies: every call still completes (the nodes ask the
  other instance, which adopts the calls the dead one started);
- the scheduler's holder dies: the other instance takes the lock within a
  bound, and no job runs in two instances at once or twice for one slot;
- a node dies: new calls go to the other node, including the first INVITE
  after the kill; the calls live on the dead node are lost (their media was
  there) but reported, and their cases are closed, then reconciled from the
  node's CDR/CEL once it is back.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest

from cluster import kamailio
from cluster.local import ClusterLayout, down, up
from db.session import make_engine
from hotline import instance
from hotline.leader import current_holder
from cluster_support import (CallStream, cases_of, create_database, drop_database, job_runs,
                             kill_node, kill_service, utcnow)
from conftest_support import HERE, ports_taken, require_tools, seed_test_network

BASE = int(os.environ.get("HOTLINE_TEST_PORT_BASE", "15000")) + 3000
TAKEOVER_BOUND_S = 10.0  # election poll 1 s + the server noticing the dead session


@pytest.fixture(scope="module")
def cluster():
    require_tools("baresip", "debootstrap", "espeak-ng", "sox", "unshare", "kamailio", "kamcmd", "sipp",
                  what="cluster tests")
    probe = {"sip": BASE, "ami": BASE + 11, "agi": BASE + 41, "surgeon_phones": BASE + 5}
    taken = ports_taken(probe)
    if taken:
        pytest.fail(f"ports already in use: {', '.join(taken)} -- a leftover run? "
                    "(set HOTLINE_TEST_PORT_BASE to move them)", pytrace=False)
    db_name = f"hotline_ha_{os.getpid()}"
    url = create_database(db_name)
    var_dir = Path(tempfile.mkdtemp(prefix="hl-ha-", dir="/tmp"))
    layout = ClusterLayout("hatest", var_dir, url, base_port=BASE, menu_file=HERE / "menu-test.toml",
                           reconcile_every_s=3, full_log=True)
    try:
        seed_test_network(url)
        up(layout, seed=False, log=lambda line: None)
        _wait(lambda: all(s == "active" for s in kamailio.node_states(layout.front_door()).values()),
              20, "Kamailio never saw both nodes active")
        engine = make_engine(url)
        try:
            _wait(lambda: current_holder(engine, layout.name) is not None, 20, "nobody leads")
        finally:
            engine.dispose()
        yield layout
    finally:
        down(layout, log=lambda line: None)
        drop_database(db_name)
        if not os.environ.get("HOTLINE_KEEP_TEST_DIR"):
            shutil.rmtree(var_dir, ignore_errors=True)


def _wait(predicate, timeout_s: float, message: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(message)


def _fresh_heartbeats(layout: ClusterLayout, node: str) -> bool:
    """Every service instance's heartbeat on `node` is under 3 s old."""
    from conftest_support import asterisk_globals
    from ivr.channel_vars import heartbeat_var

    held = asterisk_globals(layout.config(node))
    now = time.time()
    return all(now - int(held.get(heartbeat_var(slot), "0") or 0) < 3
               for slot in range(1, layout.service_count + 1))


def _report(what: str, placed: int, completed: int, cases: list[dict]) -> None:
    print(f"\n{what}: placed {placed}, completed {completed}, cases recorded {len(cases)}, "
          f"ended {sum(1 for c in cases if c['ended_at'] is not None)}, "
          f"connected {sum(1 for c in cases if c['connected_seq'] is not None)}")


def _ended_cases(layout: ClusterLayout, callers: list[str], timeout_s: float = 30.0) -> list[dict]:
    """The callers' cases once all are ended (or what there is at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        cases = cases_of(layout.database_url, callers)
        if (len(cases) >= len(callers) and all(c["ended_at"] is not None for c in cases)) \
                or time.monotonic() > deadline:
            return cases
        time.sleep(0.5)


def test_calls_through_the_front_door_reach_both_nodes_one_case_each(cluster):
    stream = CallStream(cluster, "1390001", calls=6, rate=2.0, talk_ms=1000).start()
    try:
        result = stream.wait()
    finally:
        stream.close()
    cases = _ended_cases(cluster, result.callers)
    _report("both nodes up", len(result.callers), result.successful, cases)
    assert (result.successful, result.failed) == (6, 0)
    assert len(cases) == 6 and len({c["linkedid"] for c in cases}) == 6
    nodes = {c["linkedid"].rsplit("-", 1)[0] for c in cases}
    assert nodes == {"node-a", "node-b"}, f"calls did not spread over the nodes: {nodes}"
    assert all(c["connected_seq"] is not None and c["ended_at"] is not None for c in cases)
    # Each node recorded into the one shared recordings dir, under the case id the
    # service gave (SIPp sends no audio, so the files hold a WAV header only).
    assert all((cluster.recordings_path / f"{c['case_id']}.wav").exists() for c in cases)


def test_a_service_instance_killed_mid_stream_loses_no_call(cluster):
    config = cluster.config("svc-1")
    stream = CallStream(cluster, "1390002", calls=16, rate=1.0, talk_ms=4000).start()
    try:
        time.sleep(6.0)  # calls are in the menu, ringing and talking on both nodes
        killed_at = utcnow()
        kill_service(cluster, "svc-1")
        result = stream.wait()
    finally:
        stream.close()
    cases = _ended_cases(cluster, result.callers)
    _report("svc-1 killed", len(result.callers), result.successful, cases)
    try:
        assert (result.successful, result.failed) == (16, 0), result
        assert len(cases) == 16 and len({c["linkedid"] for c in cases}) == 16
        assert all(c["connected_seq"] is not None and c["ended_at"] is not None for c in cases)
        # Calls svc-1 had started were finished by svc-2, which adopted them.
        log2 = (cluster.config("svc-2").instance_dir / "log" / "service.log").read_text()
        adopted = log2.count("call adopted case=")
        started_before = [c for c in cases if c["started_at"] < killed_at]
        print(f"  calls started before the kill: {len(started_before)}; adopted by svc-2: {adopted}")
        assert started_before, "the kill came before any call had started"
    finally:
        instance.start_service(config, env=cluster.env("svc-1"))


def test_the_scheduler_moves_to_the_other_instance_when_its_holder_dies(cluster):
    engine = make_engine(cluster.database_url)
    try:
        holder = _wait(lambda: current_holder(engine, cluster.name), 20, "nobody holds the scheduler")
        other = next(s for s in cluster.services if s != holder)
        began = time.time()  # earlier tests may have moved the lock: judge this test's runs
        time.sleep(8.0)  # a few reconcile runs (every 3 s) in the holder
        killed = time.time()
        kill_service(cluster, holder)
        new = _wait(lambda: current_holder(engine, cluster.name) == other and other, 30,
                    "the scheduler was not taken over")
        took_over_s = time.time() - killed
        time.sleep(8.0)  # the new holder's runs
    finally:
        engine.dispose()
    runs = []
    for service in cluster.services:
        runs += job_runs((cluster.config(service).instance_dir / "log" / "service.log").read_text())
    print(f"\nscheduler: {holder} killed, {new} took over in {took_over_s:.1f} s; "
          f"{len(runs)} job runs logged")
    try:
        assert took_over_s <= TAKEOVER_BOUND_S
        before = [r for r in runs if began <= r["started"] < killed]
        after = [r for r in runs if r["started"] >= killed]
        assert before and {r["instance"] for r in before} == {holder}, before
        assert any(r["job"] == "hotline-reconcile" for r in after)
        assert {r["instance"] for r in after} == {other}
        # No slot ran twice, and no two runs of a job overlapped (in any instance).
        slots = [(r["job"], r["due"]) for r in runs]
        assert len(slots) == len(set(slots))
        by_job: dict[str, list[dict]] = {}
        for run in runs:
            by_job.setdefault(run["job"], []).append(run)
        for job, job_runs_ in by_job.items():
            job_runs_.sort(key=lambda r: r["started"])
            for a, b in zip(job_runs_, job_runs_[1:]):
                assert a["ended"] <= b["started"], (job, a, b)
    finally:
        instance.start_service(cluster.config(holder), env=cluster.env(holder))


def test_a_node_killed_mid_stream_new_calls_go_to_the_other(cluster):
    stream = CallStream(cluster, "1390003", calls=20, rate=1.0, talk_ms=4000).start()
    try:
        time.sleep(7.0)
        killed_at = utcnow()
        kill_node(cluster, "node-a")
        result = stream.wait()
    finally:
        stream.close()
    cases = cases_of(cluster.database_url, result.callers)
    on_a_live = [c for c in cases if c["linkedid"].startswith("node-a-") and c["started_at"] <= killed_at
                 and (c["ended_at"] is None or c["ended_at"] > killed_at)]
    after_kill = [c for c in cases if c["started_at"] > killed_at + timedelta(seconds=1)]
    _report("node-a killed", len(result.callers), result.successful, cases)
    print(f"  live on node-a at the kill: {len(on_a_live)}; started after the kill: {len(after_kill)}")
    try:
        states = kamailio.node_states(cluster.front_door())
        assert states["node-a"] != "active" and states["node-b"] == "active", states
        # Only the calls that were on node-a when it died were lost.
        assert result.failed == len(on_a_live), (result, len(on_a_live))
        assert result.successful == len(result.callers) - len(on_a_live)
        # Every call placed has exactly one case; those after the kill all on node-b, connected.
        assert len(cases) == len(result.callers) and len({c["linkedid"] for c in cases}) == len(cases)
        assert after_kill and all(c["linkedid"].startswith("node-b-") and c["connected_seq"] is not None
                                  for c in after_kill)
        # The lost calls are reported and their cases closed, not left "live" forever.
        lost_ids = {c["case_id"] for c in on_a_live}
        closed = _wait(lambda: all(c["ended_at"] is not None
                                   for c in cases_of(cluster.database_url, result.callers)
                                   if c["case_id"] in lost_ids), 60, "the lost calls' cases stayed open")
        assert closed
        logs = "".join((cluster.config(s).instance_dir / "log" / "service.log").read_text()
                       for s in cluster.services)
        assert "node node-a lost" in logs
        assert all(case_id in logs for case_id in lost_ids)
    finally:
        config = cluster.config("node-a")
        instance.start_asterisk(config)
    # Back: Kamailio's probes make it active again within seconds, and the
    # services log in to it again (their AMI backoff reaches 10 s): until
    # both heartbeats are there, its calls take the static fallback
    # (docs/deployment.md). Calls placed after that have cases again.
    _wait(lambda: kamailio.node_states(cluster.front_door())["node-a"] == "active", 30,
          "node-a never came back into the front door")
    _wait(lambda: _fresh_heartbeats(cluster, "node-a"), 40, "the services never logged in to node-a again")
    again = CallStream(cluster, "1390004", calls=4, rate=2.0, talk_ms=1000).start()
    try:
        back = again.wait()
    finally:
        again.close()
    cases = _ended_cases(cluster, back.callers)
    assert back.successful == 4 and len(cases) == 4
