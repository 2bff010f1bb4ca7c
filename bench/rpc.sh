#!/usr/bin/env bash
# `make bench-rpc` (and the end of `make bench`): the rpc module's kv.set and
# kv.get calls per second over raw TCP JSON-RPC, next to redis-benchmark's
# SET and GET against a Redis server, on this machine, in the same run, over
# loopback only.
#
# Both sides get the same load: N connections, each with P requests in
# flight (P=1: unpipelined, each client waits for its reply), random keys
# out of a keyspace, 3-byte values. Switchyard is driven by rpc_load
# (modules/rpc/examples/rpc_load.rs, one thread with non-blocking sockets,
# like redis-benchmark). Each (op, pipeline) pair runs Switchyard then
# Redis, alternating, BENCH_ROUNDS times; the table shows the averages and
# the ratio switchyard/redis.
#
# Durability is paired: each Redis persistence mode runs against the
# switchyard sync mode that keeps the same promise, and the table states
# the durability of each row:
#   aof-everysec  redis --appendonly yes --appendfsync everysec, against
#                 sync=normal: both hand every write to the OS (write(2))
#                 before answering, so both survive kill -9, and both may
#                 lose about the last second on power loss
#   aof-always    redis --appendonly yes --appendfsync always, against
#                 sync=full: both fsync every group of writes before
#                 answering it, so both survive power loss
#   default       redis without AOF (RDB snapshots only: kill -9 loses the
#                 writes since the last snapshot), against sync=normal: NOT
#                 equal, kept as the reference row of earlier runs
# Redis's `save` (RDB snapshots) stays at its default in every mode. Each
# pair gets fresh servers; in round r, the first server of each case is
# switchyard for odd r and Redis for even r.
#
# Then the pub/sub rows: bus.publish calls per second to a topic nobody
# matches while S other connections hold 1, then K patterns each (literal,
# `*` and `>` patterns sharing the topic's first segments), and the ratio
# of the two rates: a publish walks the topic's path in the subscription
# trie, so it costs the same whatever the number of other patterns.
#
# Environment:
#   BENCH_RPC_PARTS      what to run: "kv", "pubsub" or both (default "kv pubsub";
#                        pubsub alone needs no Redis)
#   BENCH_RPC_REQUESTS   requests per measured run (default 200000)
#   BENCH_RPC_CONNS      connections (default 50, redis-benchmark's default)
#   BENCH_RPC_PIPELINES  pipeline depths to measure (default "1 16")
#   BENCH_RPC_KEYSPACE   random keys out of this many (default 100000)
#   BENCH_RPC_REDIS      Redis modes, one pair each (default "aof-everysec aof-always
#                        default"; see above for their switchyard sync modes)
#   BENCH_ROUNDS         runs per server and case, averaged (default 1)
#   BENCH_THREADS        switchyard -threads (default 2)
#   BENCH_RPC_SUBSCRIBERS  pub/sub: connections holding patterns (default 50)
#   BENCH_RPC_PATTERNS     pub/sub: patterns per such connection, first and last
#                          compared (default "1 1024")
#   BENCH_RPC_PUB_PIPELINE pub/sub: publishes in flight per connection (default 16)
#
# Needs a release build (`make build`); builds rpc_load; installs
# redis-server (and redis-benchmark) with apt-get when missing.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init bench-rpc rpc

requests="${BENCH_RPC_REQUESTS:-200000}"
conns="${BENCH_RPC_CONNS:-50}"
pipelines="${BENCH_RPC_PIPELINES:-1 16}"
keyspace="${BENCH_RPC_KEYSPACE:-100000}"
redis_modes="${BENCH_RPC_REDIS:-aof-everysec aof-always default}"
rounds="${BENCH_ROUNDS:-1}"
threads="${BENCH_THREADS:-2}"
parts="${BENCH_RPC_PARTS:-kv pubsub}"
subscribers="${BENCH_RPC_SUBSCRIBERS:-50}"
pattern_counts="${BENCH_RPC_PATTERNS:-1 1024}"
pub_pipeline="${BENCH_RPC_PUB_PIPELINE:-16}"

