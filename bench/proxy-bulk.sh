#!/usr/bin/env bash
# `make bench-proxy-bulk`: bulk transfers through the proxy module, timed,
# next to the same transfers straight to the upstream, over loopback only.
# `make bench-proxy` (wrk, small responses) mostly measures per-connection
# and per-request overhead; this measures how fast bytes move once a session
# is open, which is where splice(2) and the copy path differ.
#
# One upstream (bench/bulk.py) reads N MiB and answers, or sends N MiB and
# closes. Each round times, alternating: direct up, proxied up, direct down,
# proxied down (one new connection per transfer). Prints each run's MiB/s,
# the mean per target and direction, and proxied/direct.
#
# Environment:
#   BENCH_SIZE_MIB      MiB per transfer (default 100)
#   BENCH_ROUNDS        transfers per target and direction (default 3)
#   BENCH_PROXY_SPLICE  true|false: sets `proxy_splice` in [server]
#                       (unset: the binary's default)
#   BENCH_PROXY_BUFFER  sets `proxy_buffer_size` in [server] (unset: default)
#   BENCH_THREADS       Switchyard event loops (default 2)
#
# Needs a release build (`make build`) and python3.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init bench-proxy-bulk proxy-bulk
size_mib="${BENCH_SIZE_MIB:-100}"
rounds="${BENCH_ROUNDS:-3}"
threads="${BENCH_THREADS:-2}"
size=$((size_mib * 1024 * 1024))

ensure_tools python3
switchyard_dir "$out" proxy

python3 bench/bulk.py upstream "$out/upstream.port" >"$out/upstream.log" 2>&1 &
up_pid=$!
track "$up_pid"
wait_until upstream "$up_pid" "$out/upstream.log" test -s "$out/upstream.port"
up_port="$(cat "$out/upstream.port")"

{
    printf '[server]\nevent_loops = %s\n' "$threads"
    [[ -n ${BENCH_PROXY_SPLICE:-} ]] && printf 'proxy_splice = %s\n' "$BENCH_PROXY_SPLICE"
    [[ -n ${BENCH_PROXY_BUFFER:-} ]] && printf 'proxy_buffer_size = %s\n' "$BENCH_PROXY_BUFFER"
    printf '\n[modules.proxy]\n[[modules.proxy.routes]]\nprefix = "BULK"\nupstreams = ["127.0.0.1:%s"]\n' "$up_port"
} >"$out/switchyard.toml"
start_switchyard "$out" -threads "$threads"
sy_port="${sy_addr##*:}"
log "upstream 127.0.0.1:$up_port, switchyard 127.0.0.1:$sy_port, ${size_mib} MiB x $rounds round(s), splice ${BENCH_PROXY_SPLICE:-default}, buffer ${BENCH_PROXY_BUFFER:-default}"

declare -A sum
for key in direct-up switchyard-up direct-down switchyard-down; do sum[$key]=0; done
for ((r = 1; r <= rounds; r++)); do
    for way in up down; do
        for target in direct switchyard; do
            port="$up_port"
            [[ $target == switchyard ]] && port="$sy_port"
            secs="$(python3 bench/bulk.py client "127.0.0.1:$port" "$way" "$size")" ||
                die "$target $way failed"
            rate="$(awk -v s="$secs" -v m="$size_mib" 'BEGIN { printf "%.0f", m / s }')"
            log "$(printf 'round %d %-10s %-4s %8.3f s %8s MiB/s' "$r" "$target" "$way" "$secs" "$rate")"
            sum[$target-$way]="$(awk -v a="${sum[$target-$way]}" -v b="$rate" 'BEGIN { print a + b }')"
        done
    done
done
{
    printf '\nproxy bulk: %s MiB per transfer, %s round(s), mean MiB/s\n' "$size_mib" "$rounds"
    printf '%-6s %12s %12s %18s\n' way direct switchyard "switchyard/direct"
    for way in up down; do
        awk -v w="$way" -v d="${sum[direct-$way]}" -v s="${sum[switchyard-$way]}" -v n="$rounds" 'BEGIN {
            printf "%-6s %12.0f %12.0f %17.2fx\n", w, d / n, s / n, (d > 0 ? s / d : 0) }'
    done
} | tee "$out/summary.txt"
