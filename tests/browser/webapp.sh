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

# shellcheck source=tests/browser/lib.sh
source "$(dirname "$0")/lib.sh"
browser_check_begin webapp

url="${1:-}"
[[ -n $url ]] || start_switchyard webapp

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
