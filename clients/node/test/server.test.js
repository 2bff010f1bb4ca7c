// The client against the real server: one server for this file, restarted
// once by the last test. Tests of methods the server does not have yet
// (absent from sys.methods, or answering -32601) skip with the reason.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as sy from '../src/index.js';
import { TestServer } from './server.js';

let server;
let methods = {};
before(async () => {
  server = await TestServer.start();
  const c = await sy.connect({ port: server.port });
  methods = await c.call('sys.methods');
  await c.close();
});
after(async () => { await server?.close(); });

const open = () => sy.connect({ port: server.port, backoff: { baseMs: 50, capMs: 500 } });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (cond, ms = 3000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(10);
  }
};

/** A test of `needs` methods: skipped (with the reason) while the server lacks one. */
function feature(name, needs, body) {
  test(name, async (t) => {
    const missing = needs.filter((m) => !(m in methods));
    if (missing.length) {
      t.skip(`server does not list ${missing.join(', ')} in sys.methods`);
      console.log(`# skip "${name}": server lacks ${missing.join(', ')}`);
      return;
    }
    const clients = [];
    try {
      await body(async () => { const c = await open(); clients.push(c); return c; });
    } catch (err) {
      if (err instanceof sy.MethodNotFound) {
        t.skip(`server answers -32601: ${err.message}`);
        console.log(`# skip "${name}": ${err.message}`);
        return;
      }
      // A new parameter of an existing method (kv.get meta, bus.subscribe
      // queue) is refused by name by a server that predates it.
      if (err instanceof sy.InvalidParams && /unknown field `(meta|queue|revision)`/.test(err.message)) {
        t.skip(`server refuses a new parameter: ${err.message}`);
        console.log(`# skip "${name}": ${err.message}`);
        return;
      }
      throw err;
    } finally {
      for (const c of clients) await c.close();
    }
  });
}

feature('kv basics and typed errors', ['kv.get', 'kv.set', 'kv.incr', 'kv.cas', 'kv.keys', 'kv.del'], async (client) => {
  const c = await client();
  assert.equal(await c.call('sys.ping'), 'pong');
  assert.equal(await c.kv.get('n1.a'), null);
  assert.equal(await c.kv.set('n1.a', { x: [1, 'y'] }), true);
  assert.deepEqual(await c.kv.get('n1.a'), { x: [1, 'y'] });
  assert.equal(await c.kv.incr('n1.n'), 1);
  assert.equal(await c.kv.incr('n1.n', 9), 10);
  assert.equal(await c.kv.cas('n1.n', 11, { expected: 3 }), false);
  assert.equal(await c.kv.cas('n1.n', 11, { expected: 10 }), true);
  assert.equal(await c.kv.cas('n1.new', 'v', { expected: null }), true);
  assert.deepEqual(await c.kv.keys({ prefix: 'n1.' }), ['n1.a', 'n1.n', 'n1.new']);
  assert.equal(await c.kv.del('n1.a'), true);
  assert.equal(await c.kv.del('n1.a'), false);
  await assert.rejects(c.kv.incr('n1.new'), (e) => e instanceof sy.SwitchyardError && e.code === -32010);
  await assert.rejects(c.call('no.such'), (e) => e instanceof sy.MethodNotFound && e.code === -32601);
  await assert.rejects(c.call('kv.get', { nope: 1 }), sy.InvalidParams);
  // Many calls at once: each promise gets its own reply.
  const keys = Array.from({ length: 50 }, (_, i) => `n1.p${i}`);
  await Promise.all(keys.map((k, i) => c.kv.set(k, i)));
  assert.deepEqual(await Promise.all(keys.map((k) => c.kv.get(k))), keys.map((_, i) => i));
});

feature('pub/sub: every local handler whose pattern matches gets the message', ['bus.subscribe', 'bus.publish'], async (client) => {
  const sub = await client();
  const pub = await client();
  const star = [];
  const deep = [];
  const offStar = await sub.bus.subscribe('n2.*', (m) => star.push([m.topic, m.data]));
  await sub.bus.subscribe('n2.>', (m) => deep.push(m.topic));
  assert.equal(await pub.bus.publish('n2.a', 1), 1, 'one connection, one copy');
  assert.equal(await pub.bus.publish('n2.a.b', 2), 1);
  await until(() => star.length === 1 && deep.length === 2);
  assert.deepEqual(star, [['n2.a', 1]]);
  assert.deepEqual(deep, ['n2.a', 'n2.a.b']);
  assert.equal(await offStar(), true);
  await pub.bus.publish('n2.c', 3);
  await until(() => deep.length === 3);
  assert.equal(star.length, 1, 'unsubscribed handler gets nothing');
});

