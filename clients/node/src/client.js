// The connection: raw TCP or TLS, newline-delimited JSON-RPC, an id table
// (replies are matched by id, never by order: bus.request answers late),
// notification dispatch, and reconnection that restores auth,
// subscriptions, watches and stream consumers.

import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { EventEmitter } from 'node:events';

import { Backoff } from './backoff.js';
import { ClientClosed, ConnectionLost, TimeoutError, fromRpcError } from './errors.js';
import { subjectMatches } from './subject.js';
import { Bus } from './bus.js';
import { Kv } from './kv.js';
import { Streams } from './streams.js';

const DEFAULT_TIMEOUT_MS = 10_000;

/** Connects and resolves once the first connection is up (and logged in). */
export async function connect(options = {}) {
  const client = new Client(options);
  await client.ready();
  return client;
}

export class Client extends EventEmitter {
  /**
   * options: host ('127.0.0.1'), port (8080), token, user, tls (true or
   * {ca, cert, key, servername, rejectUnauthorized}: file paths or PEM),
   * timeoutMs (per call, 10000), reconnect (true), backoff {baseMs, capMs}.
   */
  constructor(options = {}) {
    super();
    this.options = { host: '127.0.0.1', port: 8080, timeoutMs: DEFAULT_TIMEOUT_MS, reconnect: true, ...options };
    this.backoff = new Backoff(options.backoff);
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer, sent, line}
    this.outbox = []; // lines of calls made while not connected, sent after the restore
    this.subs = new Set(); // {pattern, queue, handler}
    this.serverSubs = new Map(); // "queue\0pattern" -> {count, liveOn, result}
    this.watches = new Map(); // server watch id -> watch
    this.watchList = new Set();
    this.consumers = new Map(); // "stream\0consumer" -> consumer
    this.earlyEvents = []; // kv.event lines that came before their kv.watch reply
    this.restoreWaiters = []; // registrations made while disconnected
    this.socket = null;
    this.connected = false; // socket open and restored: calls go out at once
    this.closed = false;
    this.reconnects = 0;
    this.bus = new Bus(this);
    this.kv = new Kv(this);
    this.streams = new Streams(this);
    this.firstReady = new Promise((resolve, reject) => {
      this.resolveFirst = resolve;
      this.rejectFirst = reject;
    });
    this.firstReady.catch(() => {});
    this.open();
  }

  /** Resolves when the first connection is up; rejects if it failed. */
  ready() {
    return this.firstReady;
  }

  /**
   * Calls `method` with `params` (object or array) and resolves with its
   * result; rejects with a typed SwitchyardError. `opts.timeoutMs` bounds
   * the wait. A call made while reconnecting is sent once the connection
   * is restored; one in flight when it drops fails with ConnectionLost.
   */
  call(method, params, opts = {}) {
    return this.send(method, params, opts, false);
  }

  send(method, params, opts, internal) {
    if (this.closed) return Promise.reject(new ClientClosed('client closed'));
    const id = this.nextId++;
    const msg = { jsonrpc: '2.0', method, id };
    if (params !== undefined && params !== null) msg.params = params;
    const line = JSON.stringify(msg) + '\n';
    const timeoutMs = opts.timeoutMs ?? this.options.timeoutMs;
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, sent: false, line, timer: null };
      entry.timer = setTimeout(() => {
        this.pending.delete(id);
        this.outbox = this.outbox.filter((e) => e !== entry);
        reject(new TimeoutError(`${method}: no reply within ${timeoutMs} ms`, -32033, undefined, true));
      }, timeoutMs);
      this.pending.set(id, entry);
      // Internal calls (the restore) go out on the fresh socket before
      // anything queued; user calls wait for the restore to finish.
      if (this.connected || (internal && this.socket)) this.write(entry);
      else this.outbox.push(entry);
    });
  }

  write(entry) {
    entry.sent = true;
    this.socket.write(entry.line);
  }

  /** Closes the connection; pending calls fail with ClientClosed. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.failPending(new ClientClosed('client closed'), true);
    this.rejectFirst(new ClientClosed('client closed'));
    this.wakeWaiters();
    const s = this.socket;
    this.socket = null;
    this.connected = false;
    if (s) await new Promise((resolve) => { s.once('close', resolve); s.end(); s.destroySoon?.(); setTimeout(() => { s.destroy(); }, 200).unref(); });
  }

  open() {
    const o = this.options;
    let socket;
    if (o.tls) {
      const t = o.tls === true ? {} : o.tls;
      const pem = (v) => (v && !String(v).includes('-----BEGIN') ? readFileSync(v) : v);
      socket = tls.connect({
        host: o.host,
        port: o.port,
        servername: t.servername ?? (net.isIP(o.host) ? undefined : o.host),
        ca: pem(t.ca),
        cert: pem(t.cert),
        key: pem(t.key),
        rejectUnauthorized: t.rejectUnauthorized ?? true,
      });
    } else {
      socket = net.connect({ host: o.host, port: o.port });
    }
    socket.setEncoding('utf8');
    socket.setNoDelay(true);
    this.socket = socket;
    let buffer = '';
    socket.on(o.tls ? 'secureConnect' : 'connect', () => this.restore(socket));
    socket.on('data', (chunk) => {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.trim()) this.onLine(line);
      }
    });
    socket.on('error', (err) => { socket.lastError = err; });
    socket.on('close', () => this.onClose(socket));
  }

  /** After (re)connecting: auth, then every subscription, watch and consumer. */
  async restore(socket) {
    const again = this.reconnects > 0;
    try {
      if (this.options.token) {
        const p = { token: this.options.token };
        if (this.options.user) p.user = this.options.user;
        this.user = (await this.send('sys.auth', p, {}, true)).user;
      }
      // Each item is marked as registered on this socket, so that a
      // registration the user started while disconnected is not sent twice.
      const jobs = [];
      const replay = (item, send) => {
        item.liveOn = socket;
        item.result = send();
        jobs.push(item.result);
      };
      for (const [key, entry] of this.serverSubs) {
        const [queue, pattern] = key.split('\0');
        const p = { topics: [pattern] };
        if (queue) p.queue = queue;
        replay(entry, () => this.send('bus.subscribe', p, {}, true));
      }
      for (const w of this.watchList) replay(w, () => this.startWatch(w, true));
      for (const c of this.consumers.values()) replay(c, () => this.send('stream.consume', c.params, {}, true));
      for (const r of await Promise.allSettled(jobs)) {
        if (r.status === 'rejected') this.emit('restoreError', r.reason);
      }
    } catch (err) {
      if (socket !== this.socket) return;
      if (!again) {
        this.rejectFirst(err);
        this.closed = true;
        this.failPending(err, true);
      }
      this.emit('restoreError', err);
      socket.destroy();
      return;
    }
    if (socket !== this.socket || socket.destroyed) return;
    this.connected = true;
    this.backoff.reset();
    const queued = this.outbox;
    this.outbox = [];
    for (const e of queued) this.write(e);
    if (again) this.emit('reconnect');
    this.resolveFirst(this);
    this.wakeWaiters();
  }

  wakeWaiters() {
    const waiters = this.restoreWaiters;
    this.restoreWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * Registers a restorable item (subscription, watch, consumer) on the
   * server once per connection: `send()` now if connected, else after the
   * restore unless the restore already did it.
   */
  async registerOnce(item, send) {
    const deadline = Date.now() + this.options.timeoutMs;
    while (!this.connected) {
      if (this.closed) throw new ClientClosed('client closed');
      const left = deadline - Date.now();
      if (left <= 0) throw new TimeoutError(`not connected within ${this.options.timeoutMs} ms`, -32033, undefined, true);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.restoreWaiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
    if (item.liveOn !== this.socket) {
      item.liveOn = this.socket;
      item.result = send();
    }
    return item.result;
  }

  onClose(socket) {
    if (socket !== this.socket) return;
    const wasUp = this.connected;
    this.connected = false;
    this.socket = null;
    this.failPending(new ConnectionLost('connection lost', null, socket.lastError?.message), false);
    if (this.closed) return;
    if (wasUp) this.emit('disconnect', socket.lastError);
    if (this.reconnects === 0 && !wasUp && !this.options.retryFirst) {
      // The first connection never came up: report it instead of retrying.
      this.closed = true;
      const err = new ConnectionLost(`cannot connect to ${this.options.host}:${this.options.port}: ${socket.lastError?.message ?? 'closed'}`);
      this.failPending(err, true);
      this.rejectFirst(err);
      return;
    }
    if (!this.options.reconnect) {
      this.closed = true;
      this.failPending(new ClientClosed('connection lost and reconnect is off'), true);
      return;
    }
    this.reconnects++;
    this.retryTimer = setTimeout(() => this.open(), this.backoff.next());
  }

  /** Fails calls in flight (never resent); with `all`, queued ones too. */
  failPending(err, all) {
    for (const [id, e] of this.pending) {
      if (!e.sent && !all) continue;
      clearTimeout(e.timer);
      this.pending.delete(id);
      e.reject(err);
    }
    if (all) this.outbox = [];
  }

  onLine(line) {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      this.emit('protocolError', new Error(`not JSON: ${line.slice(0, 200)}`));
      return;
    }
    if (msg.id !== undefined && msg.id !== null && (msg.result !== undefined || msg.error !== undefined)) {
      const e = this.pending.get(msg.id);
      if (!e) return; // timed out locally: the late reply is dropped
      this.pending.delete(msg.id);
      clearTimeout(e.timer);
      if (msg.error) e.reject(fromRpcError(msg.error));
      else e.resolve(msg.result);
      return;
    }
    const p = msg.params ?? {};
    switch (msg.method) {
      case 'bus.message':
        for (const s of [...this.subs]) {
          if (subjectMatches(s.pattern, p.topic)) this.runHandler(s.handler, p);
        }
        break;
      case 'kv.event': {
        const w = this.watches.get(p.watch);
        if (w) this.runHandler(w.handler, p);
        else if (this.earlyEvents.push(p) > 1000) this.earlyEvents.shift();
        break;
      }
      case 'stream.message': {
        const c = this.consumers.get(`${p.stream}\0${p.consumer}`);
        if (c) this.runHandler(c.handler, this.streams.message(p));
        break;
      }
      default:
        this.emit('notification', msg);
    }
  }

  /** Runs a handler; a throw or rejection is reported, never fatal. */
  runHandler(handler, arg) {
    try {
      const r = handler(arg);
      if (r && typeof r.catch === 'function') r.catch((err) => this.emit('handlerError', err, arg));
    } catch (err) {
      this.emit('handlerError', err, arg);
    }
  }

  // ---- state the restore replays (used by bus.js, kv.js, streams.js) ----

  async addSub(pattern, handler, queue) {
    const sub = { pattern, handler, queue: queue ?? '' };
    const key = `${sub.queue}\0${pattern}`;
    let entry = this.serverSubs.get(key);
    if (!entry) {
      entry = { count: 0, liveOn: null, result: null };
      this.serverSubs.set(key, entry);
    }
    entry.count++;
    this.subs.add(sub);
    const p = { topics: [pattern] };
    if (queue) p.queue = queue;
    try {
      await this.registerOnce(entry, () => this.call('bus.subscribe', p));
    } catch (err) {
      this.subs.delete(sub);
      this.dropServerSub(key);
      throw err;
    }
    let done = false;
    return async () => {
      if (done) return false;
      done = true;
      this.subs.delete(sub);
      if (this.dropServerSub(key) && this.connected) {
        const u = { topics: [pattern] };
        if (queue) u.queue = queue;
        await this.call('bus.unsubscribe', u);
      }
      return true;
    };
  }

  dropServerSub(key) {
    const entry = this.serverSubs.get(key);
    if (!entry) return false;
    if (--entry.count > 0) return false;
    this.serverSubs.delete(key);
    return true;
  }

  /** kv.watch; events that arrive before its reply are kept and replayed. */
  async startWatch(w, internal) {
    const id = await this.send('kv.watch', w.params, {}, internal);
    if (w.id !== undefined) this.watches.delete(w.id);
    w.id = id;
    this.watches.set(id, w);
    const early = this.earlyEvents.filter((e) => e.watch === id);
    this.earlyEvents = this.earlyEvents.filter((e) => e.watch !== id);
    for (const e of early) this.runHandler(w.handler, e);
    return id;
  }
}

/** Whether a topic matches a pattern (exported for callers' own routing). */
export { subjectMatches };
