#!/usr/bin/env python3
"""Writes the dated JSON + Markdown summary of a scripts/gpu-check run.

Inputs (in --work): tests.xml (ctest JUnit), memcheck.log / racecheck.log (compute-sanitizer),
pb_bench_*.json (Google Benchmark). Outputs: <out>/<stamp>-<gpu>.json and .md.
"""
import argparse
import json
import math
import pathlib
import re
import xml.etree.ElementTree as ET

# Counters that say how fast a kernel is, and how close it is to its ceiling.
RATE_KEYS = ("TFLOP/s", "tflops", "GFLOP/s", "gflops", "GB/s", "gbs")
RATIO_RE = re.compile(r"(^|_)(ratio|frac)(_|$)")


def is_ratio(key):
    return bool(RATIO_RE.search(key))


def test_counts(work):
    path = work / "tests.xml"
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in suites:
        for k in counts:
            counts[k] += int(s.get(k, 0) or 0)
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_names"] = failed
    return counts


def sanitizer(work, tool):
    path = work / f"{tool}.log"
    if not path.exists():
        return None
    text = path.read_text(errors="replace")
    m = re.findall(r"ERROR SUMMARY: (\d+) error", text)
    return {"errors": int(m[-1]) if m else None, "log_tail": text[-2000:]}


def benchmarks(work):
    rows = []
    for path in sorted(work.glob("pb_bench_*.json")):
        data = json.loads(path.read_text())
        for b in data.get("benchmarks", []):
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
                continue
            row = {"suite": path.stem, "name": b["name"], "time": b.get("real_time"),
                   "time_unit": b.get("time_unit"), "error": b.get("error_message")}
            for k, v in b.items():
                if isinstance(v, (int, float)) and (any(t in k for t in RATE_KEYS) or is_ratio(k)):
                    row[k] = v
            rows.append(row)
    return rows


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def main():
    ap = argparse.ArgumentParser()
    for a in ("work", "out", "gpu", "driver", "commit", "stamp", "stages"):
        ap.add_argument("--" + a, required=True)
    args = ap.parse_args()
    work, out = pathlib.Path(args.work), pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = dict(s.split("=", 1) for s in args.stages.split())
    summary = {
        "gpu": args.gpu, "driver": args.driver, "commit": args.commit, "date": args.stamp,
        "stages": stages, "tests": test_counts(work),
        "memcheck": sanitizer(work, "memcheck"), "racecheck": sanitizer(work, "racecheck"),
        "benchmarks": benchmarks(work),
    }
    ratios = {}
    for row in summary["benchmarks"]:
        for k, v in row.items():
            if is_ratio(k) and isinstance(v, (int, float)):
                ratios.setdefault((row["suite"], k), []).append(v)
    summary["geomean_ratios"] = {f"{s}:{k}": geomean(v) for (s, k), v in ratios.items()}

    slug = re.sub(r"[^A-Za-z0-9]+", "-", args.gpu).strip("-").lower()
    base = out / f"{args.stamp[:10]}-{slug}-{args.commit}"
    base.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")

    md = [f"# gpu-check {args.stamp}", "",
          f"- GPU: {args.gpu}, driver {args.driver}", f"- commit: {args.commit}",
          "- stages: " + ", ".join(f"{k} {v}" for k, v in sorted(stages.items()))]
    t = summary["tests"]
    if t:
        md.append(f"- tests: {t['passed']} passed, {t['failures'] + t['errors']} failed, "
                  f"{t['skipped']} skipped of {t['tests']}")
        for name in t["failed_names"]:
            md.append(f"  - FAILED {name}")
    for tool in ("memcheck", "racecheck"):
        s = summary[tool]
        md.append(f"- compute-sanitizer {tool}: " +
                  ("not run" if s is None else f"{s['errors']} errors"))
    md += ["", "## Benchmarks", "", "| suite | benchmark | time | rates | ratios |", "|---|---|---|---|---|"]
    for row in summary["benchmarks"]:
        rates = ", ".join(f"{k} {row[k]:.4g}" for k in row if any(x in k for x in RATE_KEYS))
        rat = ", ".join(f"{k} {row[k]:.3f}" for k in row if is_ratio(k))
        time = "error: " + row["error"] if row.get("error") else f"{row['time']:.4g} {row['time_unit']}"
        md.append(f"| {row['suite']} | {row['name']} | {time} | {rates} | {rat} |")
    if summary["geomean_ratios"]:
        md += ["", "## Geometric means of ratios", ""]
        for k, v in sorted(summary["geomean_ratios"].items()):
            md.append(f"- {k}: {v:.3f}" if v else f"- {k}: n/a")
    base.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"summary: {base}.json and {base}.md")


if __name__ == "__main__":
    main()
