#!/usr/bin/env bash
# `make bench-bus`: the rpc module's message bus next to nats-server, on
# this machine, in the same run, over loopback only.
#
# Both servers are driven by the same client, bus_load
# (modules/rpc/examples/bus_load.rs: one thread, non-blocking sockets),
# each over its own wire protocol: JSON-RPC lines on switchyard's raw TCP
# port, the NATS text protocol on nats-server's. Every message carries the
# same 24 bytes (a 16-byte payload and an 8-byte send timestamp).
#
# Scenarios:
#   reqrep      a queue group of 4 responders, 50 requesters with one
#               request in flight each (switchyard: bus.request/bus.reply;
#               NATS: PUB with a reply subject on the requester's inbox):
#               round trips per second, p50/p99 of the round trip
#   fanout-S    one publisher (fire-and-forget, at most BENCH_BUS_WINDOW
#               messages per subscriber not yet delivered) and S
#               subscribers on one subject: messages delivered per second
#               (the sum over subscribers), p50/p99 publish-to-deliver;
#               these latencies are mostly the wait behind the window (about
#               window x S / rate), so compare them between servers, not
#               with reqrep's
#
# Each scenario runs on switchyard and on nats-server, alternating (the
# first server changes every round), BENCH_ROUNDS times; the table shows the
# averages (the latencies: the mean of each round's percentile) and the
# ratio switchyard/nats (target: at least 0.5). A switchyard whose bus has
# no bus.request yet shows "not supported" in the reqrep row.
#
# Environment:
#   BENCH_SECONDS          seconds per measured run (default 10; BENCH_DURATION too)
#   BENCH_ROUNDS           runs per server and scenario, averaged (default 1)
#   BENCH_THREADS          switchyard -threads (default 2)
#   BENCH_BUS_SCENARIOS    which rows (default "reqrep fanout-1 fanout-10 fanout-100")
#   BENCH_BUS_REQUESTERS   reqrep: requesters (default 50)
#   BENCH_BUS_RESPONDERS   reqrep: responders in the queue group (default 4)
#   BENCH_BUS_WINDOW       fanout: messages per subscriber on the way (default 256)
#
# Needs a release build (`make build`); builds bus_load; installs
# nats-server with apt-get when missing.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init bench-bus bus

seconds="${BENCH_SECONDS:-${BENCH_DURATION:-10}}"
rounds="${BENCH_ROUNDS:-1}"
threads="${BENCH_THREADS:-2}"
scenarios="${BENCH_BUS_SCENARIOS:-reqrep fanout-1 fanout-10 fanout-100}"
requesters="${BENCH_BUS_REQUESTERS:-50}"
responders="${BENCH_BUS_RESPONDERS:-4}"
window="${BENCH_BUS_WINDOW:-256}"

# Switchyard with only the rpc module and its default settings (the bus
# keeps nothing on disk).
start_sy() {
    local dir="$out/switchyard"
    switchyard_dir "$dir" rpc
    printf '[modules.rpc]\n' >"$dir/switchyard.toml"
    start_switchyard "$dir" -threads "$threads"
    log "switchyard $sy_addr (pid $sy_pid, -threads $threads)"
}

# nats-server with its defaults, on a free loopback port; sets nats_addr.
start_nats() {
    local dir="$out/nats" port
    rm -rf "$dir"
    mkdir -p "$dir"
    port="$(free_port)"
    nats-server -a 127.0.0.1 -p "$port" >"$dir/nats.log" 2>&1 &
    nats_pid=$!
    track "$nats_pid"
    wait_until nats-server "$nats_pid" "$dir/nats.log" port_open "$port"
    nats_addr="127.0.0.1:$port"
    nats_desc="nats-server $(nats-server --version | sed 's/^nats-server: *//'): defaults (no JetStream)"
    log "$nats_desc (pid $nats_pid, $nats_addr)"
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# measure PROTO ADDR SCENARIO TAG: one bus_load run; prints "rate p50 p99",
# or "unsupported" when the server cannot run the scenario.
measure() {
    local proto="$1" addr="$2" scenario="$3" tag="$4" raw args
    raw="$out/results/$tag.txt"
    case "$scenario" in
        reqrep) args=(--scenario reqrep --requesters "$requesters" --responders "$responders") ;;
        fanout-*) args=(--scenario fanout --subscribers "${scenario#fanout-}" --window "$window") ;;
        *) die "unknown scenario $scenario" ;;
    esac
    # Bounded: setup, the warm-up and the run, plus the client's own 10 s stall limit.
    timeout "$((${seconds%.*} + 60))" "$repo/target/release/examples/bus_load" --proto "$proto" \
        --addr "$addr" --seconds "$seconds" "${args[@]}" >"$raw" 2>&1 ||
        die "bus_load --proto $proto $scenario failed: $(tail -n 3 "$raw")"
    if grep -q 'not supported by this server' "$raw"; then
        echo unsupported
        return
    fi
    sed -n 's/.* rate=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\).*/\1 \2 \3/p' "$raw"
}

