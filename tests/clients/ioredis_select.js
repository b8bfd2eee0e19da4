'use strict';
// ioredis through the proxy, database 7 chosen inside a transaction, across a kill of its
// upstream connection (issue #12). Driven by tests/node_clients.rs, which seeds db 0 with
// "before" = "db0" so that a read in the wrong database shows a wrong value, not nil:
//
//   1. multi().select(7).exec(), then SET before db7;
//   2. prints {"event":"ready","client_id":N} (the proxy's upstream connection id for this
//      client) and waits for the line "killed" on stdin;
//   3. GET before (must read "db7"), SET after db7, GET after;
//   4. prints {"event":"summary", ...}; the driver checks db 7 and db 0 from its admin
//      connection (the SET after the kill must be in db 7 and nowhere else).

const Redis = require('ioredis');
const { args, emit, nextLine, describe, lines } = require('./common');

async function main() {
  const a = args();
  const errors = [];
  let reconnecting = 0;
  const r = new Redis({
    host: '127.0.0.1',
    port: Number(a.port),
    retryStrategy: (times) => Math.min(20 * times, 500),
    maxRetriesPerRequest: 5,
  });
  r.on('error', (e) => errors.push(describe(e)));
  r.on('reconnecting', () => reconnecting++);

  const exec = await r.multi().select(7).exec();
  await r.set('before', 'db7');
  const idBefore = Number(await r.client('ID'));
  emit('ready', { client_id: idBefore, exec });

  const go = await nextLine();
  if (go !== 'killed') throw new Error(`expected "killed" on stdin, got ${JSON.stringify(go)}`);
  const results = {};
  for (const [name, run] of [
    ['get_before', () => r.get('before')],
    ['set_after', () => r.set('after', 'db7')],
    ['get_after', () => r.get('after')],
    ['client_id_after', () => r.client('ID')],
  ]) {
    try {
      results[name] = await run();
    } catch (e) {
      results[name] = null;
      errors.push(`${name}: ${describe(e)}`);
    }
  }
  emit('summary', {
    ...results,
    client_id_before: idBefore,
    client_id_after: results.client_id_after === null ? null : Number(results.client_id_after),
    reconnecting,
    errors,
  });
  r.disconnect();
  lines.close();
  process.exitCode = results.get_before === 'db7' && results.get_after === 'db7' ? 0 : 1;
}

main().catch((e) => {
  emit('failed', { error: describe(e) });
  process.exit(2);
});
