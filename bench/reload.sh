#!/usr/bin/env bash
# `make bench-reload`: reloads under load, Switchyard next to nginx, on this
# machine, over loopback only.
#
# For each server, wrk keeps BENCH_CONNECTIONS keep-alive connections busy
# on one static file for BENCH_DURATION seconds while the server is reloaded
# BENCH_RELOADS times, evenly spaced:
#   switchyard: `RELOAD http` on its admin port (one connection, one command
#               at a time); each reply must be `OK http gen=N ...`;
#   nginx:      `nginx -s reload` for the bench instance (-p/-c of its
#               prefix; the master reads its pid file).
# The script prints, per server: requests, errors (wrk socket errors plus
# non-2xx responses), reloads done and failed; for switchyard also the
# reload latency (command sent -> `OK` line) p50/p99/max and its RSS
# (VmRSS from /proc/<pid>/status) before and after, with STATUS's
# retained=/retained_bytes=. Target: 0 errors and a reload p99 under 50 ms.
#
# Environment:
#   BENCH_DURATION     seconds of load per server (default 20)
#   BENCH_RELOADS      reloads per server during the load (default 200)
#   BENCH_CONNECTIONS  wrk connections (default 100)
#   BENCH_THREADS      wrk threads, switchyard -threads, nginx workers (default 2)
#   BENCH_SERVERS      which servers to measure (default "switchyard nginx")
#   BENCH_PATH         path requested (default /bench/small.html)
#
# Needs a release build (`make build`); installs wrk and nginx with apt-get
# when they are missing (like bench/run.sh).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init bench-reload reload

site="$out/site"
nginx_dir="$out/nginx"

duration="${BENCH_DURATION:-20}"
reloads="${BENCH_RELOADS:-200}"
connections="${BENCH_CONNECTIONS:-100}"
threads="${BENCH_THREADS:-2}"
servers="${BENCH_SERVERS:-switchyard nginx}"
path="${BENCH_PATH:-/bench/small.html}"

[[ $duration =~ ^[0-9]+$ && $duration -ge 3 ]] || die "BENCH_DURATION must be an integer >= 3"
[[ $reloads =~ ^[0-9]+$ && $reloads -ge 1 ]] || die "BENCH_RELOADS must be a positive integer"

start_sy() {
    local dir="$out/switchyard"
    switchyard_dir "$dir" http
    cat >"$dir/switchyard.toml" <<EOF
[modules.http]
root = "$site"
EOF
    start_switchyard "$dir" -threads "$threads"
    log "switchyard http://$sy_addr (pid $sy_pid)"
}

start_ng() {
    local port
    port="${BENCH_NGINX_PORT:-$(free_port)}"
    start_nginx "$nginx_dir" "$site" "$port" "$threads"
    nginx_addr="127.0.0.1:$port"
    log "nginx http://$nginx_addr (pid $nginx_pid, $(nginx_version))"
}

addr_of() {
    case "$1" in
        switchyard) echo "$sy_addr" ;;
        nginx) echo "$nginx_addr" ;;
    esac
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# The process that loads the modules: the worker (STATUS names it), or
# the server itself when it runs in one process.
worker_pid() {
    local pid
    pid="$(sy_admin "$sy_addr" STATUS | awk '$1 == "worker" { sub(/^pid=/, "", $2); print $2 }')"
    echo "${pid:-$sy_pid}"
}

