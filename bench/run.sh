#!/usr/bin/env bash
# Benchmarks entra-redis-proxy against direct TLS, stunnel and HAProxy, side by side.
#
# Usage: bench/run.sh [--smoke] [--reps N] [--out FILE] [--profile] [--idle-only] [--keep]
#   --smoke    seconds, not minutes: tiny request counts, 1 repetition, no 10k idle test
#              (CI runs this; exits non-zero if any target fails to answer)
#   --reps N   repetitions of every case (default 5); targets alternate run by run
#   --out FILE also write the result tables (markdown) to FILE
#   --profile  instead of the benchmark: run the proxy under callgrind with the
#              50-client -P 16 load and print the top functions, then perf, then massif with
#              IDLE_SMALL idle connections; PROFILE_PARTS="massif" (any of callgrind, perf,
#              massif, heaptrack; heaptrack is not in the default) runs only those;
#              PROFILE_TARGET=proxy-shared (perf only) and
#              PROFILE_PIPELINE=1 profile another target or pipeline depth
#   --idle-only only the idle-memory test (IDLE_TARGETS: which sidecars, default all four)
#   --keep     keep the work directory (certificates, configs, logs, raw results)
#   --threads-variant  also measure the proxy with a single-threaded runtime (--threads 1),
#              as target proxy-t1, beside the default (one worker per CPU)
#   --unix-variant  also measure the proxy with the client on a Unix socket (target
#              proxy-unix; throughput cases only)
# BASE_BIN=PATH adds the target proxy-base: another build of the proxy (an earlier commit's
# release binary) run the same way, so a regression check is paired in one run instead of
# compared with a figure from another day (the machines differ from run to run).
# Request counts can be changed with N_P16, N_P1, N_C1, N_BIG, N_CONNECT, IDLE_SMALL, IDLE_LARGE;
# the large-value memory case (`bigrss`: RSS peak of a fresh sidecar while 1 client moves one
# BIGRSS_ONE-byte value, then while BIGRSS_CLIENTS clients move BIGRSS_SIZE-byte values at once)
# with BIGRSS_ONE, BIGRSS_CLIENTS, BIGRSS_SIZE.
# CASES_ONLY="c50-P16 c1-P1 ..." runs only the named cases (connect, bigrss and idle included
# only when named).
#
# Everything listens on 127.0.0.1 only. The machine has 2 cores: redis-server runs on CPU 1;
# the load generator and the sidecar under test share CPU 0, so every figure is a ratio
# measured in the same run, targets alternating (direct, proxy, stunnel, haproxy, direct, ...).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$REPO/bench"
SMOKE=0
PROFILE=0
IDLE_ONLY=0
KEEP=0
THREADS_VARIANT=0
UNIX_VARIANT=0
REPS=5
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
    --smoke) SMOKE=1 ;;
    --profile) PROFILE=1 ;;
    --idle-only) IDLE_ONLY=1 ;;
    --keep) KEEP=1 ;;
    --threads-variant) THREADS_VARIANT=1 ;;
    --unix-variant) UNIX_VARIANT=1 ;;
    --reps) REPS=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 64 ;;
    esac
    shift
done

if [ "$SMOKE" = 1 ]; then
    REPS=1
    : "${N_P16:=20000}" "${N_P1:=2000}" "${N_C1:=500}" "${N_BIG:=3}" "${N_CONNECT:=20}"
    : "${IDLE_SMALL:=1000}" "${IDLE_LARGE:=0}"
    : "${BIGRSS_ONE:=$((4 * 1024 * 1024))}" "${BIGRSS_CLIENTS:=10}" "${BIGRSS_SIZE:=$((1024 * 1024))}"
else
    : "${N_P16:=600000}" "${N_P1:=100000}" "${N_C1:=30000}" "${N_BIG:=30}" "${N_CONNECT:=1000}"
    : "${IDLE_SMALL:=1000}" "${IDLE_LARGE:=10000}"
    : "${BIGRSS_ONE:=$((64 * 1024 * 1024))}" "${BIGRSS_CLIENTS:=100}" "${BIGRSS_SIZE:=$((16 * 1024 * 1024))}"
