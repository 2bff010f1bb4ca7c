#!/usr/bin/env bash
# `make bench-crash`: crash recovery under load, over loopback.
#
# Starts switchyard in its default leader/worker mode serving a static file
# through the http module, then CRASHES times: start wrk (CONNECTIONS
# keep-alive connections, CRASH_WINDOW seconds), kill the worker with
# SIGSEGV (the pid from STATUS's `worker pid=` line) half a second in, and
# poll STATUS until a new worker answers. Prints per crash the wrk errors
# (socket errors plus non-2xx) and the time to recovery (SIGSEGV sent ->
# first STATUS answered by the new worker), then p50/p99 of the recovery
# times.
#
# Environment: BENCH_CRASHES (10), BENCH_CONNECTIONS (100), BENCH_THREADS
# (2), BENCH_WINDOW (2 seconds of wrk per crash).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init bench-crash crash

crashes="${BENCH_CRASHES:-10}"
connections="${BENCH_CONNECTIONS:-100}"
threads="${BENCH_THREADS:-2}"
window="${BENCH_WINDOW:-2}"

command -v wrk >/dev/null 2>&1 || die "wrk is missing (apt-get install wrk)"
command -v python3 >/dev/null 2>&1 || die "python3 is missing"

switchyard_dir "$out" http
mkdir -p "$out/site/bench"
head -c 1024 /dev/zero | tr '\0' 'x' > "$out/site/bench/small.html"
cat > "$out/switchyard.toml" <<TOML
[server]
threads = $threads
event_loops = $threads

[modules.http]
root = "$out/site"
TOML

start_switchyard "$out"
leader=$sy_pid
port="${sy_addr##*:}"
log "leader pid=$leader on 127.0.0.1:$port; $crashes crashes under wrk -c $connections"

# crash_once: prints "<old pid> <new pid> <recovery ms>".
crash_once() {
    python3 - "$port" <<'PY'
import os, signal, socket, sys, time
port = int(sys.argv[1])
def worker():
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(b"STATUS\n")
        buf = b""
        while not buf.endswith(b"END\n"):
            d = s.recv(65536)
            if not d:
                return None
            buf += d
        s.close()
        for l in buf.decode().splitlines():
            if l.startswith("worker pid="):
                return int(l.split()[1].split("=")[1])
    except OSError:
        return None
old = worker()
t0 = time.monotonic()
os.kill(old, signal.SIGSEGV)
while True:
    new = worker()
    if new is not None and new != old:
        break
    if time.monotonic() - t0 > 10:
        sys.exit("no recovery within 10 s")
    time.sleep(0.001)
print(old, new, "%.1f" % ((time.monotonic() - t0) * 1000))
PY
}

results=()
for i in $(seq "$crashes"); do
    wrk -t "$threads" -c "$connections" -d "${window}s" "http://127.0.0.1:$port/bench/small.html" \
        >"$out/wrk-$i.txt" 2>&1 &
    wrk_pid=$!
    track "$wrk_pid"
    sleep 0.5
    read -r old new ms < <(crash_once)
    wait "$wrk_pid"
    untrack "$wrk_pid"
    reqs=$(wrk_requests "$out/wrk-$i.txt")
    errs=$(wrk_error_count "$out/wrk-$i.txt")
    printf 'crash %2d: worker %s -> %s, recovery %7s ms, requests %s, errors %s\n' \
        "$i" "$old" "$new" "$ms" "${reqs:-?}" "$errs"
    results+=("$ms")
    sleep 0.2
done

printf '%s\n' "${results[@]}" | python3 -c '
import sys
v = sorted(float(x) for x in sys.stdin if x.strip())
def pct(p):
    k = max(0, min(len(v) - 1, round(p / 100 * len(v) + 0.5) - 1))
    return v[k]
print("recovery: n=%d p50=%.1f ms p99=%.1f ms max=%.1f ms" % (len(v), pct(50), pct(99), v[-1]))'
