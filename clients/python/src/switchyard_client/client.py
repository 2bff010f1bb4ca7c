"""The blocking client: one socket (raw TCP or TLS) speaking newline-delimited
JSON-RPC, a reader thread that routes replies by id (never by order:
bus.request answers late) and notifications to handlers, which run one at a
time on a dispatch thread, and reconnection that restores auth,
subscriptions, watches and stream consumers.
"""

import itertools
import json
import logging
import queue
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Union

from .backoff import Backoff
from .errors import ClientClosed, ConnectionLost, ResponderError, Timeout, from_rpc_error
from .subject import subject_matches

log = logging.getLogger("switchyard_client")

#: A responder whose handler raises answers ``{"$error": {code, message}}``;
#: ``request`` turns that answer into a ResponderError. The wire carries
#: only ``data``, so this envelope is the clients' convention (Node too).
ERROR_KEY = "$error"

_MISSING = object()


class _Pending:
    __slots__ = ("event", "result", "error", "sock")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.sock: Any = None


class _SubEntry:
    """One server subscription (queue, pattern), shared by local handlers."""

    __slots__ = ("count", "live_on")

    def __init__(self) -> None:
        self.count = 0
        self.live_on: Any = None  # the socket it was last registered on


class Subscription:
    """A bus subscription; ``unsubscribe()`` ends it."""

    def __init__(self, client: "Client", pattern: str, handler: Callable, queue_name: str) -> None:
        self._client = client
        self.pattern = pattern
        self.handler = handler
        self.queue = queue_name
        self.active = True

    def unsubscribe(self) -> bool:
        return self._client._drop_sub(self)


class Watch:
    """A kv watch; ``unwatch()`` ends it."""

    def __init__(self, client: "Client", params: Dict[str, Any], handler: Callable) -> None:
        self._client = client
        self.params = params
        self.handler = handler
        self.id: Optional[int] = None
        self.live_on: Any = None

    def unwatch(self) -> bool:
        return self._client._drop_watch(self)


class Consumer:
    """An attached stream consumer; ``stop()`` detaches; ``info`` is the consumer info."""

    def __init__(self, client: "Client", params: Dict[str, Any], handler: Callable) -> None:
        self._client = client
        self.params = params
        self.handler = handler
        self.info: Any = None
        self.live_on: Any = None

    @property
    def key(self) -> tuple:
        return (self.params["stream"], self.params["consumer"])

    def stop(self) -> bool:
        return self._client._drop_consumer(self)


class StreamMessage(dict):
    """A stream.message's params, with ``ack()`` and ``nak(delay_ms)``."""

    def __init__(self, client: "Client", params: Dict[str, Any]) -> None:
        super().__init__(params)
        self._client = client

    def ack(self) -> int:
        return self._client.streams.ack(self["stream"], self["consumer"], self["seq"])

    def nak(self, delay_ms: Optional[int] = None) -> bool:
        return self._client.streams.nak(self["stream"], self["consumer"], self["seq"], delay_ms)


