#!/usr/bin/env bash
# `make bench-https`: only the HTTPS rows of `make bench` — wrk over TLS
# (keep-alive) against Switchyard's TLS termination and against nginx with
# the same certificate, same run, ratio printed. Takes the same environment
# as bench/run.sh (BENCH_DURATION, BENCH_HTTPS_FILES, ...).
set -euo pipefail
export BENCH_HTTPS_ONLY=1
export BENCH_HTTPS_FILES="${BENCH_HTTPS_FILES:-/bench/small.html}"
exec "$(dirname "$0")/run.sh" "$@"
