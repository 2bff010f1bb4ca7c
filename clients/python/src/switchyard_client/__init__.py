"""A client for Switchyard's rpc module (JSON-RPC 2.0 over raw TCP or TLS):
kv with revisions and watch, pub/sub with queue groups, request/reply,
presence and durable streams. Standard library only.

    from switchyard_client import Client
    with Client("127.0.0.1", 8080) as c:
        c.kv.set("greeting", "hello")
        c.bus.respond("svc.echo", lambda data, msg: data, queue="echo")
        print(c.bus.request("svc.echo", {"hi": 1}))
"""

from .backoff import Backoff
from .client import (ERROR_KEY, Bus, Client, Consumer, Kv, StreamMessage, Streams, Subscription,
                     Watch)
from .errors import (AuthFailed, AuthRequired, ClientClosed, ConnectionLost, InvalidParams,
                     LimitExceeded, MethodNotFound, NoResponders, NoSuchConsumer, NoSuchStream,
                     PermissionDenied, ResponderError, StreamConflict, SwitchyardError, Timeout,
                     from_rpc_error)
from .subject import subject_matches

__version__ = "0.1.0"

__all__ = [
    "AuthFailed", "AuthRequired", "Backoff", "Bus", "Client", "ClientClosed", "ConnectionLost",
    "Consumer", "ERROR_KEY", "InvalidParams", "Kv", "LimitExceeded", "MethodNotFound",
    "NoResponders", "NoSuchConsumer", "NoSuchStream", "PermissionDenied", "ResponderError",
    "StreamConflict", "StreamMessage", "Streams", "Subscription", "SwitchyardError", "Timeout",
    "Watch", "from_rpc_error", "subject_matches",
]
