// Pure logic and the reconnect protocol, against a scripted fake server
// (no switchyard needed): subject matching, backoff, the exported names,
// and what a client resends after a drop.

import test from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import * as sy from '../src/index.js';

test('every name index.d.ts declares is exported, and nothing else', () => {
  const dts = readFileSync(new URL('../index.d.ts', import.meta.url), 'utf8');
  const declared = new Set([...dts.matchAll(/^export declare (?:class|function|const) (\w+)/gm)].map((m) => m[1]));
  const runtimeOnly = ['Bus', 'Kv', 'Streams']; // declared for typing, reached through a Client
  for (const n of runtimeOnly) declared.delete(n);
  assert.deepEqual([...declared].sort(), Object.keys(sy).sort());
  for (const n of declared) assert.notEqual(sy[n], undefined, n);
});

test('subject matching follows NATS', () => {
  const m = sy.subjectMatches;
  assert.equal(m('a.b', 'a.b'), true);
  assert.equal(m('a.*', 'a.b'), true);
  assert.equal(m('a.*', 'a.b.c'), false);
  assert.equal(m('a.*', 'a'), false);
  assert.equal(m('a.>', 'a.b.c'), true);
  assert.equal(m('a.>', 'a'), false);
  assert.equal(m('>', 'x'), true);
  assert.equal(m('*.b.>', 'a.b.c.d'), true);
  assert.equal(m('*.b.>', 'a.c.c'), false);
  assert.equal(m('a.b', 'a.b.c'), false);
});

test('backoff: full jitter under an exponential ceiling capped at 10 s', () => {
  const top = new sy.Backoff({ random: () => 0.999999 });
  const got = Array.from({ length: 10 }, () => top.next());
  assert.deepEqual(got.slice(0, 4), [99, 199, 399, 799]);
  assert.equal(got[9], 9999);
  const low = new sy.Backoff({ random: () => 0 });
  assert.equal(low.next(), 1);
  top.reset();
  assert.equal(top.next(), 99);
});

test('error codes map to typed errors', () => {
  assert.ok(sy.fromRpcError({ code: -32032, message: 'x' }) instanceof sy.NoResponders);
  const t = sy.fromRpcError({ code: -32033, message: 'late' });
  assert.ok(t instanceof sy.TimeoutError);
  assert.equal(t.code, -32033);
  assert.equal(t.local, false);
  assert.ok(sy.fromRpcError({ code: -32061, message: 'x' }) instanceof sy.PermissionDenied);
  const other = sy.fromRpcError({ code: -32010, message: 'not an integer' });
  assert.equal(other.constructor, sy.SwitchyardError);
  assert.equal(other.code, -32010);
});

/** A fake server: records each connection's lines and answers per `script`. */
function fakeServer(script) {
  const conns = [];
  const server = net.createServer((sock) => {
    const c = { sock, lines: [] };
    conns.push(c);
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        c.lines.push(msg);
        const result = script(msg, conns.length);
        if (result !== undefined) sock.write(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result }) + '\n');
      }
    });
    sock.on('error', () => {});
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, conns, port: server.address().port })));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (cond, ms = 3000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
};

