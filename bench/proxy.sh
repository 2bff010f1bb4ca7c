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

cd "$(dirname "$0")/.."
repo="$PWD"
out="$repo/bench/out/proxy"
site="$out/site"

duration="${BENCH_DURATION:-10}"
rounds="${BENCH_ROUNDS:-1}"
connections="${BENCH_CONNECTIONS:-100}"
threads="${BENCH_THREADS:-2}"
path="/bench/small.html"
targets="direct haproxy switchyard"

log() { printf 'bench-proxy: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

ensure_tools() {
    local missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
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

bin_of() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until `curl URL` answers 200 (or the process died); $1 name, $2 pid, $3 url, $4 log.
wait_http() {
    local name="$1" pid="$2" url="$3" logf="$4" i
    for ((i = 0; i < 200; i++)); do
        curl -fs -o /dev/null "$url" && return 0
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$logf" >&2 || true; die "$name exited at start"; }
        sleep 0.05
    done
    tail -n 20 "$logf" >&2 || true
    die "$name did not answer $url within 10 s"
}

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

make_site() {
    rm -rf "$site"
    mkdir -p "$site/bench"
    cp -R static_html/. "$site/"
    # A small page: the proxy's per-request cost dominates, not the copy.
    head -c 600 < <(yes 'switchyard proxy bench page') >"$site/bench/small.html"
    chmod -R a+rX "$site"
}

start_nginx() {
    local dir="$out/nginx"
    rm -rf "$dir"
    mkdir -p "$dir/nginx-tmp"
    # bench/nginx.conf includes an HTTPS server file; none here.
    : >"$dir/https.conf"
    nginx_port="$(free_port)"
    local user_line=""
    [[ $(id -u) -eq 0 ]] && user_line="user root;"
    sed -e "s|@USER_LINE@|$user_line|" -e "s|@OUT@|$dir|g" -e "s|@PORT@|$nginx_port|g" \
        -e "s|@ROOT@|$site|g" -e "s|^worker_processes .*|worker_processes $threads;|" \
        bench/nginx.conf >"$dir/nginx.conf"
    "$(bin_of nginx)" -p "$dir" -c "$dir/nginx.conf" -e "$dir/nginx-error.log" >"$dir/stdout.log" 2>&1 &
    pids+=($!)
    wait_http nginx $! "http://127.0.0.1:$nginx_port/" "$dir/nginx-error.log"
    log "nginx 127.0.0.1:$nginx_port ($("$(bin_of nginx)" -v 2>&1 | sed 's/.*\///'))"
}

start_haproxy() {
    local dir="$out/haproxy"
    rm -rf "$dir"
    mkdir -p "$dir"
    haproxy_port="$(free_port)"
    # Plain TCP relaying, tuned as an operator would for this machine.
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread $threads
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:$haproxy_port
    default_backend nginx

backend nginx
    server nginx 127.0.0.1:$nginx_port
EOF
    "$(bin_of haproxy)" -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    pids+=($!)
    wait_http haproxy $! "http://127.0.0.1:$haproxy_port/" "$dir/haproxy.log"
    log "haproxy 127.0.0.1:$haproxy_port ($("$(bin_of haproxy)" -v 2>&1 | head -n1 | awk '{ print $3 }'))"
}

start_switchyard() {
    local bin="$repo/target/release/switchyard" dir="$out/switchyard"
    [[ -x $bin ]] || die "$bin not found; run 'make build' first"
    [[ -f modules/proxy.so ]] || die "modules/proxy.so not found; run 'make build' first"
    rm -rf "$dir"
    mkdir -p "$dir/modules" "$dir/data"
    # Only the proxy: the http module would bind "GET " too.
    cp modules/proxy.so "$dir/modules/"
    cat >"$dir/switchyard.toml" <<EOF
[server]
event_loops = $threads
${BENCH_PROXY_SPLICE:+proxy_splice = $BENCH_PROXY_SPLICE}

[modules.proxy]
[[modules.proxy.routes]]
prefix = "GET "
upstreams = ["127.0.0.1:$nginx_port"]
EOF
    RUST_LOG="${RUST_LOG:-warn}" "$bin" -port 0 -threads "$threads" --bind 127.0.0.1 \
        --modules "$dir/modules" --data-dir "$dir/data" --config "$dir/switchyard.toml" \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    local pid=$!
    pids+=($pid)
    local i addr=""
    for ((i = 0; i < 200; i++)); do
        addr="$(sed -n 's/^listening on //p' "$dir/stdout.log" | head -n1)"
        [[ -n $addr ]] && break
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$dir/stderr.log" >&2; die "switchyard exited at start"; }
        sleep 0.05
    done
    [[ -n $addr ]] || die "switchyard did not print 'listening on' within 10 s"
    switchyard_port="${addr##*:}"
    wait_http switchyard "$pid" "http://127.0.0.1:$switchyard_port/" "$dir/stderr.log"
    log "switchyard 127.0.0.1:$switchyard_port (pid $pid, proxy module only)"
}

url_of() {
    case "$1" in
        direct) echo "http://127.0.0.1:$nginx_port$path" ;;
        haproxy) echo "http://127.0.0.1:$haproxy_port$path" ;;
        switchyard) echo "http://127.0.0.1:$switchyard_port$path" ;;
    esac
}

# Every target must return the file itself before any number means anything.
check_content() {
    local got="$out/check.body" code
    code="$(curl -s -o "$got" -w '%{http_code}' "$(url_of "$1")")" || code="no answer"
    [[ $code == 200 ]] || die "$1: GET $path -> $code"
    cmp -s "$got" "$site$path" || die "$1: GET $path returned different bytes"
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
    local target="$1" secs="$2" tag="$3" raw="$out/results/$3.txt"
    wrk -t"$threads" -c"$connections" -d"${secs}s" --latency "$(url_of "$target")" >"$raw" 2>&1 ||
        die "wrk failed against $target: $(tail -n 3 "$raw")"
    local rps p99 errors
    rps="$(awk '/^Requests\/sec:/ { print $2 }' "$raw")"
    p99="$(awk '$1 == "99%" { print $2 }' "$raw")"
    errors="$(awk '
        /Socket errors:/ { sub(/^ *Socket errors: */, ""); e = e (e ? "; " : "") "socket " $0 }
        /Non-2xx or 3xx responses:/ { e = e (e ? "; " : "") "non-2xx/3xx " $NF }
        END { print (e ? e : "-") }' "$raw")"
    echo "${rps:-0} ${p99:--} $errors"
}

main() {
    ensure_tools
    rm -rf "$out"
    mkdir -p "$out/results"
    make_site
    start_nginx
    start_haproxy
    start_switchyard
    local t
    for t in $targets; do check_content "$t"; done
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
            sum[$t]="$(awk -v a="${sum[$t]}" -v b="$rps" 'BEGIN { print a + b }')"
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
        direct_rps="$(awk -v s="${sum[direct]}" -v n="$rounds" 'BEGIN { printf "%.0f", s / n }')"
        direct_p99="${p99[direct]}"
        for t in $targets; do
            avg="$(awk -v s="${sum[$t]}" -v n="$rounds" 'BEGIN { printf "%.0f", s / n }')"
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
