#!/usr/bin/env bash
# Runs every cargo-fuzz target (command_scanner, reply_scanner, stream_scanner, inline_args,
# cluster_rewrite: whatever `cargo fuzz list` shows) for SECONDS seconds each (default 60);
# fails on the first crash.
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain the nightly-only flags
# cargo-fuzz passes to rustc are allowed with RUSTC_BOOTSTRAP=1; no sanitizer is used (`-s none`:
# the crate forbids unsafe code, so the targets look for panics, hangs and wrong answers).
# Each target starts from its committed corpus (fuzz/corpus/<target>, including regression
# inputs of bugs found before); what the run discovers goes to a temporary directory, so the
# committed corpus does not grow. A crash input is kept in fuzz/artifacts/<target>/.
# FUZZ_DEV=1 builds the targets unoptimised (`--dev`): much quicker to build, slower to run;
# what scripts/test.sh uses for its short run.
set -euo pipefail

seconds="${1:-60}"
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

profile=()
[ "${FUZZ_DEV:-0}" = 1 ] && profile=(--dev)
cargo fuzz build "${profile[@]}" -s none
status=0
for target in $(cargo fuzz list); do
    mkdir -p "$work/$target"
    echo "== $target: ${seconds}s"
    log="$work/$target.log"
    if cargo fuzz run "${profile[@]}" -s none "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
        grep -E '^Done [0-9]+ runs' "$log" || tail -n 2 "$log"
    else
        status=1
        echo "!! $target crashed:"
        grep -E 'panicked|left:|right:|ERROR|Test unit written' "$log" | head -n 20
    fi
done
exit "$status"
