"""Where the service's time goes while the AGI client drives it: py-spy on the worker. Not a test.

    .venv/bin/pip install py-spy     # for the run only; not a project dependency
    .venv/bin/python bench/profile.py --pid WORKER_PID --seconds 20 --out /tmp/agi.txt

py-spy attaches to the running worker (root, ptrace) and samples every
thread; `--gil` keeps only samples of the thread holding the GIL, which is
what an event-loop request waits behind. The summary lists functions by
inclusive and by own ("self") share of the samples.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def summarise(collapsed: str, top: int = 25) -> str:
    """Top functions of a py-spy `raw` (collapsed stacks) profile: inclusive and self shares."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        threads[frames[0]] += n
        for frame in set(frames[1:]):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return "no samples"
    out = [f"{total} samples"]
    out.append("threads: " + ", ".join(f"{t} {100 * n / total:.0f}%" for t, n in threads.most_common()))
    out.append("\ninclusive:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out.append("\nself:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def record(pid: int, seconds: float, raw_file: Path, gil: bool = False, rate: int = 250) -> subprocess.Popen:
    """Start py-spy on `pid` for `seconds` (returns the process; wait on it)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
           "--format", "raw", "--threads", "--nonblocking", "--output", str(raw_file)]
    if gil:
        cmd.append("--gil")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--gil", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    raw = args.out.with_suffix(".raw")
    spy = record(args.pid, args.seconds, raw, args.gil)
    _, err = spy.communicate()
    if spy.returncode:
        print(err, file=sys.stderr)
        return spy.returncode
    text = summarise(raw.read_text())
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
