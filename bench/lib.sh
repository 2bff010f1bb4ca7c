# bench/lib.sh: the setup the benchmark scripts in bench/ share, so that each
# script holds only what it measures. Sourced, never run, right after the
# script sets strict mode (set -euo pipefail):
#
#     . "$(dirname "$0")/lib.sh"
#     bench_init bench-proxy proxy   # log prefix; output in bench/out/proxy
#
# What it gives: log/die; tool checks and apt-get installation; free ports
# on 127.0.0.1; the static site both servers serve; starting switchyard,
# nginx (from bench/nginx.conf) and HAProxy on loopback, each wait bounded
# to 10 s; stopping every process started through it on EXIT, INT and TERM;
# reading wrk's output; per-thread CPU of a process; averages and ratios
# for the tables. Servers listen on 127.0.0.1 only. Functions take what they
# need as arguments; the globals they set are named where they are defined.
#
# shellcheck shell=bash

# bench_init NAME [SUBDIR]: cd to the repository; sets repo, bench_name (the
# prefix of log lines) and out (bench/out, or bench/out/SUBDIR); installs
# the traps that stop every tracked process.
bench_init() {
    bench_name="$1"
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit
    repo="$PWD"
    out="$repo/bench/out${2:+/$2}"
    # nginx and haproxy live in /usr/sbin, not on every user's PATH; last,
    # so that one found on PATH comes first.
    case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac
    trap stop_all EXIT
    trap 'exit 130' INT TERM
}

log() { printf '%s: %s\n' "$bench_name" "$*" >&2; }
die() {
    log "$*"
    exit 1
}

# --- tools ---------------------------------------------------------------------

