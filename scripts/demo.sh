#!/usr/bin/env bash
# The one demo command. Runs the proxy in front of a local TLS-only redis-server that behaves
# like Azure Cache for Redis with Entra ID: every token is its own ACL user (username = the
# token's oid), and when a token "expires" its user is deleted, which disconnects every
# connection still authenticated with it. Short-lived tokens rotate every few seconds while
# redis-cli keeps one connection open through the proxy: the counter keeps counting, ACL WHOAMI
# follows the new token, and CLIENT ID (the upstream connection) never changes.
#
# Usage: scripts/demo.sh            (runs about 75 s, or until Ctrl-C)
# Environment: DEMO_SECONDS (default 75), TOKEN_LIFETIME (default 30), ROTATE_EVERY (default 12)
set -euo pipefail

cd "$(dirname "$0")/.."

DEMO_SECONDS="${DEMO_SECONDS:-75}"
TOKEN_LIFETIME="${TOKEN_LIFETIME:-30}"
ROTATE_EVERY="${ROTATE_EVERY:-12}"

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

# --- tokens ------------------------------------------------------------------------------------
# fetch_token prints "OID JWT" for a new token. Here it mints an unsigned JWT locally; a mock
# identity endpoint can replace this one function.
fetch_token() {
    python3 - "$TOKEN_LIFETIME" <<'PY'
import base64, json, secrets, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
oid = "demo-oid-" + secrets.token_hex(4)
claims = {"oid": oid, "exp": int(time.time()) + int(sys.argv[1]), "aud": "https://redis.azure.com"}
jwt = ".".join([b64(b'{"alg":"none","typ":"JWT"}'), b64(json.dumps(claims).encode()), b64(secrets.token_bytes(32))])
print(oid, jwt)
PY
}

TOKEN_FILE="$WORK/token"
# issue_token: a new token, valid on the cache (its own ACL user), written atomically.
issue_token() {
    local oid jwt
    read -r oid jwt < <(fetch_token)
    admin ACL SETUSER "$oid" on ">$jwt" '~*' '&*' '+@all' >/dev/null
    printf '%s' "$jwt" >"$TOKEN_FILE.tmp"
    mv -f "$TOKEN_FILE.tmp" "$TOKEN_FILE"
    printf '%s' "$oid"
}

# connections_on USER: how many connections are authenticated as USER.
connections_on() {
    admin CLIENT LIST | grep -c " user=$1 " || true
}

CURRENT_OID="$(issue_token)"
say "first token issued for user $CURRENT_OID (lifetime ${TOKEN_LIFETIME}s)"

# --- the proxy ------------------------------------------------------------------------------
PROXY_PORT="$(free_port)"
RUST_LOG="${RUST_LOG:-info}" "$PROXY_BIN" \
    --listen "127.0.0.1:$PROXY_PORT" \
    --upstream "127.0.0.1:$REDIS_PORT" \
    --tls-server-name localhost \
    --ca-file "$WORK/ca.pem" \
    --credential token-file \
    --token-file "$TOKEN_FILE" \
    --token-file-poll 500ms \
    --admin-listen "" \
    2>"$WORK/proxy.log" &
PIDS+=($!)
for _ in $(seq 100); do
    [ "$(redis-cli -p "$PROXY_PORT" PING 2>/dev/null)" = "PONG" ] && break
    sleep 0.1
done
say "proxy is up: plain RESP on 127.0.0.1:$PROXY_PORT, no password"
say "  redis-cli -p $PROXY_PORT SET greeting hello  ->  $(redis-cli -p "$PROXY_PORT" SET greeting hello)"
say "  redis-cli -p $PROXY_PORT GET greeting        ->  $(redis-cli -p "$PROXY_PORT" GET greeting)"
say "  redis-cli -p $PROXY_PORT ACL WHOAMI          ->  $(redis-cli -p "$PROXY_PORT" ACL WHOAMI)"

# --- token rotation, with the old token's expiry emulated -------------------------------------
rotate_loop() {
    local old="$CURRENT_OID" new
    while true; do
        sleep "$ROTATE_EVERY"
        new="$(issue_token)"
        say "token rotated: new user $new written to the token file"
        for _ in $(seq 100); do
            [ "$(connections_on "$old")" -eq 0 ] && break
            sleep 0.1
        done
        say "proxy re-authenticated: $(connections_on "$new") connection(s) now on $new, $(connections_on "$old") on $old"
        admin ACL DELUSER "$old" >/dev/null
        say "token for $old expired: ACL user deleted (Redis drops any connection still using it)"
        old="$new"
    done
}
rotate_loop &
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
say "proxy log (last lines):"
tail -n 8 "$WORK/proxy.log" | sed 's/^/    /'
