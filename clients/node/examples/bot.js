// A small bot: answers "svc.time" requests as one member of a queue group,
// asks itself the time, and counts its runs in the kv store.
//
//   node clients/node/examples/bot.js [port] [token]
//
// Request/reply needs a server with bus.request; without it the bot says so
// and shows the kv part only.

import { connect, MethodNotFound, InvalidParams } from '../src/index.js';

const port = Number(process.argv[2] ?? 8080);
const token = process.argv[3] ?? process.env.SWITCHYARD_TOKEN;
const c = await connect({ port, token });
c.on('disconnect', () => console.log('disconnected; reconnecting'));
c.on('reconnect', () => console.log('reconnected; subscriptions restored'));
try {
  console.log('runs so far:', await c.kv.incr('bot:runs'));
  await c.kv.set('bot:last', { at: new Date().toISOString() });
  console.log('last run:', await c.kv.get('bot:last'));
  try {
    await c.bus.respond('svc.time', () => ({ now: Date.now() }), { queue: 'time' });
    console.log('svc.time answers:', await c.bus.request('svc.time', null, { timeoutMs: 1000 }));
  } catch (err) {
    if (!(err instanceof MethodNotFound || err instanceof InvalidParams)) throw err;
    console.log('this server has no request/reply yet:', err.message);
  }
} finally {
  await c.close();
}
