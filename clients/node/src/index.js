// The Switchyard client for Node.js: everything the package exports.

export { connect, Client, subjectMatches } from './client.js';
export { Backoff } from './backoff.js';
export { ERROR_KEY } from './bus.js';
export {
  SwitchyardError,
  ConnectionLost,
  ClientClosed,
  MethodNotFound,
  InvalidParams,
  NoResponders,
  TimeoutError,
  NoSuchStream,
  NoSuchConsumer,
  StreamConflict,
  LimitExceeded,
  AuthRequired,
  PermissionDenied,
  AuthFailed,
  ResponderError,
  fromRpcError,
} from './errors.js';