fi
BIG=$((16 * 1024 * 1024))
OID="bench-oid-00000000"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ packages and build
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v stunnel >/dev/null || need+=(stunnel4)
command -v haproxy >/dev/null || need+=(haproxy)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
command -v taskset >/dev/null || need+=(util-linux)
if [ "$PROFILE" = 1 ]; then
    command -v valgrind >/dev/null || need+=(valgrind)
fi
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# BENCH_PROFILE=debug uses the debug build: figures from it mean nothing, but the script and
# every target are exercised without a release build. BENCH_BIN=PATH takes a binary built
# already instead of building one: scripts/test.sh passes the debug one its test build made
# (`cargo build` would compile a few crates again with other features); for figures, pass a
# release binary.
BENCH_PROFILE="${BENCH_PROFILE:-release}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
if [ -n "${BENCH_BIN:-}" ]; then
    SIDECAR_BUILD="$BENCH_BIN"
else
    case "$BENCH_PROFILE" in
    release)
        log "building the release binary"
        (cd "$REPO" && cargo build --release --quiet)
        ;;
    debug)
        [ "$SMOKE" = 1 ] || die "BENCH_PROFILE=debug is for --smoke only: debug figures mean nothing"
        log "building the debug binary (smoke run)"
        (cd "$REPO" && cargo build --quiet)
        ;;
    *) die "BENCH_PROFILE must be release or debug" ;;
    esac
    SIDECAR_BUILD="$TARGET_DIR/$BENCH_PROFILE/entra-redis-proxy"
fi
[ -x "$SIDECAR_BUILD" ] || die "no sidecar binary at $SIDECAR_BUILD"

# The machine is shared and other work competes for the CPUs. At equal priority a sidecar
# target (client and sidecar: two processes on CPU 0) would get a bigger share of CPU 0 than
# direct TLS (one process), flattering every sidecar. At nice -20 our processes take nearly
# all of the CPUs they are pinned to, whatever the target. BENCH_NICE=0 turns this off.
renice -n "${BENCH_NICE:--20}" -p $$ >/dev/null 2>&1 || true

# ------------------------------------------------------------------ machine facts
echo "# entra-redis-proxy benchmark"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "cores:   $(nproc)"
echo "kernel:  $(uname -sr)"
echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "redis:   $(redis-server --version | sed 's/^Redis server //; s/ sha=.*//')"
echo "stunnel: $(stunnel -version 2>&1 | grep -m1 '^stunnel' | cut -d' ' -f1-2)"
echo "haproxy: $(haproxy -v | head -1 | cut -d' ' -f3)"
echo "proxy:   $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "mode:    $([ "$SMOKE" = 1 ] && echo smoke || echo full), reps=$REPS, nice $(ps -o ni= -p $$ | tr -d ' ')"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"
echo

# ------------------------------------------------------------------ processes and cleanup
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then
        echo "work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Open files: 10,000 idle clients through a sidecar need two descriptors each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
# stunnel admits at most NOFILE*125/256 clients; every sidecar gets the same count.
IDLE_CAP=$((NOFILE * 125 / 256 - 64))
if [ $(((NOFILE - 100) / 2)) -lt "$IDLE_CAP" ]; then IDLE_CAP=$(((NOFILE - 100) / 2)); fi
if [ "$IDLE_LARGE" -gt "$IDLE_CAP" ]; then
    capped=$IDLE_CAP
    log "open-file limit $NOFILE: the large idle test uses $capped connections, not $IDLE_LARGE"
    IDLE_LARGE=$capped
fi

lg() { python3 "$BENCH/loadgen.py" "$@"; }
port() { lg freeport; }

wait_port() { # PORT PID NAME
    local i
    for i in $(seq 1 100); do
        kill -0 "$2" 2>/dev/null || die "$3 exited; see its log in $WORK"
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
        : "$i"
    done
    die "$3 does not listen on port $1"
}

