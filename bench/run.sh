#!/usr/bin/env bash
# `make bench`: static file throughput of Switchyard's http module next to
# nginx, on this machine, in the same run, over loopback only.
#
# Both servers serve the same directory (bench/out/site: a copy of
# static_html/ plus a generated 64 KiB file). For each file, wrk runs against
# Switchyard and then nginx, alternating, and the script prints requests per
# second, the ratio switchyard/nginx, the 99th percentile latency, and any
# socket errors or non-2xx/3xx responses.
#
# HTTPS rows ("https <file>"): the same wrk load over TLS (keep-alive, so
# the handshake is paid once per connection), against Switchyard's TLS
# termination on its one port and against nginx's `listen ... ssl`, both
# with the same self-signed ECDSA P-256 certificate (scripts/tls-cert.sh),
# TLS 1.2 and 1.3 offered, the client's cipher preference.
#
# Environment:
#   BENCH_DURATION     seconds per measured run (default 10)
#   BENCH_ROUNDS       measured runs per server and file, averaged (default 1)
#   BENCH_CONNECTIONS  wrk connections (default 100)
#   BENCH_THREADS      wrk threads, switchyard -threads, nginx workers (default 2)
#   BENCH_SERVERS      which servers to measure (default "switchyard nginx")
#   BENCH_FILES        paths to request (default "/bench/small.html /bench/64k.bin")
#   BENCH_HTTPS_FILES  paths to request over HTTPS (default "/bench/small.html";
#                      empty: no HTTPS rows)
#   BENCH_HTTPS_ONLY   1: only the HTTPS rows (`make bench-https`)
#
# Needs a release build (`make build`); installs wrk, nginx, curl and openssl
# with apt-get when they are missing.
set -euo pipefail

cd "$(dirname "$0")/.."
repo="$PWD"
out="$repo/bench/out"
site="$out/site"

duration="${BENCH_DURATION:-10}"
rounds="${BENCH_ROUNDS:-1}"
connections="${BENCH_CONNECTIONS:-100}"
threads="${BENCH_THREADS:-2}"
servers="${BENCH_SERVERS:-switchyard nginx}"
files="${BENCH_FILES:-/bench/small.html /bench/64k.bin}"
https_files="${BENCH_HTTPS_FILES-/bench/small.html}"
[[ ${BENCH_HTTPS_ONLY:-0} == 1 ]] && files=""
# What the rows measure: a path over HTTP, or "https:<path>".
items="$files"
for p in $https_files; do items+="${items:+ }https:$p"; done
[[ -n $items ]] || { echo "bench: nothing to measure" >&2; exit 1; }
tls_dir="$out/tls"

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# --- tools -----------------------------------------------------------------

