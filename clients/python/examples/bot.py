#!/usr/bin/env python3
"""A small bot: answers "svc.time" requests as one member of a queue group,
asks itself the time, and counts its runs in the kv store.

    PYTHONPATH=clients/python/src python3 clients/python/examples/bot.py [port] [token]

Request/reply needs a server with bus.request; without it the bot says so
and shows the kv part only.
"""

import os
import sys
import time

from switchyard_client import Client, InvalidParams, MethodNotFound


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    token = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("SWITCHYARD_TOKEN")
    with Client("127.0.0.1", port, token=token) as c:
        c.on_reconnect = lambda: print("reconnected; subscriptions restored")
        print("runs so far:", c.kv.incr("bot:runs"))
        c.kv.set("bot:last", {"at": time.time()})
        print("last run:", c.kv.get("bot:last"))
        try:
            c.bus.respond("svc.time", lambda data, msg: {"now": time.time()}, queue="time")
            print("svc.time answers:", c.bus.request("svc.time", None, timeout_ms=1000))
        except (MethodNotFound, InvalidParams) as e:
            print("this server has no request/reply yet:", e)


if __name__ == "__main__":
    main()
