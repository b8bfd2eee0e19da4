#!/usr/bin/env bash
# The one demo command. Runs the proxy in front of a local TLS-only redis-server that behaves
# like Azure Cache for Redis with Entra ID, with tokens from a local mock of Entra ID obtained
# through the proxy's real client-secret credential: every token is its own ACL user (username
# = the token's oid), and when a token expires its user is deleted, which disconnects every
# connection still authenticated with it. Short-lived tokens are refreshed while redis-cli
# keeps one connection open through the proxy: the counter keeps counting, ACL WHOAMI follows
# the new token, and CLIENT ID (the upstream connection) never changes.
#
# Usage: scripts/demo.sh            (runs about 75 s, or until Ctrl-C)
# Environment: DEMO_SECONDS (default 75), TOKEN_LIFETIME (default 30; the proxy refreshes at
# half of it, since it is shorter than the 3-minute margin)
set -euo pipefail

cd "$(dirname "$0")/.."

DEMO_SECONDS="${DEMO_SECONDS:-75}"
TOKEN_LIFETIME="${TOKEN_LIFETIME:-30}"

say() { printf '\033[1m[demo %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- prerequisites ------------------------------------------------------------------------
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
command -v openssl >/dev/null 2>&1 || apt_install openssl
command -v python3 >/dev/null 2>&1 || apt_install python3

say "building the proxy (cargo build)"
cargo build --quiet --bin entra-redis-proxy
PROXY_BIN="$(pwd)/target/debug/entra-redis-proxy"

# --- clean-up of everything this script starts ----------------------------------------------
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
    say "stopped everything and removed the scratch directory"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- TLS: a throw-away CA and a certificate for localhost -------------------------------------
say "generating a test CA and a server certificate for localhost"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=entra-redis-proxy demo CA" \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$WORK/san.ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 1 -extfile "$WORK/san.ext" -out "$WORK/server.pem" 2>/dev/null

# --- the "cache": TLS only, ACL users, default user off (as with access keys disabled) --------
REDIS_PORT="$(free_port)"
ADMIN_PASSWORD="$(openssl rand -hex 24)"
cat >"$WORK/redis.conf" <<CONF
port 0
tls-port $REDIS_PORT
bind 127.0.0.1
tls-cert-file $WORK/server.pem
tls-key-file $WORK/server.key
tls-ca-cert-file $WORK/ca.pem
tls-auth-clients no
save ""
appendonly no
dir $WORK
logfile $WORK/redis.log
user default off
user demo-admin on >$ADMIN_PASSWORD ~* &* +@all
CONF
chmod 600 "$WORK/redis.conf"
redis-server "$WORK/redis.conf" &
PIDS+=($!)

# Admin commands on the cache; the password goes through the environment, not the arguments.
admin() {
    REDISCLI_AUTH="$ADMIN_PASSWORD" redis-cli --no-auth-warning --tls --cacert "$WORK/ca.pem" \
        -h 127.0.0.1 -p "$REDIS_PORT" --user demo-admin "$@"
}
for _ in $(seq 100); do
    [ "$(admin PING 2>/dev/null)" = "PONG" ] && break
    sleep 0.1
done
[ "$(admin PING 2>/dev/null)" = "PONG" ] || { say "redis-server did not start"; cat "$WORK/redis.log"; exit 1; }
say "redis-server is up: TLS only on 127.0.0.1:$REDIS_PORT, user 'default' disabled"

# --- the identity provider: a local mock of Microsoft Entra ID -------------------------------
# Entra ID is not reachable here, so the mock identity endpoint plays it, speaking the real
# OAuth2 protocol: the proxy's real azure_identity client-secret credential asks it for tokens.
# The mock also plays Azure's side of expiry: each token it issues gets its own ACL user on the
# cache (username = the token's oid), deleted when the token expires.
say "building the mock identity endpoint"
cargo build --quiet -p mock-identity
CLIENT_SECRET="$(openssl rand -hex 16)"
printf '%s' "$CLIENT_SECRET" >"$WORK/client-secret"
chmod 600 "$WORK/client-secret"
REDISCLI_AUTH="$ADMIN_PASSWORD" "$(pwd)/target/debug/mock-identity" \
    --lifetime "${TOKEN_LIFETIME}s" \
    --client-secret-file "$WORK/client-secret" \
    --ca-out "$WORK/identity-ca.pem" \
    --redis-cli-args "-h 127.0.0.1 -p $REDIS_PORT --tls --cacert $WORK/ca.pem --user demo-admin --no-auth-warning" \
    >"$WORK/mock.out" 2>"$WORK/mock.log" &
PIDS+=($!)
for _ in $(seq 100); do
    grep -q '^READY$' "$WORK/mock.out" 2>/dev/null && break
    sleep 0.1
done
grep -q '^READY$' "$WORK/mock.out" || { say "the mock identity endpoint did not start"; cat "$WORK/mock.log"; exit 1; }
AUTHORITY="$(sed -n 's/^AZURE_AUTHORITY_HOST=//p' "$WORK/mock.out")"
say "mock Entra ID is up at $AUTHORITY (tokens live ${TOKEN_LIFETIME}s)"

# --- the proxy ------------------------------------------------------------------------------
PROXY_PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
RUST_LOG="${RUST_LOG:-info}" "$PROXY_BIN" \
    --listen "127.0.0.1:$PROXY_PORT" \
    --upstream "127.0.0.1:$REDIS_PORT" \
    --tls-server-name localhost \
    --ca-file "$WORK/ca.pem" \
    --credential client-secret \
    --tenant-id demo-tenant \
    --client-id demo-app \
    --client-secret-file "$WORK/client-secret" \
    --authority-host "$AUTHORITY" \
    --identity-ca-file "$WORK/identity-ca.pem" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" \
    2>"$WORK/proxy.log" &
PIDS+=($!)
for _ in $(seq 200); do
    [ "$(redis-cli -p "$PROXY_PORT" PING 2>/dev/null)" = "PONG" ] && break
    sleep 0.1
done
say "proxy is up: plain RESP on 127.0.0.1:$PROXY_PORT, no password; metrics on 127.0.0.1:$ADMIN_PORT"
say "  redis-cli -p $PROXY_PORT SET greeting hello  ->  $(redis-cli -p "$PROXY_PORT" SET greeting hello)"
say "  redis-cli -p $PROXY_PORT GET greeting        ->  $(redis-cli -p "$PROXY_PORT" GET greeting)"
say "  redis-cli -p $PROXY_PORT ACL WHOAMI          ->  $(redis-cli -p "$PROXY_PORT" ACL WHOAMI)"

metric() { # metric NAME: the value of one Prometheus sample from the admin endpoint
    python3 - "$ADMIN_PORT" "$1" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
print(next((l.split()[-1] for l in text.splitlines() if l.startswith(sys.argv[2])), "?"))
PY
}

# Narrate token refreshes and emulated expiries as they happen (polling: nothing to leave
# behind on exit).
narrate() {
    local seen=0 n users before=""
    while true; do
        n="$(grep -c 'obtained a new token' "$WORK/proxy.log" 2>/dev/null || true)"
        while [ "$seen" -lt "${n:-0}" ]; do
            seen=$((seen + 1))
            say "proxy: token #$seen obtained from mock Entra ID; live connections re-authenticate"
        done
        users="$(admin ACL USERS 2>/dev/null | grep -v -x -e demo-admin -e default || true)"
        for u in $before; do
            printf '%s\n' "$users" | grep -q -x "$u" ||
                say "mock Entra ID: token of $u expired, its ACL user deleted (Redis drops connections still using it)"
        done
        before="$users"
        sleep 1
    done
}
narrate &
PIDS+=($!)

# --- an application: one redis-cli connection, a counter incremented every second ---------------
say "one redis-cli connection through the proxy; watch WHOAMI change while CLIENT ID stays"
app_commands() {
    local end=$((SECONDS + DEMO_SECONDS))
    while [ "$SECONDS" -lt "$end" ]; do
        printf 'INCR demo:counter\nACL WHOAMI\nCLIENT ID\n'
        sleep 1
    done
}
app_commands | redis-cli -p "$PROXY_PORT" | while read -r counter && read -r whoami && read -r id; do
    say "  counter=$counter  ACL WHOAMI=$whoami  CLIENT ID=$id"
done

say "done: the counter reached $(redis-cli -p "$PROXY_PORT" GET demo:counter) on one connection"
say "metrics: token refreshes ok=$(metric 'entra_redis_proxy_token_refreshes_total{result="success",upstream="default"}'), re-AUTHs ok=$(metric 'entra_redis_proxy_reauth_total{result="success",upstream="default"}') failed=$(metric 'entra_redis_proxy_reauth_total{result="failure",upstream="default"}'), token expires in $(metric entra_redis_proxy_token_seconds_until_expiry)s"
say "proxy log (last lines):"
tail -n 8 "$WORK/proxy.log" | sed 's/^/    /'
