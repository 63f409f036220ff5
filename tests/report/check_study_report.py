#!/usr/bin/env python3
"""End to end: a tiny real study, its reruns and its report, through the playbook executable.

usage: check_study_report.py --playbook PLAYBOOK --source SOURCE_DIR --out DIR

1. `playbook study run` a 4-trial MLP study (60 steps each, CPU) in DIR/study;
2. `playbook study rerun --best 2 --seeds 2`: 2 child studies of 2 trials in DIR/study/reruns;
3. `playbook report --json --text`: the JSON's counts, best trial, curves and trial variance
   must match what the store says (read back with sqlite3), and the text must hold the verdicts;
4. bad input: a missing directory, a directory without study.db and a corrupt study.db each end
   with exit code 1 and a one-line message, not a crash;
5. the report in headless Chromium (check_report.py), when Chromium is installed.
"""
import argparse
import json
import pathlib
import sqlite3
import subprocess
import sys

STUDY = """
name = "e2e_report"
base = "{base}"
trials = 4
seed = 3
[fixed]
train.max_train_steps = 60
train.eval_every = 20
train.log_every = 10
train.checkpoint_every = 60
data.workers = 1
[search.optimizer.learning_rate]
scale = "log"
min = 0.01
max = 0.5
"""


def run(cmd, **kw):
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=600, **kw)


def must(cmd, **kw):
    r = run(cmd, **kw)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"FAIL: exit {r.returncode}: {' '.join(str(c) for c in cmd)}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--playbook", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = pathlib.Path(a.out).resolve()
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    base = pathlib.Path(a.source).resolve() / "configs" / "mlp_fashion_mnist.toml"
    (out / "study.toml").write_text(STUDY.format(base=base))
    study = out / "study"
    failures = []

    must([a.playbook, "study", "run", out / "study.toml", "--dir", study, "--devices", "cpu",
          "--workers", "2"])
    rr = must([a.playbook, "study", "rerun", study, "--best", "2", "--seeds", "2", "--devices",
               "cpu", "--workers", "2"])
    if "trial variance:" not in rr.stdout:
        failures.append("study rerun printed no trial variance")
    r = must([a.playbook, "report", study, "--json", out / "report.json", "--text"])
    text = r.stdout
    j = json.loads((out / "report.json").read_text())

    # The store's own view, independently of the report.
    db = sqlite3.connect(f"file:{study / 'study.db'}?mode=ro", uri=True)
    cols = [c[1] for c in db.execute("PRAGMA table_info(trials)")]
    rows = [dict(zip(cols, r)) for r in db.execute("SELECT * FROM trials")]
    completed = [t for t in rows if t["status"] == "completed" and t["objective"] is not None]
    if j["counts"]["total"] != len(rows):
        failures.append(f"report counts {j['counts']['total']} trials, store has {len(rows)}")
    if j["counts"]["completed"] != len(completed):
        failures.append(f"report counts {j['counts']['completed']} completed, store has "
                        f"{len(completed)}")
    if completed:
        best = min(completed, key=lambda t: (t["objective"], t["idx"]))
        if abs(j["best_objective"] - best["objective"]) > 1e-12 or j["best_trial"] != best["idx"]:
            failures.append(f"best trial {j['best_trial']} ({j['best_objective']}) != store's "
                            f"{best['idx']} ({best['objective']})")
        if not j["curves"]:
            failures.append("no training curve diagnosed")
    groups = j.get("trial_variance", {}).get("groups", [])
    if len(groups) != min(2, len(completed)) or any(g["n"] != 2 for g in groups):
        failures.append(f"trial variance groups {groups}: expected 2 groups of 2 reruns")
    for needle in ("Verdicts:", "Search space boundaries:", "Sampled enough?", "Trial variance:"):
        if needle not in text:
            failures.append(f"--text lacks '{needle}'")

    # Bad input: one line, exit code 1.
    (out / "empty").mkdir()
    (out / "corrupt").mkdir()
    (out / "corrupt" / "study.db").write_bytes(b"not a database" * 100)
    for d, needle in ((out / "missing", "no such study directory"),
                      (out / "empty", "no study.db"),
                      (out / "corrupt", "cannot read the study")):
        r = run([a.playbook, "report", d])
        if r.returncode != 1 or needle not in r.stderr or "terminate" in r.stderr:
            failures.append(f"report {d.name}: exit {r.returncode}, stderr {r.stderr.strip()!r}")

    # The report as a user sees it.
    checker = pathlib.Path(__file__).with_name("check_report.py")
    r = run([sys.executable, checker, "--html", study / "report.html", "--expect-trials",
             str(sum(t["status"] in ("completed", "infeasible", "failed") for t in rows)),
             "--out", out / "browser"])
    print(r.stdout, r.stderr, sep="")
    if r.returncode not in (0, 77):
        failures.append("the report failed in the browser (see above)")

    for f in failures:
        print("FAIL " + f, file=sys.stderr)
    print(f"{0 if failures else 1} passed, {1 if failures else 0} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
