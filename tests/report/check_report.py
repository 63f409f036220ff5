#!/usr/bin/env python3
"""Opens study reports in headless Chromium, offline, and checks them as a user would see them.

usage: check_report.py --fixture PB_REPORT_FIXTURE --out DIR
       check_report.py --html REPORT.html [--expect-trials N] --out DIR

For each report: Chromium loads it from a file:// URL with every network request refused
(--host-resolver-rules maps every host to nothing, and an unreachable proxy catches the rest),
runs its scripts, and dumps the DOM. The report records on <body> whether it finished rendering
and how many console errors it saw, and on every chart how many marks it drew (tuning/report.h).
The test fails when the page did not finish, logged any console error (its own record or
Chromium's log), or any chart lacks its SVG or drew fewer marks than it expected; for axis plots
it also checks that every finished trial is drawn. A screenshot of the first screen is saved in
DIR (the test artifact).

Exit codes: 0 pass, 1 fail, 77 skipped (no Chromium and not in CI).
"""
import argparse
import html.parser
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# HTML elements without an end tag (the dump serialises SVG elements with explicit end tags).
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Dom(html.parser.HTMLParser):
    """Collects <body> attributes, the chart divs, and the SVG elements inside each chart."""

    def __init__(self):
        super().__init__()
        self.body = {}
        self.charts = {}  # id -> attrs, plus "svg": count of <svg> inside
        self.errors_text = ""
        self.external = []  # src/href attributes pointing outside the file
        self._stack = []  # chart id owning the current element (or None)
        self._in_errors = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            v = a.get(key) or ""
            if v.startswith(("http:", "https:", "//")) and tag in ("script", "link", "img", "iframe"):
                self.external.append(v)
        owner = self._stack[-1] if self._stack else None
        if tag == "body":
            self.body = a
        if tag == "div" and "pb-chart" in (a.get("class") or "").split():
            owner = a.get("id")
            self.charts[owner] = dict(a, svg=0)
        if tag == "svg" and owner:
            self.charts[owner]["svg"] += 1
        if tag == "pre" and a.get("id") == "pb-errors":
            self._in_errors = True
        if tag not in VOID:
            self._stack.append(owner)

    def handle_endtag(self, tag):
        if tag not in VOID and self._stack:
            self._stack.pop()
        if tag == "pre":
            self._in_errors = False

    def handle_startendtag(self, tag, attrs):
        # <x/>: a start and its end at once (the stack is unchanged)
        self.handle_starttag(tag, attrs)
        if tag not in VOID and self._stack:
            self._stack.pop()

    def handle_data(self, data):
        if self._in_errors:
            self.errors_text += data


def find_chromium():
    env = os.environ.get("CHROMIUM")
    if env:
        return env
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_args(chromium, profile):
    return [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--no-default-browser-check", "--disable-extensions", "--disable-sync",
        "--disable-background-networking", "--disable-component-update",
        "--disable-default-apps", "--mute-audio", f"--user-data-dir={profile}",
        # The network is off: no host resolves, and anything else goes to a dead proxy.
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=30000",
    ]


def run(cmd, timeout):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


def console_errors(stderr):
    """Chromium's own log of the page's console: errors and uncaught exceptions."""
    bad = []
    for line in stderr.splitlines():
        if "CONSOLE" in line and ("Uncaught" in line or ":ERROR:" in line or "error" in line.lower()):
            bad.append(line.strip())
        elif "Uncaught" in line:
            bad.append(line.strip())
    return bad


