# Switchyard: build, run, test, lint, bench.
#
#   make              build the workspace (release) and install the modules
#   make run          build, then serve static_html/ on port 8080
#   make test         build, then run the whole test suite
#   make lint         rustfmt check and clippy with warnings as errors
#   make new-module NAME=hello  a new module in modules/hello/, copied from
#                     templates/module/ and added to the workspace
#   make bench        wrk against switchyard and nginx, side by side (HTTP and HTTPS)
#   make bench-proxy  the proxy module next to HAProxy (mode tcp), both in front of nginx
#   make bench-proxy-bulk  100 MiB transfers through the proxy module, each way, next to direct
#   make bench-https  only the HTTPS rows: TLS termination next to nginx's
#   make bench-reload the same load while both servers reload 200 times
#   make bench-crash  wrk load while the worker is crashed 10 times: errors, recovery p50/p99
#   make bench-webapp the webapp module: GET and POST throughput on SQLite
#   make bench-rpc    the rpc module: kv.set/kv.get next to redis-benchmark, at equal durability (Redis AOF)
#   make bench-bus    the rpc bus: request/reply and fan-out next to nats-server
#   make browser-check  headless Chromium renders the webapp's page and the bus page
#   make tls-cert     a self-signed pair for local HTTPS: tls/cert.pem, tls/key.pem
#   make token        a new bus token and its `token_hash = "sha256:..."` config line
#   make tls-client-cert NAME=bot1  a client certificate for mutual TLS, tls/clients/bot1.pem
#                     (+ .key), signed by tls/client-ca.pem (made on first use; make tls-client-ca)
#   make licenses     regenerate deps_licenses/
#   make fuzz         every fuzz target in fuzz/ for FUZZ_SECONDS each (libFuzzer, stable toolchain)
#   make fuzz-ci      the same, FUZZ_CI_SECONDS each (what .ci/run does)
#   make clean        remove build output (never touches data/)
#
# Variables: PORT (8080), ARGS (extra switchyard flags, e.g. ARGS="-threads 8"),
# RUST_LOG (info for `make run`), CARGO (cargo), FUZZ_SECONDS (60),
# FUZZ_CI_SECONDS (15), FUZZ_CI_JOBS (core count: targets run at once by
# fuzz-ci), FUZZ_TARGETS (all; e.g. FUZZ_TARGETS="router cron").

CARGO    ?= cargo
PORT     ?= 8080
ARGS     ?=
FUZZ_SECONDS    ?= 60
FUZZ_CI_SECONDS ?= 15
FUZZ_CI_JOBS    ?= $(shell nproc 2>/dev/null || echo 1)
FUZZ_TARGETS    ?=

RELEASE  := target/release
HOST_BIN := $(RELEASE)/switchyard

# Every shipped module is a crate under modules/<name>/ whose library is
# lib<name>.so; every test fixture is a crate under tests/fixtures/<name>/.
# Either list may be empty.
MODULES  := $(notdir $(patsubst %/Cargo.toml,%,$(wildcard modules/*/Cargo.toml)))
FIXTURES := $(notdir $(patsubst %/Cargo.toml,%,$(wildcard tests/fixtures/*/Cargo.toml)))

.PHONY: all build cargo-build install-modules run test lint new-module bench bench-proxy bench-proxy-bulk bench-https bench-reload bench-crash bench-webapp bench-rpc bench-bus browser-check tls-cert tls-client-ca tls-client-cert token licenses fuzz fuzz-ci clean help

all: build

build: cargo-build
	@$(MAKE) --no-print-directory install-modules

cargo-build:
	$(CARGO) build --release --workspace

# Copy each built library next to its destination under a temporary name,
# then rename it into place: a host watching modules/ never sees a
# half-written file. Files whose contents have not changed are left alone,
# so a running host does not reload them needlessly.
install-modules:
	@set -e; \
	install_so() { \
		src="$$1"; dst="$$2"; tmp="$$(dirname "$$dst")/.$$(basename "$$dst").tmp"; \
		if [ ! -f "$$src" ]; then \
			echo "install-modules: $$src is missing (run 'make build')" >&2; exit 1; \
		fi; \
		if cmp -s "$$src" "$$dst"; then return 0; fi; \
		cp "$$src" "$$tmp" && mv -f "$$tmp" "$$dst"; \
		echo "installed $$dst"; \
	}; \
	for m in $(MODULES); do install_so "$(RELEASE)/lib$$m.so" "modules/$$m.so"; done; \
	if [ -n "$(FIXTURES)" ]; then mkdir -p target/fixtures; fi; \
	for f in $(FIXTURES); do install_so "$(RELEASE)/lib$$f.so" "target/fixtures/$$f.so"; done

run: build
	mkdir -p data
	RUST_LOG="$${RUST_LOG:-info}" $(HOST_BIN) -port $(PORT) $(ARGS)

