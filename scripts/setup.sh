#!/usr/bin/env bash
# Installs what MOS needs on a fresh Debian 12 machine (run as root). Idempotent and quick when
# everything is already there.
set -euo pipefail
need=()
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
command -v pkill >/dev/null || need+=(procps)
command -v setpriv >/dev/null || need+=(util-linux)
command -v nft >/dev/null || need+=(nftables)     # packet loss and partitions of the fault suite
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || { sleep 5; apt-get update -qq; }
  apt-get install -y -qq "${need[@]}" || { sleep 5; apt-get install -y -qq "${need[@]}"; }
fi
if ! command -v cargo >/dev/null; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust >= 1.85) is required; install it with rustup" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
  echo "setup: MOS's demo and tests need root (ptrace of other users' processes, seccomp listeners, binding 127.0.0.N)" >&2
  exit 1
fi
# The QEMU cluster tests (tests/tests/qemu.rs, docs/NATIVE.md): kernel source, Debian's rustc-web,
# qemu-system-x86, busybox-static... (only the missing ones; apt-get retried once).
"$(dirname "$0")/../qemu-harness/run" setup
