#!/usr/bin/env python3
"""Summarize the `verify` criterion bench from target/criterion/*/new/.

Prints, per benchmark: criterion's median estimate and the fastest sample
(lowest time per iteration among the ~100 samples). On a shared machine the
fastest sample is the figure least inflated by other processes; the median is
what criterion reports. Also prints verify / raw SHA-256 throughput ratios.

Usage: python3 crates/hookgate-core/benches/summarize.py [target/criterion]
"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
names = [
    "verify_standard_vs_sha256/standard_verify/1KiB",
    "verify_standard_vs_sha256/sha256_raw/1KiB",
    "verify_standard_vs_sha256/standard_verify/64KiB",
    "verify_standard_vs_sha256/sha256_raw/64KiB",
    "verify_standard_vs_sha256/standard_verify/1MiB",
    "verify_standard_vs_sha256/sha256_raw/1MiB",
    "verify_1KiB/stripe",
    "verify_1KiB/github",
    "verify_1KiB/slack",
    "verify_1KiB/shopify",
    "standard_parse_headers",
]
sizes = {"1KiB": 1024, "64KiB": 65536, "1MiB": 1048576}


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3f} µs"
    return f"{ns:.1f} ns"


def size_of(name):
    for k, v in sizes.items():
        if name.endswith(k):
            return v
    return None


results = {}
print(f"| benchmark | median | fastest sample | throughput (median / fastest) |")
print(f"|---|---|---|---|")
for name in names:
    d = os.path.join(root, name, "new")
    try:
        est = json.load(open(os.path.join(d, "estimates.json")))
        sample = json.load(open(os.path.join(d, "sample.json")))
    except FileNotFoundError:
        continue
    median = est["median"]["point_estimate"]
    fastest = min(t / i for t, i in zip(sample["times"], sample["iters"]))
    results[name] = (median, fastest)
    size = size_of(name) or 1024
    gbs = lambda ns: size / ns  # bytes per ns = GB/s
    thr = "" if name == "standard_parse_headers" else f"{gbs(median):.2f} / {gbs(fastest):.2f} GB/s"
    print(f"| `{name}` | {fmt_ns(median)} | {fmt_ns(fastest)} | {thr} |")

print()
for size in sizes:
    v = results.get(f"verify_standard_vs_sha256/standard_verify/{size}")
    s = results.get(f"verify_standard_vs_sha256/sha256_raw/{size}")
    if v and s:
        print(
            f"{size}: verify throughput / raw SHA-256 throughput = "
            f"{s[0] / v[0] * 100:.1f} % (median), {s[1] / v[1] * 100:.1f} % (fastest samples)"
        )
