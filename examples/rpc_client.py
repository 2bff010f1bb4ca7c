#!/usr/bin/env python3
"""A short tour of Switchyard's rpc module with the Python client in
clients/python (standard library only; this script finds it in the
repository, or `pip install clients/python`). See clients/python/README.md
for the whole API and clients/python/examples/bot.py for request/reply.

    python3 examples/rpc_client.py --port 8080 [--token "$BOT_TOKEN"]

sets and gets a value, counts a visit, subscribes to chat.* and receives a
message published from a second connection. With users configured, pass a
token (or set SWITCHYARD_TOKEN).
"""

import argparse
import os
import queue
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python", "src"))
from switchyard_client import Client, SwitchyardError  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--token", default=os.environ.get("SWITCHYARD_TOKEN"))
    args = ap.parse_args()
    try:
        with Client(args.host, args.port, token=args.token) as c, \
                Client(args.host, args.port, token=args.token) as other:
            print("ping ->", c.call("sys.ping"))
            me = c.call("sys.whoami")
            print("acting as", me["user"] or "(nobody)", "via", me["auth"])
            c.kv.set("greeting", {"text": "hello", "from": "python"})
            print("got greeting =", c.kv.get("greeting"))
            print("visits =", c.kv.incr("example:visits"))
            try:
                c.kv.incr("greeting")
            except SwitchyardError as e:
                print("as expected, incr on an object fails:", e.code, e)
            inbox = queue.Queue()
            c.bus.subscribe("chat.*", inbox.put)
            print("published to", other.bus.publish("chat.room1", {"text": "hi"}), "subscriber(s)")
            msg = inbox.get(timeout=10)
            print(f"received on {msg['topic']}: {msg['data']}")
    except SwitchyardError as e:
        sys.exit(f"error {e.code}: {e}")


if __name__ == "__main__":
    main()