def check(chromium, report, out_dir, name, expect_trials):
    failures = []
    url = pathlib.Path(report).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="pb-chromium-") as profile:
        dump = run(chromium_args(chromium, profile) + ["--dump-dom", url], timeout=120)
    if dump.returncode != 0:
        return [f"{name}: chromium --dump-dom exited {dump.returncode}: {dump.stderr[-2000:]}"]
    (pathlib.Path(out_dir) / f"{name}.dom.html").write_text(dump.stdout)
    dom = Dom()
    dom.feed(dump.stdout)

    body = dom.body
    if body.get("data-pb-state") != "done":
        failures.append(f"{name}: the page did not finish rendering "
                        f"(data-pb-state={body.get('data-pb-state')!r})")
    if body.get("data-pb-errors") != "0":
        failures.append(f"{name}: {body.get('data-pb-errors')} console error(s): "
                        f"{dom.errors_text.strip()[:2000]}")
    for line in console_errors(dump.stderr):
        failures.append(f"{name}: chromium log: {line[:500]}")
    if dom.external:
        failures.append(f"{name}: references the network: {dom.external[:5]}")
    if not dom.charts:
        failures.append(f"{name}: no chart found")
    if body.get("data-pb-charts") != str(len(dom.charts)):
        failures.append(f"{name}: {body.get('data-pb-charts')} of {len(dom.charts)} charts embedded")
    for cid, c in sorted(dom.charts.items()):
        expected = int(c.get("data-expected-marks", "-1"))
        rendered = int(c.get("data-rendered-marks", "-1"))
        if c["svg"] < 1:
            failures.append(f"{name}: chart {cid} has no <svg>")
        if rendered != expected:
            failures.append(f"{name}: chart {cid} drew {rendered} marks, expected {expected}")
        if cid.startswith("chart-axis-") and expect_trials is not None and expected != expect_trials:
            failures.append(f"{name}: axis chart {cid} expects {expected} marks, but the study has "
                            f"{expect_trials} finished trials")
    print(f"{name}: state={body.get('data-pb-state')} charts={body.get('data-pb-charts')}/"
          f"{len(dom.charts)} errors={body.get('data-pb-errors')} marks="
          + ",".join(f"{cid}:{c.get('data-rendered-marks')}/{c.get('data-expected-marks')}"
                     for cid, c in sorted(dom.charts.items())))

    shot = pathlib.Path(out_dir).resolve() / f"{name}.png"
    with tempfile.TemporaryDirectory(prefix="pb-chromium-") as profile:
        r = run(chromium_args(chromium, profile) +
                ["--hide-scrollbars", "--window-size=1280,900", f"--screenshot={shot}", url],
                timeout=120)
    if r.returncode != 0 or not shot.exists() or shot.stat().st_size < 5000:
        failures.append(f"{name}: screenshot failed ({r.returncode}): {r.stderr[-1000:]}")
    else:
        print(f"{name}: screenshot {shot}")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture", help="pb_report_fixture: writes full.html, empty.html")
    ap.add_argument("--html", help="a report to check")
    ap.add_argument("--expect-trials", type=int)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    chromium = find_chromium()
    if not chromium:
        msg = "check_report: no chromium (install Debian's chromium: scripts/setup)"
        if os.environ.get("CI"):
            print(msg + " -- required in CI", file=sys.stderr)
            return 1
        print(msg + "; skipped", file=sys.stderr)
        return 77
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    reports = []
    if args.fixture:
        r = run([args.fixture, str(out)], timeout=120)
        if r.returncode != 0:
            print(f"fixture failed: {r.stderr}", file=sys.stderr)
            return 1
        expect = json.loads((out / "expect.json").read_text())
        reports += [(str(out / f"{n}.html"), n, expect[n]["trials_drawn"]) for n in ("full", "empty")]
    if args.html:
        reports.append((args.html, pathlib.Path(args.html).stem, args.expect_trials))
    if not reports:
        ap.error("give --fixture and/or --html")

    failures = []
    for path, name, trials in reports:
        failures += check(chromium, path, out, name, trials)
    for f in failures:
        print("FAIL " + f, file=sys.stderr)
    print(f"{len(reports) - len({f.split(':')[0] for f in failures})} passed, "
          f"{len({f.split(':')[0] for f in failures})} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
