#!/usr/bin/env bash
# Bounded fuzzing for the test suite (fuzz/README.md). With cargo-fuzz and a nightly toolchain,
# every target in fuzz/ runs for FUZZ_SECONDS (default 8) from a copy of its seed corpus; else the
# seed corpus is replayed through the same checks on stable (fuzz/tests/replay.rs; FUZZ_MODE=replay
# forces this). It always
# says which mode ran, and fails when a target crashes or a seed fails.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
secs=${FUZZ_SECONDS:-8}
targets=$(ls fuzz_targets | sed -n 's/\.rs$//p')
# FUZZ_MODE=replay forces the stable replay.
if [ "${FUZZ_MODE:-auto}" != replay ] && command -v cargo-fuzz >/dev/null 2>&1 && cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: mode=cargo-fuzz (nightly), ${secs} s per target:" $targets
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cargo +nightly fuzz build
    for t in $targets; do
        cp -r "corpus/$t" "$work/$t"
        out=$(cargo +nightly fuzz run "$t" "$work/$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1) || {
            echo "$out" | tail -40
            echo "fuzz: target $t FAILED (artifact in fuzz/artifacts/$t/)"
            exit 1
        }
        echo "fuzz: $t ok, $(echo "$out" | sed -n 's/^stat::number_of_executed_units: *//p') executions"
    done
else
    echo "fuzz: mode=replay of the seed corpus on stable (FUZZ_MODE=replay, or cargo-fuzz or a nightly toolchain is missing)"
    cargo test --locked --test replay -- --nocapture 2>&1 | grep -E '^(replayed|test result)|panicked|^error'
fi