# ------------------------------------------------------------------ certificates and token
log "test CA, server certificate, token"
(
    cd "$WORK"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
        -subj "/CN=bench test CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
        -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
        -days 2 -extfile ext.cnf 2>/dev/null
)
# The proxy runs from a copy with a name of its own: on a shared machine, someone else's
# clean-up by process name must not end it in the middle of a run.
PROXY_BIN="$WORK/bench-sidecar"
cp "$SIDECAR_BUILD" "$PROXY_BIN"
if [ -n "${BASE_BIN:-}" ]; then
    [ -x "$BASE_BIN" ] || die "BASE_BIN=$BASE_BIN is not an executable"
    BASE_PROXY_BIN="$WORK/bench-sidecar-base"
    cp "$BASE_BIN" "$BASE_PROXY_BIN"
fi
lg jwt "$OID" 86400 >"$WORK/token"
chmod 600 "$WORK/token"
TOKEN=$(cat "$WORK/token")

# ------------------------------------------------------------------ redis-server (TLS only)
REDIS_PORT=$(port)
# A plain-TCP port too, for the connect case's floor only (direct-plain: no TLS at all, so no
# sidecar can be faster); every other case uses the TLS port.
REDIS_PLAIN_PORT=$(port)
cat >"$WORK/redis.conf" <<EOF
bind 127.0.0.1
port $REDIS_PLAIN_PORT
tls-port $REDIS_PORT
tls-cert-file $WORK/server.pem
tls-key-file $WORK/server.key
tls-ca-cert-file $WORK/ca.pem
tls-auth-clients no
save ""
appendonly no
maxclients 30000
dir $WORK
logfile $WORK/redis.log
user default off
user $OID on >$TOKEN ~* &* +@all
EOF
log "redis-server on CPU 1, TLS port $REDIS_PORT"
taskset -c 1 redis-server "$WORK/redis.conf" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port "$REDIS_PORT" "$REDIS_PID" redis-server

# ------------------------------------------------------------------ sidecars
# The full CLI (main) wants the credential named and has an admin listener on a fixed port,
# which another proxy on the machine may hold: disable it. The interim CLI has neither flag.
PROXY_EXTRA=()
if "$PROXY_BIN" --help 2>&1 | grep -q -- '--admin-listen'; then
    PROXY_EXTRA=(--credential token-file --admin-listen "")
