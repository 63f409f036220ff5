#!/usr/bin/env python3
"""Writes the JSON + Markdown summary of a scripts/gpu-run run (summary.json, summary.md).

Reads the run's log folder (--work):
  meta.json               GPU, driver, commit, date, deadline (written by gpu-run)
  stages.tsv              stage, status, seconds, cap
  manifest.json           what gpu-pack packed (commit, build type, architectures, sizes)
  tests/*.xml             gtest XML of the CUDA test binaries: every test's pass/fail/skip
  bench/pb_bench_*.json   Google Benchmark JSON: time, TFLOP/s or GB/s, ratio to the baseline
  bench/pytorch_fused_adam.json   PyTorch's fused Adam on the ResNet-50 parameter set
  sanitizer/{memcheck,racecheck,synccheck}.log    compute-sanitizer reports
  e2e/<run>/metrics.jsonl, e2e/pytorch_<model>.json   playbook train and PyTorch step times
Every input may be missing (a stage skipped or killed): the summary says what is there and
which stages did not finish. Needs only the Python standard library.

Usage: bench/summarize.py --work LOGS --out DIR
"""
import argparse
import json
import math
import pathlib
import re
import statistics
import xml.etree.ElementTree as ET

# Counters that say how fast a kernel is, and how close it is to its baseline or ceiling.
RATE_KEYS = ("TFLOP/s", "GFLOP/s", "gflops", "GB/s")
RATIO_RE = re.compile(r"(^|_)(ratio|frac)(_|$)")
NOT_RATES = ("median_us", "params", "tensors", "cudnn_algo")


def is_ratio(key):
    return bool(RATIO_RE.search(key))


def is_rate(key):
    return any(k in key for k in RATE_KEYS)


def read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_stages(work):
    stages = []
    path = work / "stages.tsv"
    if not path.exists():
        return stages
    lines = path.read_text().splitlines()
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) >= 4:
            stages.append({"stage": parts[0], "status": parts[1], "seconds": int(parts[2] or 0),
                           "cap": int(parts[3] or 0)})
    return stages


def read_tests(work):
    """Every test case of every gtest XML under tests/: name, status, seconds."""
    cases = []
    for path in sorted((work / "tests").glob("*.xml")):
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError):
            cases.append({"binary": path.stem, "name": "(unreadable XML)", "status": "failed"})
            continue
        for case in root.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                status = "failed"
            elif case.get("result") == "skipped" or case.find("skipped") is not None:
                status = "skipped"
            elif case.get("status") == "notrun":
                status = "not run"
            else:
                status = "passed"
            row = {"binary": path.stem, "name": f"{case.get('classname')}.{case.get('name')}",
                   "status": status, "seconds": float(case.get("time", 0) or 0)}
            failure = case.find("failure")
            if failure is not None:
                row["message"] = (failure.get("message") or "")[:500]
            cases.append(row)
    return cases


def read_benchmarks(work):
    rows = []
    for path in sorted((work / "bench").glob("pb_bench_*.json")):
        data = read_json(path)
        if not data:
            rows.append({"suite": path.stem, "name": "(unreadable JSON)", "error": "no data"})
            continue
        for b in data.get("benchmarks", []):
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
                continue
            row = {"suite": path.stem, "name": b["name"], "time": b.get("real_time"),
                   "time_unit": b.get("time_unit")}
            if b.get("error_occurred") or b.get("error_message"):
                row["error"] = b.get("error_message") or "error"
            for k, v in b.items():
                if k in NOT_RATES or not isinstance(v, (int, float)) or isinstance(v, bool):
                    continue
                if is_rate(k) or is_ratio(k):
                    row[k] = v
            rows.append(row)
    torch_adam = read_json(work / "bench" / "pytorch_fused_adam.json")
    if torch_adam:
        for impl in ("fused", "foreach"):
            r = torch_adam.get(impl)
            if isinstance(r, dict):
                rows.append({"suite": "pytorch", "name": f"torch.optim.Adam({impl}=True)",
                             "time": r.get("us"), "time_unit": "us", "GB/s": r.get("GB/s"),
                             "copy_frac": r.get("copy_frac")})
        fused = (torch_adam.get("fused") or {}).get("GB/s")
        if fused:
            for row in rows:
                if row["suite"].startswith("pb_bench_optim") and \
                        re.match(r"BM_FusedUpdate/adam(/|$)", row["name"]) and row.get("GB/s"):
                    row["ratio_vs_torch_fused"] = row["GB/s"] / fused
    return rows


