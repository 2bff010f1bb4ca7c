#!/usr/bin/env bash
# Runs the client libraries' own test suites (clients/node, clients/python)
# against the real server built by `make build`. Called by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "test-clients: no clients yet"
