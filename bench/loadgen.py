#!/usr/bin/env python3
"""Small load helpers for bench/run.sh (standard library only, loopback only).

Subcommands:
  freeport            print a free TCP port on 127.0.0.1
  jwt OID SECONDS     print an unsigned JWT (alg none) with `oid` and `exp` = now + SECONDS
  probe               AUTH, SET, GET through a target; exit 1 unless every reply is right
  connect             N times: connect (+TLS), send AUTH+PING, wait for both replies, close;
                      prints `count p50_ms p99_ms connects_per_s`
  idle                open N connections, send AUTH+PING on each, wait for the replies, then
                      read VmRSS of --pid before/after; prints `n rss_before_kb rss_after_kb`
  bigrss              --count clients at once each SET then GET a --size-byte value, the GET
                      reply checked byte for byte; samples VmRSS of --pid every 10 ms;
                      prints `clients size rss_before_kb rss_peak_kb seconds`
"""
import argparse
import base64
import json
import os
import resource
import socket
import ssl
import statistics
import sys
import threading
import time


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def open_conn(args, timeout=10.0):
    s = socket.create_connection((args.host, args.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if args.tls:
        s = args.ctx.wrap_socket(s, server_hostname=args.sni)
    return s


def read_lines(s, n, buf=b""):
    """Reads until `n` simple-reply lines arrived; returns them."""
    while buf.count(b"\r\n") < n:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before %d replies (got %r)" % (n, buf[:200]))
        buf += chunk
    return buf.split(b"\r\n")[:n]


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def cmd_probe(args):
    s = open_conn(args)
    val = b"probe-%d" % os.getpid()
    s.sendall(resp("AUTH", args.user, args.password) + resp("SET", "bench:probe", val)
              + resp("GET", "bench:probe"))
    want = b"+OK\r\n+OK\r\n$%d\r\n%s\r\n" % (len(val), val)
    buf = b""
    deadline = time.monotonic() + 10
    while len(buf) < len(want) and time.monotonic() < deadline:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    s.close()
    if buf != want:
        print("probe %s:%d: unexpected reply %r" % (args.host, args.port, buf[:200]), file=sys.stderr)
        return 1
    return 0


def cmd_connect(args):
    msg = resp("AUTH", args.user, args.password) + resp("PING")
    times = []
    started = time.monotonic()
    for _ in range(args.count):
        t0 = time.perf_counter()
        s = open_conn(args)
        s.sendall(msg)
        lines = read_lines(s, 2)
        t1 = time.perf_counter()
        s.close()
        if lines != [b"+OK", b"+PONG"]:
            print("connect: unexpected replies %r" % lines, file=sys.stderr)
            return 1
        times.append((t1 - t0) * 1000.0)
    elapsed = time.monotonic() - started
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print("%d %.3f %.3f %.1f" % (len(times), statistics.median(times), p99, len(times) / elapsed))
    return 0


def cmd_idle(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    msg = resp("AUTH", args.user, args.password) + resp("PING")
    before = rss_kb(args.pid)
    conns = []
    for i in range(0, args.count, args.batch):
        batch = [open_conn(args, timeout=30) for _ in range(min(args.batch, args.count - i))]
        for s in batch:
            s.sendall(msg)
        for s in batch:
            lines = read_lines(s, 2)
            if lines != [b"+OK", b"+PONG"]:
                print("idle: unexpected replies %r" % lines, file=sys.stderr)
                return 1
        conns.extend(batch)
    time.sleep(args.settle)
    after = rss_kb(args.pid)
    print("%d %d %d" % (len(conns), before, after))
    for s in conns:
        s.close()
    return 0


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return bytes(out)


def big_client(args, i, value, errors):
    try:
        s = open_conn(args, timeout=120)
        s.sendall(resp("AUTH", args.user, args.password))
        if recv_exact(s, 5) != b"+OK\r\n":
            raise RuntimeError("AUTH refused")
        key = "bench:big:%d" % i
        s.sendall(resp("SET", key, value))
        if recv_exact(s, 5) != b"+OK\r\n":
            raise RuntimeError("SET refused")
        s.sendall(resp("GET", key))
        head = b"$%d\r\n" % len(value)
        if recv_exact(s, len(head)) != head:
            raise RuntimeError("GET: wrong header")
        # Compared piece by piece: the helper itself holds one value, not one per client.
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        off = 0
        while off < len(value):
            n = s.recv_into(view[:min(len(buf), len(value) - off)])
            if n == 0:
                raise ConnectionError("closed in the GET reply")
            if view[:n] != value[off:off + n]:
                raise RuntimeError("GET: bytes differ at %d" % off)
            off += n
        if recv_exact(s, 2) != b"\r\n":
            raise RuntimeError("GET: no CRLF after the value")
        s.sendall(resp("DEL", key))
        recv_exact(s, 4)
        s.close()
    except Exception as e:  # reported by the caller
        errors.append("client %d: %s" % (i, e))


def cmd_bigrss(args):
    pattern = bytes(range(256))
    value = memoryview((pattern * (args.size // 256 + 1))[:args.size])
    before = rss_kb(args.pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(args.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    errors = []
    t0 = time.monotonic()
    clients = [threading.Thread(target=big_client, args=(args, i, value, errors))
               for i in range(args.count)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    elapsed = time.monotonic() - t0
    done.set()
    sampler.join()
    if errors:
        print("bigrss: %d of %d clients failed: %s" % (len(errors), args.count, errors[:3]),
              file=sys.stderr)
        return 1
    print("%d %d %d %d %.2f" % (args.count, args.size, before, peak[0], elapsed))
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("freeport")
    j = sub.add_parser("jwt")
    j.add_argument("oid")
    j.add_argument("seconds", type=int)
    for name in ("probe", "connect", "idle", "bigrss"):
        q = sub.add_parser(name)
        q.add_argument("--host", default="127.0.0.1")
        q.add_argument("--port", type=int, required=True)
        q.add_argument("--tls", action="store_true")
        q.add_argument("--cacert")
        q.add_argument("--sni", default="localhost")
        q.add_argument("--user", required=True)
        q.add_argument("--password-file", required=True)
        q.add_argument("--count", type=int, default=100)
        q.add_argument("--pid", type=int)
        q.add_argument("--batch", type=int, default=200)
        q.add_argument("--settle", type=float, default=1.0)
        q.add_argument("--size", type=int, default=16 * 1024 * 1024)
    args = p.parse_args()
    if args.cmd == "freeport":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
        s.close()
        return 0
    if args.cmd == "jwt":
        header = b64(b'{"alg":"none","typ":"JWT"}')
        payload = b64(json.dumps({"oid": args.oid, "exp": int(time.time()) + args.seconds}).encode())
        print("%s.%s." % (header, payload))
        return 0
    with open(args.password_file) as f:
        args.password = f.read().strip()
    if args.tls:
        args.ctx = ssl.create_default_context(cafile=args.cacert)
    return {"probe": cmd_probe, "connect": cmd_connect, "idle": cmd_idle,
            "bigrss": cmd_bigrss}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
