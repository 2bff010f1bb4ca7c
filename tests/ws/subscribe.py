#!/usr/bin/env python3
"""A third-party WebSocket client (the `websockets` library) against the
rpc module's GET /rpc/ws: subscribes to a pattern, says so on stdout, then
prints the data of the first bus.message it receives and exits 0.

    tests/ws/subscribe.py <port> <pattern>

Exit 2 when `websockets` is missing (the caller decides whether that
skips or fails), 1 on anything unexpected.
"""
import asyncio
import json
import sys

try:
    import websockets
except ImportError:
    print("python3 module websockets is missing", file=sys.stderr)
    sys.exit(2)


async def main(port, pattern):
    async with websockets.connect(f"ws://127.0.0.1:{port}/rpc/ws") as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "sys.ping", "id": 1}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply == {"jsonrpc": "2.0", "result": "pong", "id": 1}, reply
        await ws.send(json.dumps(
            {"jsonrpc": "2.0", "method": "bus.subscribe", "params": {"topics": [pattern]}, "id": 2}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply.get("id") == 2 and "result" in reply, reply
        print("subscribed", flush=True)
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg.get("method") == "bus.message":
                print(json.dumps(msg["params"]), flush=True)
                return


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