# Starts switchyard with only the rpc module, a fresh database and `sync`;
# sets sy_worker, the pid of the process that serves (for thread_cpu).
start_sy() {
    local sync="$1" dir="$out/switchyard-$1"
    switchyard_dir "$dir" rpc
    printf '[modules.rpc]\nsync = "%s"\n' "$sync" >"$dir/switchyard.toml"
    start_switchyard "$dir" -threads "$threads"
    sy_worker="$(sy_worker_pid "$sy_addr")"
    [[ -n $sy_worker ]] || die "no worker pid in switchyard's STATUS"
    log "switchyard $sy_addr (pid $sy_pid, worker $sy_worker, sync=$sync)"
}

# start_redis MODE: Redis on a free port with a fresh directory and the
# persistence of MODE (default, aof-everysec, aof-always); everything else
# at its defaults. Sets redis_port, redis_pid and redis_desc.
start_redis() {
    local mode="$1" dir="$out/redis-$1" flags=()
    case "$mode" in
        default) ;;
        aof-everysec) flags=(--appendonly yes --appendfsync everysec) ;;
        aof-always) flags=(--appendonly yes --appendfsync always) ;;
        *) die "unknown Redis mode $mode (default, aof-everysec or aof-always)" ;;
    esac
    rm -rf "$dir"
    mkdir -p "$dir"
    redis_port="$(free_port)"
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --daemonize no \
        --logfile "$dir/redis.log" "${flags[@]}" &
    redis_pid=$!
    track "$redis_pid"
    wait_until redis-server "$redis_pid" "$dir/redis.log" redis-cli -p "$redis_port" ping
    local aof fsync save
    aof="$(redis-cli -p "$redis_port" config get appendonly | tail -n1)"
    fsync="$(redis-cli -p "$redis_port" config get appendfsync | tail -n1)"
    save="$(redis-cli -p "$redis_port" config get save | tail -n1)"
    redis_desc="appendonly=$aof appendfsync=$fsync save=\"$save\""
    [[ $aof == yes ]] || redis_desc="appendonly=$aof (appendfsync applies only with AOF) save=\"$save\""
    log "redis $mode: $redis_desc (pid $redis_pid, port $redis_port)"
}

# The switchyard sync mode that keeps the promise of Redis mode $1.
sync_for() {
    case "$1" in
        aof-always) echo full ;;
        *) echo normal ;;
    esac
}

# The durability of the pair for Redis mode $1, as the table states it.
durability() {
    case "$1" in
        aof-everysec) echo "equal: kill -9 safe, ~1 s on power loss" ;;
        aof-always) echo "equal: fsync per group" ;;
        default) echo "NOT equal: redis no AOF" ;;
    esac
}

# rpc_load against switchyard; prints calls per second.
measure_sy() {
    local op="$1" pipeline="$2" tag="$3" raw
    raw="$out/results/$tag.txt"
    "$repo/target/release/examples/rpc_load" --addr "$sy_addr" --op "$op" --conns "$conns" \
        --pipeline "$pipeline" --requests "$requests" --keyspace "$keyspace" --value-size 3 >"$raw" 2>&1 ||
        die "rpc_load failed: $(tail -n 3 "$raw")"
    sed -n 's/.* rps=\([0-9.]*\).*/\1/p' "$raw"
}

# redis-benchmark with the same load; prints requests per second.
measure_redis() {
    local op="$1" pipeline="$2" tag="$3" raw
    raw="$out/results/$tag.txt"
    redis-benchmark -h 127.0.0.1 -p "$redis_port" -t "$op" -c "$conns" -n "$requests" \
        -P "$pipeline" -r "$keyspace" -d 3 --csv >"$raw" 2>&1 ||
        die "redis-benchmark failed: $(tail -n 3 "$raw")"
    awk -F'"' -v t="${op^^}" '$2 == t { print $4 }' "$raw"
}

