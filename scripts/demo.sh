#!/usr/bin/env bash
# Demo: a 3-node MOS cluster on loopback (127.0.0.1-3), a program started at home with mosrun,
# moved home -> node 2 -> node 3 -> home while it runs; its output keeps arriving at home.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
echo "== building (first time: about a minute)"
cargo build --workspace --bins --locked -q
B=$PWD/target/debug
D=$(mktemp -d /tmp/mos-demo.XXXXXX)
PORT=${MOS_DEMO_PORT:-4949}
cleanup() { kill $(cat "$D"/*.pid 2>/dev/null) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
echo "1 127.0.0.1 3" > "$D/map"
for i in 1 2 3; do
  "$B/mosd" --map "$D/map" --node $i --port "$PORT" --control "$D/node$i.sock" 2> "$D/node$i.log" &
  echo $! > "$D/mosd$i.pid"
done
ctl() { local n=$1; shift; "$B/mosctl" --control "$D/node$n.sock" "$@"; }
for i in 1 2 3; do
  for _ in $(seq 100); do ctl $i status >/dev/null 2>&1 && break; sleep 0.05; done
done
for _ in $(seq 100); do [ "$(ctl 1 status --json | grep -o '"state":"up"' | wc -l)" = 3 ] && break; sleep 0.05; done
echo "== cluster up, as node 1 sees it (gossip):"; ctl 1 status
echo "== mosrun wl_rust 40 100   (40 steps of ~100 ms of computation, printing a checksum each step)"
MOS_SOCKET="$D/node1.sock" "$B/mosrun" "$B/wl_rust" 40 100 > "$D/out" &
RUN=$!
while ! PID=$(pgrep -f -x "$B/wl_rust 40 100"); do sleep 0.02; done
show() { echo "   program output so far: $(wc -l < "$D/out") lines, last: $(tail -n 1 "$D/out")"; }
step() {
  local target=$1 line=$2
  while [ "$(wc -l < "$D/out")" -lt "$line" ]; do sleep 0.02; done
  show
  echo "== mosctl migrate $PID $target"
  ctl 1 migrate "$PID" "$target"
  ctl 1 ps | sed 's/^/   /'
}
step 2 8
step 3 18
step home 28
set +e; wait $RUN; rc=$?; set -e
echo "== the program ended at home with exit status $rc; its full output (at home):"
sed 's/^/   /' "$D/out"
echo "== reference run without MOS:"
set +e; "$B/wl_rust" 40 0 > "$D/ref"; echo "   exit status $?"; set -e
if cmp -s "$D/ref" "$D/out"; then echo "== output identical to the unmigrated run"; else echo "== OUTPUT DIFFERS"; exit 1; fi
