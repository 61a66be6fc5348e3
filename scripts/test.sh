#!/usr/bin/env bash
# The whole test suite: unit tests, golden-bytes and property tests of the wire formats, and the
# multi-node integration tests (3 mosd on 127.0.0.1-3 per test), and the QEMU cluster tests (3 VMs
# running MOS's own kernel with kmod/mosix.ko, docs/NATIVE.md). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
# The integration tests drive the daemons: build them first.
cargo build --workspace --bins --locked
# The QEMU cluster of tests/tests/qemu.rs: the guest kernel is built on first use (4-8 min on 2
# cores) and cached outside the repository (/var/cache/mos-kernel, keyed by its inputs); then the
# module, static binaries and initramfs (seconds).
qemu-harness/run build
log=$(mktemp)
set +e
cargo test --workspace --locked -- --test-threads=2 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# Bounded fuzzing of every decoder (or, without cargo-fuzz/nightly, the seed corpus replayed).
scripts/fuzz-smoke.sh || rc=1
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$rc"
