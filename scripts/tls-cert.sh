#!/usr/bin/env bash
# Generates certificates for local TLS with Switchyard, with openssl. ECDSA
# P-256, 825 days.
#
#   scripts/tls-cert.sh [DIR] [NAME...]
#       (`make tls-cert`) a self-signed server certificate: DIR/cert.pem and
#       DIR/key.pem, valid for the NAMEs (DNS names or IP addresses; default
#       "localhost 127.0.0.1"). Clients must be told to trust it
#       (curl --cacert tls/cert.pem).
#
#   scripts/tls-cert.sh --client-ca [DIR]
#       (`make tls-client-ca`) a CA for client certificates (mutual TLS):
#       DIR/client-ca.pem, the file `client_ca` names, and its key
#       DIR/client-ca.key.
#
#   scripts/tls-cert.sh --client NAME [DIR] [ALT...]
#       (`make tls-client-cert NAME=bot1`) a client certificate with subject
#       CN=NAME signed by that CA (made first if missing):
#       DIR/clients/NAME.pem and DIR/clients/NAME.key. ALTs become subject
#       alternative names: an e-mail address (has @), a URI (has ://) or a
#       DNS name. A module sees CN first, then the DNS names, e-mails, URIs.
#
# DIR defaults to tls/ at the top of the repository (git-ignored). An
# existing file is kept unless FORCE=1. For local use only.
set -euo pipefail

cd "$(dirname "$0")/.."

command -v openssl >/dev/null 2>&1 || { echo "tls-cert: openssl is needed (apt-get install openssl)" >&2; exit 1; }

mode=server
case "${1:-}" in
    --client-ca) mode=client-ca; shift ;;
    --client)
        mode=client
        shift
        client="${1:-}"
        [[ -n $client ]] || { echo "tls-cert: --client needs a NAME (make tls-client-cert NAME=bot1)" >&2; exit 2; }
        # The name becomes a file name and a subject: keep both plain.
        [[ $client =~ ^[A-Za-z0-9][A-Za-z0-9._@-]*$ ]] || {
            echo "tls-cert: client NAME may hold letters, digits and . _ @ - only: $client" >&2
            exit 2
        }
        shift
        ;;
    -h|--help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;;
esac
dir="${1:-tls}"
shift || true
names=("$@")

mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.tls-cert.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# Moves the new pair into place, key first: a running server picks files
# up on the next RELOAD (or SIGHUP), sent after this script has finished.
install_pair() { # tmp-cert tmp-key cert key
    chmod 600 "$2"
    chmod 644 "$1"
    mv -f "$2" "$4"
    mv -f "$1" "$3"
}

make_client_ca() {
    local cert="$dir/client-ca.pem" key="$dir/client-ca.key"
    if [[ -f $cert && -f $key && ${FORCE:-0} != 1 ]]; then
        echo "tls-cert: $cert and $key exist; keeping them (FORCE=1 to replace)"
        return
    fi
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -days 825 -subj "/CN=switchyard local client CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
    install_pair "$tmp/ca.pem" "$tmp/ca.key" "$cert" "$key"
    echo "tls-cert: wrote $cert (client_ca) and $key"
}

case $mode in
    server)
        ((${#names[@]})) || names=(localhost 127.0.0.1)
        cert="$dir/cert.pem"
        key="$dir/key.pem"
        if [[ -f $cert && -f $key && ${FORCE:-0} != 1 ]]; then
            echo "tls-cert: $cert and $key exist; keeping them (FORCE=1 to replace)"
            exit 0
        fi
        san=""
        for n in "${names[@]}"; do
            if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then
                san+="${san:+,}IP:$n"
            else
                san+="${san:+,}DNS:$n"
            fi
        done
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -days 825 -subj "/CN=${names[0]}" \
            -addext "subjectAltName=$san" \
            -addext "basicConstraints=critical,CA:FALSE" \
            -addext "keyUsage=critical,digitalSignature" \
            -addext "extendedKeyUsage=serverAuth" \
            -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
        install_pair "$tmp/cert.pem" "$tmp/key.pem" "$cert" "$key"
        echo "tls-cert: wrote $cert and $key for ${names[*]}"
        ;;
    client-ca)
        make_client_ca
        ;;
    client)
        cert="$dir/clients/$client.pem"
        key="$dir/clients/$client.key"
        if [[ -f $cert && -f $key && ${FORCE:-0} != 1 ]]; then
            echo "tls-cert: $cert and $key exist; keeping them (FORCE=1 to replace)"
            exit 0
        fi
        # The CA is made once and kept (even with FORCE=1): replacing it
        # would orphan every client certificate issued before.
        [[ -f $dir/client-ca.pem && -f $dir/client-ca.key ]] || FORCE=0 make_client_ca
        mkdir -p "$dir/clients"
        ext="$tmp/ext.cnf"
        {
            echo "basicConstraints=critical,CA:FALSE"
            echo "keyUsage=critical,digitalSignature"
            echo "extendedKeyUsage=clientAuth"
        } >"$ext"
        san=""
        for n in "${names[@]}"; do
            if [[ $n == *://* ]]; then
                san+="${san:+,}URI:$n"
            elif [[ $n == *@* ]]; then
                san+="${san:+,}email:$n"
            else
                san+="${san:+,}DNS:$n"
            fi
        done
        [[ -z $san ]] || echo "subjectAltName=$san" >>"$ext"
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=$client" -keyout "$tmp/client.key" -out "$tmp/client.csr" 2>/dev/null
        openssl x509 -req -in "$tmp/client.csr" -days 825 -sha256 \
            -CA "$dir/client-ca.pem" -CAkey "$dir/client-ca.key" -CAcreateserial \
            -CAserial "$tmp/ca.srl" -extfile "$ext" -out "$tmp/client.pem" 2>/dev/null
        install_pair "$tmp/client.pem" "$tmp/client.key" "$cert" "$key"
        echo "tls-cert: wrote $cert and $key for CN=$client${names[*]:+ (${names[*]})}, signed by $dir/client-ca.pem"
        ;;
esac
