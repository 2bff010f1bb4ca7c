# shellcheck shell=bash
# What the browser checks (bus.sh, webapp.sh) share, sourced by both after
# their `set -euo pipefail`: messages and failure (`log`, `die`), finding
# Chromium (or skipping with 77), the temporary directory and the cleanup
# trap that stops background jobs and keeps the script's exit status, and
# starting target/release/switchyard on a free loopback port.
#
# After `browser_check_begin NAME` the caller has: the working directory at
# the repository's root, `repo`, `shot` (SCREENSHOT, or
# bench/out/browser/NAME.png), `chromium` and `work` (removed at exit).

log() { printf 'browser-check: %s\n' "$*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

# Background jobs the cleanup stops, the newest first (a publisher before
# the server it publishes to).
bg_pids=()
stop_at_exit() { bg_pids=("$1" "${bg_pids[@]}"); }

# Keeps the script's own exit status: without `set +e`, the `wait` on a
# job killed by TERM (status 143) would end the trap, and the script, with
# that status.
cleanup() {
    local rc=$? pid
    set +e
    for pid in "${bg_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    rm -rf "$work"
    exit "$rc"
}

# browser_check_begin NAME: see the top of this file. Exits 77 (skipped)
# without Chromium.
browser_check_begin() {
    cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
    repo="$PWD"
    local out="$repo/bench/out/browser"
    shot="${SCREENSHOT:-$out/$1.png}"

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
    trap cleanup EXIT
}

# start_switchyard MODULE...: starts target/release/switchyard with the
# http module (serving static_html/) and MODULE... from modules/, on a free
# loopback port, stopped at exit; sets `url` to its base URL.
start_switchyard() {
    local bin="$repo/target/release/switchyard" m addr="" i
    [[ -x $bin ]] || die "run 'make build' first"
    mkdir -p "$work/modules" "$work/data"
    for m in http "$@"; do
        [[ -f modules/$m.so ]] || die "run 'make build' first"
        cp "modules/$m.so" "$work/modules/"
    done
    printf '[modules.http]\nroot = "%s"\n' "$repo/static_html" >"$work/switchyard.toml"
    # Created here, not by the background job's redirections: the loop
    # below may read them before that job has started.
    : >"$work/stdout"
    : >"$work/stderr"
    RUST_LOG=warn "$bin" -port 0 --bind 127.0.0.1 --modules "$work/modules" \
        --data-dir "$work/data" --config "$work/switchyard.toml" >"$work/stdout" 2>"$work/stderr" &
    local sy_pid=$!
    stop_at_exit "$sy_pid"
    for ((i = 0; i < 200; i++)); do
        addr="$(sed -n 's/^listening on //p' "$work/stdout" | head -n1)"
        [[ -n $addr ]] && break
        kill -0 "$sy_pid" 2>/dev/null || die "switchyard exited: $(tail -n 5 "$work/stderr")"
        sleep 0.05
    done
    [[ -n $addr ]] || die "switchyard did not start"
    # shellcheck disable=SC2034 # read by the sourcing script
    url="http://$addr"
}