def _drop_none(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class Client:
    """A connection to Switchyard's rpc module.

    ``tls``: True (system CAs) or a dict ``{"ca": path, "cert": path, "key":
    path, "server_hostname": name}`` or an ``ssl.SSLContext``. ``timeout`` is
    the default per-call timeout in seconds. The constructor connects (and
    logs in with ``token``) or raises ConnectionLost.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, token: Optional[str] = None,
                 user: Optional[str] = None, tls: Union[None, bool, dict, ssl.SSLContext] = None,
                 timeout: float = 10.0, reconnect: bool = True, backoff: Optional[Backoff] = None,
                 connect_timeout: float = 5.0) -> None:
        self.host, self.port = host, port
        self.token = token
        self._auth_user = user
        #: The user sys.auth logged in as (when a token was given).
        self.user: Optional[str] = None
        self.timeout = timeout
        self.reconnect = reconnect
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self._tls = self._tls_context(tls)
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._ready = threading.Condition(self._lock)
        self._write_lock = threading.Lock()  # one line at a time
        # A TLS socket's SSL state must never be used by two threads at
        # once (a recv racing a send can corrupt it and hang the
        # connection): each SSL call holds this lock, and the reader waits
        # for data outside it.
        self._io_lock = threading.Lock()
        self._pending: Dict[int, _Pending] = {}
        self._subs: List[Subscription] = []
        self._server_subs: Dict[tuple, _SubEntry] = {}  # (queue, pattern) -> entry
        self._watches: Dict[int, Watch] = {}
        self._watch_list: List[Watch] = []
        self._early_events: List[dict] = []
        self._consumers: Dict[tuple, Consumer] = {}
        self._sock: Any = None
        self._connected = False
        self._closed = False
        self.reconnects = 0
        self.on_reconnect: Optional[Callable[[], Any]] = None
        self.on_disconnect: Optional[Callable[[], Any]] = None
        #: Called with any other notification (e.g. bus.revoked, bus.overflow).
        self.on_notification: Optional[Callable[[dict], Any]] = None
        self._dispatch: "queue.Queue[Any]" = queue.Queue()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="switchyard-dispatch",
                                            daemon=True)
        self._dispatcher.start()
        self.kv = Kv(self)
        self.bus = Bus(self)
        self.streams = Streams(self)
        try:
            sock = self._open()
        except OSError as e:
            self.close()
            raise ConnectionLost(f"cannot connect to {host}:{port}: {e}") from None
        try:
            self._restore(sock)
        except BaseException:
            self.close()
            raise

    # ---- calls ----

    def call(self, method: str, params: Any = None, timeout: Optional[float] = None) -> Any:
        """Calls ``method`` and returns its result, or raises a typed
        SwitchyardError. A call made while reconnecting waits for the
        restore; one in flight when the connection drops raises ConnectionLost."""
        return self._call(method, params, timeout, internal=False)

    def _call(self, method: str, params: Any, timeout: Optional[float], internal: bool) -> Any:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        ident = next(self._ids)
        msg: Dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": ident}
        if params is not None:
            msg["params"] = params
        line = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        p = _Pending()
        with self._lock:
            while not self._closed and not self._connected and not internal:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(f"{method}: not connected within {timeout} s", local=True)
                self._ready.wait(left)
            if self._closed:
                raise ClientClosed("client closed")
            sock = self._sock
            if sock is None:
                raise ConnectionLost("connection lost")
            p.sock = sock
            self._pending[ident] = p
        try:
            self._write(sock, line)
        except OSError:
            pass  # the reader sees the drop and fails this call
        if not p.event.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                self._pending.pop(ident, None)
            if not p.event.is_set():
                raise Timeout(f"{method}: no reply within {timeout} s", local=True)
        if p.error is not None:
            raise p.error
        return p.result

    def _send_nowait(self, method: str, params: Any) -> None:
        """Sends a call whose reply is read and dropped (bus.reply from handlers)."""
        with self._lock:
            sock = self._sock
            if sock is None or not self._connected:
                return
        msg = {"jsonrpc": "2.0", "method": method, "params": params, "id": f"x{next(self._ids)}"}
        try:
            self._write(sock, (json.dumps(msg, separators=(",", ":")) + "\n").encode())
        except OSError:
            pass

    def close(self) -> None:
        """Closes the connection; waiting calls raise ClientClosed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._connected = False
            sock, self._sock = self._sock, None
            self._fail(ClientClosed("client closed"), None)
            self._ready.notify_all()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._dispatch.put(None)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- connection ----

    @staticmethod
    def _tls_context(tls: Any) -> Optional[ssl.SSLContext]:
        if not tls:
            return None
        if isinstance(tls, ssl.SSLContext):
            return tls
        opts = tls if isinstance(tls, dict) else {}
        ctx = ssl.create_default_context(cafile=opts.get("ca"))
        if opts.get("cert"):
            ctx.load_cert_chain(opts["cert"], opts.get("key"))
        return ctx

    def _open(self) -> Any:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            sock.setblocking(False)  # see _io_lock
        else:
            sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._closed:  # closed while connecting
                sock.close()
                raise OSError("client closed")
            self._sock = sock
        threading.Thread(target=self._read, args=(sock,), name="switchyard-reader", daemon=True).start()
        return sock

    def _restore(self, sock: Any) -> None:
        """After (re)connecting: auth, then every subscription, watch and consumer."""
        if self.token:
            p = {"token": self.token}
            if self._auth_user:
                p["user"] = self._auth_user
            self.user = self._call("sys.auth", p, None, internal=True)["user"]
        with self._lock:
            # Marked as registered on this socket, so that a registration the
            # user started while disconnected is not sent twice.
            subs = list(self._server_subs)
            watches = list(self._watch_list)
            consumers = list(self._consumers.values())
            for item in [*self._server_subs.values(), *watches, *consumers]:
                item.live_on = sock
        for queue_name, pattern in subs:
            self._call("bus.subscribe", _drop_none({"topics": [pattern], "queue": queue_name or None}),
                       None, internal=True)
        for w in watches:
            self._start_watch(w, internal=True)
        for c in consumers:
            try:
                c.info = self._call("stream.consume", c.params, None, internal=True)
            except ConnectionLost:
                raise
            except Exception as e:  # a deleted stream must not stop the rest
                log.warning("restoring consumer %s: %s", c.key, e)
        with self._lock:
            if sock is not self._sock:
                raise ConnectionLost("connection lost during restore")
            self._connected = True
            self.backoff.reset()
            self._ready.notify_all()

    def _write(self, sock: Any, data: bytes) -> None:
        if not isinstance(sock, ssl.SSLSocket):
            with self._write_lock:
                sock.sendall(data)
            return
        view = memoryview(data)
        with self._write_lock:
            while view:
                try:
                    with self._io_lock:
                        n = sock.send(view)
                    view = view[n:]
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    # Wait outside the SSL lock, so that the reader goes on
                    # reading (the server may be waiting for us to read).
                    select.select([], [sock], [], 0.5)

    def _read(self, sock: Any) -> None:
        try:
            if isinstance(sock, ssl.SSLSocket):
                self._read_tls(sock)
            else:
                # The file holds its own reference to the socket: close it too.
                with sock.makefile("rb") as f:
                    for raw in f:
                        if raw.strip():
                            self._on_line(raw)
        except (OSError, ValueError):
            pass
        self._on_close(sock)

    def _read_tls(self, sock: ssl.SSLSocket) -> None:
        buf = b""
        while True:
            # pending(): bytes already decrypted, which select cannot see.
            if not sock.pending():
                if sock.fileno() < 0:
                    return
                ready, _, _ = select.select([sock], [], [], 0.5)
                if not ready:
                    continue
            try:
                with self._io_lock:
                    data = sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                continue
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                if raw.strip():
                    self._on_line(raw)

    def _on_close(self, sock: Any) -> None:
        with self._lock:
            if sock is not self._sock:
                return
            was_up = self._connected
            self._sock = None
            self._connected = False
            self._fail(ConnectionLost("connection lost"), sock)
            if self._closed:
                return
            if not self.reconnect:
                self._closed = True
                self._fail(ClientClosed("connection lost and reconnect is off"), None)
                self._ready.notify_all()
                return
        try:
            sock.close()
        except OSError:
            pass
        if was_up and self.on_disconnect:
            self._dispatch.put((self.on_disconnect, None))
        threading.Thread(target=self._reconnect_loop, name="switchyard-reconnect", daemon=True).start()

    def _reconnect_loop(self) -> None:
        while not self._closed:
            time.sleep(self.backoff.next())
            if self._closed:
                return
            try:
                sock = self._open()
            except OSError:
                continue
            try:
                self._restore(sock)
            except ConnectionLost:
                return  # the reader of that socket starts the next loop
            except Exception as e:
                log.warning("restore after reconnect failed: %s", e)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self.reconnects += 1
            if self.on_reconnect:
                self._dispatch.put((self.on_reconnect, None))
            return

    def _register_once(self, item: Any, send: Callable[[], Any]) -> Any:
        """Registers a restorable item on the server once per connection:
        ``send()`` when connected, unless the restore already did it."""
        deadline = time.monotonic() + self.timeout
        with self._lock:
            while not self._connected and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(f"not connected within {self.timeout} s", local=True)
                self._ready.wait(left)
            if self._closed:
                raise ClientClosed("client closed")
            if item.live_on is self._sock:
                return None
            item.live_on = self._sock
        return send()

    def _fail(self, err: BaseException, sock: Any) -> None:
        """Fails calls in flight on ``sock`` (all when None); caller holds the lock."""
        for ident, p in list(self._pending.items()):
            if sock is None or p.sock is sock:
                del self._pending[ident]
                p.error = err
                p.event.set()

    def _on_line(self, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            log.warning("not JSON: %r", raw[:200])
            return
        if not isinstance(msg, dict):
            return
        ident = msg.get("id")
        if ident is not None and ("result" in msg or "error" in msg):
            with self._lock:
                p = self._pending.pop(ident, None)
            if p is None:  # timed out locally, or a _send_nowait reply
                if msg.get("error") is not None:
                    log.warning("call %s failed: %s", ident, msg["error"])
                return
            if msg.get("error") is not None:
                p.error = from_rpc_error(msg["error"])
            else:
                p.result = msg.get("result")
            p.event.set()
            return
        method, params = msg.get("method"), msg.get("params") or {}
        if method == "bus.message":
            topic = params.get("topic", "")
            with self._lock:
                targets = [s.handler for s in self._subs if subject_matches(s.pattern, topic)]
            for h in targets:
                self._dispatch.put((h, params))
        elif method == "kv.event":
            with self._lock:
                w = self._watches.get(params.get("watch"))
                if w is None:
                    # Before its kv.watch reply was handled (initial values).
                    self._early_events.append(params)
                    del self._early_events[:-1000]
                    return
                self._dispatch.put((w.handler, params))
        elif method == "stream.message":
            with self._lock:
                c = self._consumers.get((params.get("stream"), params.get("consumer")))
            if c is not None:
                self._dispatch.put((c.handler, StreamMessage(self, params)))
        else:
            # bus.overflow, bus.revoked and whatever a newer server sends.
            log.warning("notification %s: %s", method, params)
            if self.on_notification is not None:
                self._dispatch.put((self.on_notification, msg))

    def _dispatch_loop(self) -> None:
        while True:
            item = self._dispatch.get()
            if item is None:
                return
            handler, arg = item
            try:
                handler() if arg is None else handler(arg)
            except Exception:
                log.exception("handler %r failed", handler)

    # ---- state the restore replays ----

    def _add_sub(self, pattern: str, handler: Callable, queue_name: Optional[str]) -> Subscription:
        sub = Subscription(self, pattern, handler, queue_name or "")
        key = (sub.queue, pattern)
        with self._lock:
            entry = self._server_subs.setdefault(key, _SubEntry())
            entry.count += 1
            self._subs.append(sub)
        try:
            self._register_once(entry, lambda: self.call(
                "bus.subscribe", _drop_none({"topics": [pattern], "queue": queue_name})))
        except BaseException:
            self._forget_sub(sub)
            raise
        return sub

    def _forget_sub(self, sub: Subscription) -> bool:
        """Drops local state; True when the server subscription should go too."""
        with self._lock:
            if not sub.active:
                return False
            sub.active = False
            self._subs.remove(sub)
            key = (sub.queue, sub.pattern)
            entry = self._server_subs.get(key)
            if entry is None:
                return False
            entry.count -= 1
            if entry.count > 0:
                return False
            del self._server_subs[key]
            return True

    def _drop_sub(self, sub: Subscription) -> bool:
        was = sub.active
        if self._forget_sub(sub) and self._connected:
            self.call("bus.unsubscribe", _drop_none({"topics": [sub.pattern], "queue": sub.queue or None}))
        return was

    def _start_watch(self, w: Watch, internal: bool) -> int:
        ident = self._call("kv.watch", w.params, None, internal)
        with self._lock:
            if w.id is not None:
                self._watches.pop(w.id, None)
            w.id = ident
            self._watches[ident] = w
            early = [e for e in self._early_events if e.get("watch") == ident]
            self._early_events = [e for e in self._early_events if e.get("watch") != ident]
            # Queued under the lock: the reader dispatches this watch's later
            # events only once it can see the watch, so after these.
            for e in early:
                self._dispatch.put((w.handler, e))
        return ident

    def _drop_watch(self, w: Watch) -> bool:
        with self._lock:
            if w not in self._watch_list:
                return False
            self._watch_list.remove(w)
            self._watches.pop(w.id, None)
        if self._connected:
            return bool(self.call("kv.unwatch", {"watch": w.id}))
        return True

    def _drop_consumer(self, c: Consumer) -> bool:
        with self._lock:
            if self._consumers.get(c.key) is not c:
                return False
            del self._consumers[c.key]
        if self._connected:
            return bool(self.call("stream.unconsume", {"stream": c.key[0], "consumer": c.key[1]}))
        return True


class Kv:
    """The key-value store: get/set/del/incr/cas/keys with revisions, and watch."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def get(self, key: str, meta: bool = False) -> Any:
        """The value or None; with ``meta``, ``{value, revision, expires_in_ms}`` or None."""
        return self._c.call("kv.get", {"key": key, "meta": True} if meta else {"key": key})

    def set(self, key: str, value: Any, ttl_ms: Optional[int] = None, meta: bool = False) -> Any:
        return self._c.call("kv.set", _drop_none({"key": key, "value": value, "ttl_ms": ttl_ms,
                                                  "meta": meta or None}))

    def delete(self, key: str) -> bool:
        return self._c.call("kv.del", {"key": key})

    def incr(self, key: str, by: int = 1) -> int:
        return self._c.call("kv.incr", {"key": key, "by": by})

    def cas(self, key: str, value: Any, expected: Any = _MISSING, revision: Optional[int] = None,
            ttl_ms: Optional[int] = None, meta: bool = False) -> Any:
        """Compare-and-set by ``expected`` value (None = absent) or by
        ``revision`` (0 = must not exist)."""
        p: Dict[str, Any] = _drop_none({"key": key, "value": value, "revision": revision,
                                        "ttl_ms": ttl_ms, "meta": meta or None})
        if expected is not _MISSING:
            p["expected"] = expected
        return self._c.call("kv.cas", p)

    def keys(self, prefix: Optional[str] = None, limit: Optional[int] = None,
             after: Optional[str] = None, cursor: Optional[str] = None) -> Any:
        return self._c.call("kv.keys", _drop_none({"prefix": prefix, "limit": limit, "after": after,
                                                   "cursor": cursor}))

    def watch(self, target: Union[str, Dict[str, str]], handler: Callable[[dict], Any],
              initial: bool = False) -> Watch:
        """Watches a prefix (a string or ``{"prefix": p}``) or ``{"pattern": p}``;
        ``handler`` gets each kv.event's params. Re-established after a reconnect."""
        params = {"prefix": target} if isinstance(target, str) else dict(target)
        if initial:
            params["initial"] = True
        w = Watch(self._c, params, handler)
        with self._c._lock:
            self._c._watch_list.append(w)
        try:
            self._c._register_once(w, lambda: self._c._start_watch(w, internal=False))
        except BaseException:
            with self._c._lock:
                self._c._watch_list.remove(w)
            raise
        return w


class Bus:
    """Publish/subscribe, queue groups, request/reply and presence."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def publish(self, topic: str, data: Any) -> int:
        return self._c.call("bus.publish", {"topic": topic, "data": data})

    def subscribe(self, pattern: str, handler: Callable[[dict], Any],
                  queue: Optional[str] = None) -> Subscription:
        """Calls ``handler({"topic", "data", "reply"?})`` on the dispatch thread
        for each matching message; with ``queue`` as one member of that group."""
        return self._c._add_sub(pattern, handler, queue)

    def request(self, topic: str, data: Any, timeout_ms: Optional[int] = None) -> Any:
        """Sends a request and returns the first answer's data."""
        params = _drop_none({"topic": topic, "data": data, "timeout_ms": timeout_ms})
        # The server times the request out; the local timeout is a backstop.
        result = self._c.call("bus.request", params, timeout=(timeout_ms or 5000) / 1000 + 2)
        if isinstance(result, dict) and len(result) == 1 and ERROR_KEY in result:
            e = result[ERROR_KEY] if isinstance(result[ERROR_KEY], dict) else {}
            code = e.get("code") if isinstance(e.get("code"), int) else -32000
            raise ResponderError(str(e.get("message", "responder failed")), code)
        return result

    def respond(self, subject: str, handler: Callable[[Any, dict], Any],
                queue: Optional[str] = None) -> Subscription:
        """Answers requests on ``subject`` with ``handler(data, msg)``; an
        exception answers an error. Use ``queue`` so that one member answers."""
        c = self._c

        def on_message(msg: dict) -> None:
            reply = msg.get("reply")
            if not reply:
                return
            try:
                data = handler(msg.get("data"), msg)
            except Exception as e:
                code = getattr(e, "code", None)
                data = {ERROR_KEY: {"code": code if isinstance(code, int) else -32000,
                                    "message": str(e)}}
            c._send_nowait("bus.reply", {"reply": reply, "data": data})

        return c._add_sub(subject, on_message, queue)

    def presence(self, topic: str) -> Dict[str, Any]:
        return self._c.call("bus.presence", {"topic": topic})


class Streams:
    """Durable streams: admin, publish, push consumers and pull."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(self, name: str, subjects: List[str], **config: Any) -> Dict[str, Any]:
        """Creates a stream; config: max_msgs, max_bytes, max_age_ms, max_msg_bytes, discard."""
        return self._c.call("stream.create", dict(name=name, subjects=subjects, **config))

    def info(self, name: str) -> Dict[str, Any]:
        return self._c.call("stream.info", {"name": name})

    def list(self) -> List[Dict[str, Any]]:
        return self._c.call("stream.list", {})

    def delete(self, name: str) -> bool:
        return self._c.call("stream.delete", {"name": name})

    def publish(self, topic: str, data: Any) -> Dict[str, Any]:
        return self._c.call("stream.publish", {"topic": topic, "data": data})

    def consume(self, stream: str, consumer: str, handler: Callable[[StreamMessage], Any],
                **opts: Any) -> Consumer:
        """Attaches to the durable consumer (created if absent); ``handler``
        gets each StreamMessage (``ack()``/``nak()``). opts: deliver, filter,
        ack_wait_ms, max_deliver, max_ack_pending. Re-attached after a reconnect."""
        c = self._c
        cons = Consumer(c, dict(stream=stream, consumer=consumer, **opts), handler)
        with c._lock:
            if cons.key in c._consumers:
                raise ValueError(f"already consuming {stream}/{consumer} on this client")
            c._consumers[cons.key] = cons
        try:
            info = c._register_once(cons, lambda: c.call("stream.consume", cons.params))
            if info is not None:
                cons.info = info
        except BaseException:
            with c._lock:
                c._consumers.pop(cons.key, None)
            raise
        return cons

    def fetch(self, stream: str, consumer: str, batch: int = 1) -> List[StreamMessage]:
        msgs = self._c.call("stream.fetch", {"stream": stream, "consumer": consumer, "batch": batch})
        return [StreamMessage(self._c, m) for m in msgs]

    def ack(self, stream: str, consumer: str, seq: Union[int, List[int]]) -> int:
        p: Dict[str, Any] = {"stream": stream, "consumer": consumer}
        p["seqs" if isinstance(seq, list) else "seq"] = seq
        return self._c.call("stream.ack", p)

    def nak(self, stream: str, consumer: str, seq: int, delay_ms: Optional[int] = None) -> bool:
        return self._c.call("stream.nak", _drop_none({"stream": stream, "consumer": consumer,
                                                      "seq": seq, "delay_ms": delay_ms}))

    def consumer_info(self, stream: str, consumer: str) -> Dict[str, Any]:
        return self._c.call("consumer.info", {"stream": stream, "consumer": consumer})

    def delete_consumer(self, stream: str, consumer: str) -> bool:
        return self._c.call("consumer.delete", {"stream": stream, "consumer": consumer})