# Two cargo runs, because of module_api's `testing` feature: the crates
# whose [dev-dependencies] turn it on (TESTING_PKGS) are tested on their
# own. In one `cargo test --workspace` the feature is on for every crate,
# so cargo rebuilt module_api and everything above it (the host library
# and binary, every module) a second time, and the integration tests ran
# that binary instead of the one `make build` made. Split, the first run
# reuses the build's units and the second rebuilds only the few crates
# that need the feature. The second run happens even if the first
# failed; the recipe fails if either did.
TESTING_PKGS = $(shell for f in $$(find . \( -path ./target -o -path ./fuzz -o -name node_modules \) -prune \
	-o -name Cargo.toml -print); do \
	grep -q 'features = \["testing"\]' "$$f" && sed -n '/^\[package\]/,/^\[/s/^name = "\(.*\)"$$/\1/p' "$$f"; done | sort)

# Fixture crates without a test of their own are not run through cargo
# test: each would cost an empty test harness, compiled and linked at the
# release profile (12-14 CPU-seconds apiece), that runs nothing. Their
# libraries come from `make build`, and the host's tests use them.
UNTESTED_FIXTURES = $(shell for f in $(FIXTURES); do \
	grep -rqsF -e '[test]' -e 'cfg(test)' tests/fixtures/$$f || echo $$f; done)

test: build
	@status=0; \
	set -x; \
	$(CARGO) test --release --workspace --no-fail-fast $(addprefix --exclude ,$(TESTING_PKGS) $(UNTESTED_FIXTURES)) || status=$$?; \
	$(if $(TESTING_PKGS),$(CARGO) test --release --no-fail-fast $(addprefix -p ,$(TESTING_PKGS)) || status=$$?;) \
	exit $$status
	scripts/test-clients.sh

# Clippy with the release profile, like `make build` and `make test`: its
# proc macros, build scripts and their outputs (ring's C code, ...) are the
# very units those then build, not a second set in the dev profile.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# See scripts/new-module.sh for what it checks and changes.
new-module:
	@test -n "$(NAME)" || { echo "make new-module: say which, e.g. NAME=hello" >&2; exit 2; }
	scripts/new-module.sh "$(NAME)"

bench: build
	bench/run.sh
	bench/webapp.sh
	bench/proxy.sh
	bench/proxy-bulk.sh
	bench/rpc.sh

bench-proxy: build
	bench/proxy.sh

bench-proxy-bulk: build
	bench/proxy-bulk.sh

bench-https: build
	bench/https.sh

bench-reload: build
	bench/reload.sh

bench-crash: build
	bench/crash.sh

bench-webapp: build
	bench/webapp.sh

bench-rpc: build
	bench/rpc.sh

bench-bus: build
	bench/bus.sh

browser-check: build
	tests/browser/webapp.sh
	tests/browser/bus.sh

# Keeps an existing pair; FORCE=1 replaces it. TLS_NAMES: the names it is
# valid for (default "localhost 127.0.0.1").
tls-cert:
	scripts/tls-cert.sh tls $(TLS_NAMES)

# Only the host binary is needed; stdout is the two lines and nothing else.
token:
	@$(CARGO) build --release --quiet -p switchyard
	@$(HOST_BIN) --new-token
# Mutual TLS: the CA that `client_ca` names (tls/client-ca.pem), kept once
# made; and a client certificate with CN=$(NAME) signed by it, ALT: its
# subject alternative names (DNS names, e-mail addresses, URIs).
tls-client-ca:
	scripts/tls-cert.sh --client-ca tls

tls-client-cert:
	@test -n "$(NAME)" || { echo "make tls-client-cert: say which client, e.g. NAME=bot1" >&2; exit 2; }
	scripts/tls-cert.sh --client "$(NAME)" tls $(ALT)

licenses:
	scripts/gen-deps-licenses.sh

# The fuzz crate is its own workspace (fuzz/Cargo.toml): lint and test never
# build it. scripts/fuzz.sh builds it with libFuzzer's coverage flags on the
# stable toolchain and runs each target on a scratch corpus (fuzz/out/)
# seeded from fuzz/corpus/; a crash fails and names its input under
# fuzz/artifacts/. See fuzz/README.md.
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh $(FUZZ_TARGETS)

# CI: a build at opt-level 1 (profile fuzz-ci in fuzz/Cargo.toml) keeps the
# whole step short, and the targets run FUZZ_CI_JOBS (the core count) at a
# time, each on a core of its own for its full FUZZ_CI_SECONDS; the
# rustfmt check covers the crate that `make lint` does not see.
fuzz-ci:
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	FUZZ_SECONDS=$(FUZZ_CI_SECONDS) FUZZ_PROFILE=fuzz-ci FUZZ_JOBS=$(FUZZ_CI_JOBS) scripts/fuzz.sh $(FUZZ_TARGETS)

clean:
	$(CARGO) clean
	rm -f modules/*.so modules/.*.so.tmp
	rm -rf modules/.run bench/out fuzz/target fuzz/out

help:
	@sed -n '3,/^$$/s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))