main() {
    rm -rf "$out"
    mkdir -p "$out/results"
    ensure_tools nats-server
    log "building bus_load"
    cargo build --release --quiet -p switchyard_rpc --example bus_load
    start_sy
    start_nats
    log "$seconds s per run, $rounds round(s), $(nproc) cores"

    declare -A rate p50 p99 unsupported
    local scenario round server r servers a b c
    for scenario in $scenarios; do
        for ((round = 1; round <= rounds; round++)); do
            # The first server alternates, so that a drift in the machine's
            # load falls on both alike.
            servers="sy nats"
            ((round % 2)) || servers="nats sy"
            for server in $servers; do
                if [[ $server == sy ]]; then
                    r="$(measure sy "$sy_addr" "$scenario" "sy-$scenario-$round")"
                else
                    r="$(measure nats "$nats_addr" "$scenario" "nats-$scenario-$round")"
                fi
                [[ -n $r ]] || die "no result from $server $scenario (see $out/results)"
                if [[ $r == unsupported ]]; then
                    unsupported[$server,$scenario]=1
                    log "$(printf '%-4s %-11s round %d: not supported' "$server" "$scenario" "$round")"
                    continue
                fi
                read -r a b c <<<"$r"
                log "$(printf '%-4s %-11s round %d: %10s msgs/s  p50 %6s us  p99 %6s us' "$server" "$scenario" "$round" "$a" "$b" "$c")"
                rate[$server,$scenario]="$(add "${rate[$server,$scenario]:-0}" "$a")"
                p50[$server,$scenario]="$(add "${p50[$server,$scenario]:-0}" "$b")"
                p99[$server,$scenario]="$(add "${p99[$server,$scenario]:-0}" "$c")"
            done
        done
    done
    stop_pids "$sy_pid" "$nats_pid"

    {
        printf '\nbus: switchyard rpc (JSON-RPC over raw TCP) vs nats-server (NATS protocol), 24-byte messages\n'
        printf '%-11s %12s %12s %6s %16s %16s\n' scenario "switchyard/s" "nats/s" ratio "sy p50/p99 us" "nats p50/p99 us"
        local s n lat_s lat_n
        for scenario in $scenarios; do
            if [[ -n ${unsupported[sy,$scenario]:-} ]]; then
                s="not supported"
                lat_s="-"
            else
                s="$(mean "${rate[sy,$scenario]}" "$rounds")"
                lat_s="$(mean "${p50[sy,$scenario]}" "$rounds")/$(mean "${p99[sy,$scenario]}" "$rounds")"
            fi
            n="$(mean "${rate[nats,$scenario]}" "$rounds")"
            lat_n="$(mean "${p50[nats,$scenario]}" "$rounds")/$(mean "${p99[nats,$scenario]}" "$rounds")"
            local rat="-"
            [[ $s == "not supported" ]] || rat="$(ratio "$s" "$n")"
            printf '%-11s %12s %12s %6s %16s %16s\n' "$scenario" "$s" "$n" "$rat" "$lat_s" "$lat_n"
        done
        printf '\nreqrep: round trips/s, %s requesters (1 in flight each), a queue group of %s responders\n' "$requesters" "$responders"
        printf 'fanout-S: messages delivered/s summed over S subscribers, one publisher, window %s per subscriber\n' "$window"
        printf '  (its latencies are mostly the wait behind the window, about window x S / rate)\n'
        printf 'ratio: switchyard/nats (target >= 0.5); switchyard -threads %s, rpc module defaults; %s\n' "$threads" "$nats_desc"
        printf '(bus_load, %s s per run after a 0.5 s warm-up, %s round(s) averaged, %s cores; raw output in %s)\n' \
            "$seconds" "$rounds" "$(nproc)" "${out#"$repo"/}/results"
    } | tee -a "$out/results/summary.txt"
}

main "$@"
