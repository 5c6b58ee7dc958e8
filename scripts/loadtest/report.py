#!/usr/bin/env python3
"""Turns the load harness's raw measurements into the markdown tables.

Called by scripts/loadtest.sh; reads the JSON-lines file it wrote (one line
per setup, phase and repeat: the oha JSON report's path, the proxies' CPU
ticks over the phase and their peak RSS after it) and prints one table per
phase: medians over the repeats, the spread (min-max) of the headline
number, latency added over the direct row, and each mesh row's ratio to the
HAProxy row of the same shape in the same run.

Standard library only (Debian's python3).
"""

import json
import statistics
import sys

PHASES = [
    ("rate1000", "Fixed rate 1,000 req/s, 32 connections"),
    ("rate5000", "Fixed rate 5,000 req/s, 32 connections"),
    ("max", "Closed loop (maximum throughput), 64 connections"),
]
# oha reports the time a request was aborted at the end of a timed run as an
# error of this kind; it says nothing about the proxy.
DEADLINE = "aborted due to deadline"


def load(path):
    """Raw lines grouped by (setup, phase) in first-seen setup order."""
    setups, rows = [], {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            key = r["setup"]
            if key not in [s["setup"] for s in setups]:
                setups.append(r)
            rows.setdefault((key, r.get("phase", "")), []).append(r)
    return setups, rows


def oha_numbers(r):
    """Latency percentiles (ms), throughput and counts of one oha run."""
    with open(r["oha"], encoding="utf-8") as f:
        o = json.load(f)
    pct = o.get("latencyPercentiles", {})
    codes = {str(k): int(v) for k, v in o.get("statusCodeDistribution", {}).items()}
    errors = {k: int(v) for k, v in o.get("errorDistribution", {}).items() if k != DEADLINE}
    answered = sum(codes.values())
    non2xx = sum(v for k, v in codes.items() if not k.startswith("2"))

    def ms(key):
        v = pct.get(key)
        return None if v is None else v * 1000.0

    elapsed = o["summary"].get("total") or 0.0
    cpu_s = r["cpu_ticks"] / r["clk_tck"] if r.get("cpu_ticks") is not None else None
    return {
        "p50": ms("p50"),
        "p90": ms("p90"),
        "p99": ms("p99"),
        "p999": ms("p99.9"),
        # Answered requests per second of the run (errors excluded).
        "rps": answered / elapsed if elapsed else 0.0,
        "answered": answered,
        "non2xx": non2xx,
        "errors": sum(errors.values()),
        "error_kinds": sorted(errors),
        "cpu_ms_per_1k": (cpu_s * 1e6 / answered) if (cpu_s is not None and answered) else None,
        "rss_mb": r["rss_kb"] / 1024.0 if r.get("rss_kb") else None,
        "body": o["summary"].get("sizePerRequest"),
    }


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return "–"
    return f"{fmt(min(values))}–{fmt(max(values))}"


def fmt(v, digits=None):
    if v is None:
        return "–"
    if digits is None:
        digits = 3 if abs(v) < 1 else (2 if abs(v) < 10 else (1 if abs(v) < 1000 else 0))
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def summarise(setups, rows):
    """Per (setup, phase): medians and the raw per-repeat numbers."""
    out = {}
    for s in setups:
        for phase, _ in PHASES:
            raw = rows.get((s["setup"], phase), [])
            ok = [r for r in raw if r.get("status") == "ok"]
            nums = [oha_numbers(r) for r in ok]
            m = {k: med([n[k] for n in nums]) for k in
                 ("p50", "p90", "p99", "p999", "rps", "cpu_ms_per_1k", "rss_mb")}
            m["p99_all"] = [n["p99"] for n in nums]
            m["rps_all"] = [n["rps"] for n in nums]
            m["non2xx"] = sum(n["non2xx"] for n in nums)
            m["errors"] = sum(n["errors"] for n in nums)
            m["error_kinds"] = sorted({k for n in nums for k in n["error_kinds"]})
            m["runs"] = len(nums)
            m["bodies"] = sorted({n["body"] for n in nums if n["body"] not in (None, 1024)})
            m["status"] = next((r["status"] for r in raw if r.get("status") != "ok"), "ok")
            if not raw:
                m["status"] = s.get("status", "not run")
            out[(s["setup"], phase)] = m
    return out


def notes(m, target_rps=None):
    parts = []
    if m["status"] != "ok":
        parts.append(m["status"])
    if m["non2xx"]:
        parts.append(f"{m['non2xx']} non-2xx")
    if m["errors"]:
        parts.append(f"{m['errors']} errors ({', '.join(m['error_kinds'])})")
    if m["bodies"]:
        parts.append(f"body {m['bodies']} bytes, not 1024")
    if target_rps and m["rps"] is not None and m["rps"] < 0.95 * target_rps:
        parts.append(f"rate not reached ({fmt(m['rps'], 0)}/s)")
    return "; ".join(parts)


def main():
    raw_path = sys.argv[1]
    setups, rows = load(raw_path)
    s = summarise(setups, rows)
    by_id = {x["setup"]: x for x in setups}
    direct = next((x["setup"] for x in setups if x["kind"] == "direct"), None)

    def baseline(setup):
        """The HAProxy setup of the same shape (hops, TLS) as a mesh setup."""
        x = by_id[setup]
        if x["kind"] != "mesh":
            return None
        for y in setups:
            if y["kind"] == "haproxy" and y["hops"] == x["hops"] and y["tls"] == x["tls"]:
                return y["setup"]
        return None

    lines = []
    for phase, title in PHASES:
        lines.append(f"### {title}")
        lines.append("")
        if phase == "max":
            lines.append("| setup | req/s | spread | CPU ms / 1k req | peak RSS MB"
                         " | req/s × HAProxy | CPU × HAProxy | notes |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
        else:
            lines.append("| setup | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 spread"
                         " | added p99 ms | CPU ms / 1k req | peak RSS MB"
                         " | p99 × HAProxy | CPU × HAProxy | notes |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        target = {"rate1000": 1000, "rate5000": 5000}.get(phase)
        d = s.get((direct, phase)) if direct else None
        for x in setups:
            m = s[(x["setup"], phase)]
            label = x["label"]
            if m["runs"] == 0:
                cols = 8 if phase == "max" else 12
                lines.append(f"| {label} |" + " |" * (cols - 2) + f" {m['status']} |")
                continue
            b = baseline(x["setup"])
            bm = s.get((b, phase)) if b else None
            if phase == "max":
                lines.append(
                    f"| {label} | {fmt(m['rps'], 0)} | {spread(m['rps_all'])}"
                    f" | {fmt(m['cpu_ms_per_1k'])} | {fmt(m['rss_mb'], 1)}"
                    f" | {ratio(m['rps'], bm['rps']) if bm else ''}"
                    f" | {ratio(m['cpu_ms_per_1k'], bm['cpu_ms_per_1k']) if bm else ''}"
                    f" | {notes(m)} |")
            else:
                added = (m["p99"] - d["p99"]) if (d and d["p99"] is not None
                                                  and m["p99"] is not None
                                                  and x["setup"] != direct) else None
                lines.append(
                    f"| {label} | {fmt(m['p50'])} | {fmt(m['p90'])} | {fmt(m['p99'])}"
                    f" | {fmt(m['p999'])} | {spread(m['p99_all'])} | {fmt(added)}"
                    f" | {fmt(m['cpu_ms_per_1k'])} | {fmt(m['rss_mb'], 1)}"
                    f" | {ratio(m['p99'], bm['p99']) if bm else ''}"
                    f" | {ratio(m['cpu_ms_per_1k'], bm['cpu_ms_per_1k']) if bm else ''}"
                    f" | {notes(m, target)} |")
        lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
