#!/usr/bin/env python3
"""Real redis-py clients through the proxy's shared mode (issue #14).

Uses redis-py (pinned: redis==6.4.0, installed by scripts/test.sh), the way an app does: a
connection pool per client object, threads sharing it, pipelines, transactions, Pub/Sub, a
blocking pop, and a RESP3 client. Runs for --seconds while the test rotates tokens, and
checks every reply:

- counters: WORKERS threads, each INCRs a key of its own, alone and in pipelines of 5
  (without MULTI: shared); every fourth worker also in MULTI/EXEC (transaction=True: that
  pins its connection); every reply must be the next number;
- pubsub: a subscriber (pinned) must receive every message a publisher sends, in order;
- blocking: a BLPOP 0 consumer (pinned) must receive every job a producer pushes, in order;
- resp3: a protocol=3 client's HGETALL must come back as a dict, its HSETs counted.

Prints one JSON object on stdout:

    {"ok": n, "failed": n, "errors": [first few messages], "messages": n, "jobs": n}

Exit status: 0 if every check passed and each part did some work, 1 otherwise.
"""

import argparse
import json
import sys
import threading
import time

MAX_ERRORS = 10


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.errors = []

    def good(self, n=1):
        with self.lock:
            self.ok += n

    def bad(self, what):
        with self.lock:
            self.failed += 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(what)


def counter_worker(make, i, stop, tally):
    r = make()
    key = "shared:count:%d" % i
    n = 0
    step = 0
    while not stop.is_set():
        step += 1
        try:
            if step % 3 == 0:
                with r.pipeline(transaction=False) as p:
                    for _ in range(5):
                        p.incr(key)
                    got = p.execute()
            elif step % 7 == 0 and i % 4 == 0:
                with r.pipeline(transaction=True) as p:
                    p.incr(key)
                    p.incr(key)
                    got = p.execute()
            else:
                got = [r.incr(key)]
            want = list(range(n + 1, n + 1 + len(got)))
            if got != want:
                tally.bad("counter %d: got %r, want %r" % (i, got, want))
                return
            n += len(got)
            tally.good(len(got))
        except Exception as e:  # noqa: BLE001 - every failure is reported
            tally.bad("counter %d: %r" % (i, e))
            return
        time.sleep(0.002)


def pubsub_part(make, stop, tally, result):
    sub = make().pubsub()
    sub.subscribe("shared:news")
    # The subscribe confirmation.
    first = sub.get_message(timeout=10)
    if not first or first.get("type") != "subscribe":
        tally.bad("pubsub: no subscribe confirmation: %r" % (first,))
        return
    publisher = make()
    sent = 0
    received = 0
    while not stop.is_set():
        sent += 1
        if publisher.publish("shared:news", "m%d" % sent) != 1:
            tally.bad("pubsub: message %d reached no subscriber" % sent)
            return
        msg = sub.get_message(timeout=10)
        if not msg or msg.get("data") != ("m%d" % sent).encode():
            tally.bad("pubsub: message %d: got %r" % (sent, msg))
            return
        received += 1
        tally.good()
        time.sleep(0.01)
    result["messages"] = received
    sub.close()


def blocking_part(make, stop, tally, result):
    done = []

    def consumer():
        c = make()
        while True:
            item = c.blpop(["shared:jobs"], timeout=0)
            if item[1] == b"end":
                return
            done.append(item[1])

    t = threading.Thread(target=consumer)
    t.start()
    producer = make()
    pushed = 0
    while not stop.is_set():
        pushed += 1
        producer.rpush("shared:jobs", "j%d" % pushed)
        time.sleep(0.02)
    producer.rpush("shared:jobs", "end")
    t.join(timeout=30)
    want = [("j%d" % k).encode() for k in range(1, pushed + 1)]
    if t.is_alive() or done != want:
        tally.bad("blocking: got %d jobs of %d (first differences: %r)" % (
            len(done), pushed, [x for x in zip(done, want) if x[0] != x[1]][:3]))
        return
    tally.good(pushed)
    result["jobs"] = pushed


def resp3_part(port, stop, tally):
    import redis
    r = redis.Redis(host="127.0.0.1", port=port, protocol=3)
    n = 0
    while not stop.is_set():
        n += 1
        try:
            r.hset("shared:h3", "f%d" % (n % 5), n)
            h = r.hgetall("shared:h3")
            if not isinstance(h, dict) or len(h) != min(n, 5):
                tally.bad("resp3: HGETALL gave %r" % (h,))
                return
            tally.good(2)
        except Exception as e:  # noqa: BLE001
            tally.bad("resp3: %r" % (e,))
            return
        time.sleep(0.005)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args()
    import redis

    def make():
        return redis.Redis(host="127.0.0.1", port=args.port, socket_timeout=30)

    make().flushall()
    tally = Tally()
    stop = threading.Event()
    result = {"messages": 0, "jobs": 0}
    threads = [threading.Thread(target=counter_worker, args=(make, i, stop, tally))
               for i in range(args.workers)]
    threads.append(threading.Thread(target=pubsub_part, args=(make, stop, tally, result)))
    threads.append(threading.Thread(target=blocking_part, args=(make, stop, tally, result)))
    threads.append(threading.Thread(target=resp3_part, args=(args.port, stop, tally)))
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    out = {"ok": tally.ok, "failed": tally.failed, "errors": tally.errors}
    out.update(result)
    print(json.dumps(out))
    good = tally.failed == 0 and tally.ok > 0 and result["messages"] > 0 and result["jobs"] > 0
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
