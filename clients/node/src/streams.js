// Durable streams: create/info/list/delete, publish, push consumers
// (consume, with ack/nak on each message) and pull (fetch).

import { snake } from './util.js';

export class Streams {
  constructor(client) {
    this.client = client;
  }

  /** Creates a stream: `{subjects, maxMsgs, maxBytes, maxAgeMs, maxMsgBytes, discard}`. */
  create(name, config) {
    return this.client.call('stream.create', { name, ...snake(config) });
  }

  info(name) {
    return this.client.call('stream.info', { name });
  }

  list() {
    return this.client.call('stream.list', {});
  }

  delete(name) {
    return this.client.call('stream.delete', { name });
  }

  /** Stores a message; `{stream, seq}`. */
  publish(topic, data) {
    return this.client.call('stream.publish', { topic, data });
  }

  /**
   * Attaches to the durable consumer (created if absent) and calls
   * `handler(msg)` for each message; `msg.ack()` / `msg.nak(delayMs)`.
   * opts: deliver ("all" | "new" | "last" | {seq}), filter, ackWaitMs,
   * maxDeliver, maxAckPending. Resolves with an async `stop()` whose
   * `info` is the consumer info. Re-attached after a reconnect.
   */
  async consume(stream, consumer, handler, opts = {}) {
    const client = this.client;
    const key = `${stream}\0${consumer}`;
    if (client.consumers.has(key)) throw new Error(`already consuming ${stream}/${consumer} on this client`);
    const c = { params: { stream, consumer, ...snake(opts) }, handler, liveOn: null, result: null };
    client.consumers.set(key, c);
    let info;
    try {
      info = await client.registerOnce(c, () => client.call('stream.consume', c.params));
    } catch (err) {
      client.consumers.delete(key);
      throw err;
    }
    let done = false;
    const stop = async () => {
      if (done) return false;
      done = true;
      client.consumers.delete(key);
      if (client.connected) return client.call('stream.unconsume', { stream, consumer });
      return true;
    };
    stop.info = info;
    return stop;
  }

  /** Pulls up to `batch` available messages (each with ack/nak). */
  async fetch(stream, consumer, opts = {}) {
    const msgs = await this.client.call('stream.fetch', { stream, consumer, ...snake(opts) });
    return msgs.map((p) => this.message(p));
  }

  ack(stream, consumer, seq) {
    const p = Array.isArray(seq) ? { stream, consumer, seqs: seq } : { stream, consumer, seq };
    return this.client.call('stream.ack', p);
  }

  nak(stream, consumer, seq, delayMs) {
    const p = { stream, consumer, seq };
    if (delayMs !== undefined) p.delay_ms = delayMs;
    return this.client.call('stream.nak', p);
  }

  consumerInfo(stream, consumer) {
    return this.client.call('consumer.info', { stream, consumer });
  }

  deleteConsumer(stream, consumer) {
    return this.client.call('consumer.delete', { stream, consumer });
  }

  /** The message params with `ack()` and `nak(delayMs)` bound to it. */
  message(p) {
    return {
      ...p,
      ack: () => this.ack(p.stream, p.consumer, p.seq),
      nak: (delayMs) => this.nak(p.stream, p.consumer, p.seq, delayMs),
    };
  }
}
