"""The hotline's benchmarks on the real components (issue 8); prints a table. Not a test.

    .venv/bin/python bench/run.py            # the quick set (about 12 minutes here)
    .venv/bin/python bench/run.py --full     # the full set (an hour or more)
    .venv/bin/python bench/run.py --smoke    # a minute: every part runs once (no figures)

Brings up its own sandboxed Asterisk and service (bench/rig.py) on ports from
HOTLINE_TEST_PORT_BASE (default 31000) with a database holding the generated
history (bench/history_gen.py: 100,000 cases quick, 1,000,000 full) and a
two-year roster, then measures:

1. call throughput: SIPp callers at rising rates through the hotline flow and
   through a static dialplan doing the same Dial, side by side (bench/calls.py);
2. decision latency: FastAGI round trips at 1, 10 and 100 concurrent simulated
   calls (bench/agi_client.py), on SQLite and PostgreSQL (a database
   hotline_bench_agi, dropped afterwards unless --keep);
3. post-dial delay: from the caller's key to the surgeon's INVITE, hotline
   minus static, from the runs of 1;
4. memory and stability: the service worker's RSS after a few calls and after
   many, its file descriptors and threads, channels left in Asterisk.

Every figure is the median over the repeated runs with the min–max spread.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import agi_client, calls, rig  # noqa: E402
from bench.stats import percentile, spread, table  # noqa: E402

PDD_GOAL_MS = 10.0
P99_GOAL_MS = 5.0
RATIO_GOAL = 0.80

QUICK = {
    "cases": 100_000, "repeats": 3,
    "rates": (2, 5, 10), "level_s": 10, "min_calls": 20,
    "agi_levels": ((1, 500), (10, 1000), (100, 2000)), "paced_s": 10,
    "memory": (30, 300), "memory_rate": 5,
}
FULL = {
    "cases": 1_000_000, "repeats": 3,
    "rates": (2, 5, 10, 15, 20, 25, 30, 40), "level_s": 30, "min_calls": 50,
    "agi_levels": ((1, 2000), (10, 5000), (100, 10000)), "paced_s": 30,
    "memory": (100, 10_000), "memory_rate": 10,
}
SMOKE = {  # checks that every part runs (a minute); its figures mean nothing
    "cases": 2_000, "repeats": 1,
    "rates": (2,), "level_s": 5, "min_calls": 5,
    "agi_levels": ((1, 50), (10, 100), (100, 300)), "paced_s": 3,
    "memory": (5, 10), "memory_rate": 2,
}
PACED_GAP_S = 1.0  # paced calls: about one request per second per call


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the service process


def proc_figures(pid: int) -> dict[str, int]:
    """RSS (KiB), open file descriptors and threads of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {"rss_kib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": len(os.listdir(f"/proc/{pid}/task"))}


# ----------------------------------------------------------------------------- 2. decision latency


def agi_latency(the_rig: rig.Rig, plan: dict, label: str) -> list[dict]:
    rows = []
    modes = [(c, n, 0.0, None) for c, n in plan["agi_levels"]]
    modes.append((100, 0, PACED_GAP_S, plan["paced_s"]))
    for concurrency, requests, gap, duration in modes:
        runs = []
        for rep in range(plan["repeats"]):
            spy = None
            if gap and rep == 0 and plan.get("profile"):
                from bench import profile
                raw = Path(f"{plan['profile']}-{label}.raw")
                spy = profile.record(the_rig.worker_pid(), duration, raw)
            result = asyncio.run(agi_client.run(the_rig.agi_port, concurrency, requests, gap,
                                                duration, seed=rep,
                                                recordings=the_rig.config.recordings_dir,
                                                key=the_rig.config.agi_secret()))
            runs.append(agi_client.summary(result))
            if spy is not None:
                spy.communicate()
                if raw.exists():
                    Path(f"{plan['profile']}-{label}.txt").write_text(profile.summarise(raw.read_text()))
        mode = "paced ~1 req/s per call" if gap else "back to back"
        row = {
            "db": label, "concurrency": concurrency, "mode": mode,
            "requests": sum(r["requests"] for r in runs),
            "failures": sum(r["failures"] for r in runs),
            "median_ms": spread(r["median_ms"] for r in runs),
            "p99_ms": spread(r["p99_ms"] for r in runs),
            "max_ms": spread(r["max_ms"] for r in runs),
            "by_route": runs[-1]["by_route_median_ms"],
        }
        say(f"  AGI {label} {concurrency} {mode}: median {row['median_ms'].format()} ms, "
            f"p99 {row['p99_ms'].format()} ms, failures {row['failures']}")
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- 1 and 3. calls


