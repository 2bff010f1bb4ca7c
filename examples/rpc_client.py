#!/usr/bin/env python3
"""A small client for Switchyard's rpc module: JSON-RPC 2.0 over raw TCP,
standard library only.

One connection carries calls and, once subscribed, pushed `bus.message`
notifications; a reader thread sorts replies (by id) from notifications.

    python3 examples/rpc_client.py --port 8080
    python3 examples/rpc_client.py --port 8080 --token "$BOT_TOKEN"

sets and gets a value, counts a visit, subscribes to chat.* and receives a
message published from a second connection. With users configured
([[modules.rpc.users]]), pass the user's token with --token (or in the
SWITCHYARD_TOKEN environment variable): each connection logs in with
sys.auth first. Without users the bus serves loopback peers only.
"""

import argparse
import itertools
import json
import os
import queue
import socket
import threading


class RpcError(Exception):
    """An error reply: .code and .message as the server sent them."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Client:
    def __init__(self, host="127.0.0.1", port=8080, timeout=10.0, token=None):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(None)  # the reader waits as long as it takes
        self._ids = itertools.count(1)
        self._replies = {}
        self._cond = threading.Condition()
        self._closed = False
        self.messages = queue.Queue()  # (topic, data) of bus.message
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.user = self.auth(token)["user"] if token else None

    def _read(self):
        try:
            for line in self.sock.makefile("rb"):
                msg = json.loads(line)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                elif msg.get("method") == "bus.message":
                    self.messages.put((msg["params"]["topic"], msg["params"]["data"]))
                elif msg.get("method") == "bus.overflow":
                    print("server: " + msg["params"]["message"])
                elif msg.get("method") == "bus.revoked":
                    print("server revoked the subscription", msg["params"]["pattern"])
        except OSError:
            pass
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def call(self, method, params=None):
        """Calls a method and returns its result (raises RpcError)."""
        req_id = next(self._ids)
        req = {"jsonrpc": "2.0", "method": method, "id": req_id}
        if params is not None:
            req["params"] = params
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        with self._cond:
            if not self._cond.wait_for(
                lambda: req_id in self._replies or self._closed, self.timeout
            ):
                raise TimeoutError(f"no reply to {method} in {self.timeout} s")
            if req_id not in self._replies:
                raise ConnectionError("the server closed the connection")
            reply = self._replies.pop(req_id)
        if "error" in reply:
            raise RpcError(reply["error"]["code"], reply["error"]["message"])
        return reply["result"]

    def notify(self, method, params=None):
        """Sends a notification: no reply, not even an error."""
        req = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            req["params"] = params
        self.sock.sendall(json.dumps(req).encode() + b"\n")

    def auth(self, token, user=None):
        """Logs this connection in (raises RpcError -32062 on a wrong token)."""
        params = {"token": token}
        if user is not None:
            params["user"] = user
        return self.call("sys.auth", params)

    def whoami(self):
        return self.call("sys.whoami")

    def get(self, key):
        return self.call("kv.get", {"key": key})

    def set(self, key, value, ttl_ms=None):
        params = {"key": key, "value": value}
        if ttl_ms is not None:
            params["ttl_ms"] = ttl_ms
        return self.call("kv.set", params)

    def incr(self, key, by=1):
        return self.call("kv.incr", {"key": key, "by": by})

    def subscribe(self, *topics):
        return self.call("bus.subscribe", {"topics": list(topics)})

    def publish(self, topic, data):
        return self.call("bus.publish", {"topic": topic, "data": data})

    def next_message(self, timeout=None):
        """The next (topic, data) pushed to this connection."""
        return self.messages.get(timeout=self.timeout if timeout is None else timeout)

    def close(self):
        self.sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument(
        "--token",
        default=os.environ.get("SWITCHYARD_TOKEN"),
        help="log in with this token (default: $SWITCHYARD_TOKEN)",
    )
    args = ap.parse_args()

    c = Client(args.host, args.port, token=args.token)
    print("ping ->", c.call("sys.ping"))
    me = c.whoami()
    print("acting as", me["user"] or "(nobody)", "via", me["auth"])
    c.set("greeting", {"text": "hello", "from": "python"})
    print("got greeting =", c.get("greeting"))
    print("visits =", c.incr("example:visits"))
    try:
        c.call("kv.incr", {"key": "greeting"})
    except RpcError as e:
        print("as expected, incr on an object fails:", e)

    print("subscribed to", c.subscribe("chat.*"), "pattern(s)")
    other = Client(args.host, args.port, token=args.token)
    print("published to", other.publish("chat.room1", {"text": "hi"}), "subscriber(s)")
    topic, data = c.next_message()
    print(f"received on {topic}: {data}")
    other.close()
    c.close()


if __name__ == "__main__":
    main()
