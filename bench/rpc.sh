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
# Durability is not equal and the table says so: Redis runs with its
# defaults (no AOF: a write is never fsynced, an RDB snapshot now and
# then), Switchyard commits every write to SQLite's WAL before it answers
# (sync=normal: survives kill -9; sync=full: also fsyncs every group commit,
# survives power loss).
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
#   BENCH_RPC_SYNC       rpc sync modes to measure (default "normal full")
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
syncs="${BENCH_RPC_SYNC:-normal full}"
rounds="${BENCH_ROUNDS:-1}"
threads="${BENCH_THREADS:-2}"
parts="${BENCH_RPC_PARTS:-kv pubsub}"
subscribers="${BENCH_RPC_SUBSCRIBERS:-50}"
pattern_counts="${BENCH_RPC_PATTERNS:-1 1024}"
pub_pipeline="${BENCH_RPC_PUB_PIPELINE:-16}"

# Starts switchyard with only the rpc module, a fresh database and `sync`.
start_sy() {
    local sync="$1" dir="$out/switchyard-$1"
    switchyard_dir "$dir" rpc
    printf '[modules.rpc]\nsync = "%s"\n' "$sync" >"$dir/switchyard.toml"
    start_switchyard "$dir" -threads "$threads"
    log "switchyard $sy_addr (pid $sy_pid, sync=$sync)"
}

# Redis with its default persistence settings; only the port, the bind
# address and the directory for its snapshot file are set.
start_redis() {
    local dir="$out/redis"
    rm -rf "$dir"
    mkdir -p "$dir"
    redis_port="$(free_port)"
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --daemonize no \
        --logfile "$dir/redis.log" &
    redis_pid=$!
    track "$redis_pid"
    wait_until redis-server "$redis_pid" "$dir/redis.log" redis-cli -p "$redis_port" ping
    local aof fsync save
    aof="$(redis-cli -p "$redis_port" config get appendonly | tail -n1)"
    fsync="$(redis-cli -p "$redis_port" config get appendfsync | tail -n1)"
    save="$(redis-cli -p "$redis_port" config get save | tail -n1)"
    redis_desc="redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'): appendonly=$aof (appendfsync=$fsync applies only with AOF on), save=\"$save\""
    log "$redis_desc (pid $redis_pid, port $redis_port)"
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

bench_kv() {
    local cmd
    for cmd in redis-server redis-benchmark redis-cli; do
        command -v "$cmd" >/dev/null 2>&1 || { install_packages redis-server redis-tools; break; }
    done
    start_redis
    log "$conns connections, $requests requests per run, keyspace $keyspace, 3-byte values, $rounds round(s), $(nproc) cores"

    declare -A sum
    local sync op p round r
    for sync in $syncs; do
        start_sy "$sync"
        for p in $pipelines; do
            for op in set get; do
                # Untimed pass: fills the keyspace, warms both servers.
                measure_sy "$op" "$p" "warmup-sy-$sync-$op-$p" >/dev/null
                [[ -n ${sum[redis,$op,$p]:-} ]] || measure_redis "$op" "$p" "warmup-redis-$op-$p" >/dev/null
                for ((round = 1; round <= rounds; round++)); do
                    r="$(measure_sy "$op" "$p" "sy-$sync-$op-$p-$round")"
                    log "$(printf 'switchyard sync=%-6s kv.%-3s P=%-3s round %d: %10.0f calls/s' "$sync" "$op" "$p" "$round" "$r")"
                    sum[sy-$sync,$op,$p]="$(add "${sum[sy-$sync,$op,$p]:-0}" "$r")"
                    if [[ -z ${sum[redis-done,$op,$p,$round]:-} ]]; then
                        r="$(measure_redis "$op" "$p" "redis-$op-$p-$round")"
                        log "$(printf 'redis                  %-6s P=%-3s round %d: %10.0f requests/s' "${op^^}" "$p" "$round" "$r")"
                        sum[redis,$op,$p]="$(add "${sum[redis,$op,$p]:-0}" "$r")"
                        sum[redis-done,$op,$p,$round]=1
                    fi
                done
            done
        done
        stop_pids "$sy_pid"
    done

    {
        printf '\nrpc: calls per second over raw TCP, %s connections, keyspace %s, 3-byte values\n' "$conns" "$keyspace"
        printf '%-26s %-8s %9s %14s %14s %7s\n' switchyard op pipeline "switchyard/s" "redis/s" ratio
        for sync in $syncs; do
            for p in $pipelines; do
                for op in set get; do
                    local sy re
                    sy="$(mean "${sum[sy-$sync,$op,$p]}" "$rounds")"
                    re="$(mean "${sum[redis,$op,$p]}" "$rounds")"
                    printf '%-26s %-8s %9s %14s %14s %7s\n' "rpc sync=$sync" "kv.$op" "$p" "$sy" "$re" "$(ratio "$sy" "$re")"
                done
            done
        done
        printf '\n%s\n' "$redis_desc"
        printf 'switchyard: SQLite WAL, a write is answered after its group commit; sync=normal: synchronous=NORMAL\n'
        printf '  (survives kill -9; WAL fsynced at checkpoints, every second), sync=full: synchronous=FULL (fsync per commit)\n'
        printf '(redis-benchmark -c %s -n %s -r %s -d 3 -P <pipeline>; rpc_load the same; %s round(s) averaged; raw output in %s)\n' \
            "$conns" "$requests" "$keyspace" "$rounds" "${out#"$repo"/}/results"
    } | tee -a "$out/results/summary.txt"
    stop_pids "$redis_pid"
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
