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
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init bench

site="$out/site"
tls_dir="$out/tls"

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
[[ -n $items ]] || die "nothing to measure"

# The certificate both servers present over HTTPS.
make_cert() {
    [[ -n $https_files ]] || return 0
    rm -rf "$tls_dir"
    FORCE=1 scripts/tls-cert.sh "$tls_dir" localhost 127.0.0.1 >/dev/null
    chmod -R a+rX "$tls_dir"
}

# Switchyard serves HTTP and, with a certificate configured, TLS on its one port.
start_sy() {
    local dir="$out/switchyard"
    switchyard_dir "$dir"
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
    start_switchyard "$dir" -threads "$threads"
    sy_url="http://$sy_addr"
    sy_https_url="https://$sy_addr" # TLS on the same port
    log "switchyard $sy_url (pid $sy_pid)"
}

# nginx cannot serve plaintext and TLS on one port: HTTPS is a second server
# block on its own port.
start_ng() {
    local port tls_port="" https_conf=""
    port="${BENCH_NGINX_PORT:-$(free_port)}"
    if [[ -n $https_files ]]; then
        tls_port="${BENCH_NGINX_TLS_PORT:-$(free_port)}"
        https_conf="server {
    listen 127.0.0.1:$tls_port ssl backlog=4096;
    server_name _;
    root $site;
    index index.html;
    ssl_certificate     $tls_dir/cert.pem;
    ssl_certificate_key $tls_dir/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
}
"
    fi
    start_nginx "$out/nginx" "$site" "$port" "$threads" "$https_conf"
    nginx_url="http://127.0.0.1:$port"
    nginx_https_url="https://127.0.0.1:$tls_port"
    log "nginx $nginx_url (pid $nginx_pid, $(nginx_version))"
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

# Both servers must return the file itself (over HTTPS with the certificate
# verified against the generated one).
check_content() {
    local server="$1" item="$2" tls=()
    [[ $item == https:* ]] && tls=(--cacert "$tls_dir/cert.pem")
    expect_file "$server" "$(label_of "$item")" "$(url_of "$server" "$item")" "$site${item#https:}" "${tls[@]}"
}

# The TLS version and cipher a server settles on with an OpenSSL client
# (wrk's TLS library), for the log.
tls_params() {
    openssl s_client -connect "${1#https://}" </dev/null 2>/dev/null |
        awk '/^New, / { sub(/^New, /, ""); print; found = 1; exit } END { if (!found) print "?" }'
}

# Runs wrk; prints "<req/s> <p99> <errors>".
measure() {
    local server="$1" item="$2" secs="$3" raw="$out/results/$4.txt"
    wrk_run "$raw" "$server" -t"$threads" -c"$connections" -d"${secs}s" --latency "$(url_of "$server" "$item")"
    wrk_summary "$raw"
}

main() {
    ensure_tools wrk nginx curl openssl
    mkdir -p "$out/results"
    make_site "$site"
    make_cert

    local server
    for server in $servers; do
        case "$server" in
            switchyard) start_sy ;;
            nginx) start_ng ;;
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
                sum[$server,$path]="$(add "${sum[$server,$path]}" "$rps")"
                p99[$server,$path]="$lat"
                [[ $err == - ]] || errs[$server,$path]+="${errs[$server,$path]:+; }round $round: $err"
            done
        done
    done

    # The table: one row per file.
    {
        printf '\n%-18s %16s %16s %8s %12s %12s\n' file "switchyard req/s" "nginx req/s" ratio "sy p99" "nginx p99"
        for path in $items; do
            local sy="-" ng="-" rt="-" sy99="-" ng99="-"
            [[ -n ${sum[switchyard,$path]:-} ]] && sy="$(mean "${sum[switchyard,$path]}" "$rounds")" && sy99="${p99[switchyard,$path]}"
            [[ -n ${sum[nginx,$path]:-} ]] && ng="$(mean "${sum[nginx,$path]}" "$rounds")" && ng99="${p99[nginx,$path]}"
            [[ $sy == - || $ng == - ]] || rt="$(ratio "$sy" "$ng")"
            printf '%-18s %16s %16s %8s %12s %12s\n' "$(label_of "$path")" "$sy" "$ng" "$rt" "$sy99" "$ng99"
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