feature('queue group: each message to one member', ['bus.subscribe', 'bus.publish'], async (client) => {
  const a = await client();
  const b = await client();
  const pub = await client();
  const got = { a: [], b: [] };
  await a.bus.subscribe('n3.jobs', (m) => got.a.push(m.data), { queue: 'w' });
  await b.bus.subscribe('n3.jobs', (m) => got.b.push(m.data), { queue: 'w' });
  if ('bus.presence' in methods) {
    assert.equal((await pub.bus.presence('n3.jobs')).queues.w, 2);
  }
  for (let i = 0; i < 20; i++) await pub.bus.publish('n3.jobs', i);
  await until(() => got.a.length + got.b.length === 20);
  await sleep(50);
  assert.equal(got.a.length + got.b.length, 20, 'none to both');
  assert.ok(got.a.length > 0 && got.b.length > 0, `split ${got.a.length}/${got.b.length}`);
  assert.deepEqual([...got.a, ...got.b].sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i));
});

feature('request/reply: respond, errors, no responders, timeout, out-of-order replies', ['bus.request', 'bus.reply'], async (client) => {
  const svc = await client();
  const c = await client();
  await svc.bus.respond('n4.add', (d) => d.a + d.b, { queue: 'adders' });
  await svc.bus.respond('n4.fail', () => { throw new Error('boom'); });
  let slowMsg;
  await svc.bus.subscribe('n4.slow', (m) => { slowMsg = m; });
  assert.equal(await c.bus.request('n4.add', { a: 2, b: 3 }), 5);
  await assert.rejects(c.bus.request('n4.fail', {}), (e) => e instanceof sy.ResponderError && /boom/.test(e.message));
  const t0 = Date.now();
  await assert.rejects(c.bus.request('n4.nobody', 1), (e) => e instanceof sy.NoResponders && e.code === -32032);
  assert.ok(Date.now() - t0 < 1000);
  // A slow request answered after later calls: matched by id.
  const slow = c.bus.request('n4.slow', 'q', { timeoutMs: 3000 });
  await until(() => slowMsg);
  assert.equal(await c.kv.incr('n4.count'), 1);
  assert.equal(await svc.call('bus.reply', { reply: slowMsg.reply, data: 'late' }), true);
  assert.equal(await slow, 'late');
  const t1 = Date.now();
  await assert.rejects(c.bus.request('n4.slow', 'q', { timeoutMs: 200 }), (e) => e instanceof sy.TimeoutError && e.code === -32033 && !e.local);
  assert.ok(Date.now() - t1 >= 180);
});

feature('kv revisions: set/get meta and cas by revision', ['kv.get', 'kv.set', 'kv.cas'], async (client) => {
  const c = await client();
  const r1 = await c.kv.set('n5.k', 'a', { meta: true });
  assert.equal(typeof r1.revision, 'number');
  const g = await c.kv.get('n5.k', { meta: true });
  if (g === 'a') throw new sy.MethodNotFound('kv.get meta not built yet', -32601);
  assert.equal(g.value, 'a');
  assert.equal(g.revision, r1.revision);
  assert.equal(g.expires_in_ms, null);
  assert.equal(await c.kv.cas('n5.k', 'b', { revision: r1.revision + 100 }), false);
  const r2 = await c.kv.cas('n5.k', 'b', { revision: r1.revision, meta: true });
  assert.ok(r2.revision > r1.revision);
  assert.equal(await c.kv.cas('n5.k', 'c', { revision: 0 }), false, 'revision 0: must not exist');
  assert.equal(await c.kv.cas('n5.fresh', 'c', { revision: 0 }), true);
});