fi
# Each start_* sets <NAME>_PORT and <NAME>_PID; the sidecars share CPU 0 with the client.
# launch_proxy NAME BIN LOG LABEL [FLAGS...]: BIN on a fresh port, FLAGS after the common ones.
launch_proxy() {
    local name=$1 bin=$2 log=$3 label=$4 p pid
    shift 4
    p=$(port)
    RUST_LOG=info taskset -c 0 "$bin" --listen "127.0.0.1:$p" --upstream "127.0.0.1:$REDIS_PORT" \
        --ca-file "$WORK/ca.pem" --tls-server-name localhost --token-file "$WORK/token" \
        --token-file-poll 10s "$@" "${PROXY_EXTRA[@]}" 2>>"$WORK/$log" &
    pid=$!
    PIDS+=("$pid")
    printf -v "${name}_PORT" '%s' "$p"
    printf -v "${name}_PID" '%s' "$pid"
    wait_port "$p" "$pid" "$label"
}
start_proxy() { launch_proxy PROXY "$PROXY_BIN" proxy.log entra-redis-proxy; }
# The proxy without warm connections (the connect case only): every client waits for TCP, TLS
# and AUTH to the cache, as before warm connections.
start_proxy-cold() {
    launch_proxy PROXY_COLD "$PROXY_BIN" proxy-cold.log "entra-redis-proxy --warm-connections 0" \
        --warm-connections 0
}
# The proxy with shared upstream connections (--pool-size SHARED_POOL, default 4; the idle test
# uses IDLE_POOL_SIZE, default 8): every client's stateless commands over a few connections.
# SHARED_ARGS adds flags (an experiment: SHARED_ARGS="--threads 1").
start_proxy-shared() {
    # shellcheck disable=SC2086 # SHARED_ARGS is a list of flags
    launch_proxy PROXY_SHARED "$PROXY_BIN" proxy-shared.log \
        "entra-redis-proxy --pool-size ${SHARED_POOL:-4}" --pool-size "${SHARED_POOL:-4}" ${SHARED_ARGS:-}
}
# The baseline build (BASE_BIN), with the flags every build of the proxy has had.
start_proxy-base() { launch_proxy PROXY_BASE "$BASE_PROXY_BIN" proxy-base.log "entra-redis-proxy (BASE_BIN)"; }
start_proxy-t1() {
    launch_proxy PROXY_T1 "$PROXY_BIN" proxy-t1.log "entra-redis-proxy --threads 1" --threads 1
}
start_proxy-unix() {
    PROXY_UNIX_SOCK="$WORK/proxy.sock"
    RUST_LOG=info taskset -c 0 "$PROXY_BIN" --listen "unix:$PROXY_UNIX_SOCK" --upstream "127.0.0.1:$REDIS_PORT" \
        --ca-file "$WORK/ca.pem" --tls-server-name localhost --token-file "$WORK/token" \
        --token-file-poll 10s "${PROXY_EXTRA[@]}" 2>>"$WORK/proxy-unix.log" &
    PROXY_UNIX_PID=$!
    PIDS+=("$PROXY_UNIX_PID")
    local i
    for i in $(seq 1 100); do
        [ -S "$PROXY_UNIX_SOCK" ] && return 0
        kill -0 "$PROXY_UNIX_PID" 2>/dev/null || die "entra-redis-proxy (unix) exited; see $WORK/proxy-unix.log"
        sleep 0.1
    done
    die "entra-redis-proxy (unix) did not create $PROXY_UNIX_SOCK"
}
start_stunnel() {
    STUNNEL_PORT=$(port)
    cat >"$WORK/stunnel.conf" <<EOF
foreground = yes
pid =
output = $WORK/stunnel.log
[redis]
client = yes
accept = 127.0.0.1:$STUNNEL_PORT
connect = 127.0.0.1:$REDIS_PORT
CAfile = $WORK/ca.pem
verifyChain = yes
checkHost = localhost
sni = localhost
EOF
    taskset -c 0 stunnel "$WORK/stunnel.conf" 2>>"$WORK/stunnel.log" &
    STUNNEL_PID=$!
    PIDS+=("$STUNNEL_PID")
    wait_port "$STUNNEL_PORT" "$STUNNEL_PID" stunnel
}
start_haproxy() {
    HAPROXY_PORT=$(port)
    cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn $(((NOFILE - 100) / 2))
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend redis
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend cache
backend cache
    server redis 127.0.0.1:$REDIS_PORT ssl verify required ca-file $WORK/ca.pem verifyhost localhost sni str(localhost)
EOF
    taskset -c 0 haproxy -f "$WORK/haproxy.cfg" -db 2>>"$WORK/haproxy.log" &
    HAPROXY_PID=$!
    PIDS+=("$HAPROXY_PID")
    wait_port "$HAPROXY_PORT" "$HAPROXY_PID" haproxy
}
stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=() pid
    for pid in "${PIDS[@]}"; do
        [ "$pid" = "$1" ] || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}