def call_levels(the_rig: rig.Rig, plan: dict, workdir: Path) -> list[calls.Level]:
    cfg = the_rig.config
    base = cfg.ports.sip - 60
    settings = calls.CallSettings(
        sip_port=cfg.ports.sip, surgeon_port=cfg.ports.surgeon_phones, caller_port=base + 61,
        media_base=base + 900, secret=cfg.sip_secret(), cel_db=cfg.instance_dir / "log" / "cel.db",
        pre_ms=1500, accept_ms=1000, talk_ms=1000)
    levels: list[calls.Level] = []
    stopped: set[str] = set()
    serial = 0
    for rate in plan["rates"]:
        n = max(plan["min_calls"], int(rate * plan["level_s"]))
        for rep in range(plan["repeats"]):
            flows = [("static", rig.STATIC_NUMBER), ("hotline", calls.HOTLINE_NUMBER)]
            if rep % 2:
                flows.reverse()  # neither flow always runs on the warmer machine
            for flow, number in flows:
                if flow in stopped:
                    continue
                serial += 1
                level = calls.run_level(settings, workdir / f"{serial:03d}-{flow}-{rate}", flow,
                                        number, rate, n, f"13{serial:03d}{rep}",
                                        the_rig.channels)
                say(f"  calls {flow} {rate}/s x{n}: {'ok' if level.passed else 'FAILED'} "
                    f"(callers {level.caller_ok}+{level.caller_failed} failed, surgeons "
                    f"{level.surgeon_ok}+{level.surgeon_failed} failed, bridged {level.bridged}, "
                    f"peak {level.peak_concurrent} concurrent, PDD median "
                    f"{level.pdd_median_ms or float('nan'):.0f} ms)")
                levels.append(level)
        for flow in ("static", "hotline"):
            ran = [lv for lv in levels if lv.flow == flow and lv.rate == rate]
            if ran and not any(lv.passed for lv in ran):
                stopped.add(flow)  # failed in every repeat: no point going faster
        if stopped == {"static", "hotline"}:
            break
    return levels


def summarise_calls(levels: list[calls.Level], rates) -> tuple[list[list], dict]:
    rows, best = [], {"static": (0.0, 0), "hotline": (0.0, 0)}
    for rate in rates:
        for flow in ("static", "hotline"):
            ran = [lv for lv in levels if lv.flow == flow and lv.rate == rate]
            if not ran:
                continue
            passed = sum(lv.passed for lv in ran)
            peak = spread(lv.peak_concurrent for lv in ran)
            pdd = [lv.pdd_median_ms for lv in ran if lv.pdd_median_ms is not None]
            rows.append([flow, rate, f"{passed}/{len(ran)}",
                         sum(lv.calls for lv in ran), sum(lv.calls - lv.bridged for lv in ran),
                         peak.format("{:.0f}"), spread(pdd).format("{:.0f}") if pdd else "-"])
            if passed == len(ran) and rate > best[flow][0]:
                best[flow] = (rate, int(peak.median))
    return rows, best


def pdd_pairs(levels: list[calls.Level]) -> list[list]:
    """Per rate: median post-dial delay of each flow (median over runs) and the difference."""
    rows = []
    for rate in sorted({lv.rate for lv in levels}):
        static = [lv.pdd_median_ms for lv in levels if lv.flow == "static" and lv.rate == rate
                  and lv.pdd_median_ms is not None]
        hotline = [lv.pdd_median_ms for lv in levels if lv.flow == "hotline" and lv.rate == rate
                   and lv.pdd_median_ms is not None]
        if not static or not hotline:
            continue
        diffs = [h - s for h, s in zip(hotline, static)]
        rows.append([rate, spread(static).format("{:.1f}"), spread(hotline).format("{:.1f}"),
                     spread(diffs).format("{:.1f}"),
                     "yes" if percentile(diffs, 50) < PDD_GOAL_MS else "no"])
    return rows


# ----------------------------------------------------------------------------- 4. memory


def memory_run(the_rig: rig.Rig, plan: dict, workdir: Path) -> dict:
    cfg = the_rig.config
    base = cfg.ports.sip - 60
    settings = calls.CallSettings(
        sip_port=cfg.ports.sip, surgeon_port=cfg.ports.surgeon_phones, caller_port=base + 61,
        media_base=base + 900, secret=cfg.sip_secret(), cel_db=cfg.instance_dir / "log" / "cel.db",
        pre_ms=1500, accept_ms=1000, talk_ms=1000)
    the_rig.restart_service()
    time.sleep(3)
    pid = the_rig.worker_pid()
    assert pid is not None
    first_n, total = plan["memory"]
    fresh = proc_figures(pid)
    out = {"pid": pid, "fresh": fresh}
    a = calls.run_level(settings, workdir / "mem-a", "hotline", calls.HOTLINE_NUMBER,
                        plan["memory_rate"], first_n, "13800", the_rig.channels)
    time.sleep(3)
    out["after_first"] = {"calls": first_n, "passed": a.passed, **proc_figures(pid)}
    b = calls.run_level(settings, workdir / "mem-b", "hotline", calls.HOTLINE_NUMBER,
                        plan["memory_rate"], total - first_n, "13801", the_rig.channels)
    time.sleep(3)
    out["after_all"] = {"calls": total, "passed": b.passed, "bridged": a.bridged + b.bridged,
                        **proc_figures(pid)}
    out["channels_left"] = the_rig.channels()
    out["same_worker"] = the_rig.worker_pid() == pid
    say(f"  memory: {json.dumps(out)}")
    return out


