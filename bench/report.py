#!/usr/bin/env python3
"""Turns the raw results of bench/run.sh into the tables of docs/benchmarks.md.

results.tsv: case test target rep rps p50_ms p99_ms cpu_ticks requests
idle.tsv:    target n rss_before_kb rss_after_kb
Ratios are paired: target / direct in the same repetition, then the median over repetitions.
"""
import os
import statistics
import sys
from collections import defaultdict

# proxy-cold: the proxy with --warm-connections 0 (connect case only); proxy-t1: the proxy
# with --threads 1 (bench/run.sh --threads-variant); proxy-unix: the proxy with its client on
# a Unix socket (--unix-variant).
# proxy-shared: the proxy with shared upstream connections (--pool-size).
# direct-plain: redis-server's plain-TCP port, in the connect case only (the floor: no TLS).
# proxy-base: another build of the proxy (BASE_BIN), for a regression check paired in one run.
TARGETS = ["direct", "proxy", "proxy-base", "proxy-shared", "proxy-cold", "proxy-t1", "proxy-unix", "stunnel",
           "haproxy", "direct-plain"]
# (case, test) -> minimum ratio the proxy must reach.
RATIO_TARGETS = {"c50-P16": 0.90, "c50-P1": 0.65, "c1-P1": 0.85}
# The same for the shared mode (issue 14).
SHARED_RATIO_TARGETS = {"c50-P1": 0.80, "c50-P16": 0.70}
MEM_TARGET_KB = 12.0
SHARED_MEM_TARGET_KB = 3.0
CPU_TARGET_US = 1.0


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main(results, idle, hz, bigrss=None):
    rows = defaultdict(dict)  # (case, test, target) -> rep -> fields
    order = []
    with open(results) as f:
        for line in f:
            f = line.split()
            case, test, target, rep, rps, p50, p99, ticks, reqs = f[:9]
            # Optional: redis-server CPU ticks and wall milliseconds of the run.
            busy = int(f[9]) * 1000.0 / hz / int(f[10]) if len(f) > 10 and int(f[10]) > 0 else None
            key = (case, test)
            if key not in order:
                order.append(key)
            rows[(case, test, target)][int(rep)] = (
                float(rps), float(p50), float(p99), int(ticks), int(reqs), busy,
                # client (redis-benchmark) CPU µs per request
                int(f[11]) / int(reqs) if len(f) > 11 and int(reqs) > 0 else None)
    out = []
    out.append("| case | test | target | req/s (median) | p50 ms | p99 ms | ratio vs direct | sidecar CPU µs/req | client CPU µs/req | CPU-bound ratio | redis-server busy |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for case, test in order:
        direct = rows.get((case, test, "direct"), {})
        for target in TARGETS:
            reps = rows.get((case, test, target))
            if not reps:
                continue
            rps = statistics.median(r[0] for r in reps.values())
            p50 = statistics.median(r[1] for r in reps.values())
            p99 = statistics.median(r[2] for r in reps.values())
            ratio = None
            cpu = None
            if target != "direct":
                paired = [reps[k][0] / direct[k][0] for k in reps if k in direct and direct[k][0] > 0]
                if case == "connect":
                    # Lower is better for connect time: compare p50 times instead.
                    paired = [reps[k][1] / direct[k][1] for k in reps if k in direct and direct[k][1] > 0]
                ratio = statistics.median(paired) if paired else None
                cpus = [r[3] * 1e6 / hz / r[4] for r in reps.values() if r[4] > 0]
                cpu = statistics.median(cpus) if cpus else None
            clients = [r[6] for r in reps.values() if len(r) > 6 and r[6] is not None]
            client = statistics.median(clients) if clients else None
            # What the ratio would be if CPU 0 (client + sidecar) were the only limit:
            # direct's client CPU per request over this target's client + sidecar CPU.
            cpu_ratio = None
            if target != "direct":
                est = [direct[k][6] / (reps[k][6] + reps[k][3] * 1e6 / hz / reps[k][4])
                       for k in reps if k in direct and len(reps[k]) > 6
                       and reps[k][6] is not None and direct[k][6] is not None and reps[k][6] > 0]
                cpu_ratio = statistics.median(est) if est else None
            busys = [r[5] for r in reps.values() if len(r) > 5 and r[5] is not None]
            busy = "%.0f%%" % (100 * statistics.median(busys)) if busys else "-"
            summary[(case, test, target)] = (ratio, cpu, cpu_ratio)
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                case, test, target, fmt(rps, ",.0f" if rps >= 100 else ",.2f"), fmt(p50, ".3f"),
                fmt(p99, ".3f"), fmt(ratio, ".3f"), fmt(cpu, ".2f"), fmt(client, ".2f"),
                fmt(cpu_ratio, ".3f"), busy))
    out.append("")
    out.append("client CPU: redis-benchmark's user+sys time per request. CPU-bound ratio: direct's "
               "client CPU per request over (this target's client + sidecar CPU per request), paired "
               "per repetition: the throughput ratio to expect where CPU 0 is the only limit; it "
               "hardly moves with the machine's load, unlike the measured ratio.")
    out.append("redis-server busy: its CPU time over the run's wall time (median); near 100% the "
               "server, not the sidecar, limits the run and the ratio says little about the sidecar.")
    out.append("connect: req/s is connections per second of one sequential client; its ratio is the "
               "p50 connect-to-first-reply time against direct TLS (lower is better).")
    out.append("")
    mem = {}
    if idle and os.path.exists(idle):
        out.append("| target | idle connections | RSS before (KiB) | RSS after (KiB) | per connection (kB) |")
        out.append("|---|---:|---:|---:|---:|")
        with open(idle) as f:
            for line in f:
                target, n, before, after = line.split()
                per = (int(after) - int(before)) * 1024 / int(n) / 1000
                mem.setdefault(target, []).append(per)
                out.append("| %s | %s | %s | %s | %.1f |" % (target, n, before, after, per))
        out.append("")
    big = {}
    if bigrss and os.path.exists(bigrss) and os.path.getsize(bigrss) > 0:
        out.append("Large values: RSS peak growth of a fresh sidecar while the values move "
                   "(median over repetitions; each GET reply checked byte for byte):")
        out.append("")
        out.append("| target | clients | value (MiB) | RSS before (KiB) | peak growth (MiB, median) | runs | seconds (median) |")
        out.append("|---|---:|---:|---:|---:|---|---:|")
        big_rows = {}
        with open(bigrss) as f:
            for line in f:
                target, _rep, nc, size, before, peak, secs = line.split()
                big_rows.setdefault((target, int(nc), int(size)), []).append(
                    (int(before), (int(peak) - int(before)) / 1024, float(secs)))
        for (target, nc, size), runs in big_rows.items():
            growth = statistics.median(r[1] for r in runs)
            big[(target, nc)] = growth
            out.append("| %s | %d | %.0f | %d | %.1f | %s | %.2f |" % (
                target, nc, size / 1048576, runs[0][0], growth,
                ", ".join("%.1f" % r[1] for r in runs), statistics.median(r[2] for r in runs)))
        out.append("")
    out.append("Targets for the proxy (ratios vs direct TLS in the same run):")
    for case, goal in RATIO_TARGETS.items():
        for test in ("SET", "GET"):
            r, _, est = summary.get((case, test, "proxy"), (None, None, None))
            verdict = "n/a" if r is None else ("met" if r >= goal else "NOT met")
            v2 = "n/a" if est is None else ("met" if est >= goal else "NOT met")
            out.append("- %s %s: measured %s: %s; CPU-bound %s: %s (target >= %.2f)" % (
                case, test, fmt(r, ".3f"), verdict, fmt(est, ".3f"), v2, goal))
    for case, goal in SHARED_RATIO_TARGETS.items():
        for test in ("SET", "GET"):
            r, _, est = summary.get((case, test, "proxy-shared"), (None, None, None))
            verdict = "n/a" if r is None else ("met" if r >= goal else "NOT met")
            v2 = "n/a" if est is None else ("met" if est >= goal else "NOT met")
            out.append("- shared mode %s %s: measured %s: %s; CPU-bound %s: %s (target >= %.2f)" % (
                case, test, fmt(r, ".3f"), verdict, fmt(est, ".3f"), v2, goal))
    if "proxy" in mem:
        worst = max(mem["proxy"])
        out.append("- idle memory per connection: %.1f kB worst (target <= %.0f kB): %s" % (
            worst, MEM_TARGET_KB, "met" if worst <= MEM_TARGET_KB else "NOT met"))
    if "proxy-shared" in mem:
        worst = max(mem["proxy-shared"])
        out.append("- shared mode, idle memory per client: %.1f kB worst (target <= %.0f kB): %s" % (
            worst, SHARED_MEM_TARGET_KB, "met" if worst <= SHARED_MEM_TARGET_KB else "NOT met"))
    for (target, nc), growth in big.items():
        if target != "proxy":
            continue
        goal = 8 if nc == 1 else 64
        out.append("- large values, %d client(s): proxy RSS peak growth %.1f MiB (target < %d MiB): %s"
                   % (nc, growth, goal, "met" if growth < goal else "NOT met"))
    for test in ("SET", "GET"):
        c = summary.get(("c50-P16", test, "proxy"), (None, None, None))[1]
        verdict = "n/a" if c is None else ("met" if c <= CPU_TARGET_US else "NOT met")
        out.append("- CPU per request at -P 16 %s: %s µs (target <= %.1f µs): %s" % (
            test, fmt(c, ".2f"), CPU_TARGET_US, verdict))
    # The regression check against a baseline build (BASE_BIN), paired repetition by repetition.
    if any(t == "proxy-base" for (_, _, t) in rows):
        out.append("")
        out.append("Against the baseline build (proxy-base), paired in each repetition "
                   "(proxy / proxy-base; below 1 is better for CPU and memory):")
        for case, test in order:
            new, old = rows.get((case, test, "proxy"), {}), rows.get((case, test, "proxy-base"), {})
            tput = [new[k][0] / old[k][0] for k in new if k in old and old[k][0] > 0]
            cpu = [(new[k][3] / new[k][4]) / (old[k][3] / old[k][4])
                   for k in new if k in old and new[k][4] > 0 and old[k][4] > 0 and old[k][3] > 0]
            out.append("- %s %s: throughput %s, sidecar CPU per request %s" % (
                case, test, fmt(statistics.median(tput) if tput else None, ".3f"),
                fmt(statistics.median(cpu) if cpu else None, ".3f")))
        if "proxy" in mem and "proxy-base" in mem:
            out.append("- idle memory per connection: %s kB against %s kB" % (
                "/".join("%.2f" % m for m in mem["proxy"]),
                "/".join("%.2f" % m for m in mem["proxy-base"])))
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None,
         float(sys.argv[3]) if len(sys.argv) > 3 else 100.0,
         sys.argv[4] if len(sys.argv) > 4 else None)