# target_args NAME: sets T_PORT, T_PID (empty for direct), T_TLS (1 for direct)
target_args() {
    case "$1" in
    direct) T_PORT=$REDIS_PORT; T_PID=""; T_TLS=1 ;;
    direct-plain) T_PORT=$REDIS_PLAIN_PORT; T_PID=""; T_TLS=0 ;;
    proxy) T_PORT=$PROXY_PORT; T_PID=$PROXY_PID; T_TLS=0 ;;
    proxy-t1) T_PORT=$PROXY_T1_PORT; T_PID=$PROXY_T1_PID; T_TLS=0 ;;
    proxy-base) T_PORT=$PROXY_BASE_PORT; T_PID=$PROXY_BASE_PID; T_TLS=0 ;;
    proxy-cold) T_PORT=$PROXY_COLD_PORT; T_PID=$PROXY_COLD_PID; T_TLS=0 ;;
    proxy-shared) T_PORT=$PROXY_SHARED_PORT; T_PID=$PROXY_SHARED_PID; T_TLS=0 ;;
    proxy-unix) T_PORT=""; T_PID=$PROXY_UNIX_PID; T_TLS=0 ;;
    stunnel) T_PORT=$STUNNEL_PORT; T_PID=$STUNNEL_PID; T_TLS=0 ;;
    haproxy) T_PORT=$HAPROXY_PORT; T_PID=$HAPROXY_PID; T_TLS=0 ;;
    esac
}
lg_target() { # SUBCOMMAND TARGET [ARGS...]
    local sub=$1 t=$2
    shift 2
    target_args "$t"
    local tls=()
    [ "$T_TLS" = 1 ] && tls=(--tls --cacert "$WORK/ca.pem" --sni localhost)
    taskset -c 0 python3 "$BENCH/loadgen.py" "$sub" --port "$T_PORT" "${tls[@]}" \
        --user "$OID" --password-file "$WORK/token" "$@"
}
children_cpu_us() { # FILE: user+sys CPU of the shell's finished children, in µs, from `times`
    # `times` (run in the main shell, not a subshell) prints the shell's line, then the
    # children's: "0m1.234s 0m0.567s". Children are redis-benchmark and small tools.
    awk 'NR == 2 {
        n = split($1 " " $2, t, " "); us = 0
        for (i = 1; i <= n; i++) { split(t[i], ms, "m"); sub("s", "", ms[2]); us += (ms[1] * 60 + ms[2]) * 1e6 }
        printf "%d\n", us }' "$1"
}
cpu_ticks() { # PID -> utime+stime of the whole process (all threads), in clock ticks
    if [ -z "$1" ]; then echo 0; return; fi
    [ -r "/proc/$1/stat" ] || die "sidecar process $1 is gone (logs in $WORK)"
    # Fields after the command name (which may hold spaces): utime is 14th, stime 15th.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

TARGETS=(direct proxy proxy-shared stunnel haproxy)
[ "$THREADS_VARIANT" = 1 ] && TARGETS=(direct proxy proxy-shared proxy-t1 stunnel haproxy)
[ "$UNIX_VARIANT" = 1 ] && TARGETS+=(proxy-unix)
# The baseline goes right after the proxy, so the two alternate as closely as they can.
[ -n "${BASE_BIN:-}" ] && TARGETS=(direct proxy proxy-base "${TARGETS[@]:2}")
wanted() { # CASE: true if CASES_ONLY is unset or names it
    [ -z "${CASES_ONLY:-}" ] || [[ " $CASES_ONLY " == *" $1 "* ]]
}

# start_proxy_under WRAPPER...: the proxy under valgrind (slow to start), sets PROXY_PORT/PID.
start_proxy_under() {
    PROXY_PORT=$(port)
    taskset -c 0 "$@" "$PROXY_BIN" --listen "127.0.0.1:$PROXY_PORT" \
        --upstream "127.0.0.1:$REDIS_PORT" --ca-file "$WORK/ca.pem" --tls-server-name localhost \
        --token-file "$WORK/token" --token-file-poll 10s "${PROXY_EXTRA[@]}" 2>>"$WORK/proxy.log" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    local i
    for i in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && break
        sleep 0.1
        : "$i"
    done
    lg_target probe proxy || die "proxy does not answer under $1"
}
p16_load() { # N: the 50-client -P 16 (PROFILE_PIPELINE) SET and GET load against the proxy
    local t
    for t in set get; do
        taskset -c 0 redis-benchmark -h 127.0.0.1 -p "$PROXY_PORT" --user "$OID" -a "$TOKEN" \
            -c 50 -P "${PROFILE_PIPELINE:-16}" -d 3 -n "$1" -t "$t" --csv 2>/dev/null | tail -1
    done
}

PROFILE_PARTS=" ${PROFILE_PARTS:-callgrind perf massif} "
if [ "$PROFILE" = 1 ] && [[ "$PROFILE_PARTS" == *" callgrind "* ]]; then
    # 1. callgrind: user-space instructions per function (no hardware counters needed).
    log "proxy under callgrind, 50 clients -P 16"
    start_proxy_under valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out"
    p16_load "${N_PROFILE:-100000}"
    kill -INT "$PROXY_PID"
    wait "$PROXY_PID" 2>/dev/null || true
    echo "## callgrind, exclusive (self) cost"
    callgrind_annotate --inclusive=no "$WORK/callgrind.out" 2>/dev/null | head -45 || true
    echo "## callgrind, inclusive cost"
    callgrind_annotate --inclusive=yes "$WORK/callgrind.out" 2>/dev/null | head -60 || true
fi
if [ "$PROFILE" = 1 ] && [[ "$PROFILE_PARTS" == *" perf "* ]]; then
    # 2. perf with the cpu-clock software event, where perf works: shows the kernel's share
    #    (syscalls, TCP), which callgrind cannot see.
    if command -v perf >/dev/null && perf stat -e cpu-clock true >/dev/null 2>&1; then
        # PROFILE_TARGET=proxy-shared profiles the shared mode instead.
        log "perf record -e cpu-clock, 50 clients -P ${PROFILE_PIPELINE:-16}, ${PROFILE_TARGET:-proxy}"
        "start_${PROFILE_TARGET:-proxy}"
        target_args "${PROFILE_TARGET:-proxy}"
        PROXY_PORT=$T_PORT
        PROXY_PID=$T_PID
        taskset -c 1 perf record -q -e cpu-clock -F 4000 -g -p "$PROXY_PID" -o "$WORK/perf.data" \
            2>/dev/null &
        PERF_PID=$!
        PIDS+=("$PERF_PID")
        sleep 1
        p16_load "${N_PERF:-1000000}"
        kill -INT "$PERF_PID"
        wait "$PERF_PID" 2>/dev/null || true
        [ -n "$OUT" ] && cp "$WORK/perf.data" "$OUT.perf.data"
        echo "## perf cpu-clock by dso"
        perf report -i "$WORK/perf.data" --stdio --no-children --sort dso 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -12 || true
        echo "## perf cpu-clock by symbol (self)"
        perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,symbol -g none \
            2>/dev/null | grep -v '^#' | grep -v '^$' | head -50 || true
        stop_pid "$PROXY_PID"
    fi
fi
if [ "$PROFILE" = 1 ] && [[ "$PROFILE_PARTS" == *" massif "* ]]; then
    # 3. massif: heap per idle connection, by allocation site.
    log "proxy under massif, ${IDLE_SMALL} idle connections"
    start_proxy_under valgrind --tool=massif --massif-out-file="$WORK/massif.out" --threshold=0.5
    lg_target idle proxy --count "$IDLE_SMALL" --pid "$PROXY_PID" --settle 3
    kill -INT "$PROXY_PID"
    wait "$PROXY_PID" 2>/dev/null || true
    echo "## massif, peak heap by allocation site"
    ms_print "$WORK/massif.out" 2>/dev/null | grep -A60 '(peak)' | head -90 || true
fi
if [ "$PROFILE" = 1 ] && [[ "$PROFILE_PARTS" == *" heaptrack "* ]]; then
    # 4. heaptrack: the heap held while IDLE_SMALL connections are open, by allocation site
    #    (its peak is then, unlike massif's, which start-up's buffers can hold).
    command -v heaptrack >/dev/null || {
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq heaptrack >/dev/null
    }
    log "proxy under heaptrack, ${IDLE_SMALL} idle connections"
    start_proxy_under heaptrack -o "$WORK/heaptrack"
    # heaptrack runs the proxy as its child: measure and stop the proxy itself.
    APP_PID=$(pgrep -n -f "^$PROXY_BIN --listen 127.0.0.1:$PROXY_PORT")
    lg_target idle proxy --count "$IDLE_SMALL" --pid "$APP_PID" --settle 3
    kill -INT "$APP_PID"
    wait "$PROXY_PID" 2>/dev/null || true
    echo "## heaptrack, peak heap by allocation site"
    heaptrack_print -f "$(ls "$WORK"/heaptrack*.zst "$WORK"/heaptrack*.gz 2>/dev/null | head -1)" \
        --print-peaks 1 --print-allocators 0 --print-leaks 0 --print-temporary 0 \
        --peak-limit 25 2>&1 | head -250 || true
fi
if [ "$PROFILE" = 1 ]; then
    if [ -n "$OUT" ]; then
        [ -f "$WORK/callgrind.out" ] && cp "$WORK/callgrind.out" "$OUT.callgrind"
        [ -f "$WORK/massif.out" ] && cp "$WORK/massif.out" "$OUT.massif"
    fi
    exit 0
fi

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
if [ "$IDLE_ONLY" = 0 ]; then
log "sidecars on CPU 0"
start_proxy
start_proxy-shared
[ "$THREADS_VARIANT" = 1 ] && start_proxy-t1
[ "$UNIX_VARIANT" = 1 ] && start_proxy-unix
[ -n "${BASE_BIN:-}" ] && start_proxy-base
start_stunnel
start_haproxy
for t in "${TARGETS[@]}"; do
    [ "$t" = proxy-unix ] && continue # the load generator speaks TCP; redis-benchmark checks it
    lg_target probe "$t" || die "$t does not answer AUTH/SET/GET correctly"
done

# ------------------------------------------------------------------ throughput and latency
bench_one() { # CASE TEST TARGET REP CLIENTS PIPELINE SIZE N
    local case=$1 test=$2 t=$3 rep=$4 c=$5 p=$6 d=$7 n=$8
    target_args "$t"
    local tls=()
    [ "$T_TLS" = 1 ] && tls=(--tls --cacert "$WORK/ca.pem" --sni localhost)
    local before after line rbefore rafter t0 t1 c0 c1
    times >"$WORK/times0"
    c0=$(children_cpu_us "$WORK/times0")
    before=$(cpu_ticks "$T_PID")
    rbefore=$(cpu_ticks "$REDIS_PID")
    t0=$(date +%s%N)
    local where=(-h 127.0.0.1 -p "$T_PORT")
    [ "$t" = proxy-unix ] && where=(-s "$PROXY_UNIX_SOCK")
    if ! line=$(taskset -c 0 redis-benchmark "${where[@]}" "${tls[@]}" \
        --user "$OID" -a "$TOKEN" -c "$c" -P "$p" -d "$d" -n "$n" -t "$test" --csv \
        2>>"$WORK/benchmark.err" | tail -1); then
        die "redis-benchmark failed against $t ($case $test); see $WORK/benchmark.err"
    fi
    t1=$(date +%s%N)
    after=$(cpu_ticks "$T_PID")
    rafter=$(cpu_ticks "$REDIS_PID")
    times >"$WORK/times1"
    c1=$(children_cpu_us "$WORK/times1")
    # "SET","rps","avg","min","p50","p95","p99","max"
    local rps p50 p99
    read -r rps p50 p99 <<<"$(echo "$line" | tr -d '"' | awk -F, '{print $2, $5, $7}')"
    [ -n "$p99" ] || die "no result from redis-benchmark against $t ($case $test): $line"
    awk -v r="$rps" 'BEGIN { exit !(r > 0) }' || die "$t answered nothing ($case $test)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "${test^^}" "$t" "$rep" "$rps" "$p50" \
        "$p99" $((after - before)) "$n" $((rafter - rbefore)) $(((t1 - t0) / 1000000)) $((c1 - c0)) >>"$RESULTS"
    printf '   %-8s %-4s %-8s rep %s: %s req/s p50 %s ms p99 %s ms\n' "$case" "${test^^}" "$t" \
        "$rep" "$rps" "$p50" "$p99" >&2
}

CASES=(
    "c50-P16 50 16 3 $N_P16"
    "c50-P1 50 1 3 $N_P1"
    "c1-P1 1 1 3 $N_C1"
    "c1-16MiB 1 1 $BIG $N_BIG"
)
for spec in "${CASES[@]}"; do
    read -r case c p d n <<<"$spec"
    wanted "$case" || continue
    log "case $case: $c clients, pipeline $p, value $d bytes, $n requests per run"
    for rep in $(seq 1 "$REPS"); do
        for t in "${TARGETS[@]}"; do
            for test in set get; do
                bench_one "$case" "$test" "$t" "$rep" "$c" "$p" "$d" "$n"
            done
        done
    done
done

wanted connect && log "case connect: $N_CONNECT sequential connect + AUTH + PING + close"
CONNECT_TARGETS=("${TARGETS[@]}" direct-plain)
if wanted connect && "$PROXY_BIN" --help 2>&1 | grep -q -- '--warm-connections'; then
    start_proxy-cold
    CONNECT_TARGETS+=(proxy-cold)
fi
for rep in $(seq 1 "$REPS"); do
    wanted connect || break
    for t in "${CONNECT_TARGETS[@]}"; do
        [ "$t" = proxy-unix ] && continue
        target_args "$t"
        before=$(cpu_ticks "$T_PID")
        out=$(lg_target connect "$t" --count "$N_CONNECT") || die "$t failed the connect test"
        after=$(cpu_ticks "$T_PID")
        read -r cnt p50 p99 cps <<<"$out"
        printf 'connect\tPING\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rep" "$cps" "$p50" "$p99" \
            $((after - before)) "$cnt" >>"$RESULTS"
        printf '   connect %-8s rep %s: p50 %s ms p99 %s ms\n' "$t" "$rep" "$p50" "$p99" >&2
    done
done

stop_pid "$PROXY_PID"
stop_pid "$PROXY_SHARED_PID"
[ -n "${PROXY_COLD_PID:-}" ] && stop_pid "$PROXY_COLD_PID"
[ "$THREADS_VARIANT" = 1 ] && stop_pid "$PROXY_T1_PID"
[ "$UNIX_VARIANT" = 1 ] && stop_pid "$PROXY_UNIX_PID"
stop_pid "$STUNNEL_PID"
stop_pid "$HAPROXY_PID"
fi

# ------------------------------------------------------------------ large-value memory
# A fresh sidecar per measurement; RSS peak minus RSS before, while the values move.
BIGRSS="$WORK/bigrss.tsv"
: >"$BIGRSS"
if [ "$IDLE_ONLY" = 0 ] && wanted bigrss; then
    for rep in $(seq 1 "$REPS"); do
        for t in proxy stunnel haproxy; do
            for spec in "1 $BIGRSS_ONE" "$BIGRSS_CLIENTS $BIGRSS_SIZE"; do
                read -r nc size <<<"$spec"
                "start_$t"
                target_args "$t"
                log "bigrss: $nc client(s) x $size bytes through $t (rep $rep)"
                out=$(lg_target bigrss "$t" --count "$nc" --size "$size" --pid "$T_PID") ||
                    die "$t failed the large-value memory test"
                printf '%s\t%s\t%s\n' "$t" "$rep" "$out" >>"$BIGRSS"
                stop_pid "$T_PID"
            done
        done
    done
fi

# ------------------------------------------------------------------ idle memory
IDLE="$WORK/idle.tsv"
: >"$IDLE"
for n in $IDLE_SMALL $IDLE_LARGE; do
    [ "$n" -gt 0 ] || continue
    wanted idle || continue
    DEFAULT_IDLE="proxy proxy-shared stunnel haproxy"
    [ -n "${BASE_BIN:-}" ] && DEFAULT_IDLE="proxy proxy-base proxy-shared stunnel haproxy"
    for t in ${IDLE_TARGETS:-$DEFAULT_IDLE}; do
        # A fresh process for each measurement: memory freed by earlier runs would hide growth.
        SHARED_POOL=${IDLE_POOL_SIZE:-8} "start_$t"
        target_args "$t"
        log "idle: $n connections through $t"
        out=$(lg_target idle "$t" --count "$n" --pid "$T_PID") || die "$t failed the idle test"
        read -r cnt before after <<<"$out"
        printf '%s\t%s\t%s\t%s\n' "$t" "$cnt" "$before" "$after" >>"$IDLE"
        stop_pid "$T_PID"
    done
done

# ------------------------------------------------------------------ report
echo
python3 "$BENCH/report.py" "$RESULTS" "$IDLE" "$(getconf CLK_TCK)" "$BIGRSS" | tee "$WORK/table.md"
if [ -n "$OUT" ]; then
    cp "$WORK/table.md" "$OUT"
fi