def read_sanitizer(work, tool):
    path = work / "sanitizer" / f"{tool}.log"
    if not path.exists():
        return None
    text = path.read_text(errors="replace")
    counts = [int(m) for m in re.findall(r"ERROR SUMMARY: (\d+) error", text)]
    return {"errors": sum(counts) if counts else None, "runs": len(counts),
            "unsupported": "Device not supported" in text, "log_tail": text[-1500:]}


def step_time_from_metrics(path):
    """Median step time (ms) and examples/s of a playbook run, skipping the first logged line."""
    if not path.exists():
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    eps = [r["examples_per_sec"] for r in rows if isinstance(r.get("examples_per_sec"), (int, float))]
    if len(eps) > 1:
        eps = eps[1:]  # the first interval holds the warm-up (allocations, first launches)
    if not eps:
        return None
    return {"examples_per_sec": statistics.median(eps), "logged_intervals": len(eps),
            "last_step": rows[-1].get("step") if rows else None}


def read_e2e(work):
    out = {}
    for model, batch in (("resnet50", 64), ("resnet20", 128)):
        entry = {"batch_size": batch}
        ours = step_time_from_metrics(work / "e2e" / model / "metrics.jsonl")
        if ours:
            entry["playbook_examples_per_sec"] = ours["examples_per_sec"]
            entry["playbook_step_ms"] = 1e3 * batch / ours["examples_per_sec"]
            entry["playbook_last_step"] = ours["last_step"]
        summary = read_json(work / "e2e" / model / "summary.json")
        if summary:
            entry["playbook_status"] = summary.get("status")
        torch = read_json(work / "e2e" / f"pytorch_{model}.json")
        if torch:
            entry["pytorch_step_ms"] = torch.get("step_ms")
            entry["pytorch_examples_per_sec"] = torch.get("examples_per_sec")
        if entry.get("playbook_step_ms") and entry.get("pytorch_step_ms"):
            entry["ratio_vs_pytorch"] = entry["pytorch_step_ms"] / entry["playbook_step_ms"]
        if len(entry) > 1:
            out[model] = entry
    return out


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def fmt(v, spec=".4g"):
    return "-" if v is None else format(v, spec)


