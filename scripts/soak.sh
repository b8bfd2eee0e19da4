#!/usr/bin/env bash
# Soak test (not run in CI): MINUTES of mixed redis-benchmark traffic through the proxy while
# the token rotates every ROTATE_EVERY seconds, with Azure's expiry emulated (each old token's
# ACL user is deleted once the proxy has re-authenticated, which disconnects any connection
# still using it). Prints the proxy's RSS and descriptors over time, benchmark errors, re-AUTH
# counts and disconnections.
#
#   scripts/soak.sh [MINUTES]            (default 30)
#
# Environment: ROTATE_EVERY (seconds, default 10), CLIENTS (default 50), PROXY_BIN (default:
# the debug build, built if missing), SOAK_SECONDS (overrides MINUTES, for a short check).
# Everything listens on 127.0.0.1 only, on ports the kernel picks; all children are killed on
# exit. Exits non-zero if a rotation did not complete, the proxy died, or benchmark errors
# were seen.
set -euo pipefail

minutes="${1:-30}"
duration="${SOAK_SECONDS:-$((minutes * 60))}"
rotate_every="${ROTATE_EVERY:-10}"
clients="${CLIENTS:-50}"
root="$(cd "$(dirname "$0")/.." && pwd)"
proxy_bin="${PROXY_BIN:-$root/target/debug/entra-redis-proxy}"

for tool in redis-server redis-cli redis-benchmark openssl curl python3; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is missing" >&2; exit 2; }
done
if [[ ! -x "$proxy_bin" ]]; then
    (cd "$root" && cargo build --bin entra-redis-proxy)
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- TLS material: a CA and a certificate for localhost -------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=soak CA" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null

# --- redis-server: TLS only, ACL users, default user off ------------------------------------
admin_pass="$(openssl rand -hex 16)"
tls_port="$(free_port)"
cat >"$work/redis.conf" <<EOF
port 0
tls-port $tls_port
bind 127.0.0.1
tls-cert-file $work/server.pem
tls-key-file $work/server.key
tls-ca-cert-file $work/ca.pem
tls-auth-clients no
save ""
appendonly no
dir $work
logfile $work/redis.log
user default off
user soak-admin on >$admin_pass ~* &* +@all
EOF
redis-server "$work/redis.conf" &
pids+=($!)

admin() {
    redis-cli --tls --cacert "$work/ca.pem" --sni localhost -h 127.0.0.1 -p "$tls_port" \
        --user soak-admin --pass "$admin_pass" --no-auth-warning "$@"
}
for _ in $(seq 100); do admin PING >/dev/null 2>&1 && break; sleep 0.1; done
admin PING >/dev/null

# --- tokens: an unsigned JWT with oid and exp; its ACL user exists while it is valid --------
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
mint() { # prints "oid token"
    local oid="oid-soak-$(openssl rand -hex 8)" exp=$(( $(date +%s) + 3600 ))
    local header payload
    header="$(printf '{"alg":"none","typ":"JWT"}' | b64url)"
    payload="$(printf '{"oid":"%s","exp":%d,"aud":"https://redis.azure.com"}' "$oid" "$exp" | b64url)"
    echo "$oid $header.$payload.$(openssl rand -hex 20)"
}
issue() { # creates the user and writes the token file atomically; prints the oid
    read -r oid token < <(mint)
    admin ACL SETUSER "$oid" on ">$token" '~*' '&*' +@all >/dev/null
    printf '%s' "$token" >"$work/token.tmp"
    mv "$work/token.tmp" "$work/token"
    echo "$oid"
}
current_oid="$(issue)"

# --- the proxy ------------------------------------------------------------------------------
proxy_port="$(free_port)"
admin_http="$(free_port)"
"$proxy_bin" --listen "127.0.0.1:$proxy_port" --upstream "127.0.0.1:$tls_port" \
    --tls-server-name localhost --ca-file "$work/ca.pem" \
    --credential token-file --token-file "$work/token" --token-file-poll 100ms \
    --admin-listen "127.0.0.1:$admin_http" --log-format json 2>"$work/proxy.log" &
proxy_pid=$!
pids+=($proxy_pid)
for _ in $(seq 100); do
    redis-cli -h 127.0.0.1 -p "$proxy_port" PING 2>/dev/null | grep -q PONG && break
    sleep 0.1
