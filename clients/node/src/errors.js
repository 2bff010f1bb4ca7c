// Typed errors. Every error a call can reject with is a SwitchyardError;
// server errors carry the JSON-RPC `code` and `data` as the server sent them.

/** Any error from the client; `code` is the JSON-RPC code, or null when local. */
export class SwitchyardError extends Error {
  constructor(message, code = null, data = undefined) {
    super(message);
    this.name = this.constructor.name;
    this.code = code;
    if (data !== undefined) this.data = data;
  }
}

/** The connection dropped while this call was in flight; it was not resent. */
export class ConnectionLost extends SwitchyardError {}
/** The client was closed. */
export class ClientClosed extends SwitchyardError {}
/** -32601: the server has no such method (or it is "not built yet"). */
export class MethodNotFound extends SwitchyardError {}
/** -32602 */
export class InvalidParams extends SwitchyardError {}
/** -32032: a bus.request found no subscriber. */
export class NoResponders extends SwitchyardError {}
/**
 * -32033: no answer in time. Also raised locally (code -32033, `local` true)
 * when a call's own timeout passes before the server answered.
 */
export class TimeoutError extends SwitchyardError {
  constructor(message, code = -32033, data = undefined, local = false) {
    super(message, code, data);
    this.local = local;
  }
}
/** -32034 */
export class NoSuchStream extends SwitchyardError {}
/** -32035 */
export class NoSuchConsumer extends SwitchyardError {}
/** -32036 */
export class StreamConflict extends SwitchyardError {}
/** -32050 */
export class LimitExceeded extends SwitchyardError {}
/** -32060 */
export class AuthRequired extends SwitchyardError {}
/** -32061 */
export class PermissionDenied extends SwitchyardError {}
/** -32062 */
export class AuthFailed extends SwitchyardError {}
/** A responder's handler threw: the requester gets this with the responder's message. */
export class ResponderError extends SwitchyardError {}

const BY_CODE = new Map([
  [-32601, MethodNotFound],
  [-32602, InvalidParams],
  [-32032, NoResponders],
  [-32033, TimeoutError],
  [-32034, NoSuchStream],
  [-32035, NoSuchConsumer],
  [-32036, StreamConflict],
  [-32050, LimitExceeded],
  [-32060, AuthRequired],
  [-32061, PermissionDenied],
  [-32062, AuthFailed],
]);

/** The typed error for a JSON-RPC error object. */
export function fromRpcError(err) {
  const code = typeof err?.code === 'number' ? err.code : -32603;
  const Cls = BY_CODE.get(code) ?? SwitchyardError;
  return new Cls(String(err?.message ?? 'error'), code, err?.data);
}
