#!/usr/bin/env python3
"""A real cluster-aware client for the cluster-mode tests (issue #8).

Uses redis-py's RedisCluster (pinned: redis==6.4.0, installed by scripts/test.sh) to SET and
GET N keys spread over the hash slots, verifying every GET. With N >= 16384 every slot is hit
at least once: key j carries a hash tag chosen so that it lands in slot (j * 7919) % 16384
(7919 is odd, so the first 16384 keys take every slot once, and consecutive keys land on
different nodes: traffic reaches every node from its first keys on). With
--duration S, rounds over all keys repeat until S seconds have passed; the time is checked
before each key, so the last round is usually partial. With --until-file PATH as well, the
rounds also end as soon as PATH exists (the test creates it when it is done), so that the
traffic lasts as long as the test needs however slow the machine, and --duration only caps it.

It counts the commands that failed after redis-py's own redirect (MOVED/ASK) and retry
handling, and prints one JSON object on stdout:

    {"ok": n, "failed": n, "errors": [first few messages],
     "nodes": ["host:port", ...every node address redis-py learned from the cluster]}

Exit status: 0 if every command succeeded (and there was at least one), 1 otherwise.

Against the proxy: --host/--port of its listener. Directly against a TLS cluster:
--tls --ca-file CA --user USER --password-env VAR (the password is read from the environment
variable VAR, never from the command line).
"""

import argparse
import json
import os
import sys
import time

SLOTS = 16384
# Key j goes to slot (j * SLOT_STRIDE) % SLOTS: odd, so a bijection on the slots.
SLOT_STRIDE = 7919
MAX_ERRORS = 10


def slot_tags():
    """For each slot s, a short string whose hash slot (as a {hash tag}) is s."""
    from redis.crc import key_slot

    tags = [None] * SLOTS
    missing = SLOTS
    i = 0
    while missing:
        tag = str(i)
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        i += 1
    return tags


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys", type=int, required=True, help="number of keys (>= 16384 hits every slot)")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="repeat rounds of SET/GET over all keys until this many seconds passed")
    parser.add_argument("--until-file", help="with --duration: also stop once this file exists")
    parser.add_argument("--prefix", default="cluster-client", help="key name prefix")
    parser.add_argument("--protocol", type=int, choices=(2, 3), default=2, help="RESP version")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-file", help="CA certificate (PEM) to trust with --tls")
    parser.add_argument("--user", help="ACL username")
    parser.add_argument("--password-env", help="name of the environment variable holding the password")
    parser.add_argument("--timeout", type=float, default=5.0, help="socket timeout, seconds")
    parser.add_argument("--pipeline", type=int, default=0,
                        help="send SETs, then GETs, in cluster pipelines of this many keys "
                             "(redis-py groups them by node); 0: one command at a time")
    args = parser.parse_args()
    if args.keys <= 0:
        parser.error("--keys must be positive")

    from redis.cluster import RedisCluster

    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            parser.error(f"environment variable {args.password_env} is not set")

    ok = 0
    failed = 0
    errors = []

    def fail(message):
        nonlocal failed
        failed += 1
        if len(errors) < MAX_ERRORS:
            # Never echo the password, whatever an error message may contain.
            if password:
                message = message.replace(password, "<redacted>")
            errors.append(message)

    def report(nodes):
        print(json.dumps({"ok": ok, "failed": failed, "errors": errors, "nodes": nodes}))
        sys.stdout.flush()

    kwargs = dict(
        host=args.host,
        port=args.port,
        protocol=args.protocol,
        socket_timeout=args.timeout,
        socket_connect_timeout=args.timeout,
        decode_responses=True,
    )
    if args.user:
        kwargs["username"] = args.user
    if password is not None:
        kwargs["password"] = password
    if args.tls:
        kwargs["ssl"] = True
        kwargs["ssl_cert_reqs"] = "required"
        if args.ca_file:
            kwargs["ssl_ca_certs"] = args.ca_file

    try:
        client = RedisCluster(**kwargs)
    except Exception as e:  # noqa: BLE001 - any failure to start is a failure to report
        fail(f"connect: {type(e).__name__}: {e}")
        report([])
        return 1

    tags = slot_tags()
    keys = [f"{{{tags[(j * SLOT_STRIDE) % SLOTS]}}}:{args.prefix}:{j}" for j in range(args.keys)]
    deadline = time.monotonic() + args.duration
    round_no = 0
    timed_out = False

    def finished():
        """Time is up, or the test said it is done."""
        if args.duration <= 0:
            return False
        if time.monotonic() >= deadline:
            return True
        return bool(args.until_file) and os.path.exists(args.until_file)

    def pipelined(start, batch):
        """SET then GET `batch` keys from index `start`, each as one cluster pipeline."""
        nonlocal ok
        chunk = keys[start:start + batch]
        values = [f"r{round_no}:{start + i}" for i in range(len(chunk))]
        try:
            pipe = client.pipeline(transaction=False)
            for key, value in zip(chunk, values):
                pipe.set(key, value)
            results = pipe.execute(raise_on_error=False)
        except Exception as e:  # noqa: BLE001 - every failure counts
            for key in chunk:
                fail(f"SET {key}: {type(e).__name__}: {e}")
            return
        stored = []
        for key, value, result in zip(chunk, values, results):
            if result is True:
                ok += 1
                stored.append((key, value))
            else:
                fail(f"SET {key}: {result!r}")
        try:
            pipe = client.pipeline(transaction=False)
            for key, _ in stored:
                pipe.get(key)
            results = pipe.execute(raise_on_error=False)
        except Exception as e:  # noqa: BLE001 - every failure counts
            for key, _ in stored:
                fail(f"GET {key}: {type(e).__name__}: {e}")
            return
        for (key, value), got in zip(stored, results):
            if got == value:
                ok += 1
            else:
                fail(f"GET {key}: expected {value!r}, got {got!r}")

    while not timed_out:
        if args.pipeline > 0:
            for start in range(0, len(keys), args.pipeline):
                if finished():
                    timed_out = True
                    break
                pipelined(start, args.pipeline)
            round_no += 1
            if args.duration <= 0:
                break
            continue
        for j, key in enumerate(keys):
            if finished():
                timed_out = True
                break
            value = f"r{round_no}:{j}"
            try:
                client.set(key, value)
                ok += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                fail(f"SET {key}: {type(e).__name__}: {e}")
                continue
            try:
                got = client.get(key)
            except Exception as e:  # noqa: BLE001 - every failure counts
                fail(f"GET {key}: {type(e).__name__}: {e}")
                continue
            if got == value:
                ok += 1
            else:
                fail(f"GET {key}: expected {value!r}, got {got!r}")
        round_no += 1
        if args.duration <= 0:
            break

    nodes = sorted(f"{n.host}:{n.port}" for n in client.get_nodes())
    try:
        client.close()
    except Exception:  # noqa: BLE001 - the summary matters more than a clean close
        pass
    report(nodes)
    return 0 if failed == 0 and ok > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