# install_packages PKG...: apt-get install, through sudo when not root.
install_packages() {
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need $*; install them or run as root"
        sudo="sudo"
    fi
    log "installing $*"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_tools CMD...: installs the missing commands (each from the package
# of the same name).
ensure_tools() {
    local missing=() cmd
    for cmd; do command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd"); done
    ((${#missing[@]} == 0)) || install_packages "${missing[@]}"
}

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- processes -----------------------------------------------------------------

bench_pids=()

# track PID: stop_all stops it when the script ends.
track() { bench_pids+=("$1"); }

# untrack PID: forget a process that was waited for (its pid may be reused).
untrack() {
    local keep=() pid
    for pid in "${bench_pids[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
    bench_pids=("${keep[@]}")
}

# stop_pids PID...: SIGTERM to each, then waits for them; untracks them.
stop_pids() {
    local pid
    for pid; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid; do
        wait "$pid" 2>/dev/null || true
        untrack "$pid"
    done
}

# Stops every tracked process, the last started first (the EXIT trap).
stop_all() {
    local i rev=()
    for ((i = ${#bench_pids[@]} - 1; i >= 0; i--)); do rev+=("${bench_pids[i]}"); done
    ((${#rev[@]} == 0)) || stop_pids "${rev[@]}"
}

# wait_until NAME PID LOG CMD...: runs CMD every 50 ms until it succeeds,
# for 10 s at most; dies, showing the end of LOG, if PID exits first or
# the time runs out.
wait_until() {
    local name="$1" pid="$2" logf="$3" i
    shift 3
    for ((i = 0; i < 200; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || {
            tail -n 20 "$logf" >&2 || true
            die "$name exited at start"
        }
        sleep 0.05
    done
    tail -n 20 "$logf" >&2 || true
    die "$name did not answer within 10 s ($*)"
}

# http_ok URL: URL answers with a 2xx.
http_ok() { curl -fs -o /dev/null "$1"; }

# expect_file WHO LABEL URL FILE [CURL-ARG...]: GET URL must answer 200
# with FILE's bytes; no number means anything otherwise.
expect_file() {
    local who="$1" label="$2" url="$3" file="$4" got="$out/check.body" code
    shift 4
    code="$(curl -s "$@" -o "$got" -w '%{http_code}' "$url")" || code="no answer"
    [[ $code == 200 ]] || die "$who: GET $label -> $code"
    cmp -s "$got" "$file" || die "$who: GET $label returned different bytes than $file"
}

# --- the site ------------------------------------------------------------------

# make_site DIR [FILL]: DIR becomes a fresh copy of static_html/ with a
# bench/ folder, FILL DIR (a function; default add_64k_file) adds the files
# to request, then everything is made readable for nginx's workers.
make_site() {
    local dir="$1" fill="${2:-add_64k_file}"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp -R static_html/. "$dir/"
    mkdir -p "$dir/bench"
    "$fill" "$dir"
    chmod -R a+rX "$dir"
}

# add_64k_file DIR: DIR/bench/64k.bin, 65536 bytes, the same on every run.
add_64k_file() {
    head -c 65536 < <(yes 'switchyard bench payload 0123456789abcdef') >"$1/bench/64k.bin"
}

# --- switchyard ----------------------------------------------------------------

sy_bin() { echo "$repo/target/release/switchyard"; }

# switchyard_dir DIR [MODULE...]: a fresh DIR with data/ and modules/
# holding modules/MODULE.so of the build, or every built module. Dies when
# the build is missing. The caller writes DIR/switchyard.toml.
switchyard_dir() {
    local dir="$1" m
    shift
    [[ -x $(sy_bin) ]] || die "$(sy_bin) not found; run 'make build' first"
    for m; do [[ -f modules/$m.so ]] || die "modules/$m.so not found; run 'make build' first"; done
    rm -rf "$dir"
    mkdir -p "$dir/modules" "$dir/data"
    if (($#)); then
        for m; do cp "modules/$m.so" "$dir/modules/"; done
    else
        # The shipped modules, as a deployment would have them.
        cp modules/*.so "$dir/modules/" 2>/dev/null || die "no modules/*.so; run 'make build' first"
    fi
}

# start_switchyard DIR [FLAG...]: switchyard on 127.0.0.1, a port of its
# choosing, with DIR's modules/, data/ and switchyard.toml and the extra
# FLAGs (e.g. -threads 2); output in DIR/stdout.log and DIR/stderr.log,
# RUST_LOG warn unless set. Waits for its "listening on" line; sets sy_pid
# and sy_addr (127.0.0.1:PORT).
start_switchyard() {
    local dir="$1"
    shift
    RUST_LOG="${RUST_LOG:-warn}" "$(sy_bin)" -port 0 "$@" --bind 127.0.0.1 \
        --modules "$dir/modules" --data-dir "$dir/data" --config "$dir/switchyard.toml" \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    sy_pid=$!
    track "$sy_pid"
    wait_until switchyard "$sy_pid" "$dir/stderr.log" grep -q '^listening on ' "$dir/stdout.log"
    # shellcheck disable=SC2034 # for the scripts
    sy_addr="$(sed -n 's/^listening on //p' "$dir/stdout.log" | head -n1)"
}

# sy_admin ADDR COMMAND: one admin command (STATUS, RELOAD http, ...) on a
# new connection; prints the reply through its END line (STATUS) or its
# first line (the others).
sy_admin() {
    python3 - "$1" "$2" <<'EOF'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(sys.argv[2].encode() + b"\n")
f = s.makefile("rb")
while True:
    line = f.readline().decode(errors="replace")
    if not line:
        break
    sys.stdout.write(line)
    if sys.argv[2] != "STATUS" or line.strip() == "END":
        break
EOF
}

# sy_worker_pid ADDR: the pid of the worker process that serves (the
# leader, sy_pid, only supervises it), from STATUS.
sy_worker_pid() { sy_admin "$1" STATUS | sed -n 's/^worker pid=\([0-9]*\).*/\1/p'; }

# --- nginx and HAProxy -----------------------------------------------------------

# nginx_args DIR: the flags naming the instance in DIR (also for -s reload).
nginx_args() { echo "-p $1 -c $1/nginx.conf -e $1/nginx-error.log"; }

nginx_version() { nginx -v 2>&1 | sed 's/.*\///'; }

# start_nginx DIR ROOT PORT WORKERS [HTTPS-CONF]: nginx in the foreground
# with a fresh DIR: nginx.conf from bench/nginx.conf (127.0.0.1:PORT, root
# ROOT, WORKERS worker processes) and the https.conf it includes
# (HTTPS-CONF, a server block, or empty). Waits until it wrote its pid file
# and answers on PORT; sets nginx_pid.
start_nginx() {
    local dir="$1" root="$2" port="$3" workers="$4"
    rm -rf "$dir"
    mkdir -p "$dir/nginx-tmp"
    printf '%s' "${5:-}" >"$dir/https.conf"
    # As root, nginx would drop its workers to "nobody"; keep the invoking user.
    local user_line=""
    [[ $(id -u) -eq 0 ]] && user_line="user root;"
    sed -e "s|@USER_LINE@|$user_line|" -e "s|@OUT@|$dir|g" -e "s|@PORT@|$port|g" \
        -e "s|@ROOT@|$root|g" -e "s|^worker_processes .*|worker_processes $workers;|" \
        "$repo/bench/nginx.conf" >"$dir/nginx.conf"
    # shellcheck disable=SC2046 # the flags are paths without spaces
    nginx $(nginx_args "$dir") >"$dir/stdout.log" 2>&1 &
    nginx_pid=$!
    track "$nginx_pid"
    wait_until nginx "$nginx_pid" "$dir/nginx-error.log" nginx_ready "$dir" "$port"
}

# nginx_ready DIR PORT: the instance wrote its pid file (-s reload reads
# it) and answers on PORT.
nginx_ready() { [[ -s $1/nginx.pid ]] && http_ok "http://127.0.0.1:$2/"; }

haproxy_version() { haproxy -v 2>&1 | head -n1 | awk '{ print $3 }'; }

# start_haproxy DIR PORT UPSTREAM THREADS: HAProxy relaying TCP from
# 127.0.0.1:PORT to UPSTREAM (host:port, an HTTP server), nbthread THREADS,
# config and log in a fresh DIR. Waits until it answers HTTP; sets
# haproxy_pid.
start_haproxy() {
    local dir="$1" port="$2" upstream="$3" threads="$4"
    rm -rf "$dir"
    mkdir -p "$dir"
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
    bind 127.0.0.1:$port
    default_backend nginx

backend nginx
    server nginx $upstream
EOF
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    haproxy_pid=$!
    track "$haproxy_pid"
    wait_until haproxy "$haproxy_pid" "$dir/haproxy.log" http_ok "http://127.0.0.1:$port/"
}

# --- wrk -------------------------------------------------------------------------

# wrk_run FILE WHO WRK-ARG...: wrk with those arguments, its output in FILE;
# dies (naming WHO, if not empty) when wrk fails.
wrk_run() {
    local raw="$1" who="$2"
    shift 2
    wrk "$@" >"$raw" 2>&1 || die "wrk failed${who:+ against $who}: $(tail -n 3 "$raw")"
}

# From a saved wrk output: requests per second, as wrk printed it (empty if
# absent); the 99th percentile latency (needs --latency); the requests done.
wrk_rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
wrk_p99() { awk '$1 == "99%" { print $2 }' "$1"; }
wrk_requests() { awk '/requests in/ { print $1 }' "$1"; }

# The errors wrk saw, described ("socket connect 0, read 3, ...;
# non-2xx/3xx 5"; "not 201: N" from bench/webapp-post.lua), or "-".
wrk_errors() {
    awk '
        /Socket errors:/ { sub(/^ *Socket errors: */, ""); e = e (e ? "; " : "") "socket " $0 }
        /Non-2xx or 3xx responses:/ { e = e (e ? "; " : "") "non-2xx/3xx " $NF }
        /^not_created:/ && $2 > 0 { e = e (e ? "; " : "") "not 201: " $2 }
        END { print (e ? e : "-") }' "$1"
}

# The errors counted: socket errors of every kind plus non-2xx/3xx answers.
wrk_error_count() {
    awk '
        /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { n += $NF }
        END { print n + 0 }' "$1"
}

# wrk_summary FILE: "<req/s> <p99> <errors>" (0 and - when absent).
wrk_summary() {
    local rps p99
    rps="$(wrk_rps "$1")"
    p99="$(wrk_p99 "$1")"
    echo "${rps:-0} ${p99:--} $(wrk_errors "$1")"
}

# --- per-thread CPU ---------------------------------------------------------------

# thread_cpu PID: one line per thread of PID, "TID NAME TICKS": the CPU
# time (user + system) it used so far, in clock ticks (getconf CLK_TCK a
# second). Spaces in a thread's name become underscores.
thread_cpu() {
    local task stat f
    for task in /proc/"$1"/task/*; do
        stat="$(cat "$task/stat" 2>/dev/null)" || continue
        # The fields after the name (which may hold spaces and parentheses);
        # f[0] is field 3, so utime (14) and stime (15) are f[11] and f[12].
        read -r -a f <<<"${stat##*) }"
        printf '%s %s %s\n' "${task##*/}" "$(tr ' ' _ <"$task/comm")" "$((f[11] + f[12]))"
    done
}

# thread_cpu_diff BEFORE AFTER: the CPU seconds used between two thread_cpu
# outputs, per thread name (threads of one name summed), most first.
thread_cpu_diff() {
    awk -v hz="$(getconf CLK_TCK)" '
        NR == FNR { before[$1] = $3; next }
        { used[$2] += $3 - before[$1] }
        END { for (n in used) if (used[n] > 0) printf "%-24s %8.2f s\n", n, used[n] / hz }' "$1" "$2" |
        sort -k2,2 -nr
}

# --- numbers for the tables ----------------------------------------------------

# add A B: A + B.
add() { awk -v a="$1" -v b="$2" 'BEGIN { print a + b }'; }

# mean SUM N: SUM / N, rounded to a whole number.
mean() { awk -v s="$1" -v n="$2" 'BEGIN { printf "%.0f", s / n }'; }

# ratio A B: A / B with two decimals, "-" when B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