# ----------------------------------------------------------------------------- the database


def fill_database(db_url: str, cases: int) -> dict:
    """Migrate, load `cases` cases over the last two years and the two-year roster."""
    from bench import history_gen
    from db.session import make_engine

    today = date.today()
    engine = make_engine(db_url)
    try:
        began = time.perf_counter()
        stats = history_gen.generate(engine, cases, today - timedelta(days=730), 730)
    finally:
        engine.dispose()
    roster = rig.seed_roster(db_url, today)
    return {"cases": stats.cases, "seconds": round(time.perf_counter() - began, 1), **roster}


def machine() -> dict:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(int(mem) / 2**20),
            "kernel": platform.release(), "python": platform.python_version(),
            "sipp": run("/usr/bin/sipp", "-v").split("\n")[0].strip() or "?",
            "load_before": os.getloadavg()}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full set (1,000,000 cases, 10,000 calls)")
    parser.add_argument("--smoke", action="store_true", help="a minute's check that every part runs")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/hotline_bench_agi",
                        help="PostgreSQL database for the latency runs (created and dropped)")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database and the run dir")
    parser.add_argument("--skip", action="append", default=[], choices=["calls", "agi", "pg", "memory"])
    parser.add_argument("--cases", type=int, help="cases in each database (default 100,000 / 1,000,000)")
    parser.add_argument("--rates", help="call rates to try, e.g. 10,15,20 (default by set)")
    parser.add_argument("--level-s", type=float, help="seconds of calls per rate and run")
    parser.add_argument("--repeats", type=int, help="runs per figure (default 3)")
    parser.add_argument("--memory", help="calls before the first and the last RSS, e.g. 100,10000")
    parser.add_argument("--profile", type=Path,
                        help="py-spy the worker during the paced 100-call AGI run; summary here")
    parser.add_argument("--var-parent", type=Path, default=Path("/tmp"),
                        help="where the run dir goes (/dev/shm: database and journal in memory)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args(argv)
    plan = dict(FULL if args.full else SMOKE if args.smoke else QUICK)
    if args.cases:
        plan["cases"] = args.cases
    if args.rates:
        plan["rates"] = tuple(float(r) if "." in r else int(r) for r in args.rates.split(","))
    if args.level_s:
        plan["level_s"] = args.level_s
    if args.repeats:
        plan["repeats"] = args.repeats
    if args.memory:
        first, total = (int(n) for n in args.memory.split(","))
        plan["memory"] = (first, total)
    plan["profile"] = args.profile
    port_base = int(os.environ.get("HOTLINE_TEST_PORT_BASE", "31000"))
    results: dict = {"plan": {k: str(v) if isinstance(v, Path) else v for k, v in plan.items()},
                     "machine": machine(),
                     "command": " ".join([Path(sys.executable).name, *sys.argv])}
    from bench.console_history import drop, prepare
    from hotline import instance

    the_rig = rig.make_rig(port_base, args.var_parent)
    workdir = the_rig.var_dir / "bench"
    began = time.monotonic()
    pg_ready = False
    levels: list[calls.Level] = []
    try:
        say(f"bench instance in {the_rig.var_dir}, ports from {port_base}")
        instance.prepare(the_rig.config, log=say)
        rig.install_static_dialplan(the_rig.config)
        say(f"loading {plan['cases']:,} cases and a two-year roster into SQLite ...")
        results["sqlite_load"] = fill_database(the_rig.config.db_url, plan["cases"])
        instance.start_asterisk(the_rig.config)
        instance.start_service(the_rig.config, env=the_rig.env)
        time.sleep(3)  # AMI login, chains mirrored, heartbeat fresh
        results["versions"] = {
            "asterisk": instance.asterisk_cli(the_rig.config, "core show version")[0],
            "sqlite": __import__("sqlite3").sqlite_version}
        if "agi" not in args.skip:
            say("2. decision latency, SQLite")
            results["agi_sqlite"] = agi_latency(the_rig, plan, "SQLite")
        if "calls" not in args.skip:
            say("1. calls: static dialplan and hotline at rising rates")
            levels = call_levels(the_rig, plan, workdir)
            results["levels"] = [vars(lv) | {"passed": lv.passed} for lv in levels]
        if "memory" not in args.skip:
            say("4. memory and stability")
            results["memory"] = memory_run(the_rig, plan, workdir)
        if "pg" not in args.skip and "agi" not in args.skip:
            say(f"loading {plan['cases']:,} cases and the roster into PostgreSQL ...")
            prepare(args.pg_url, fresh=True)
            pg_ready = True
            results["pg_load"] = fill_database(args.pg_url, plan["cases"])
            the_rig.restart_service(db_url=args.pg_url)
            time.sleep(3)
            say("2. decision latency, PostgreSQL")
            results["agi_pg"] = agi_latency(the_rig, plan, "PostgreSQL")
            from sqlalchemy import create_engine, text
            eng = create_engine(args.pg_url.replace("postgresql://", "postgresql+psycopg://"))
            with eng.connect() as conn:
                results["versions"]["postgresql"] = conn.execute(text("SHOW server_version")).scalar()
            eng.dispose()
    finally:
        the_rig.stop(keep_dir=args.keep)
        if pg_ready and not args.keep:
            drop(args.pg_url)
    results["minutes"] = round((time.monotonic() - began) / 60, 1)
    report(results, plan, levels)
    if args.out:
        args.out.write_text(json.dumps(results, default=_json, indent=1))
    return 0


def _json(value):
    if hasattr(value, "format") and hasattr(value, "median"):
        return {"median": value.median, "low": value.low, "high": value.high, "runs": value.runs}
    return str(value)


def report(results: dict, plan: dict, levels: list[calls.Level]) -> None:
    m = results["machine"]
    print(f"\n# hotline benchmarks ({results['command']}; {results['minutes']} min)\n")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Linux {m['kernel']}, "
          f"load {m['load_before'][0]:.1f} before; Python {m['python']}; {m['sipp']}; "
          f"{results.get('versions', {})}")
    print(f"databases: {results.get('sqlite_load')} / {results.get('pg_load')}")
    print(f"each figure: median over {plan['repeats']} runs (min–max)\n")
    if levels:
        rows, best = summarise_calls(levels, plan["rates"])
        print("## 1. calls through Asterisk: static dialplan vs hotline\n")
        print(table(["flow", "calls/s", "runs passed", "calls", "not bridged",
                     "peak concurrent", "PDD median ms"], rows))
        s, h = best["static"], best["hotline"]
        ratio = h[0] / s[0] if s[0] else float("nan")
        print(f"\nsustained with zero failed calls: static {s[0]}/s ({s[1]} concurrent), "
              f"hotline {h[0]}/s ({h[1]} concurrent); ratio {ratio:.0%} (goal >= 80%: "
              f"{'met' if ratio >= RATIO_GOAL else 'NOT met'}) -- of the rates tried\n")
        print("## 3. post-dial delay (key -> surgeon INVITE), ms\n")
        print(table(["calls/s", "static", "hotline", "hotline - static", "< 10 ms"],
                    pdd_pairs(levels)))
        print()
    for key in ("agi_sqlite", "agi_pg"):
        if key in results:
            print(f"## 2. FastAGI round trip, {results[key][0]['db']}\n")
            print(table(["concurrent calls", "mode", "requests", "failed", "median ms",
                         "p99 ms", "max ms", "p99 < 5 ms"],
                        [[r["concurrency"], r["mode"], r["requests"], r["failures"],
                          r["median_ms"].format(), r["p99_ms"].format(), r["max_ms"].format(),
                          "yes" if r["p99_ms"].median < P99_GOAL_MS else "no"]
                         for r in results[key]]))
            print()
    if "memory" in results:
        mem = results["memory"]
        print("## 4. memory and stability (service worker)\n")
        print(table(["after", "calls passed", "RSS MiB", "fds", "threads"], [
            ["start", "-", f"{mem['fresh']['rss_kib'] / 1024:.1f}", mem["fresh"]["fds"],
             mem["fresh"]["threads"]],
            [f"{mem['after_first']['calls']} calls", mem["after_first"]["passed"],
             f"{mem['after_first']['rss_kib'] / 1024:.1f}", mem["after_first"]["fds"],
             mem["after_first"]["threads"]],
            [f"{mem['after_all']['calls']} calls", mem["after_all"]["passed"],
             f"{mem['after_all']['rss_kib'] / 1024:.1f}", mem["after_all"]["fds"],
             mem["after_all"]["threads"]]]))
        print(f"\nchannels left in Asterisk: {mem['channels_left']}; same worker throughout: "
              f"{mem['same_worker']}")


if __name__ == "__main__":
    raise SystemExit(main())
