// Publish/subscribe, queue groups, request/reply and presence.

import { ResponderError } from './errors.js';

/**
 * A responder whose handler throws answers `{"$error": {code, message}}`;
 * `request` turns that answer into a ResponderError. The wire carries only
 * `data`, so this envelope is the clients' convention, shared with Python.
 */
export const ERROR_KEY = '$error';

export class Bus {
  constructor(client) {
    this.client = client;
  }

  /** Publishes; resolves with the number of recipients. */
  publish(topic, data) {
    return this.client.call('bus.publish', { topic, data });
  }

  /**
   * Calls `handler({topic, data, reply?})` for every message whose topic
   * matches `pattern`; with `{queue}` as one member of that queue group.
   * Resolves with an async `unsubscribe()`.
   */
  subscribe(pattern, handler, opts = {}) {
    return this.client.addSub(pattern, handler, opts.queue);
  }

  /** Sends a request and resolves with the first answer's data. */
  async request(topic, data, opts = {}) {
    const params = { topic, data };
    const serverMs = opts.timeoutMs ?? 5000;
    if (opts.timeoutMs !== undefined) params.timeout_ms = opts.timeoutMs;
    // The server times the request out; the local timer is only a backstop.
    const result = await this.client.call('bus.request', params, { timeoutMs: serverMs + 2000 });
    if (result && typeof result === 'object' && !Array.isArray(result) && Object.keys(result).length === 1 && ERROR_KEY in result) {
      const e = result[ERROR_KEY] ?? {};
      throw new ResponderError(String(e.message ?? 'responder failed'), typeof e.code === 'number' ? e.code : -32000);
    }
    return result;
  }

  /**
   * Answers requests on `subject` with `await handler(data, msg)`; a throw
   * answers an error (see ERROR_KEY). Use `{queue}` so that one member of
   * the group answers each request. Resolves with an async `stop()`.
   */
  respond(subject, handler, opts = {}) {
    const client = this.client;
    return client.addSub(subject, async (msg) => {
      if (!msg.reply) return;
      let data;
      try {
        data = await handler(msg.data, msg);
        if (data === undefined) data = null;
      } catch (err) {
        data = { [ERROR_KEY]: { code: typeof err?.code === 'number' ? err.code : -32000, message: String(err?.message ?? err) } };
      }
      await client.call('bus.reply', { reply: msg.reply, data });
    }, opts.queue);
  }

  /** `{subscribers, queues}` for a subject or pattern. */
  presence(topic) {
    return this.client.call('bus.presence', { topic });
  }
}