ensure_tools() {
    local missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
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

nginx_bin() { command -v nginx 2>/dev/null || echo /usr/sbin/nginx; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- the site ----------------------------------------------------------------

make_site() {
    rm -rf "$site"
    mkdir -p "$site"
    cp -R static_html/. "$site/"
    mkdir -p "$site/bench"
    # 65536 bytes, the same on every run.
    head -c 65536 < <(yes 'switchyard bench payload 0123456789abcdef') >"$site/bench/64k.bin"
    chmod -R a+rX "$site"
}

# The certificate both servers present over HTTPS.
make_cert() {
    [[ -n $https_files ]] || return 0
    rm -rf "$tls_dir"
    FORCE=1 scripts/tls-cert.sh "$tls_dir" localhost 127.0.0.1 >/dev/null
    chmod -R a+rX "$tls_dir"
}

# --- servers -----------------------------------------------------------------

sy_pid=""
nginx_pid=""

stop_servers() {
    local pid
    for pid in $sy_pid $nginx_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $sy_pid $nginx_pid; do
        wait "$pid" 2>/dev/null || true
    done
    sy_pid=""
    nginx_pid=""
}
trap stop_servers EXIT
trap 'exit 130' INT TERM

start_switchyard() {
    local bin="$repo/target/release/switchyard"
    [[ -x $bin ]] || die "$bin not found; run 'make build' first"
    local dir="$out/switchyard"
    rm -rf "$dir"
    mkdir -p "$dir/modules" "$dir/data"
    # The shipped modules, as a deployment would have them.
    cp modules/*.so "$dir/modules/" 2>/dev/null || die "no modules/*.so; run 'make build' first"
    cat >"$dir/switchyard.toml" <<EOF
[modules.http]
root = "$site"
EOF
    if [[ -n $https_files ]]; then
        cat >>"$dir/switchyard.toml" <<EOF

[server.tls]
cert = "$tls_dir/cert.pem"
key = "$tls_dir/key.pem"
EOF
    fi
    RUST_LOG="${RUST_LOG:-warn}" "$bin" -port 0 -threads "$threads" --bind 127.0.0.1 \
        --modules "$dir/modules" --data-dir "$dir/data" --config "$dir/switchyard.toml" \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    sy_pid=$!
    local i addr=""
    for ((i = 0; i < 200; i++)); do
        addr="$(sed -n 's/^listening on //p' "$dir/stdout.log" | head -n1)"
        [[ -n $addr ]] && break
        kill -0 "$sy_pid" 2>/dev/null || { tail -n 20 "$dir/stderr.log" >&2; die "switchyard exited at start"; }
        sleep 0.05
    done
    [[ -n $addr ]] || die "switchyard did not print 'listening on' within 10 s"
    sy_url="http://$addr"
    sy_https_url="https://$addr" # TLS on the same port
    log "switchyard $sy_url (pid $sy_pid)"
}

start_nginx() {
    local dir="$out/nginx" port
    rm -rf "$dir"
    mkdir -p "$dir/nginx-tmp"
    port="${BENCH_NGINX_PORT:-$(free_port)}"
    # As root, nginx would drop its workers to "nobody"; keep the invoking user.
    local user_line=""
    [[ $(id -u) -eq 0 ]] && user_line="user root;"
    # HTTPS: a second server block on its own port (nginx cannot serve
    # plaintext and TLS on one port), included by bench/nginx.conf.
    local tls_port=""
    : >"$dir/https.conf"
    if [[ -n $https_files ]]; then
        tls_port="${BENCH_NGINX_TLS_PORT:-$(free_port)}"
        cat >"$dir/https.conf" <<EOF
server {
    listen 127.0.0.1:$tls_port ssl backlog=4096;
    server_name _;
    root $site;
    index index.html;
    ssl_certificate     $tls_dir/cert.pem;
    ssl_certificate_key $tls_dir/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
}
EOF
    fi
    sed -e "s|@USER_LINE@|$user_line|" -e "s|@OUT@|$dir|g" -e "s|@PORT@|$port|g" \
        -e "s|@ROOT@|$site|g" -e "s|^worker_processes .*|worker_processes $threads;|" \
        bench/nginx.conf >"$dir/nginx.conf"
    "$(nginx_bin)" -p "$dir" -c "$dir/nginx.conf" -e "$dir/nginx-error.log" \
        >"$dir/stdout.log" 2>&1 &
    nginx_pid=$!
    local i
    for ((i = 0; i < 200; i++)); do
        curl -fs -o /dev/null "http://127.0.0.1:$port/" && break
        kill -0 "$nginx_pid" 2>/dev/null || { cat "$dir/stdout.log" "$dir/nginx-error.log" >&2 || true; die "nginx exited at start"; }
        sleep 0.05
    done
    ((i < 200)) || die "nginx did not answer within 10 s"
    nginx_url="http://127.0.0.1:$port"
    nginx_https_url="https://127.0.0.1:$tls_port"
    log "nginx $nginx_url (pid $nginx_pid, $("$(nginx_bin)" -v 2>&1 | sed 's/.*\///'))"
}

# The URL of a row's item ("<path>" or "https:<path>") on a server.
url_of() {
    local item="$2"
    case "$1,$item" in
        switchyard,https:*) echo "$sy_https_url${item#https:}" ;;
        nginx,https:*) echo "$nginx_https_url${item#https:}" ;;
        switchyard,*) echo "$sy_url$item" ;;
        nginx,*) echo "$nginx_url$item" ;;
    esac
}

# A row's label: the file name, "https <name>" over TLS.
label_of() {
    case "$1" in
        https:*) echo "https $(basename "${1#https:}")" ;;
        *) basename "$1" ;;
    esac
}

# Both servers must return the file itself before any number means anything
# (over HTTPS with the certificate verified against the generated one).
check_content() {
    local server="$1" item="$2" got="$out/check.body" code path="${2#https:}"
    local tls=()
    [[ $item == https:* ]] && tls=(--cacert "$tls_dir/cert.pem")
    code="$(curl -s "${tls[@]}" -o "$got" -w '%{http_code}' "$(url_of "$server" "$item")")" || code="no answer"
    [[ $code == 200 ]] || die "$server: GET $(label_of "$item") -> $code"
    cmp -s "$got" "$site$path" || die "$server: GET $(label_of "$item") returned different bytes than $site$path"
}

# The TLS version and cipher a server settles on with an OpenSSL client
# (wrk's TLS library), for the log.
tls_params() {
    openssl s_client -connect "${1#https://}" </dev/null 2>/dev/null |
        awk '/^New, / { sub(/^New, /, ""); print; found = 1; exit } END { if (!found) print "?" }'
}

# --- measuring ---------------------------------------------------------------

# Runs wrk; prints "<req/s> <p99> <errors>" where errors is a short
# description or "-".
measure() {
    local server="$1" item="$2" secs="$3" tag="$4"
    local raw="$out/results/$tag.txt"
    wrk -t"$threads" -c"$connections" -d"${secs}s" --latency "$(url_of "$server" "$item")" >"$raw" 2>&1 ||
        die "wrk failed against $server: $(tail -n 3 "$raw")"
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
    mkdir -p "$out/results"
    make_site
    make_cert

    local server
    for server in $servers; do
        case "$server" in
            switchyard) start_switchyard ;;
            nginx) start_nginx ;;
            *) die "unknown server '$server' in BENCH_SERVERS" ;;
        esac
    done

    local path
    for path in $items; do
        for server in $servers; do check_content "$server" "$path"; done
    done
    if [[ -n $https_files ]]; then
        for server in $servers; do
            log "$(printf '%-10s https: %s' "$server" "$(tls_params "$(url_of "$server" https:)")")"
        done
    fi

    log "wrk -t$threads -c$connections -d${duration}s, $rounds round(s), $(nproc) cores"

    declare -A sum p99 errs
    local round slug
    for path in $items; do
        slug="$(basename "$path")"
        [[ $path == https:* ]] && slug="https-$slug"
        for server in $servers; do
            measure "$server" "$path" 1 "warmup-$server-$slug" >/dev/null
            sum[$server,$path]=0
            errs[$server,$path]=""
        done
        for ((round = 1; round <= rounds; round++)); do
            for server in $servers; do
                local r rps lat err
                r="$(measure "$server" "$path" "$duration" "$server-$slug-$round")"
                read -r rps lat err <<<"$r"
                log "$(printf '%-10s %-18s round %d: %12s req/s  p99 %s  errors %s' "$server" "$(label_of "$path")" "$round" "$rps" "$lat" "$err")"
                sum[$server,$path]="$(awk -v a="${sum[$server,$path]}" -v b="$rps" 'BEGIN { print a + b }')"
                p99[$server,$path]="$lat"
                [[ $err == - ]] || errs[$server,$path]+="${errs[$server,$path]:+; }round $round: $err"
            done
        done
    done

    # The table: one row per file.
    {
        printf '\n%-18s %16s %16s %8s %12s %12s\n' file "switchyard req/s" "nginx req/s" ratio "sy p99" "nginx p99"
        for path in $items; do
            local sy="-" ng="-" ratio="-" sy99="-" ng99="-"
            [[ -n ${sum[switchyard,$path]:-} ]] && sy="$(awk -v s="${sum[switchyard,$path]}" -v n="$rounds" 'BEGIN { printf "%.0f", s / n }')" && sy99="${p99[switchyard,$path]}"
            [[ -n ${sum[nginx,$path]:-} ]] && ng="$(awk -v s="${sum[nginx,$path]}" -v n="$rounds" 'BEGIN { printf "%.0f", s / n }')" && ng99="${p99[nginx,$path]}"
            if [[ $sy != - && $ng != - ]]; then
                ratio="$(awk -v a="$sy" -v b="$ng" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
            fi
            printf '%-18s %16s %16s %8s %12s %12s\n' "$(label_of "$path")" "$sy" "$ng" "$ratio" "$sy99" "$ng99"
        done
        local key any=0
        for key in "${!errs[@]}"; do
            [[ -n ${errs[$key]} ]] || continue
            ((any++ == 0)) && printf '\nerrors:\n'
            printf '  %s %s: %s\n' "${key%%,*}" "${key#*,}" "${errs[$key]}"
        done
        printf '\n(wrk -t%s -c%s -d%ss, %s round(s) averaged; raw output in %s)\n' \
            "$threads" "$connections" "$duration" "$rounds" "${out#"$repo"/}/results"
    } | tee "$out/results/summary.txt"
}

main "$@"
