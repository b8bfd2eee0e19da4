#!/usr/bin/env python3
"""Builds every test binary of the workspace once, then runs them side by side.

    scripts/run_tests.py [CARGO TEST ARGS...]     (default: --workspace --all-targets)
    scripts/run_tests.py --artifacts FILE        (the binaries a build already listed: FILE
                                                 holds `cargo test --no-run
                                                 --message-format=json` output)

`cargo test` runs its test binaries one after another, and most of their time is spent
waiting (token expiries, redis-server start-up, real clients' timeouts), so on a 2-core
machine running them at once takes the wall time of the longest one, not the sum. Each binary
runs in its package's directory, as `cargo test` runs it; its output goes to a file and is
printed whole when it ends; at the end, one summary line per binary and the failed ones' names.

Environment:
  TEST_THREADS_IT   test threads of the `it` binary (default 4: its tests mostly wait)
  TEST_SERIAL=1     run the binaries one at a time, as `cargo test` does

Exit status: 0 if every binary passed, 1 otherwise (every binary is run either way).
"""

import json
import os
import subprocess
import sys
import tempfile
import time


def build(cargo_args):
    """Builds the test binaries; returns [(label, cwd, executable)]."""
    cmd = ["cargo", "test", *cargo_args, "--no-run", "--message-format=json-render-diagnostics"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    found = test_binaries(proc.stdout)
    if proc.wait() != 0:
        sys.exit(proc.returncode or 1)
    return found


def test_binaries(messages):
    """The test binaries in cargo's JSON messages: [(label, cwd, executable)]."""
    found = []
    for line in messages:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue  # a binary built for the tests to run, not a test binary itself
        target = msg["target"]
        kind = target["kind"][0]
        label = target["name"] if kind == "test" else f"{target['name']} ({kind} unit tests)"
        found.append((label, os.path.dirname(msg["manifest_path"]), msg["executable"]))
    return found


def main():
    if sys.argv[1:2] == ["--artifacts"]:
        with open(sys.argv[2]) as messages:
            binaries = test_binaries(messages)
        if not binaries:
            sys.exit(f"no test binary listed in {sys.argv[2]}")
    else:
        binaries = build(sys.argv[1:] or ["--workspace", "--all-targets"])
    serial = os.environ.get("TEST_SERIAL") == "1"
    it_threads = os.environ.get("TEST_THREADS_IT", "4")
    logs = tempfile.mkdtemp(prefix="run-tests-")
    running = []
    pending = list(binaries)
    results = []
    started_all = time.monotonic()

    def start(label, cwd, exe):
        args = [exe]
        if os.path.basename(exe).split("-")[0] == "it":
            args.append(f"--test-threads={it_threads}")
        log = open(os.path.join(logs, f"{len(running) + len(results)}.log"), "w+")
        proc = subprocess.Popen(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        running.append((label, proc, log, time.monotonic()))
        print(f"==> started {label}", flush=True)

    def finish(entry):
        label, proc, log, t0 = entry
        running.remove(entry)
        log.seek(0)
        text = log.read()
        log.close()
        secs = time.monotonic() - t0
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        print(f"\n==> {label}: {status} in {secs:.0f} s\n{text}", flush=True)
        results.append((label, proc.returncode, text))

    while pending or running:
        while pending and (not serial or not running):
            start(*pending.pop(0))
        for entry in list(running):
            if entry[1].poll() is not None:
                finish(entry)
        time.sleep(0.2)

    failed = [(label, text) for label, code, text in results if code != 0]
    print(f"==> {len(results)} test binaries in {time.monotonic() - started_all:.0f} s")
    for label, code, text in results:
        summary = [l for l in text.splitlines() if l.startswith("test result:")]
        print(f"    {label}: {summary[-1] if summary else f'no summary, exit {code}'}")
    if failed:
        print("==> failed: " + ", ".join(label for label, _ in failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