done
redis-cli -h 127.0.0.1 -p "$proxy_port" PING | grep -q PONG

metric() { # sum of a metric's samples matching a label filter
    { curl -s "http://127.0.0.1:$admin_http/metrics" || true; } |
        awk -v m="$1" -v f="${2:-}" '($1 == m || index($1, m "{") == 1) && index($1, f) { s += $2 } END { print s + 0 }'
}

# --- traffic: redis-benchmark in rounds, for the whole duration -----------------------------
end=$(( $(date +%s) + duration ))
(
    round=0
    while (( $(date +%s) < end )); do
        round=$((round + 1))
        # A mix of reads, writes, lists, sets, hashes and pipelines.
        redis-benchmark -h 127.0.0.1 -p "$proxy_port" -c "$clients" -n 100000 -r 10000 -d 256 \
            -P $(( (round % 4) * 5 + 1 )) -q \
            -t set,get,incr,lpush,rpop,sadd,hset,spop,lrange_100,mset 2>&1 |
            tr '\r' '\n' | grep -E 'requests per second|ERR|Error|error' | sed "s/^/[bench $round] /" \
            >>"$work/bench.log" || true
    done
) &
bench_pid=$!
pids+=($bench_pid)

# --- rotations and sampling -----------------------------------------------------------------
rotations=0
failed_rotations=0
start=$(date +%s)
next_rotation=$(( start + rotate_every ))
printf '%8s %10s %6s %10s %10s %10s %12s\n' elapsed rss_kib fds rotations reauth_ok reauth_fail clients
while (( $(date +%s) < end )); do
    now=$(date +%s)
    if (( now >= next_rotation )); then
        old="$current_oid"
        refreshed="$(grep -c 'obtained a new token' "$work/proxy.log" || true)"
        current_oid="$(issue)"
        # Wait (up to 30 s) until the proxy has read the new token and no connection uses the
        # old user any more, then delete it: the old token's expiry.
        deadline=$(( now + 30 ))
        while (( $(grep -c 'obtained a new token' "$work/proxy.log" || true) <= refreshed )) ||
            admin CLIENT LIST | grep -q "user=$old "; do
            if (( $(date +%s) >= deadline )); then
                failed_rotations=$((failed_rotations + 1))
                echo "!! rotation $((rotations + 1)): connections still on the old user after 30 s" >&2
                break
            fi
            sleep 0.05
        done
        admin ACL DELUSER "$old" >/dev/null
        rotations=$((rotations + 1))
        next_rotation=$(( next_rotation + rotate_every ))
    fi
    if ! kill -0 "$proxy_pid" 2>/dev/null; then
        echo "!! the proxy exited" >&2
        exit 1
    fi
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$proxy_pid/status")
    fds=$(ls "/proc/$proxy_pid/fd" | wc -l)
    printf '%8s %10s %6s %10s %10s %10s %12s\n' "$(( now - start ))s" "$rss" "$fds" "$rotations" \
        "$(metric entra_redis_proxy_reauth_total success)" \
        "$(metric entra_redis_proxy_reauth_total failure)" \
        "$(metric entra_redis_proxy_client_connections '')"
    sleep 5
done
wait "$bench_pid" 2>/dev/null || true

errors=$(grep -cvE 'requests per second' "$work/bench.log" || true)
echo
echo "== soak: ${duration}s, $rotations rotations ($failed_rotations incomplete), benchmark rounds: $(grep -c 'requests per second' "$work/bench.log" || true) results"
echo "== benchmark error lines: $errors"
grep -vE 'requests per second' "$work/bench.log" | sort | uniq -c | sort -rn | head -10 || true
echo "== proxy: re-AUTH ok $(metric entra_redis_proxy_reauth_total success), failed $(metric entra_redis_proxy_reauth_total failure), client protocol errors $(metric entra_redis_proxy_client_protocol_errors_total), upstream reconnects $(metric entra_redis_proxy_upstream_reconnects_total)"
echo "== proxy log: $(grep -c '"level":"WARN"' "$work/proxy.log" || true) warnings, $(grep -c '"level":"ERROR"' "$work/proxy.log" || true) errors"
grep -E '"level":"(WARN|ERROR)"' "$work/proxy.log" | sed -E 's/"timestamp":"[^"]*",//' | sort | uniq -c | sort -rn | head -5 || true
if (( failed_rotations > 0 || errors > 0 )); then
    exit 1
fi
