#!/usr/bin/env bash
# Runs the client libraries' own test suites (clients/node, clients/python)
# against the real server built by `make build` (target/release/switchyard
# and the installed modules/rpc.so). Called by `make test`.
#
# A missing node or python3 fails the run when CI is set, and is skipped
# with a message otherwise. Each suite starts one server of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

for f in target/release/switchyard modules/rpc.so; do
    [ -e "$f" ] || { echo "test-clients: $f is missing: run \`make build\` first" >&2; exit 1; }
done

missing() {
    if [ -n "${CI:-}" ]; then
        echo "test-clients: FAIL: $1 is not installed (CI is set; .ci/run installs it)" >&2
        exit 1
    fi
    echo "test-clients: SKIP the $2 client: $1 is not installed"
}

status=0
if command -v node >/dev/null 2>&1; then
    echo "test-clients: node $(node --version): clients/node"
    (cd clients/node && timeout 60 node --test --test-reporter=spec test/*.test.js) || status=1
else
    missing node Node
fi
if command -v python3 >/dev/null 2>&1; then
    echo "test-clients: $(python3 --version): clients/python"
    PYTHONPATH=clients/python/src timeout 60 python3 -m unittest discover -s clients/python/tests || status=1
else
    missing python3 Python
fi
if [ "$status" != 0 ]; then
    echo "test-clients: FAIL" >&2
fi
exit "$status"
