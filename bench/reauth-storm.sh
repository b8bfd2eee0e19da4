#!/usr/bin/env bash
# Re-AUTH storm: as many live sessions as the open-files limit allows (10,000 where it can be
# raised), one token refresh, and the figures: time from the token change to the last re-AUTH,
# and GET latency (p50/p99) before and during the storm.
#
#   bench/reauth-storm.sh [SESSIONS]        (default 10000)
#
# Runs the release build of tests/storm.rs, which also asserts that every session survives.
set -euo pipefail
cd "$(dirname "$0")/.."
sessions="${1:-10000}"
if ! command -v redis-server >/dev/null; then
  apt-get update -qq && apt-get install -y -qq redis-server redis-tools
fi
# Two descriptors per session in the proxy; raise the limit as far as this machine allows.
ulimit -n "$(ulimit -Hn)" || true
STORM_SESSIONS="$sessions" cargo test --release --test storm -- --nocapture 2>&1 |
  grep -E "open-files limit|opened|re-AUTH of|test result"