def markdown(s):
    meta = s["meta"]
    md = [f"# gpu-run {meta.get('date', '')}", "",
          f"- GPU: {meta.get('gpu')}, driver {meta.get('driver')}",
          f"- commit: {meta.get('commit')}" + (f" (packed {s['manifest'].get('packed')})"
                                                if s.get("manifest") else ""),
          f"- deadline {meta.get('deadline_s')} s; stages took {s['stage_seconds']} s"]
    if meta.get("ldd_missing"):
        md.append(f"- libraries not found: {meta['ldd_missing']}")
    md += ["", "## Stages", "", "| stage | status | seconds | cap |", "|---|---|---|---|"]
    for st in s["stages"]:
        md.append(f"| {st['stage']} | {st['status']} | {st['seconds']} | {st['cap']} |")
    if s["unfinished_stages"]:
        md += ["", "Did not finish: " + ", ".join(s["unfinished_stages"])]
    if s["skipped_stages"]:
        md += ["", "Skipped (no device): " + ", ".join(s["skipped_stages"])]
    t = s["test_counts"]
    md += ["", "## Tests", ""]
    if t["total"]:
        md.append(f"{t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped, "
                  f"{t['not run']} not run, of {t['total']}")
        for case in s["tests"]:
            if case["status"] == "failed":
                md.append(f"- FAILED {case['name']}: {case.get('message', '')[:200]}")
    else:
        md.append("no test results")
    md += ["", "## Sanitizers", ""]
    for tool in ("memcheck", "racecheck", "synccheck"):
        r = s["sanitizers"].get(tool)
        if r is None:
            md.append(f"- {tool}: not run")
        elif r["unsupported"]:
            md.append(f"- {tool}: compute-sanitizer does not support this device")
        else:
            md.append(f"- {tool}: {fmt(r['errors'], 'd') if r['errors'] is not None else 'no summary'}"
                      f" errors over {r['runs']} runs")
    md += ["", "## Benchmarks", "",
           "| suite | benchmark | time | rate | baseline rate | ratio to baseline |",
           "|---|---|---|---|---|---|"]
    for row in s["benchmarks"]:
        rates = [k for k in row if is_rate(k)]
        ours = [k for k in rates if not re.match(r"^(cublas|cudnn|copy)_", k)]
        base = [k for k in rates if k not in ours]
        ratios = [k for k in row if is_ratio(k)]
        time = ("error: " + row["error"]) if row.get("error") else \
            f"{fmt(row.get('time'))} {row.get('time_unit') or ''}"
        md.append("| {} | {} | {} | {} | {} | {} |".format(
            row["suite"], row["name"], time,
            ", ".join(f"{fmt(row[k])} {k}" for k in ours),
            ", ".join(f"{fmt(row[k])} {k}" for k in base),
            ", ".join(f"{k} {fmt(row[k], '.3f')}" for k in ratios)))
    if s["geomean_ratios"]:
        md += ["", "Geometric means of the ratios:", ""]
        for k, v in sorted(s["geomean_ratios"].items()):
            md.append(f"- {k}: {fmt(v, '.3f')}")
    md += ["", "## End to end (training step time)", ""]
    if s["e2e"]:
        md += ["| model | batch | playbook ms/step | PyTorch ms/step | PyTorch / playbook |",
               "|---|---|---|---|---|"]
        for model, e in s["e2e"].items():
            md.append(f"| {model} | {e['batch_size']} | {fmt(e.get('playbook_step_ms'), '.2f')} | "
                      f"{fmt(e.get('pytorch_step_ms'), '.2f')} | {fmt(e.get('ratio_vs_pytorch'), '.3f')} |")
    else:
        md.append("no end-to-end results")
    return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="gpu-run's log folder")
    ap.add_argument("--out", required=True, help="folder for summary.json and summary.md")
    args = ap.parse_args()
    work, out = pathlib.Path(args.work), pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    stages = read_stages(work)
    tests = read_tests(work)
    counts = {k: sum(1 for c in tests if c["status"] == k)
              for k in ("passed", "failed", "skipped", "not run")}
    counts["total"] = len(tests)
    benchmarks = read_benchmarks(work)
    ratios = {}
    for row in benchmarks:
        for k, v in row.items():
            if is_ratio(k) and isinstance(v, (int, float)):
                ratios.setdefault(f"{row['suite']}:{k}", []).append(v)
    summary = {
        "meta": read_json(work / "meta.json") or {},
        "manifest": read_json(work / "manifest.json"),
        "stages": stages,
        "stage_seconds": sum(st["seconds"] for st in stages),
        "unfinished_stages": [st["stage"] for st in stages
                              if st["status"] != "pass" and "no device" not in st["status"]],
        "skipped_stages": [st["stage"] for st in stages if "no device" in st["status"]],
        "test_counts": counts,
        "tests": tests,
        "sanitizers": {t: read_sanitizer(work, t) for t in ("memcheck", "racecheck", "synccheck")},
        "benchmarks": benchmarks,
        "geomean_ratios": {k: geomean(v) for k, v in ratios.items()},
        "e2e": read_e2e(work),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    print(f"summary: {out / 'summary.json'} and {out / 'summary.md'}")


if __name__ == "__main__":
    main()