test('reconnect: in-flight calls fail with ConnectionLost and are not resent; auth, subscriptions, watches, consumers are', async () => {
  let watchId = 40;
  const fake = await fakeServer((msg) => {
    switch (msg.method) {
      case 'sys.auth': return { user: 'bot' };
      case 'bus.subscribe': return 1;
      case 'kv.watch': return ++watchId;
      case 'stream.consume': return { stream: msg.params.stream, consumer: msg.params.consumer };
      case 'kv.set': return undefined; // never answered: in flight at the drop
      default: return true;
    }
  });
  const c = await sy.connect({ port: fake.port, token: 't0k', backoff: { baseMs: 20, capMs: 50 } });
  try {
    assert.equal(c.user, 'bot');
    const plain = [];
    const queued = [];
    await c.bus.subscribe('a.*', (m) => plain.push(m.topic));
    await c.bus.subscribe('a.>', (m) => queued.push(m.topic), { queue: 'workers' });
    const events = [];
    await c.kv.watch({ pattern: 'cfg.*' }, (e) => events.push(e));
    const msgs = [];
    await c.streams.consume('ORDERS', 'billing', (m) => msgs.push(m.seq), { ackWaitMs: 1000 });

    const inflight = c.kv.set('k', 1);
    await until(() => fake.conns[0]?.lines.some((l) => l.method === 'kv.set'));
    const reconnected = new Promise((r) => c.once('reconnect', r));
    fake.conns[0].sock.destroy();
    await assert.rejects(inflight, sy.ConnectionLost);
    await reconnected;

    const second = fake.conns[1].lines.map((l) => [l.method, l.params]);
    assert.deepEqual(second[0], ['sys.auth', { token: 't0k' }], 'auth goes first');
    const rest = second.slice(1).map(([m, p]) => JSON.stringify([m, p])).sort();
    assert.deepEqual(rest, [
      JSON.stringify(['bus.subscribe', { topics: ['a.*'] }]),
      JSON.stringify(['bus.subscribe', { topics: ['a.>'], queue: 'workers' }]),
      JSON.stringify(['kv.watch', { pattern: 'cfg.*' }]),
      JSON.stringify(['stream.consume', { stream: 'ORDERS', consumer: 'billing', ack_wait_ms: 1000 }]),
    ].sort());
    assert.ok(!second.some(([m]) => m === 'kv.set'), 'the in-flight write is not resent');

    // Notifications route by the new watch id and to every matching handler.
    const push = (method, params) => fake.conns[1].sock.write(JSON.stringify({ jsonrpc: '2.0', method, params }) + '\n');
    push('kv.event', { watch: 42, key: 'cfg.a', op: 'set', revision: 7, value: 1 });
    push('bus.message', { topic: 'a.b', data: 1 });
    push('bus.message', { topic: 'a.b.c', data: 2 });
    push('stream.message', { stream: 'ORDERS', consumer: 'billing', seq: 3, subject: 'o.1', data: {}, deliveries: 1 });
    await until(() => events.length === 1 && queued.length === 2 && msgs.length === 1);
    assert.deepEqual(plain, ['a.b']);
    assert.deepEqual(queued, ['a.b', 'a.b.c']);
    assert.equal(events[0].revision, 7);
    assert.deepEqual(msgs, [3]);

    // A call made while disconnected waits for the restore, then goes out.
    const dropped = new Promise((r) => c.once('disconnect', r));
    fake.conns[1].sock.destroy();
    await dropped;
    const later = c.call('sys.ping');
    const lateWatch = c.kv.watch('late.', () => {});
    const lateSub = c.bus.subscribe('b.*', () => {});
    await until(() => fake.conns.length === 3 && fake.conns[2].lines.some((l) => l.method === 'sys.ping'));
    assert.equal(await later, true);
    await lateSub;
    await lateWatch;
    const third = fake.conns[2].lines;
    assert.equal(third[0].method, 'sys.auth');
    // Made while disconnected: sent once, by the restore or after it, never twice.
    assert.equal(third.filter((l) => l.method === 'bus.subscribe' && l.params.topics[0] === 'b.*').length, 1);
    assert.equal(third.filter((l) => l.method === 'kv.watch' && l.params.prefix === 'late.').length, 1);
    assert.equal(third.filter((l) => l.method === 'kv.watch').length, 2);
  } finally {
    await c.close();
    fake.server.close();
  }
});

