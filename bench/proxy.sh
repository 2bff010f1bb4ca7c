#!/usr/bin/env bash
# `make bench-proxy` (and the last part of `make bench`): Switchyard's L4
# proxy module next to HAProxy in `mode tcp`, both in front of the same
# nginx, on this machine, in the same run, over loopback only.
#
# Three targets get the same wrk load (HTTP keep-alive requests for a small
# file): nginx directly, nginx through HAProxy (mode tcp, nbthread 2), and
# nginx through Switchyard (only proxy.so loaded, one prefix route "GET " to
# nginx). The script prints requests per second, p99 latency, the added p99
# over direct, and the ratios switchyard/haproxy and each/direct.
#
# Environment:
#   BENCH_DURATION     seconds per measured run (default 10)
#   BENCH_ROUNDS       measured runs per target, averaged (default 1)
#   BENCH_CONNECTIONS  wrk connections (default 100)
#   BENCH_THREADS      wrk threads, nginx workers, HAProxy nbthread and
#                      Switchyard event loops (default 2)
#   BENCH_PROXY_SPLICE true|false: sets Switchyard's `proxy_splice`
#                      (unset: its default)
#
# Needs a release build (`make build`); installs wrk, nginx, haproxy and
# curl with apt-get when they are missing.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init bench-proxy proxy

site="$out/site"

duration="${BENCH_DURATION:-10}"
rounds="${BENCH_ROUNDS:-1}"
connections="${BENCH_CONNECTIONS:-100}"
threads="${BENCH_THREADS:-2}"
path="/bench/small.html"
targets="direct haproxy switchyard"

# A small page: the proxy's per-request cost dominates, not the copy.
add_small_page() {
    head -c 600 < <(yes 'switchyard proxy bench page') >"$1/bench/small.html"
}

start_servers() {
    nginx_port="$(free_port)"
    start_nginx "$out/nginx" "$site" "$nginx_port" "$threads"
    log "nginx 127.0.0.1:$nginx_port ($(nginx_version))"

    haproxy_port="$(free_port)"
    start_haproxy "$out/haproxy" "$haproxy_port" "127.0.0.1:$nginx_port" "$threads"
    log "haproxy 127.0.0.1:$haproxy_port ($(haproxy_version))"

    # Only the proxy: the http module would bind "GET " too.
    local dir="$out/switchyard"
    switchyard_dir "$dir" proxy
    cat >"$dir/switchyard.toml" <<EOF
[server]
event_loops = $threads
${BENCH_PROXY_SPLICE:+proxy_splice = $BENCH_PROXY_SPLICE}

[modules.proxy]
[[modules.proxy.routes]]
prefix = "GET "
upstreams = ["127.0.0.1:$nginx_port"]
EOF
    start_switchyard "$dir" -threads "$threads"
    switchyard_port="${sy_addr##*:}"
    wait_until switchyard "$sy_pid" "$dir/stderr.log" http_ok "http://127.0.0.1:$switchyard_port/"
    log "switchyard 127.0.0.1:$switchyard_port (pid $sy_pid, proxy module only)"
}

url_of() {
    case "$1" in
        direct) echo "http://127.0.0.1:$nginx_port$path" ;;
        haproxy) echo "http://127.0.0.1:$haproxy_port$path" ;;
        switchyard) echo "http://127.0.0.1:$switchyard_port$path" ;;
    esac
}

# wrk's latency ("812.00us", "1.23ms", "2.01s") in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000;
        else if (v ~ /s$/) print n * 1000000; else print "-" }'
}

# Prints "<req/s> <p99> <errors>".
measure() {
    local target="$1" secs="$2" raw="$out/results/$3.txt"
    wrk_run "$raw" "$target" -t"$threads" -c"$connections" -d"${secs}s" --latency "$(url_of "$target")"
    wrk_summary "$raw"
}

main() {
    ensure_tools wrk nginx haproxy curl
    rm -rf "$out"
    mkdir -p "$out/results"
    make_site "$site" add_small_page
    start_servers
    local t
    # Every target must return the file itself before any number means anything.
    for t in $targets; do expect_file "$t" "$path" "$(url_of "$t")" "$site$path"; done
    log "wrk -t$threads -c$connections -d${duration}s, $rounds round(s), $(nproc) cores, GET $path"

    declare -A sum p99 errs
    for t in $targets; do
        measure "$t" 1 "warmup-$t" >/dev/null
        sum[$t]=0
        p99[$t]=0
        errs[$t]=""
    done
    local round r rps lat err
    for ((round = 1; round <= rounds; round++)); do
        for t in $targets; do
            r="$(measure "$t" "$duration" "$t-$round")"
            read -r rps lat err <<<"$r"
            log "$(printf '%-10s round %d: %12s req/s  p99 %s  errors %s' "$t" "$round" "$rps" "$lat" "$err")"
            sum[$t]="$(add "${sum[$t]}" "$rps")"
            # The worst p99 of the rounds.
            p99[$t]="$(awk -v a="${p99[$t]}" -v b="$(to_us "$lat")" 'BEGIN { print (b > a ? b : a) }')"
            [[ $err == - ]] || errs[$t]+="${errs[$t]:+; }round $round: $err"
        done
    done

    {
        printf '\nproxy: GET %s through an L4 proxy to nginx (wrk -t%s -c%s -d%ss, %s round(s))\n' \
            "$path" "$threads" "$connections" "$duration" "$rounds"
        printf '%-12s %12s %10s %12s %14s\n' target "req/s" "p99 ms" "added p99 ms" "vs direct"
        local avg direct_rps direct_p99
        direct_rps="$(mean "${sum[direct]}" "$rounds")"
        direct_p99="${p99[direct]}"
        for t in $targets; do
            avg="$(mean "${sum[$t]}" "$rounds")"
            awk -v t="$t" -v a="$avg" -v p="${p99[$t]}" -v d="$direct_rps" -v dp="$direct_p99" 'BEGIN {
                added = (t == "direct") ? "-" : sprintf("%.2f", (p - dp) / 1000)
                printf "%-12s %12d %10.2f %12s %13.2fx\n", t, a, p / 1000, added, (d > 0 ? a / d : 0) }'
        done
        awk -v s="${sum[switchyard]}" -v h="${sum[haproxy]}" -v sp="${p99[switchyard]}" \
            -v hp="${p99[haproxy]}" -v dp="$direct_p99" 'BEGIN {
            printf "switchyard/haproxy: req/s %.2fx (target >= 1.00x), added p99 %.2f ms vs %.2f ms (target <=)\n",
                (h > 0 ? s / h : 0), (sp - dp) / 1000, (hp - dp) / 1000 }'
        local any=0
        for t in $targets; do
            [[ -n ${errs[$t]} ]] || continue
            ((any++ == 0)) && printf 'errors:\n'
            printf '  %s: %s\n' "$t" "${errs[$t]}"
        done
        printf '(raw wrk output in %s)\n' "${out#"$repo"/}/results"
    } | tee "$out/results/summary.txt"
}

main "$@"
