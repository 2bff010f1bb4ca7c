#!/usr/bin/env bash
# A real browser runs the bus page (static_html/bus/): headless Chromium
# loads /bus/?subscribe=demo.> while demo.tick messages are published
# every 100 ms through POST /rpc; its DOM must say data-state="open" and
# list a demo.tick message (over the WebSocket at GET /rpc/ws), and a
# screenshot is saved for a person to look at.
#
# Usage: tests/browser/bus.sh [URL]
#
#   URL    a running server's base URL (http://127.0.0.1:PORT) with the
#          http module serving static_html/ and the rpc module. Without it,
#          the script starts target/release/switchyard with both from
#          modules/ on a free loopback port.
#
# Environment:
#   SCREENSHOT     where to save the PNG (default bench/out/browser/bus.png)
#   CHROMIUM       the browser binary (default: chromium, chromium-browser)
#
# Exit status: 0 checked, 1 failed, 77 skipped (no Chromium; install it with
# `apt-get install chromium`). `make browser-check` runs this script; the
# integration test `browser_shows_bus_messages` runs it when Chromium exists.
set -euo pipefail

# shellcheck source=tests/browser/lib.sh
source "$(dirname "$0")/lib.sh"
browser_check_begin bus

url="${1:-}"
[[ -n $url ]] || start_switchyard rpc

code="$(curl -s -o /dev/null -w '%{http_code}' "$url/bus/")"
[[ $code == 200 ]] || die "GET /bus/ -> $code"

# The publisher: a demo.tick every 100 ms, for at most 60 s.
(
    for ((n = 0; n < 600; n++)); do
        curl -s -o /dev/null -H 'Content-Type: application/json' \
            -d "{\"jsonrpc\":\"2.0\",\"method\":\"bus.publish\",\"params\":{\"topic\":\"demo.tick\",\"data\":{\"n\":$n}},\"id\":$n}" \
            "$url/rpc" || true
        sleep 0.1
    done
) &
stop_at_exit $!

# Chromium's --dump-dom runs on virtual time, which races ahead while the
# page only waits for WebSocket messages; cdp_wait.py drives it over the
# DevTools protocol and waits in real time for the condition instead.
py=""
for cand in python3 /usr/bin/python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import websockets' 2>/dev/null; then
        py="$cand"
        break
    fi
done
if [[ -z $py ]]; then
    log "skipped: no Python with the websockets package (apt-get install python3-websockets)"
    exit 77
fi
page="$url/bus/?subscribe=demo.%3E"
rm -f "$shot"
condition='document.querySelector("[data-state=\"open\"]") && [...document.querySelectorAll("#log .topic")].some(e => e.textContent === "demo.tick")'
timeout 60 "$py" tests/browser/cdp_wait.py "$chromium" "$work/profile" "$page" "$condition" "$shot" 20 ||
    die "the page did not open its WebSocket and show a demo.tick message within 20 s"
[[ -s $shot ]] || die "no screenshot written"
log "ok: WebSocket open and demo.tick messages rendered; screenshot ${shot#"$repo"/}"
