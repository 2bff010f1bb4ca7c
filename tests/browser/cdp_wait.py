#!/usr/bin/env python3
"""Drives a headless Chromium over the DevTools protocol: opens a page,
waits in real time (not Chromium's virtual time, which runs ahead while a
page only waits for WebSocket messages) until a JavaScript condition holds,
then saves a screenshot.

Usage: cdp_wait.py CHROMIUM PROFILE_DIR URL CONDITION SCREENSHOT [SECONDS]

Exit status: 0 the condition held (screenshot written), 1 it did not
within SECONDS (default 20; the page's text is printed), 77 the Python
`websockets` package is missing.
"""

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

try:
    import websockets
except ImportError:
    print("cdp_wait: skipped: no Python websockets package", file=sys.stderr)
    sys.exit(77)


def devtools_port(profile, proc, deadline):
    """Chromium writes its DevTools port to PROFILE/DevToolsActivePort."""
    path = os.path.join(profile, "DevToolsActivePort")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cdp_wait: chromium exited with {proc.returncode}")
        try:
            with open(path, encoding="ascii") as f:
                port = f.readline().strip()
            if port:
                return int(port)
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("cdp_wait: chromium did not open its DevTools port")


def page_socket(port, deadline):
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            for target in json.load(r):
                if target.get("type") == "page":
                    return target["webSocketDebuggerUrl"]
        time.sleep(0.05)
    raise SystemExit("cdp_wait: no page target")


async def drive(ws_url, url, condition, shot, deadline):
    async with websockets.connect(ws_url, max_size=64 << 20) as ws:
        next_id = 0

        async def call(method, params=None):
            nonlocal next_id
            next_id += 1
            await ws.send(json.dumps({"id": next_id, "method": method, "params": params or {}}))
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                if msg.get("id") == next_id:
                    if "error" in msg:
                        raise SystemExit(f"cdp_wait: {method}: {msg['error']}")
                    return msg.get("result", {})

        await call("Page.navigate", {"url": url})
        while time.monotonic() < deadline:
            r = await call("Runtime.evaluate", {"expression": f"!!({condition})", "returnByValue": True})
            if r.get("result", {}).get("value") is True:
                png = await call("Page.captureScreenshot", {"format": "png"})
                with open(shot, "wb") as f:
                    f.write(base64.b64decode(png["data"]))
                return True
            await asyncio.sleep(0.1)
        text = await call("Runtime.evaluate", {"expression": "document.body ? document.body.innerText : ''", "returnByValue": True})
        print(text.get("result", {}).get("value", "")[:2000], file=sys.stderr)
        return False


def main():
    chromium, profile, url, condition, shot = sys.argv[1:6]
    seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 20.0
    deadline = time.monotonic() + seconds
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1024,768",
         f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = devtools_port(profile, proc, deadline)
        ok = asyncio.run(drive(page_socket(port, deadline), url, condition, shot, deadline))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