test('replies are matched by id, not by order', async () => {
  const held = [];
  const fake = await fakeServer((msg) => { held.push(msg); return undefined; });
  const c = await sy.connect({ port: fake.port });
  try {
    const a = c.call('x.a');
    const b = c.call('x.b');
    await until(() => held.length === 2);
    const sock = fake.conns[0].sock;
    sock.write(JSON.stringify({ jsonrpc: '2.0', id: held[1].id, result: 'B' }) + '\n');
    sock.write(JSON.stringify({ jsonrpc: '2.0', id: held[0].id, error: { code: -32033, message: 'late' } }) + '\n');
    assert.equal(await b, 'B');
    await assert.rejects(a, (e) => e instanceof sy.TimeoutError && e.code === -32033 && !e.local);
    const t0 = Date.now();
    await assert.rejects(c.call('x.c', {}, { timeoutMs: 100 }), (e) => e instanceof sy.TimeoutError && e.local);
    assert.ok(Date.now() - t0 >= 90);
  } finally {
    await c.close();
    fake.server.close();
  }
});

test('the first connection failing rejects connect()', async () => {
  const port = await new Promise((r) => { const s = net.createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
  await assert.rejects(sy.connect({ port }), sy.ConnectionLost);
});

test('respond answers with bus.reply, a throw as $error; request turns $error into ResponderError', async () => {
  const fake = await fakeServer((msg) => {
    if (msg.method === 'bus.request') return { [sy.ERROR_KEY]: { code: -32000, message: 'boom' } };
    return msg.method === 'bus.subscribe' ? 1 : true;
  });
  const c = await sy.connect({ port: fake.port });
  try {
    await c.bus.respond('svc.add', (d) => d.a + d.b);
    await c.bus.respond('svc.fail', () => { throw new Error('nope'); });
    const conn = fake.conns[0];
    const push = (params) => conn.sock.write(JSON.stringify({ jsonrpc: '2.0', method: 'bus.message', params }) + '\n');
    push({ topic: 'svc.add', data: { a: 2, b: 3 }, reply: '_INBOX.1' });
    push({ topic: 'svc.fail', data: {}, reply: '_INBOX.2' });
    push({ topic: 'svc.add', data: { a: 1, b: 1 } }); // no reply subject: not a request
    await until(() => conn.lines.filter((l) => l.method === 'bus.reply').length === 2);
    await sleep(30);
    const replies = conn.lines.filter((l) => l.method === 'bus.reply').map((l) => l.params).sort((x, y) => x.reply.localeCompare(y.reply));
    assert.deepEqual(replies, [
      { reply: '_INBOX.1', data: 5 },
      { reply: '_INBOX.2', data: { [sy.ERROR_KEY]: { code: -32000, message: 'nope' } } },
    ]);
    await assert.rejects(c.bus.request('svc.x', 1), (e) => e instanceof sy.ResponderError && e.message === 'boom');
    const req = conn.lines.find((l) => l.method === 'bus.request');
    assert.deepEqual(req.params, { topic: 'svc.x', data: 1 });
  } finally {
    await c.close();
    fake.server.close();
  }
});

test('watch: events sent before the kv.watch reply reach the handler, in order', async () => {
  const fake = await fakeServer((msg) => {
    if (msg.method !== 'kv.watch') return true;
    return undefined; // answered by hand below
  });
  const c = await sy.connect({ port: fake.port });
  try {
    const events = [];
    const watching = c.kv.watch('cfg.', (e) => events.push([e.op, e.key]), { initial: true });
    await until(() => fake.conns[0]?.lines.length === 1);
    const { id, params } = fake.conns[0].lines[0];
    assert.deepEqual(params, { prefix: 'cfg.', initial: true });
    const ev = (p) => JSON.stringify({ jsonrpc: '2.0', method: 'kv.event', params: { watch: 7, ...p } }) + '\n';
    fake.conns[0].sock.write(ev({ key: 'cfg.a', op: 'set', revision: 1, value: 1 })
      + JSON.stringify({ jsonrpc: '2.0', id, result: 7 }) + '\n'
      + ev({ op: 'ready' }));
    const unwatch = await watching;
    await until(() => events.length === 2);
    assert.deepEqual(events, [['set', 'cfg.a'], ['ready', undefined]]);
    assert.equal(await unwatch(), true);
    assert.deepEqual(fake.conns[0].lines.at(-1).params, { watch: 7 });
  } finally {
    await c.close();
    fake.server.close();
  }
});
