"""Pure helpers of the benchmarks: percentiles, median-and-spread over runs, SIPp logs, tables.

No I/O here (the callers read the files); tests/unit/test_bench_stats.py checks them.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks.

    The same definition as numpy's default ("linear"), so p50 of an even-sized
    sample is the mean of the two middle values. An empty sample is an error:
    a benchmark that measured nothing must not print a figure.
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Spread:
    """A figure over repeated runs: the median of the runs and their min..max."""

    median: float
    low: float
    high: float
    runs: int

    def format(self, fmt: str = "{:.2f}") -> str:
        if self.runs == 1:
            return fmt.format(self.median)
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}–{fmt.format(self.high)})"


def spread(values: Iterable[float]) -> Spread:
    """Median and range of one figure measured in several runs."""
    values = list(values)
    return Spread(percentile(values, 50), min(values), max(values), len(values))


_LOG_LINE = re.compile(r"\b(KEY|INVITE) (\d{3,20}) (\d+)(?:\.\d*)? (\d+)(?:\.\d*)?")


def parse_sipp_log(text: str, tag: str) -> dict[str, int]:
    """Times (epoch microseconds) by caller number from a SIPp -trace_logs file, for lines `tag`.

    The scenarios log `KEY <caller> <s> <µs>` (caller side) and `INVITE <caller>
    <s> <µs>` (surgeon side); SIPp prints both numbers as floats ("...837.000000").
    Whole microseconds, not float seconds: an epoch in float seconds keeps
    only about 0.1 µs. The first line per caller wins: a surgeon rung twice
    for one call (a second attempt) must not move the post-dial delay.
    """
    found: dict[str, int] = {}
    for match in _LOG_LINE.finditer(text):
        if match.group(1) != tag:
            continue
        caller = match.group(2)
        if caller not in found:
            found[caller] = int(match.group(3)) * 1_000_000 + int(match.group(4))
    return found


def post_dial_delays(keys: dict[str, int], invites: dict[str, int]) -> list[float]:
    """Seconds from each caller's menu key to their surgeon's INVITE (callers seen on both sides)."""
    return [(invites[c] - keys[c]) / 1_000_000 for c in keys if c in invites]


def parse_sipp_stats(text: str) -> list[dict[str, str]]:
    """Rows of a SIPp -trace_stat CSV file (';'-separated, header first, trailing ';')."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = [h.strip() for h in lines[0].rstrip(";").split(";")]
    rows = []
    for line in lines[1:]:
        cells = [c.strip() for c in line.rstrip(";").split(";")]
        if len(cells) == len(header):
            rows.append(dict(zip(header, cells)))
    return rows


def sipp_totals(rows: list[dict[str, str]]) -> dict[str, int]:
    """Cumulative successful/failed calls and the peak of concurrent calls from SIPp's stat rows."""
    if not rows:
        return {"successful": 0, "failed": 0, "peak_concurrent": 0, "created": 0}
    last = rows[-1]
    return {
        "successful": int(last.get("SuccessfulCall(C)", "0") or 0),
        "failed": int(last.get("FailedCall(C)", "0") or 0),
        "created": int(last.get("OutgoingCall(C)", "0") or last.get("TotalCallCreated", "0") or 0),
        "peak_concurrent": max(int(r.get("CurrentCall", "0") or 0) for r in rows),
    }


def ms(seconds: float) -> float:
    return seconds * 1000.0


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable in a terminal)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in cells[1:]:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    return "\n".join(out)
