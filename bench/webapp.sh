#!/usr/bin/env bash
# `make bench-webapp` (also the last part of `make bench`): throughput of the
# webapp module (message board on SQLite, handlers on the worker pool) over
# loopback, with wrk.
#
#   GET  /app/api/messages?limit=20   (a page of 20 from a board of BENCH_WEBAPP_SEED messages)
#   POST /app/api/messages            (a new message per request; bench/webapp-post.lua)
#
# The server runs with -threads BENCH_WEBAPP_POOL (default 4) and a fresh
# database under bench/out/webapp. Prints requests per second, p99 latency
# and errors (socket errors, non-2xx answers, POSTs not answered 201).
#
# Environment:
#   BENCH_DURATION        seconds per measured run (default 10)
#   BENCH_CONNECTIONS     wrk connections (default 100)
#   BENCH_THREADS         wrk threads (default 2)
#   BENCH_WEBAPP_POOL     switchyard -threads (default 4)
#   BENCH_WEBAPP_SYNC     SQLite synchronous: full (default, the module's
#                         default: fsync per commit) or normal
#   BENCH_WEBAPP_SEED     messages stored before the GET run (default 1000)
#
# Needs a release build (`make build`); installs wrk and curl with apt-get
# when they are missing.
set -euo pipefail

cd "$(dirname "$0")/.."
repo="$PWD"
out="$repo/bench/out/webapp"

duration="${BENCH_DURATION:-10}"
connections="${BENCH_CONNECTIONS:-100}"
wrk_threads="${BENCH_THREADS:-2}"
pool="${BENCH_WEBAPP_POOL:-4}"
sync="${BENCH_WEBAPP_SYNC:-full}"
seed="${BENCH_WEBAPP_SEED:-1000}"

log() { printf 'bench-webapp: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

ensure_tools() {
    local missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    ((${#missing[@]})) || return 0
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need ${missing[*]}; install them or run as root"
        sudo="sudo"
    fi
    log "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

sy_pid=""
stop_server() {
    if [[ -n $sy_pid ]]; then
        kill -TERM "$sy_pid" 2>/dev/null || true
        wait "$sy_pid" 2>/dev/null || true
        sy_pid=""
    fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

start_switchyard() {
    local bin="$repo/target/release/switchyard"
    [[ -x $bin ]] || die "$bin not found; run 'make build' first"
    [[ -f modules/webapp.so && -f modules/http.so ]] || die "modules/webapp.so or http.so missing; run 'make build' first"
    rm -rf "$out"
    mkdir -p "$out/modules" "$out/data"
    cp modules/http.so modules/webapp.so "$out/modules/"
    cat >"$out/switchyard.toml" <<TOML
[modules.http]
root = "$repo/static_html"

[modules.webapp]
synchronous = "$sync"
TOML
    RUST_LOG="${RUST_LOG:-warn}" "$bin" -port 0 -threads "$pool" --bind 127.0.0.1 \
        --modules "$out/modules" --data-dir "$out/data" --config "$out/switchyard.toml" \
        >"$out/stdout.log" 2>"$out/stderr.log" &
    sy_pid=$!
    local i addr=""
    for ((i = 0; i < 200; i++)); do
        addr="$(sed -n 's/^listening on //p' "$out/stdout.log" | head -n1)"
        [[ -n $addr ]] && break
        kill -0 "$sy_pid" 2>/dev/null || { tail -n 20 "$out/stderr.log" >&2; die "switchyard exited at start"; }
        sleep 0.05
    done
    [[ -n $addr ]] || die "switchyard did not print 'listening on' within 10 s"
    url="http://$addr"
    log "switchyard $url (pid $sy_pid, -threads $pool, synchronous=$sync)"
}

# Stores $seed messages (in parallel, through the API) and checks one page.
seed_board() {
    local i
    for ((i = 1; i <= seed; i++)); do
        printf '{"author":"seed","text":"seed message %d"}\n' "$i"
    done | xargs -P 8 -d '\n' -I{} curl -s -o /dev/null -w '%{http_code}\n' \
        -H 'Content-Type: application/json' -d {} "$url/app/api/messages" | sort | uniq -c >"$out/seed.txt"
    grep -q "^ *$seed 201$" "$out/seed.txt" || die "seeding: $(cat "$out/seed.txt")"
    local page
    page="$(curl -s "$url/app/api/messages?limit=20")"
    [[ $(grep -o '"id":' <<<"$page" | wc -l) -eq 20 ]] || die "GET ?limit=20 did not return 20 messages: $page"
}

# Runs wrk; prints "<req/s> <p99> <errors>".
measure() {
    local tag="$1" secs="$2"
    shift 2
    local raw="$out/$tag.txt"
    wrk -t"$wrk_threads" -c"$connections" -d"${secs}s" --latency "$@" >"$raw" 2>&1 ||
        die "wrk failed: $(tail -n 3 "$raw")"
    local rps p99 errors
    rps="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$raw")"
    p99="$(awk '$1 == "99%" { print $2 }' "$raw")"
    errors="$(awk '
        /Socket errors:/ { sub(/^ *Socket errors: */, ""); e = e (e ? "; " : "") "socket " $0 }
        /Non-2xx or 3xx responses:/ { e = e (e ? "; " : "") "non-2xx/3xx " $NF }
        /^not_created:/ && $2 > 0 { e = e (e ? "; " : "") "not 201: " $2 }
        END { print (e ? e : "-") }' "$raw")"
    echo "${rps:-0} ${p99:--} $errors"
}

main() {
    ensure_tools
    start_switchyard
    seed_board
    log "wrk -t$wrk_threads -c$connections -d${duration}s, $(nproc) cores, $seed messages stored"

    local get post
    measure warmup-get 1 "$url/app/api/messages?limit=20" >/dev/null
    get="$(measure get "$duration" "$url/app/api/messages?limit=20")"
    post="$(measure post "$duration" -s bench/webapp-post.lua "$url/app/api/messages")"

    # STATUS over the same port; CLOSE makes the server end the reply.
    local count hostport="${url#http://}"
    count="$(printf 'STATUS\nCLOSE\n' |
        timeout 5 bash -c "exec 3<>/dev/tcp/${hostport%:*}/${hostport##*:}; cat >&3; cat <&3" 2>/dev/null |
        sed -n 's/^webapp .* posted=\([0-9]*\).*/\1/p' || true)"
    {
        printf '\n%-34s %12s %10s  %s\n' "webapp (-threads $pool, sync=$sync)" "req/s" "p99" "errors"
        read -r rps lat err <<<"$get"
        printf '%-34s %12s %10s  %s\n' "GET /app/api/messages?limit=20" "$rps" "$lat" "$err"
        read -r rps lat err <<<"$post"
        printf '%-34s %12s %10s  %s\n' "POST /app/api/messages" "$rps" "$lat" "$err"
        printf '\n(wrk -t%s -c%s -d%ss; %s messages posted in all; raw output in %s)\n' \
            "$wrk_threads" "$connections" "$duration" "${count:-?}" "${out#"$repo"/}"
    } | tee "$out/summary.txt"
}

main "$@"