# Sends `RELOAD http` $reloads times, evenly spread over $1 seconds, on one
# connection; writes one latency (ms) per line to $2 and the non-OK replies
# to $3.
switchyard_reloads() {
    python3 - "$sy_addr" "$reloads" "$1" "$2" "$3" <<'EOF'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n, span, lat_path, err_path = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
s = socket.create_connection((host, int(port)), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = s.makefile("rb")
interval = span / n
lat, errs = [], []
start = time.monotonic()
for i in range(n):
    delay = start + i * interval - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    t0 = time.perf_counter()
    s.sendall(b"RELOAD http\n")
    try:
        line = f.readline().decode(errors="replace").rstrip("\r\n")
    except OSError as e:
        line = f"<{e}>"
    lat.append((time.perf_counter() - t0) * 1000.0)
    if not line.startswith("OK http gen="):
        errs.append(f"#{i + 1}: {line!r}")
        if not line:
            break
with open(lat_path, "w") as fh:
    fh.writelines(f"{x:.3f}\n" for x in lat)
with open(err_path, "w") as fh:
    fh.writelines(e + "\n" for e in errs)
EOF
}

# `nginx -s reload` $reloads times, evenly spread over $1 seconds; failures
# go to $2.
nginx_reloads() {
    local span="$1" errs="$2" i start now target
    : >"$errs"
    start="$(date +%s.%N)"
    for ((i = 0; i < reloads; i++)); do
        target="$(awk -v s="$start" -v i="$i" -v n="$reloads" -v d="$span" 'BEGIN { printf "%.3f", s + i * d / n }')"
        now="$(date +%s.%N)"
        awk -v t="$target" -v n="$now" 'BEGIN { exit !(t > n) }' &&
            sleep "$(awk -v t="$target" -v n="$now" 'BEGIN { printf "%.3f", t - n }')"
        # shellcheck disable=SC2046 # the flags are paths without spaces
        nginx $(nginx_args "$nginx_dir") -s reload >>"$nginx_dir/reload.log" 2>&1 ||
            echo "#$((i + 1)): nginx -s reload exited $?" >>"$errs"
    done
}

# Percentile (nearest rank) of the numbers in a file.
percentile() {
    sort -n "$1" | awk -v p="$2" '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        r = int(p / 100 * NR + 0.999999); if (r < 1) r = 1; if (r > NR) r = NR
        printf "%.1f", v[r] }'
}

# Runs wrk against $1 while reloading it; fills the row_* arrays.
declare -A row_req row_rps row_err row_errtxt row_reloads row_rfail row_p50 row_p99 row_max row_rss0 row_rss1 row_retained
run_one() {
    local server="$1"
    local raw="$out/results/wrk-$server.txt" span
    # Reloads run from second 1 to second duration-1, inside the load.
    span=$((duration - 2))
    [[ $server == switchyard ]] && row_rss0[$server]="$(rss_kb "$(worker_pid)")"
    wrk -t"$threads" -c"$connections" -d"${duration}s" --latency "http://$(addr_of "$server")$path" >"$raw" 2>&1 &
    local wrk_pid=$!
    track "$wrk_pid"
    sleep 1
    local lat="$out/results/reload-latency-$server.txt" errs="$out/results/reload-errors-$server.txt"
    : >"$lat"
    case "$server" in
        switchyard) switchyard_reloads "$span" "$lat" "$errs" ;;
        nginx) nginx_reloads "$span" "$errs" ;;
    esac
    wait "$wrk_pid" || die "wrk failed against $server: $(tail -n 3 "$raw")"
    untrack "$wrk_pid"

    row_req[$server]="$(wrk_requests "$raw")"
    row_rps[$server]="$(wrk_rps "$raw" | awk '{ printf "%.0f", $1 }')"
    row_err[$server]="$(wrk_error_count "$raw")"
    row_errtxt[$server]="$(wrk_errors "$raw")"
    row_rfail[$server]="$(wc -l <"$errs" | tr -d ' ')"
    row_reloads[$server]="$reloads"
    row_p50[$server]="-"
    row_p99[$server]="-"
    row_max[$server]="-"
    row_rss1[$server]="-"
    row_retained[$server]="-"
    if [[ $server == switchyard ]]; then
        row_reloads[$server]="$(wc -l <"$lat" | tr -d ' ')"
        row_p50[$server]="$(percentile "$lat" 50)"
        row_p99[$server]="$(percentile "$lat" 99)"
        row_max[$server]="$(percentile "$lat" 100)"
        kill -0 "$sy_pid" 2>/dev/null || die "switchyard died during the run; see $out/switchyard/stderr.log"
        row_rss1[$server]="$(rss_kb "$(worker_pid)")"
        row_retained[$server]="$(sy_admin "$sy_addr" STATUS | awk '$1 == "http" {
            for (i = 2; i <= NF; i++) if ($i ~ /^(gen|retained|retained_bytes)=/) s = s (s ? " " : "") $i
            print s }')"
    else
        row_rss0[$server]="-"
    fi
    log "$server: ${row_req[$server]} requests, errors ${row_errtxt[$server]}, ${row_reloads[$server]} reloads (${row_rfail[$server]} failed)"
    [[ ${row_rfail[$server]} == 0 ]] || sed 's/^/    /' "$errs" | head -n 5 >&2
}

