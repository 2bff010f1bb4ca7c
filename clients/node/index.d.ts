// Hand-written types for switchyard-client (src/index.js).

import { EventEmitter } from 'node:events';

export interface TlsOptions {
  /** CA certificate: a file path or PEM text. */
  ca?: string | Buffer;
  /** Client certificate and key (mutual TLS): file paths or PEM text. */
  cert?: string | Buffer;
  key?: string | Buffer;
  servername?: string;
  rejectUnauthorized?: boolean;
}

export interface ClientOptions {
  host?: string;
  port?: number;
  /** Sent with sys.auth on every (re)connect. */
  token?: string;
  user?: string;
  tls?: boolean | TlsOptions;
  /** Per-call timeout in ms (default 10000). */
  timeoutMs?: number;
  /** Reconnect after a drop (default true). */
  reconnect?: boolean;
  /** Retry the very first connection too instead of rejecting (default false). */
  retryFirst?: boolean;
  backoff?: { baseMs?: number; capMs?: number; random?: () => number };
}

export interface CallOptions {
  timeoutMs?: number;
}

export type Stop = () => Promise<boolean | void>;

export interface BusMessage {
  topic: string;
  data: unknown;
  reply?: string;
}

export interface KvEvent {
  watch: number;
  key?: string;
  op: 'set' | 'del' | 'expire' | 'ready';
  revision?: number;
  value?: unknown;
}

export interface StreamMessage {
  stream: string;
  consumer: string;
  seq: number;
  subject: string;
  data: unknown;
  deliveries: number;
  ack(): Promise<number>;
  nak(delayMs?: number): Promise<boolean>;
}

export interface StreamConfig {
  subjects: string[];
  maxMsgs?: number;
  maxBytes?: number;
  maxAgeMs?: number;
  maxMsgBytes?: number;
  discard?: 'old' | 'new';
}

export interface ConsumeOptions {
  deliver?: 'all' | 'new' | 'last' | { seq: number };
  filter?: string;
  ackWaitMs?: number;
  maxDeliver?: number;
  maxAckPending?: number;
}

export declare class Bus {
  publish(topic: string, data: unknown): Promise<number>;
  subscribe(pattern: string, handler: (msg: BusMessage) => unknown, opts?: { queue?: string }): Promise<Stop>;
  request(topic: string, data: unknown, opts?: { timeoutMs?: number }): Promise<any>;
  respond(subject: string, handler: (data: any, msg: BusMessage) => unknown, opts?: { queue?: string }): Promise<Stop>;
  presence(topic: string): Promise<{ subscribers: number; queues: Record<string, number> }>;
}

export declare class Kv {
  get(key: string, opts?: { meta?: boolean }): Promise<any>;
  set(key: string, value: unknown, opts?: { ttlMs?: number; meta?: boolean }): Promise<true | { revision: number }>;
  del(key: string): Promise<boolean>;
  incr(key: string, by?: number): Promise<number>;
  cas(key: string, value: unknown, opts: { expected?: unknown; revision?: number; ttlMs?: number; meta?: boolean }): Promise<boolean | { revision: number }>;
  keys(opts?: { prefix?: string; limit?: number; after?: string; cursor?: string }): Promise<string[] | { keys: string[]; cursor: string }>;
  watch(target: string | { prefix: string } | { pattern: string }, handler: (ev: KvEvent) => unknown, opts?: { initial?: boolean }): Promise<Stop>;
}

export declare class Streams {
  create(name: string, config: StreamConfig): Promise<any>;
  info(name: string): Promise<any>;
  list(): Promise<any[]>;
  delete(name: string): Promise<boolean>;
  publish(topic: string, data: unknown): Promise<{ stream: string; seq: number }>;
  consume(stream: string, consumer: string, handler: (msg: StreamMessage) => unknown, opts?: ConsumeOptions): Promise<Stop & { info: any }>;
  fetch(stream: string, consumer: string, opts?: { batch?: number }): Promise<StreamMessage[]>;
  ack(stream: string, consumer: string, seq: number | number[]): Promise<number>;
  nak(stream: string, consumer: string, seq: number, delayMs?: number): Promise<boolean>;
  consumerInfo(stream: string, consumer: string): Promise<any>;
  deleteConsumer(stream: string, consumer: string): Promise<boolean>;
}

export declare class Client extends EventEmitter {
  constructor(options?: ClientOptions);
  readonly bus: Bus;
  readonly kv: Kv;
  readonly streams: Streams;
  /** The user sys.auth logged in as, when a token was given. */
  user?: string;
  ready(): Promise<Client>;
  call(method: string, params?: object | unknown[], opts?: CallOptions): Promise<any>;
  close(): Promise<void>;
}

export declare function connect(options?: ClientOptions): Promise<Client>;
export declare function subjectMatches(pattern: string, subject: string): boolean;

export declare class Backoff {
  constructor(opts?: { baseMs?: number; capMs?: number; random?: () => number });
  next(): number;
  reset(): void;
}

export declare const ERROR_KEY: '$error';

export declare class SwitchyardError extends Error {
  constructor(message: string, code?: number | null, data?: unknown);
  code: number | null;
  data?: unknown;
}
export declare class ConnectionLost extends SwitchyardError {}
export declare class ClientClosed extends SwitchyardError {}
export declare class MethodNotFound extends SwitchyardError {}
export declare class InvalidParams extends SwitchyardError {}
export declare class NoResponders extends SwitchyardError {}
export declare class TimeoutError extends SwitchyardError {
  /** True when the client's own timer fired (the server never answered). */
  local: boolean;
}
export declare class NoSuchStream extends SwitchyardError {}
export declare class NoSuchConsumer extends SwitchyardError {}
export declare class StreamConflict extends SwitchyardError {}
export declare class LimitExceeded extends SwitchyardError {}
export declare class AuthRequired extends SwitchyardError {}
export declare class PermissionDenied extends SwitchyardError {}
export declare class AuthFailed extends SwitchyardError {}
export declare class ResponderError extends SwitchyardError {}
export declare function fromRpcError(err: { code?: number; message?: string; data?: unknown }): SwitchyardError;