feature('kv.watch: set, delete, initial, unwatch', ['kv.watch', 'kv.unwatch'], async (client) => {
  const c = await client();
  await c.kv.set('n6.old', 1);
  const events = [];
  const unwatch = await c.kv.watch('n6.', (e) => events.push(e), { initial: true });
  await until(() => events.some((e) => e.op === 'ready'));
  assert.deepEqual(events.map((e) => [e.op, e.key]), [['set', 'n6.old'], ['ready', undefined]]);
  events.length = 0;
  await c.kv.set('n6.a', 'x');
  await c.kv.del('n6.a');
  await c.kv.set('n7.other', 1);
  await until(() => events.length === 2);
  assert.deepEqual(events.map((e) => [e.op, e.key, e.value]), [['set', 'n6.a', 'x'], ['del', 'n6.a', undefined]]);
  assert.ok(events[1].revision > events[0].revision);
  assert.equal(await unwatch(), true);
  await c.kv.set('n6.b', 1);
  await sleep(100);
  assert.equal(events.length, 2);
});

feature('streams: create, publish, consume with ack, fetch', ['stream.create', 'stream.publish', 'stream.consume', 'stream.ack', 'stream.fetch', 'stream.info', 'stream.delete'], async (client) => {
  const c = await client();
  const info = await c.streams.create('N8', { subjects: ['n8.>'], maxMsgs: 100 });
  assert.equal(info.name, 'N8');
  await assert.rejects(c.streams.create('N8b', { subjects: ['n8.x'] }), sy.StreamConflict);
  for (let i = 1; i <= 3; i++) assert.deepEqual(await c.streams.publish(`n8.o${i}`, i), { stream: 'N8', seq: i });
  await assert.rejects(c.streams.publish('n9.none', 1), sy.NoSuchStream);
  const got = [];
  const stop = await c.streams.consume('N8', 'push', async (m) => { got.push([m.seq, m.data, m.deliveries]); await m.ack(); });
  await until(() => got.length === 3);
  assert.deepEqual(got, [[1, 1, 1], [2, 2, 1], [3, 3, 1]]);
  assert.equal(await stop(), true);
  assert.deepEqual(await c.streams.fetch('N8', 'push', { batch: 5 }), [], 'all acknowledged');
  // stream.consume creates a durable consumer; fetch pulls from it once
  // this connection has detached (what it was sent is due again at once).
  const detach = await c.streams.consume('N8', 'pull', () => {}, { ackWaitMs: 60000 });
  assert.equal(detach.info.consumer, 'pull');
  await detach();
  const pulled = await c.streams.fetch('N8', 'pull', { batch: 2 });
  assert.deepEqual(pulled.map((m) => m.seq), [1, 2]);
  assert.equal(await pulled[0].ack(), 1);
  assert.equal((await c.streams.info('N8')).messages, 3);
  assert.equal(await c.streams.delete('N8'), true);
});

test('TLS: a CA file and a client certificate; an untrusted server is refused', async (t) => {
  if (!server.tls) {
    t.skip('openssl could not make certificates');
    return;
  }
  const { ca, cert, key } = server.tls;
  const c = await sy.connect({ host: 'localhost', port: server.port, tls: { ca, cert, key } });
  try {
    assert.equal(await c.call('sys.ping'), 'pong');
    assert.equal(await c.kv.incr('n9.tls'), 1);
  } finally {
    await c.close();
  }
  // Without the CA the self-signed server certificate is not trusted.
  await assert.rejects(sy.connect({ host: 'localhost', port: server.port, tls: true }), sy.ConnectionLost);
  // The server requires a client certificate (client_auth = "required"), so
  // the success above proves the client sent its own.
  await assert.rejects(async () => {
    // TLS 1.3 may finish the client's side of the handshake before the
    // server's refusal arrives: then the first call fails instead.
    const bare = await sy.connect({ host: 'localhost', port: server.port, tls: { ca }, reconnect: false });
    try { await bare.call('sys.ping'); } finally { await bare.close(); }
  }, (e) => e instanceof sy.ConnectionLost || e instanceof sy.ClientClosed);
});

test('reconnect: the server restarts and the subscription works again', async () => {
  const sub = await open();
  const got = [];
  await sub.bus.subscribe('n10.*', (m) => got.push(m.data));
  const drops = [];
  sub.on('disconnect', () => drops.push(Date.now()));
  const back = new Promise((r) => sub.once('reconnect', r));
  await server.restart();
  await back;
  assert.equal(drops.length, 1);
  const pub = await open();
  try {
    assert.equal(await pub.bus.publish('n10.x', 'after'), 1);
    await until(() => got.length === 1);
    assert.deepEqual(got, ['after']);
    assert.equal(await sub.kv.get('n1.n'), 11, 'data survived the restart');
  } finally {
    await pub.close();
    await sub.close();
  }
});