main() {
    ensure_tools wrk nginx curl python3
    rm -rf "$out"
    mkdir -p "$out/results"
    make_site "$site"

    local server
    for server in $servers; do
        case "$server" in
            switchyard) start_sy ;;
            nginx) start_ng ;;
            *) die "unknown server '$server' in BENCH_SERVERS" ;;
        esac
        expect_file "$server" "$path" "http://$(addr_of "$server")$path" "$site$path"
    done
    log "wrk -t$threads -c$connections -d${duration}s $path, $reloads reloads each, $(nproc) cores"

    for server in $servers; do
        # Warm up (caches, connection setup) without reloads.
        wrk -t"$threads" -c"$connections" -d1s "http://$(addr_of "$server")$path" >/dev/null 2>&1 || true
        run_one "$server"
    done

    {
        printf '\n%-10s %10s %9s %8s %8s %7s %11s %11s %11s %10s %10s\n' \
            server requests "req/s" errors reloads failed "reload p50" "reload p99" "reload max" "RSS before" "RSS after"
        for server in $servers; do
            local rss0="${row_rss0[$server]}" rss1="${row_rss1[$server]}" p50="${row_p50[$server]}" p99="${row_p99[$server]}" mx="${row_max[$server]}"
            [[ $rss0 == - ]] || rss0="$((rss0 / 1024)) MiB"
            [[ $rss1 == - ]] || rss1="$((rss1 / 1024)) MiB"
            [[ $p50 == - ]] || p50="$p50 ms"
            [[ $p99 == - ]] || p99="$p99 ms"
            [[ $mx == - ]] || mx="$mx ms"
            printf '%-10s %10s %9s %8s %8s %7s %11s %11s %11s %10s %10s\n' "$server" \
                "${row_req[$server]}" "${row_rps[$server]}" "${row_err[$server]}" \
                "${row_reloads[$server]}" "${row_rfail[$server]}" "$p50" "$p99" "$mx" "$rss0" "$rss1"
        done
        printf '\nerrors = wrk socket errors (connect/read/write/timeout) + non-2xx/3xx responses\n'
        for server in $servers; do
            printf '  %-10s %s\n' "$server" "${row_errtxt[$server]}"
        done
        if [[ -n ${row_req[switchyard]:-} ]]; then
            printf 'switchyard after the run: STATUS http %s; RSS %s -> %s kB\n' \
                "${row_retained[switchyard]}" "${row_rss0[switchyard]}" "${row_rss1[switchyard]}"
            local verdict="met"
            [[ ${row_err[switchyard]} == 0 && ${row_rfail[switchyard]} == 0 ]] || verdict="MISSED"
            awk -v p="${row_p99[switchyard]}" 'BEGIN { exit !(p != "-" && p + 0 < 50) }' || verdict="MISSED"
            printf 'target (switchyard: 0 errors, 0 failed reloads, reload p99 < 50 ms): %s\n' "$verdict"
        fi
        printf '(wrk -t%s -c%s -d%ss %s, %s reloads per server; raw output in %s)\n' \
            "$threads" "$connections" "$duration" "$path" "$reloads" "${out#"$repo"/}/results"
    } | tee "$out/results/summary.txt"
}

main "$@"
