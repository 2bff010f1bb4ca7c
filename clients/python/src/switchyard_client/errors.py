"""Typed errors: every error a call raises is a SwitchyardError; server
errors carry the JSON-RPC ``code`` and ``data`` as the server sent them."""

from typing import Any, Dict, Optional


class SwitchyardError(Exception):
    """Any error from the client; ``code`` is the JSON-RPC code, or None when local."""

    def __init__(self, message: str, code: Optional[int] = None, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.data = data


class ConnectionLost(SwitchyardError):
    """The connection dropped while the call was in flight; it was not resent."""


class ClientClosed(SwitchyardError):
    """The client was closed."""


class MethodNotFound(SwitchyardError):
    """-32601: no such method (or "not built yet")."""


class InvalidParams(SwitchyardError):
    """-32602"""


class NoResponders(SwitchyardError):
    """-32032: a bus.request found no subscriber."""


class Timeout(SwitchyardError):
    """-32033: no answer in time. Also raised locally (``local`` True) when a
    call's own timeout passes before the server answered."""

    def __init__(self, message: str, code: Optional[int] = -32033, data: Any = None,
                 local: bool = False) -> None:
        super().__init__(message, code, data)
        self.local = local


class NoSuchStream(SwitchyardError):
    """-32034"""


class NoSuchConsumer(SwitchyardError):
    """-32035"""


class StreamConflict(SwitchyardError):
    """-32036"""


class LimitExceeded(SwitchyardError):
    """-32050"""


class AuthRequired(SwitchyardError):
    """-32060"""


class PermissionDenied(SwitchyardError):
    """-32061"""


class AuthFailed(SwitchyardError):
    """-32062"""


class ResponderError(SwitchyardError):
    """A responder's handler raised: the requester gets its message."""


_BY_CODE = {
    -32601: MethodNotFound,
    -32602: InvalidParams,
    -32032: NoResponders,
    -32033: Timeout,
    -32034: NoSuchStream,
    -32035: NoSuchConsumer,
    -32036: StreamConflict,
    -32050: LimitExceeded,
    -32060: AuthRequired,
    -32061: PermissionDenied,
    -32062: AuthFailed,
}


def from_rpc_error(err: Dict[str, Any]) -> SwitchyardError:
    """The typed error for a JSON-RPC error object."""
    code = err.get("code") if isinstance(err, dict) else None
    if not isinstance(code, int):
        code = -32603
    cls = _BY_CODE.get(code, SwitchyardError)
    return cls(str(err.get("message", "error")), code, err.get("data"))
