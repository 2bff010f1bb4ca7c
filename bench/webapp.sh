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
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init bench-webapp webapp

duration="${BENCH_DURATION:-10}"
connections="${BENCH_CONNECTIONS:-100}"
wrk_threads="${BENCH_THREADS:-2}"
pool="${BENCH_WEBAPP_POOL:-4}"
sync="${BENCH_WEBAPP_SYNC:-full}"
seed="${BENCH_WEBAPP_SEED:-1000}"

start_sy() {
    switchyard_dir "$out" http webapp
    cat >"$out/switchyard.toml" <<TOML
[modules.http]
root = "$repo/static_html"

[modules.webapp]
synchronous = "$sync"
TOML
    start_switchyard "$out" -threads "$pool"
    url="http://$sy_addr"
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

# Runs wrk; prints "<req/s, whole> <p99> <errors>".
measure() {
    local raw="$out/$1.txt" secs="$2" rps rest
    shift 2
    wrk_run "$raw" "" -t"$wrk_threads" -c"$connections" -d"${secs}s" --latency "$@"
    read -r rps rest <<<"$(wrk_summary "$raw")"
    echo "$(mean "$rps" 1) $rest"
}

main() {
    ensure_tools wrk curl
    start_sy
    seed_board
    log "wrk -t$wrk_threads -c$connections -d${duration}s, $(nproc) cores, $seed messages stored"

    local get post
    measure warmup-get 1 "$url/app/api/messages?limit=20" >/dev/null
    get="$(measure get "$duration" "$url/app/api/messages?limit=20")"
    post="$(measure post "$duration" -s bench/webapp-post.lua "$url/app/api/messages")"

    # STATUS over the same port.
    local count
    count="$(sy_admin "$sy_addr" STATUS 2>/dev/null | sed -n 's/^webapp .* posted=\([0-9]*\).*/\1/p' || true)"
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
