#!/usr/bin/env bash
# The one test command: installs what the tests need when missing, then runs the formatter
# check, clippy (warnings are errors) and every test target against a real redis-server.
set -euo pipefail

cd "$(dirname "$0")/.."

# Each step's line carries the seconds since the start, so a slow run (CI's included) shows
# where its time went.
say() { echo "==> [+${SECONDS}s] $*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

apt_updated=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: missing $*, and apt-get is not available to install it" >&2
        exit 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

# The tests start a real TLS redis-server; redis-tools brings redis-cli.
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
# promtool: tests/it/prometheus.rs checks and unit-tests the alert rules with it.
command -v promtool >/dev/null 2>&1 || apt_install prometheus
# openssl: the credential tests make PFX files with it.
command -v openssl >/dev/null 2>&1 || apt_install openssl
# libfaketime: the clock-jump test moves the proxy's wall clock with it.
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || apt_install faketime
# A C compiler: aws-lc-rs builds its crypto code with it.
command -v cc >/dev/null 2>&1 || apt_install build-essential
# redis-py: tests/cluster_client.py (the cluster-mode tests' client) uses its RedisCluster.
command -v python3 >/dev/null 2>&1 || apt_install python3
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
if ! python3 -c 'import redis' >/dev/null 2>&1; then
    # Debian's own python3 refuses pip installs outside a venv unless told otherwise.
    python3 -m pip install -q redis==6.4.0 ||
        python3 -m pip install -q --break-system-packages redis==6.4.0
fi

# Node.js clients: tests/it/node_clients.rs drives node-redis and ioredis, pinned in
# tests/clients/package.json and its lock file (which names no registry host).
command -v node >/dev/null 2>&1 || apt_install nodejs
command -v npm >/dev/null 2>&1 || apt_install npm
if ! (cd tests/clients && node -e '
    const deps = require("./package.json").dependencies;
    for (const [name, version] of Object.entries(deps)) {
        if (require(`./node_modules/${name}/package.json`).version !== version) process.exit(1);
    }' >/dev/null 2>&1); then
    (cd tests/clients && npm ci --no-audit --no-fund)
fi

# rustfmt and clippy come with most toolchains; add them if this one lacks them.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
        rustup component add rustfmt clippy
    fi
fi
# clippy-driver (it comes with clippy) lints inside the test build, below; where it cannot be
# found, clippy runs as a build of its own beside the tests instead (slower, same checks).
clippy_driver=$(command -v clippy-driver || true)
if [ -z "$clippy_driver" ] && [ -x "$(rustc --print sysroot)/bin/clippy-driver" ]; then
    clippy_driver="$(rustc --print sysroot)/bin/clippy-driver"
fi

say "cargo fmt --all -- --check"
cargo fmt --all -- --check

TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# CI builds from scratch once: incremental compilation only adds work there.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
fi

# The differential test draws its sequences from a random seed unless DIFF_SEED is set. The
# test command fixes one, so that a run is repeatable and a failure in CI replays exactly;
# set DIFF_SEED (and DIFF_SEQUENCES) to explore others: thousands of random sequences are run
# that way before a change to the session lands (docs/session.md, "The differential test").
export DIFF_SEED="${DIFF_SEED:-16466490819661253195}"

# Clippy lints inside the test build: with clippy-driver as the workspace's compiler (what
# `cargo clippy` does, over a `cargo check`), the workspace's crates are linted as they are
# compiled, and the dependencies are compiled once instead of a second time in check mode
# (about 290 s of CPU on a fresh clone, a quarter of the whole run). CLIPPY_ARGS is how
# `cargo clippy -- -D warnings` hands its flags to clippy-driver: warnings, rustc's and
# clippy's, are errors.
say "cargo test --workspace --all-targets --no-run, linted by clippy (-D warnings)"
artifacts=$(mktemp)
trap 'rm -f "$artifacts"' EXIT
if [ -n "$clippy_driver" ]; then
    RUSTC_WORKSPACE_WRAPPER="$clippy_driver" \
        CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" \
        cargo test --workspace --all-targets --no-run --message-format=json-render-diagnostics >"$artifacts"
else
    echo "(clippy-driver not found: clippy runs on its own below)"
    cargo test --workspace --all-targets --no-run --message-format=json-render-diagnostics >"$artifacts"
fi

# The checks below keep the CPU busy (compiling, fuzzing) while the test binaries mostly wait
# (on real servers, clocks and clients), so they run side by side: two chains of checks, one
# of cargo commands (they take turns on the target directory's lock) and one of the rest, and
# the test binaries. The checks' output is printed when everything is done. On 2 cores this
# takes a fresh clone's run from about 17 minutes, one step after another, to under 10
# (README, "Tests").
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
unpacked="target/package-check/unpacked/entra-redis-proxy-$version"
# tests/package.rs writes this once it has unpacked the crate (a stale one would mislead).
rm -f "target/package-check/unpacked/.complete"

cargo_checks() {
    if [ -z "$clippy_driver" ]; then
        say "cargo clippy --workspace --all-targets -- -D warnings"
        cargo clippy --workspace --all-targets -- -D warnings
    fi

    # The daemon without the `azure` feature (token file only; what the fuzz targets build):
    # it compiles without warnings (src/lib.rs denies them there), and it refuses Entra
    # credentials with the feature named.
    say "cargo test --lib --no-default-features without_azure"
    cargo test --lib --no-default-features without_azure

    # The crate as published builds on its own: tests/package.rs checks what it holds and
    # unpacks it (it runs among the test binaries, in their first seconds); built here with
    # this target directory, whose dependencies the test build compiled already (a `cargo
    # check` would compile them all again, in check mode: about 100 s on a fresh clone).
    say "the packaged crate builds on its own"
    local waited=0
    while [ ! -f "target/package-check/unpacked/.complete" ]; do
        if [ "$waited" -ge 600 ] || ! kill -0 "$tests_pid" 2>/dev/null; then
            echo "tests/package.rs did not unpack the crate (see its result)"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    (cd "$unpacked" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --offline --locked --bins --quiet)
    say "the cargo checks are done"
}

other_checks() {
    # A short fuzzing run of every target from its committed corpus (regressions included);
    # the fuzz crate has a target directory of its own.
    if ! cargo fuzz --version >/dev/null 2>&1; then
        say "installing cargo-fuzz"
        cargo install --locked cargo-fuzz
    fi
    # Unoptimised (FUZZ_DEV=1): a short run replays the corpus and explores a little; building
    # the targets optimised would take longer than the run.
    say "scripts/fuzz.sh ${FUZZ_SECONDS:-5}"
    FUZZ_DEV=1 scripts/fuzz.sh "${FUZZ_SECONDS:-5}"

    # Benchmarks are not tests (nothing is timed here), but the script must keep working. The
    # smoke run uses the debug binary the test build made (BENCH_BIN): it checks the script
    # and every target, not speed.
    say "bench/run.sh --smoke"
    BENCH_BIN="$TARGET_DIR/debug/entra-redis-proxy" bench/run.sh --smoke
    say "the other checks are done"
}

# Every test binary, side by side (scripts/run_tests.py); each prints its "test result:"
# summary, and a failing binary does not stop the others.
say "test binaries (scripts/run_tests.py; the checks run meanwhile)"
python3 scripts/run_tests.py --artifacts "$artifacts" &
tests_pid=$!

cargo_log=$(mktemp)
other_log=$(mktemp)
trap 'rm -f "$artifacts" "$cargo_log" "$other_log"' EXIT
(set -euo pipefail; cargo_checks) >"$cargo_log" 2>&1 &
cargo_pid=$!
(set -euo pipefail; other_checks) >"$other_log" 2>&1 &
other_pid=$!

tests_status=0
wait "$tests_pid" || tests_status=$?
cargo_status=0
wait "$cargo_pid" || cargo_status=$?
other_status=0
wait "$other_pid" || other_status=$?
say "the cargo checks (the build without azure, the packaged crate):"
cat "$cargo_log"
say "the other checks (fuzz, bench smoke):"
cat "$other_log"

if [ "$tests_status" -ne 0 ] || [ "$cargo_status" -ne 0 ] || [ "$other_status" -ne 0 ]; then
    [ "$tests_status" -ne 0 ] && say "FAILED: test binaries (see above)"
    [ "$cargo_status" -ne 0 ] && say "FAILED: the cargo checks (the last step printed above)"
    [ "$other_status" -ne 0 ] && say "FAILED: the other checks (the last step printed above)"
    exit 1
fi
say "all checks passed"
