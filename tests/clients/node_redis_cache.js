'use strict';
// node-redis 5 with RESP3 and client-side caching through the proxy, across a kill of its
// upstream connection (issue #12). Driven by tests/node_clients.rs:
//
//   1. reads KEY twice through the caching client (a miss, then a hit served from its cache);
//   2. prints {"event":"ready","client_id":N}, N being the proxy's upstream connection id for
//      the caching client, and waits for the line "killed" on stdin (the driver kills that
//      connection from a direct admin connection);
//   3. waits up to 3 s for the caching client to see its connection close (the proxy cannot
//      restore tracking, so it must close the client; node-redis then drops its cache and
//      reconnects);
//   4. a second, plain client SETs KEY to a new value;
//   5. reads KEY five times through the caching client, 100 ms apart, counting stale reads;
//   6. prints {"event":"summary", ...} and exits 0 if every read was fresh.

const { createClient } = require('redis');
const { args, emit, nextLine, sleep, waitFor, describe, lines } = require('./common');

async function main() {
  const a = args();
  const socket = {
    host: '127.0.0.1',
    port: Number(a.port),
    reconnectStrategy: (retries) => Math.min(20 * (retries + 1), 500),
  };
  const key = a.key;
  const events = { errors: [], ends: 0, reconnecting: 0, ready: 0 };

  const writer = createClient({ socket });
  writer.on('error', (e) => events.errors.push(`writer: ${describe(e)}`));
  const cached = createClient({
    socket,
    RESP: 3,
    clientSideCache: { ttl: 0, maxEntries: 0, evictPolicy: 'LRU' },
  });
  cached.on('error', (e) => events.errors.push(`cached: ${describe(e)}`));
  cached.on('end', () => events.ends++);
  cached.on('reconnecting', () => events.reconnecting++);
  cached.on('ready', () => events.ready++);

  await writer.connect();
  await cached.connect();
  await writer.set(key, 'old');
  const first = await cached.get(key);
  const second = await cached.get(key);
  const hitsBeforeKill = cached.clientSideCache.stats().hitCount;
  const idBefore = await cached.sendCommand(['CLIENT', 'ID']);
  emit('ready', { client_id: Number(idBefore) });

  const go = await nextLine();
  if (go !== 'killed') throw new Error(`expected "killed" on stdin, got ${JSON.stringify(go)}`);
  const readyBefore = events.ready;
  const closedSeen = await waitFor(() => events.reconnecting > 0 || events.errors.length > 0, 3000);

  await writer.set(key, 'new');
  const reads = [];
  const readErrors = [];
  for (let i = 0; i < 5; i++) {
    try {
      reads.push(await cached.get(key));
    } catch (e) {
      readErrors.push(describe(e));
    }
    await sleep(100);
  }
  let idAfter = null;
  try {
    idAfter = Number(await cached.sendCommand(['CLIENT', 'ID']));
  } catch (e) {
    readErrors.push(`CLIENT ID: ${describe(e)}`);
  }
  const summary = {
    first_reads: [first, second],
    cache_hits_before_kill: hitsBeforeKill,
    closed_seen: closedSeen,
    reconnected: events.ready > readyBefore,
    reads,
    stale_reads: reads.filter((v) => v === 'old').length,
    fresh_reads: reads.filter((v) => v === 'new').length,
    read_errors: readErrors,
    client_errors: events.errors,
    client_id_before: Number(idBefore),
    client_id_after: idAfter,
  };
  emit('summary', summary);
  await Promise.allSettled([cached.quit(), writer.quit()]);
  lines.close();
  process.exitCode = summary.fresh_reads === 5 ? 0 : 1;
}

main().catch((e) => {
  emit('failed', { error: describe(e) });
  process.exit(2);
});
