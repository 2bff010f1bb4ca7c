#!/usr/bin/env bash
# Generates a self-signed certificate and key for local HTTPS with
# Switchyard (`make tls-cert`): tls/cert.pem and tls/key.pem, ECDSA P-256,
# valid for localhost and 127.0.0.1 (and any names given), 825 days.
#
#   scripts/tls-cert.sh [DIR] [NAME...]
#
# DIR defaults to tls/ at the top of the repository (git-ignored). NAMEs are
# DNS names or IP addresses; the default is "localhost 127.0.0.1". An
# existing pair is kept unless FORCE=1. For local use only: clients must be
# told to trust it (curl --cacert tls/cert.pem).
set -euo pipefail

cd "$(dirname "$0")/.."
dir="${1:-tls}"
shift || true
names=("$@")
((${#names[@]})) || names=(localhost 127.0.0.1)

command -v openssl >/dev/null 2>&1 || { echo "tls-cert: openssl is needed (apt-get install openssl)" >&2; exit 1; }

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

mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.tls-cert.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days 825 -subj "/CN=${names[0]}" \
    -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
chmod 600 "$tmp/key.pem"
chmod 644 "$tmp/cert.pem"
# Replaced one after the other: a running server picks them up on the next
# RELOAD (or SIGHUP), sent after this script has finished.
mv -f "$tmp/key.pem" "$key"
mv -f "$tmp/cert.pem" "$cert"
echo "tls-cert: wrote $cert and $key for ${names[*]}"
