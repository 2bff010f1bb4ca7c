#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ and runs each for a while with libFuzzer.
#
#   scripts/fuzz.sh                  every target, FUZZ_SECONDS (60) each
#   scripts/fuzz.sh router cron      only these targets
#   scripts/fuzz.sh --build          build only
#   scripts/fuzz.sh --list           the targets (one per [[bin]] in fuzz/Cargo.toml)
#
# Environment:
#   FUZZ_SECONDS    seconds per target (60)
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang (10)
#   FUZZ_SANITIZER  none (default) or address: AddressSanitizer needs the
#                   nightly-only -Zsanitizer, which the stable toolchain
#                   accepts only with RUSTC_BOOTSTRAP=1 (set here when asked)
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-jobs=2 -workers=2"
#   FUZZ_JOBS       targets run at the same time (1); make fuzz-ci uses
#                   the core count
#   FUZZ_PROFILE    cargo profile of fuzz/Cargo.toml: release (default), or
#                   fuzz-ci (opt-level 1: a shorter build, slower runs)
#   CARGO           cargo
#
# Why not `cargo fuzz run`: cargo-fuzz is not part of the toolchain and
# takes minutes to build from crates.io, and its default (AddressSanitizer)
# needs nightly. This script passes rustc the same coverage flags that
# `cargo fuzz build -O -s none` does, so the binaries are the ones
# cargo-fuzz would build (in the same directory), with plain stable cargo.
# Both ways work; see fuzz/README.md.
#
# Each target runs on a scratch corpus fuzz/out/<target>/ (new inputs go
# there, never into the committed seeds in fuzz/corpus/<target>/), logs to
# fuzz/out/<target>.log, and writes a crashing input to
# fuzz/artifacts/<target>/. A crash, a hang past FUZZ_TIMEOUT or a leak
# fails the run: the log's tail and the artifact's path are printed, and
# the exit status is 1 once every target has run.
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ=fuzz
CARGO=${CARGO:-cargo}
SECONDS_EACH=${FUZZ_SECONDS:-60}
TIMEOUT=${FUZZ_TIMEOUT:-10}
SANITIZER=${FUZZ_SANITIZER:-none}
PROFILE=${FUZZ_PROFILE:-release}

targets_all() {
    sed -n 's/^name = "\(.*\)"$/\1/p' "$FUZZ/Cargo.toml" | grep -v '^switchyard-fuzz$'
}

build_only=0
targets=()
for arg in "$@"; do
    case "$arg" in
        --build) build_only=1 ;;
        --list) targets_all; exit 0 ;;
        -h|--help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        -*) echo "fuzz: unknown option $arg" >&2; exit 2 ;;
        *) targets+=("$arg") ;;
    esac
done
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(targets_all)
fi
for t in "${targets[@]}"; do
    if [[ ! -f "$FUZZ/fuzz_targets/$t.rs" ]]; then
        echo "fuzz: no target $t (have: $(targets_all | tr '\n' ' '))" >&2
        exit 2
    fi
done

# The flags cargo-fuzz 0.13 gives rustc for `-O -s none`: libFuzzer's
# coverage feedback (SanitizerCoverage: 8-bit edge counters, the PC table,
# comparison operands, stack depth) and `--cfg fuzzing`. All are stable
# codegen options. The explicit --target keeps them off build scripts and
# proc macros, as cargo-fuzz does.
triple=$(rustc -vV | sed -n 's/^host: //p')
flags="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
-Cllvm-args=-sanitizer-coverage-stack-depth"
case "$SANITIZER" in
    none) ;;
    address)
        flags="$flags -Zsanitizer=address"
        export RUSTC_BOOTSTRAP=1
        ;;
    *) echo "fuzz: FUZZ_SANITIZER is none or address" >&2; exit 2 ;;
esac

echo "fuzz: building ${#targets[@]} target(s) (profile: $PROFILE, sanitizer: $SANITIZER)"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
start=$(date +%s)
RUSTFLAGS="$flags ${RUSTFLAGS:-}" \
    "$CARGO" build --profile "$PROFILE" --manifest-path "$FUZZ/Cargo.toml" --target "$triple" "${bins[@]}"
echo "fuzz: built in $(($(date +%s) - start)) s"
((build_only)) && exit 0

bin_dir="$FUZZ/target/$triple/$PROFILE"

# One target's run; its verdict goes to the caller through the exit
# status, its report through stdout (printed by the caller in order).
run_target() {
    local t=$1 out="$FUZZ/out/$1" log="$FUZZ/out/$1.log" artifacts="$FUZZ/artifacts/$1" status=0 execs
    mkdir -p "$out" "$artifacts" "$FUZZ/corpus/$t"
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    "$bin_dir/$t" "$out" "$FUZZ/corpus/$t" \
        -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" \
        -artifact_prefix="$artifacts/" -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if ((status == 0)); then
        echo "fuzz: $t ok: ${execs:-?} execs, corpus $(find "$out" -type f | wc -l) inputs"
    else
        echo "fuzz: $t FAILED (exit $status); last lines of $log:"
        tail -n 40 "$log" | sed 's/^/    /'
        sed -n 's/.*Test unit written to /fuzz: artifact: /p' "$log"
        echo "fuzz: reproduce with: $bin_dir/$t <artifact>"
    fi
    return "$status"
}

# Up to FUZZ_JOBS targets at a time. Each libFuzzer process runs one
# thread, so on an otherwise idle machine N at a time give each target the
# same FUZZ_SECONDS of a whole core as one at a time, in 1/N of the wall
# time (make fuzz-ci passes the core count).
jobs=${FUZZ_JOBS:-1}
if ! [[ $jobs =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz: FUZZ_JOBS is a positive number" >&2
    exit 2
fi
echo "fuzz: ${#targets[@]} target(s) for ${SECONDS_EACH} s each, $jobs at a time (logs in $FUZZ/out/)"
mkdir -p "$FUZZ/out"
failed=()
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
    batch=("${targets[@]:i:jobs}")
    pids=()
    for t in "${batch[@]}"; do
        run_target "$t" >"$FUZZ/out/.$t.report" &
        pids+=($!)
    done
    for k in "${!batch[@]}"; do
        t=${batch[$k]}
        status=0
        wait "${pids[$k]}" || status=$?
        cat "$FUZZ/out/.$t.report"
        rm -f "$FUZZ/out/.$t.report"
        ((status == 0)) || failed+=("$t")
    done
done

if ((${#failed[@]})); then echo "fuzz: failed (crash, hang or out of memory): ${failed[*]}"; fi
# The closing line in the form CI reads as a test count.
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
((${#failed[@]} == 0))
