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

cd "$(dirname "$0")/../.."
repo="$PWD"
out="$repo/bench/out/browser"
shot="${SCREENSHOT:-$out/bus.png}"

log() { printf 'browser-check: %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

chromium="${CHROMIUM:-}"
if [[ -z $chromium ]]; then
    chromium="$(command -v chromium || command -v chromium-browser || true)"
fi
if [[ -z $chromium || ! -x $chromium ]]; then
    log "skipped: no chromium (apt-get install chromium)"
    exit 77
fi

mkdir -p "$out" "$(dirname "$shot")"
work="$(mktemp -d)"
sy_pid=""
pub_pid=""
# Keeps the script's own exit status: without `set +e`, the `wait` on a
# job killed by TERM (status 143) would end the trap, and the script, with
# that status.
cleanup() {
    local rc=$?
    set +e
    [[ -n $pub_pid ]] && kill -TERM "$pub_pid" 2>/dev/null && wait "$pub_pid" 2>/dev/null
    [[ -n $sy_pid ]] && kill -TERM "$sy_pid" 2>/dev/null && wait "$sy_pid" 2>/dev/null
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

url="${1:-}"
if [[ -z $url ]]; then
    bin="$repo/target/release/switchyard"
    [[ -x $bin && -f modules/rpc.so && -f modules/http.so ]] || die "run 'make build' first"
    mkdir -p "$work/modules" "$work/data"
    cp modules/http.so modules/rpc.so "$work/modules/"
    printf '[modules.http]\nroot = "%s"\n' "$repo/static_html" >"$work/switchyard.toml"
    # Created here, not by the background job's redirections: the loop
    # below may read them before that job has started.
    : >"$work/stdout"
    : >"$work/stderr"
    RUST_LOG=warn "$bin" -port 0 --bind 127.0.0.1 --modules "$work/modules" \
        --data-dir "$work/data" --config "$work/switchyard.toml" >"$work/stdout" 2>"$work/stderr" &
    sy_pid=$!
    for ((i = 0; i < 200; i++)); do
        addr="$(sed -n 's/^listening on //p' "$work/stdout" | head -n1)"
        [[ -n $addr ]] && break
        kill -0 "$sy_pid" 2>/dev/null || die "switchyard exited: $(tail -n 5 "$work/stderr")"
        sleep 0.05
    done
    [[ -n ${addr:-} ]] || die "switchyard did not start"
    url="http://$addr"
fi

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
pub_pid=$!

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
