"""A FastAGI client that plays Asterisk: simulated calls against the running service. Not a test.

Each simulated call sends the requests the dialplan sends on a call that
reaches a surgeon who presses 1 (dialplans/templates/extensions.conf.j2):
`call_start`, `menu 2`, `route replant 2`, `accepted 1` (from the surgeon's
leg), `call_end ...` (the hangup handler) -- each over its own connection, with
the environment res_agi writes (agi_network_script, ten `agi_arg_N`, because
`[hotline-agi]` always passes ARG2..ARG11). Every command the service sends is
answered `200 result=1`, as Asterisk does for SET VARIABLE. Each request
carries the proof the dialplan computes (`ivr/handlers.py` `request_proof`)
from the instance's FastAGI key (`--key-file`, instance_dir/agi.secret): the
service refuses a request without it.

Like MixMonitor, the client leaves a short WAV at `<recordings>/<case id>.wav`
after the `route` answer (given `--recordings`): without it the service's case
writer waits `recording_wait_s` (5 s) per connected case for the file, and
that wait, not the calls, would set the pace.

A request's round trip is from connect() to the service closing the socket:
what the channel waits in AGI(). A request counts as failed unless the
service set HOTLINE_OK=1 (and `route` answered `dial`).

    .venv/bin/python bench/agi_client.py --port 31073 --key-file var/asterisk/bench/agi.secret \
        --concurrency 100 --requests 2000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stats import ms, percentile  # noqa: E402
from ivr.handlers import request_proof  # noqa: E402


def agi_environment(route: str, linkedid: str, args: list[str], *, channel: str,
                    caller: str, uniqueid: str, key: str) -> bytes:
    """The environment res_agi sends for `AGI(agi://host/<route>?linkedid=...&proof=...,args...)`."""
    padded = (args + [""] * 10)[:10]
    script = f"{route}?linkedid={linkedid}&proof={request_proof(key, linkedid, route)}"
    lines = [
        "agi_network: yes",
        f"agi_network_script: {script}",
        f"agi_request: agi://127.0.0.1/{script}",
        f"agi_channel: {channel}",
        "agi_language: en",
        "agi_type: PJSIP",
        f"agi_uniqueid: {uniqueid}",
        "agi_version: 22.10.0",
        f"agi_callerid: {caller}",
        "agi_calleridname: unknown",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        "agi_dnid: 96608",
        "agi_rdnis: unknown",
        "agi_context: hotline-agi",
        "agi_extension: s",
        "agi_priority: 3",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140000000000000",
        *(f"agi_arg_{n}: {value}" for n, value in enumerate(padded, 1)),
    ]
    return ("\n".join(lines) + "\n\n").encode()


@dataclass
class Results:
    """Round trips in seconds by route, and the failures."""

    rtt: dict[str, list[float]] = field(default_factory=dict)
    slow: list[tuple[float, str, float]] = field(default_factory=list)  # (epoch s, route, ms) > 50 ms
    failures: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)

    def add(self, route: str, seconds: float) -> None:
        self.rtt.setdefault(route, []).append(seconds)
        if seconds > 0.050:  # to line up with the service's log (what ran then?)
            self.slow.append((time.time() - seconds, route, seconds * 1000))

    def fail(self, why: str) -> None:
        self.failures += 1
        self.failure_kinds[why] = self.failure_kinds.get(why, 0) + 1

    @property
    def all(self) -> list[float]:
        return [s for values in self.rtt.values() for s in values]


async def request(port: int, route: str, linkedid: str, args: list[str], *, channel: str,
                  caller: str, uniqueid: str, key: str,
                  timeout: float = 10.0) -> tuple[float, dict[str, str]]:
    """One FastAGI request; its round trip and the variables the service set."""
    began = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    variables: dict[str, str] = {}
    try:
        writer.write(agi_environment(route, linkedid, args, channel=channel, caller=caller,
                                     uniqueid=uniqueid, key=key))
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line:
                break
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text.startswith("SET VARIABLE "):
                _, _, rest = text.partition("SET VARIABLE ")
                name, _, value = rest.partition(" ")
                variables[name] = value.strip('"')
            writer.write(b"200 result=1\n")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return time.perf_counter() - began, variables


class Caller:
    """Unique linkedids and caller numbers for the simulated calls."""

    def __init__(self, seed: int = 96608) -> None:
        self.base = int(time.time())
        self.count = 0
        self.rng = random.Random(seed)

    def next(self) -> tuple[str, str, int]:
        self.count += 1
        return f"{self.base}.{self.count}", f"139{self.rng.randrange(10**8):08d}", self.count


_CASE_ID = re.compile(r"[0-9A-Za-z-]{1,40}")


def leave_recording(recordings: Path, case_id: str, seconds: float = 1.0) -> None:
    """What MixMonitor leaves for a bridged call: an 8 kHz mono 16-bit WAV named after the case."""
    if not _CASE_ID.fullmatch(case_id):  # the dialplan's own rule for naming the file
        return
    with wave.open(str(recordings / f"{case_id}.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * int(8000 * seconds))


async def one_call(port: int, ids: Caller, results: Results, gap_s: float,
                   rng: random.Random, recordings: Path | None = None, *, key: str) -> int:
    """The requests of one call that reaches a surgeon; how many were sent."""
    linkedid, caller, n = ids.next()
    caller_chan = f"PJSIP/caller-info-{n:08x}"
    surgeon_chan = f"PJSIP/surgeons-{n:08x}"
    steps = [
        ("call_start", [], caller_chan),
        ("menu", ["2"], caller_chan),
        ("route", ["replant", "2"], caller_chan),
        ("accepted", ["1"], surgeon_chan),
        ("call_end", [surgeon_chan, "16", "ANSWER", "1", "1", "5", "9", "", "", ""], caller_chan),
    ]
    sent = 0
    case_id = ""
    for route, args, channel in steps:
        if gap_s and sent:
            await asyncio.sleep(rng.uniform(0, 2 * gap_s))
        try:
            seconds, variables = await request(port, route, linkedid, args, channel=channel,
                                               caller=caller, uniqueid=linkedid, key=key)
        except (OSError, asyncio.TimeoutError) as exc:
            results.fail(f"{route}: {type(exc).__name__}")
            return sent + 1
        sent += 1
        results.add(route, seconds)
        if variables.get("HOTLINE_OK") != "1":
            results.fail(f"{route}: no HOTLINE_OK")
        elif route == "call_start":
            case_id = variables.get("HOTLINE_CASE_ID", "")
        elif route == "route":
            if variables.get("HOTLINE_ACTION") != "dial":
                results.fail(f"route: action {variables.get('HOTLINE_ACTION')!r}")
            elif recordings is not None:
                leave_recording(recordings, case_id)
    return sent


async def run(port: int, concurrency: int, requests: int, gap_s: float = 0.0,
              duration_s: float | None = None, seed: int = 96608,
              recordings: Path | None = None, *, key: str) -> Results:
    """`concurrency` calls at once, each followed by the next, until `requests` or `duration_s`."""
    ids, results = Caller(seed), Results()
    rng = random.Random(seed)
    sent = 0
    deadline = time.monotonic() + duration_s if duration_s else None

    async def lane() -> None:
        nonlocal sent
        while (sent < requests) if deadline is None else (time.monotonic() < deadline):
            made = await one_call(port, ids, results, gap_s, rng, recordings, key=key)
            sent += made  # not `sent += await ...`: that reads `sent` before the await

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return results


def summary(results: Results) -> dict[str, object]:
    samples = results.all
    return {
        "requests": len(samples),
        "failures": results.failures,
        "failure_kinds": results.failure_kinds,
        "median_ms": ms(percentile(samples, 50)),
        "p99_ms": ms(percentile(samples, 99)),
        "max_ms": ms(max(samples)),
        "by_route_median_ms": {r: round(ms(percentile(v, 50)), 3) for r, v in results.rtt.items()},
        "slow_over_50ms": len(results.slow),
        "slow_started_at": sorted({time.strftime("%H:%M:%S", time.gmtime(t)) for t, _, _ in results.slow}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the service's FastAGI port")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="mean pause between one call's requests (0: back to back)")
    parser.add_argument("--duration-s", type=float, help="run this long instead of --requests")
    parser.add_argument("--recordings", type=Path,
                        help="the instance's recordings dir: leave a WAV per call as MixMonitor does")
    parser.add_argument("--key-file", type=Path, required=True,
                        help="the instance's FastAGI key (instance_dir/agi.secret)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.port, args.concurrency, args.requests, args.gap_ms / 1000,
                              args.duration_s, recordings=args.recordings,
                              key=args.key_file.read_text().strip()))
    out = summary(results)
    print(json.dumps(out) if args.json else out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