# bus.publish calls per second with `k` patterns on each of the
# subscriber connections (none matching the published topics).
measure_pub() {
    local k="$1" tag="$2" raw
    raw="$out/results/$tag.txt"
    "$repo/target/release/examples/rpc_load" --addr "$sy_addr" --op publish --conns "$conns" \
        --pipeline "$pub_pipeline" --requests "$requests" --keyspace "$keyspace" --value-size 16 \
        --subscribers "$subscribers" --patterns "$k" >"$raw" 2>&1 ||
        die "rpc_load failed: $(tail -n 3 "$raw")"
    sed -n 's/.* rps=\([0-9.]*\).*/\1/p' "$raw"
}

bench_pubsub() {
    declare -A psum
    local k round r first="" last=""
    start_sy normal
    measure_pub 1 "warmup-pub" >/dev/null
    # Rounds alternate between the pattern counts, so that load from
    # elsewhere on the machine falls on all of them alike.
    for ((round = 1; round <= rounds; round++)); do
        for k in $pattern_counts; do
            r="$(measure_pub "$k" "pub-$k-$round")"
            log "$(printf 'switchyard bus.publish, %s connections x %-5s patterns, round %d: %10.0f calls/s' "$subscribers" "$k" "$round" "$r")"
            psum[$k]="$(add "${psum[$k]:-0}" "$r")"
        done
    done
    stop_pids "$sy_pid"
    {
        printf '\nrpc pub/sub: bus.publish calls per second over raw TCP, %s connections, pipeline %s,\n' "$conns" "$pub_pipeline"
        printf 'to topics nobody matches while %s other connections hold K patterns each\n' "$subscribers"
        printf '%-12s %14s %14s\n' "K patterns" "publish/s" "vs first"
        for k in $pattern_counts; do
            r="$(mean "${psum[$k]}" "$rounds")"
            [[ -n $first ]] || first="$r"
            last="$r"
            printf '%-12s %14s %14s\n' "$k" "$r" "$(ratio "$r" "$first")"
        done
        printf 'ratio last/first: %s (1.00: the cost does not depend on the number of patterns)\n' "$(ratio "$last" "$first")"
    } | tee -a "$out/results/summary.txt"
}

# measure_pair OP P ROUND MODE SYNC: one switchyard run and one Redis run
# of the case, the first server alternating with the round; adds them to
# the sums of the pair.
measure_pair() {
    local op="$1" p="$2" round="$3" mode="$4" sync="$5" r server servers="sy redis"
    ((round % 2)) || servers="redis sy"
    for server in $servers; do
        if [[ $server == sy ]]; then
            local tag="sy-$sync-$mode-$op-$p-$round"
            thread_cpu "$sy_worker" >"$out/results/$tag.cpu-before"
            r="$(measure_sy "$op" "$p" "$tag")"
            thread_cpu "$sy_worker" >"$out/results/$tag.cpu-after"
            # Which threads of the server did the work (bench/lib.sh).
            thread_cpu_diff "$out/results/$tag.cpu-before" "$out/results/$tag.cpu-after" >"$out/results/$tag.cpu"
            rm -f "$out/results/$tag.cpu-before" "$out/results/$tag.cpu-after"
            log "$(printf 'switchyard sync=%-6s kv.%-3s P=%-3s round %d: %10.0f calls/s' "$sync" "$op" "$p" "$round" "$r")"
            sum[sy,$mode,$op,$p]="$(add "${sum[sy,$mode,$op,$p]:-0}" "$r")"
        else
            r="$(measure_redis "$op" "$p" "redis-$mode-$op-$p-$round")"
            log "$(printf 'redis %-12s    %-6s P=%-3s round %d: %10.0f requests/s' "$mode" "${op^^}" "$p" "$round" "$r")"
            sum[redis,$mode,$op,$p]="$(add "${sum[redis,$mode,$op,$p]:-0}" "$r")"
        fi
    done
}

