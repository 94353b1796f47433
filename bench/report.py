#!/usr/bin/env python3
"""Summarise bench/run's measurements: per peer the mean of the rounds and
their spread, then the ratios the targets are stated in. Prints Markdown.

    report.py RESULTS.tsv CORES DURATION ROUNDS CONNS
"""

import statistics
import sys
from collections import defaultdict
from datetime import datetime, timezone

path, cores, duration, rounds, conns = sys.argv[1:6]
rows = defaultdict(list)  # (scenario, peer) -> [(rps, p50, p99, note)]
order = []
with open(path) as f:
    for line in f:
        scen, peer, _round, rps, p50, p99, note = line.rstrip("\n").split("\t")
        if (scen, peer) not in rows:
            order.append((scen, peer))
        num = lambda v: float(v) if v not in ("", "-") else None
        rows[(scen, peer)].append((num(rps), num(p50), num(p99), note.strip()))


def mean(scen, peer, i=0):
    vals = [r[i] for r in rows.get((scen, peer), []) if r[i] is not None]
    return statistics.mean(vals) if vals else None


def fmt(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"


print()
print(
    f"## Results ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cores} cores, "
    f"{duration} s per measurement, {rounds} rounds, {conns} connections)"
)
print()
print("| scenario | peer | req/s (mean) | spread | p50 ms | p99 ms | notes |")
print("|---|---|---:|---:|---:|---:|---|")
for scen, peer in order:
    rs = rows[(scen, peer)]
    vals = [r[0] for r in rs if r[0] is not None]
    if scen == "idle":
        print(f"| idle | {peer} | {fmt(vals[0])} bytes/conn | | | | {rs[0][3]} |")
        continue
    m = statistics.mean(vals)
    spread = f"±{(max(vals) - min(vals)) / 2 / m * 100:.1f}%" if len(vals) > 1 else ""
    notes = "; ".join(sorted({r[3] for r in rs if r[3]}))
    p50 = mean(scen, peer, 1)
    p99 = mean(scen, peer, 2)
    label = "mean ms" if scen == "h2" else "p50"
    print(
        f"| {scen} | {peer} | {fmt(m)} | {spread} | {fmt(p50, 3)}"
        f"{' (mean)' if scen == 'h2' else ''} | {fmt(p99, 3)} | {notes} |"
    )

# (label, scenario, numerator peer, denominator peer, target, higher is better)
RATIOS = [
    ("plain req/s portcullis/nginx", "plain", "portcullis", "nginx", 1.15, True),
    ("plain req/s portcullis/haproxy", "plain", "portcullis", "haproxy", 1.15, True),
    ("plain p99 portcullis/nginx", "plain", "portcullis", "nginx", 1.0, False),
    ("plain p99 portcullis/haproxy", "plain", "portcullis", "haproxy", 1.0, False),
    ("close req/s portcullis/nginx", "close", "portcullis", "nginx", None, True),
    ("close req/s portcullis/haproxy", "close", "portcullis", "haproxy", None, True),
    ("close p99 portcullis/nginx", "close", "portcullis", "nginx", None, False),
    ("close p99 portcullis/haproxy", "close", "portcullis", "haproxy", None, False),
    ("download req/s portcullis/nginx", "download", "portcullis", "nginx", None, True),
    ("download req/s portcullis/haproxy", "download", "portcullis", "haproxy", None, True),
    ("log req/s portcullis/nginx, both logging", "log", "portcullis-log", "nginx-log", None, True),
    ("log req/s portcullis logging / not logging", "log", "portcullis-log", "portcullis-nolog", None, True),
    ("jwt HS256 / portcullis ungated", "jwt", "portcullis-hs256", "portcullis-none", 0.9, True),
    ("jwt RS256 / portcullis ungated", "jwt", "portcullis-rs256", "portcullis-none", 0.9, True),
    ("jwt RS256 portcullis/haproxy", "jwt", "portcullis-rs256", "haproxy-rs256", 1.5, True),
    ("jwt HS256 portcullis/haproxy", "jwt", "portcullis-hs256", "haproxy-hs256", None, True),
    ("static 16 KiB req/s portcullis/nginx", "static-16k", "portcullis", "nginx", 1.0, True),
    ("static 1 MiB throughput portcullis/nginx", "static-1m", "portcullis", "nginx", 0.9, True),
    ("upload 64 KiB req/s portcullis/nginx", "upload-64k", "portcullis", "nginx", None, True),
    ("upload 4 MiB req/s portcullis/nginx", "upload-4m", "portcullis", "nginx", None, True),
    ("gzip of a 30 KiB page req/s portcullis/nginx", "gzip", "portcullis", "nginx", None, True),
    ("h2 over TLS req/s portcullis/nginx", "h2", "portcullis", "nginx", 1.0, True),
    ("idle memory per connection portcullis/nginx", "idle", "portcullis", "nginx", 1.0, False),
]
print()
print("| ratio | value | target | met |")
print("|---|---:|---:|---|")
for label, scen, a, b, target, higher in RATIOS:
    i = 2 if "p99" in label else 0
    x, y = mean(scen, a, i), mean(scen, b, i)
    if x is None or y is None or y == 0:
        continue
    r = x / y
    if target is None:
        met, t = "", "-"
    else:
        met = "yes" if (r >= target if higher else r <= target) else "no"
        t = f"{'≥' if higher else '≤'} {target:.2f}"
    print(f"| {label} | {r:.2f} | {t} | {met} |")
