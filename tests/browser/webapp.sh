#!/usr/bin/env bash
# A real browser renders the webapp's board: headless Chromium loads
# /app/, its DOM must have the page title and a message posted just before
# (whose text carries markup, which must show as text), and a screenshot is
# saved for a person to look at.
#
# Usage: tests/browser/webapp.sh [URL]
#
#   URL    a running server's base URL (http://127.0.0.1:PORT). Without it,
#          the script starts target/release/switchyard with the http and
#          webapp modules from modules/ on a free loopback port.
#
# Environment:
#   SCREENSHOT     where to save the PNG (default bench/out/browser/webapp.png)
#   CHROMIUM       the browser binary (default: chromium, chromium-browser)
#
# Exit status: 0 checked, 1 failed, 77 skipped (no Chromium; install it with
# `apt-get install chromium`). `make browser-check` runs this script; the
# integration test `browser_renders_the_board` runs it when Chromium exists.
set -euo pipefail

cd "$(dirname "$0")/../.."
repo="$PWD"
out="$repo/bench/out/browser"
shot="${SCREENSHOT:-$out/webapp.png}"

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
# Keeps the script's own exit status: without `set +e`, the `wait` on a
# job killed by TERM (status 143) would end the trap, and the script, with
# that status.
cleanup() {
    local rc=$?
    set +e
    [[ -n $sy_pid ]] && kill -TERM "$sy_pid" 2>/dev/null && wait "$sy_pid" 2>/dev/null
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

url="${1:-}"
if [[ -z $url ]]; then
    bin="$repo/target/release/switchyard"
    [[ -x $bin && -f modules/webapp.so && -f modules/http.so ]] || die "run 'make build' first"
    mkdir -p "$work/modules" "$work/data"
    cp modules/http.so modules/webapp.so "$work/modules/"
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

# A message whose text is unique to this run and carries markup.
marker="browser check $$-$RANDOM"
text="$marker <b>not bold</b>"
code="$(curl -s -o "$work/post" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"author\":\"Chromium\",\"text\":\"$text\"}" "$url/app/api/messages")"
[[ $code == 201 ]] || die "POST /app/api/messages -> $code $(cat "$work/post")"

browser() {
    # --no-sandbox: containers and root; the rest keeps Chromium off the
    # network and quiet. Bounded in time.
    timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-dev-shm-usage --hide-scrollbars --user-data-dir="$work/profile" "$@" \
        2>>"$work/chromium.log"
}

browser --dump-dom "$url/app/" >"$work/dom.html" || die "chromium --dump-dom failed: $(tail -n 5 "$work/chromium.log")"
grep -q '<title>Switchyard message board</title>' "$work/dom.html" || die "no page title in the DOM"
grep -qF "$marker &lt;b&gt;not bold&lt;/b&gt;" "$work/dom.html" || die "the posted text is not in the DOM as text"
grep -qF "<b>not bold</b>" "$work/dom.html" && die "the posted markup became an element"

rm -f "$shot"
browser --screenshot="$shot" --window-size=1024,768 "$url/app/" >/dev/null ||
    die "chromium --screenshot failed: $(tail -n 5 "$work/chromium.log")"
[[ -s $shot ]] || die "no screenshot written"
log "ok: title and \"$marker\" rendered; screenshot ${shot#"$repo"/}"