bench_kv() {
    local cmd
    for cmd in redis-server redis-benchmark redis-cli; do
        command -v "$cmd" >/dev/null 2>&1 || { install_packages redis-server redis-tools; break; }
    done
    log "$conns connections, $requests requests per run, keyspace $keyspace, 3-byte values, $rounds round(s), $(nproc) cores"

    declare -A sum desc
    local mode sync op p round
    for mode in $redis_modes; do
        sync="$(sync_for "$mode")"
        start_redis "$mode"
        desc[$mode]="$redis_desc"
        start_sy "$sync"
        for p in $pipelines; do
            for op in set get; do
                # Untimed pass: fills the keyspace, warms both servers.
                measure_sy "$op" "$p" "warmup-sy-$sync-$mode-$op-$p" >/dev/null
                measure_redis "$op" "$p" "warmup-redis-$mode-$op-$p" >/dev/null
                for ((round = 1; round <= rounds; round++)); do
                    measure_pair "$op" "$p" "$round" "$mode" "$sync"
                done
            done
        done
        # Mean group size = writes / commits.
        log "switchyard sync=$sync: $(sy_admin "$sy_addr" STATUS | grep -o 'commits=[0-9]* writes=[0-9]*' | head -n1)"
        stop_pids "$sy_pid" "$redis_pid"
    done

    {
        printf '\nrpc: calls per second over raw TCP, %s connections, keyspace %s, 3-byte values\n' "$conns" "$keyspace"
        printf '%-14s %-12s %-6s %9s %14s %14s %7s  %s\n' redis switchyard op pipeline "switchyard/s" "redis/s" ratio durability
        for mode in $redis_modes; do
            sync="$(sync_for "$mode")"
            for p in $pipelines; do
                for op in set get; do
                    local sy re
                    sy="$(mean "${sum[sy,$mode,$op,$p]}" "$rounds")"
                    re="$(mean "${sum[redis,$mode,$op,$p]}" "$rounds")"
                    printf '%-14s %-12s %-6s %9s %14s %14s %7s  %s\n' "$mode" "sync=$sync" "kv.$op" "$p" "$sy" "$re" \
                        "$(ratio "$sy" "$re")" "$(durability "$mode")"
                done
            done
        done
        printf '\nredis %s, per row:\n' "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
        for mode in $redis_modes; do printf '  %-14s %s\n' "$mode" "${desc[$mode]}"; done
        printf 'switchyard: SQLite WAL, a write is answered after its group commit, which write(2)s it to the WAL;\n'
        printf '  sync=normal: synchronous=NORMAL (survives kill -9; the WAL is fsynced at checkpoints),\n'
        printf '  sync=full: synchronous=FULL (fsync per group commit, survives power loss)\n'
        printf 'redis aof-everysec: the AOF is write(2)n before the replies of each event-loop pass, fsynced every second;\n'
        printf '  aof-always: fsynced before the replies; default: no AOF, only RDB snapshots (save above)\n'
        printf '(redis-benchmark -c %s -n %s -r %s -d 3 -P <pipeline>; rpc_load the same; %s round(s) averaged,\n' \
            "$conns" "$requests" "$keyspace" "$rounds"
        printf ' the first server alternating per round; raw output and per-thread CPU in %s)\n' "${out#"$repo"/}/results"
    } | tee -a "$out/results/summary.txt"
}

main() {
    rm -rf "$out"
    mkdir -p "$out/results"
    log "building rpc_load"
    cargo build --release --quiet -p switchyard_rpc --example rpc_load
    case " $parts " in *" kv "*) bench_kv ;; esac
    case " $parts " in *" pubsub "*) bench_pubsub ;; esac
}

main "$@"
