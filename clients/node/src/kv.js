// The key-value store: get/set/del/incr/cas/keys with revisions, and watch.

import { snake } from './util.js';

export class Kv {
  constructor(client) {
    this.client = client;
  }

  /** The value or null; with `{meta:true}`, `{value, revision, expires_in_ms}` or null. */
  get(key, opts = {}) {
    return this.client.call('kv.get', { key, ...snake(opts) });
  }

  /** Sets `key` (`{ttlMs, meta}`); true, or `{revision}` with meta. */
  set(key, value, opts = {}) {
    return this.client.call('kv.set', { key, value, ...snake(opts) });
  }

  del(key) {
    return this.client.call('kv.del', { key });
  }

  incr(key, by = 1) {
    return this.client.call('kv.incr', { key, by });
  }

  /**
   * Compare-and-set: `{expected}` (a value, null = absent) or `{revision}`
   * (0 = must not exist), plus `{ttlMs, meta}`. True/false, or with meta
   * `{revision}`/false.
   */
  cas(key, value, opts = {}) {
    return this.client.call('kv.cas', { key, value, ...snake(opts) });
  }

  /** One page: `{prefix, limit, after, cursor}` as the server documents. */
  keys(opts = {}) {
    return this.client.call('kv.keys', snake(opts));
  }

  /**
   * Watches a prefix (a string, or `{prefix}`) or `{pattern}`; `handler`
   * gets each `{watch, key, op, revision, value?}`. `{initial:true}` first
   * sends the current keys, then `{op:"ready"}`. Resolves with an async
   * `unwatch()`. Re-established after a reconnect.
   */
  async watch(target, handler, opts = {}) {
    const client = this.client;
    const params = typeof target === 'string' ? { prefix: target } : { ...target };
    if (opts.initial) params.initial = true;
    const w = { params, handler, id: undefined, liveOn: null, result: null };
    client.watchList.add(w);
    try {
      await client.registerOnce(w, () => client.startWatch(w, false));
    } catch (err) {
      client.watchList.delete(w);
      throw err;
    }
    let done = false;
    return async () => {
      if (done) return false;
      done = true;
      client.watchList.delete(w);
      client.watches.delete(w.id);
      if (client.connected) return client.call('kv.unwatch', { watch: w.id });
      return true;
    };
  }
}
