# Scenario "bench" (not part of `run test`): native vs portable engine on the same VMs, in the same
# run. A 64 MiB process (memtouch) is started twice under mosrun on VM 1, once with the native
# engine (mosix.ko loaded) and once with MOS_ENGINE=portable; each is moved to VM 2 and back home
# ROUNDS times, alternating the engines, by stop-and-copy and by pre-copy. `mosctl migrate --wait
# --json` gives every move's frozen time, total time and bytes; VM 1 prints one MOS_BENCH line per
# move and the medians. Then scenario restorebench (MOS_BENCH_RESTORE lines).
# Run: qemu-harness/run boot bench -n 2 -t 2000
. /mos/lib.sh
ROUNDS=${ROUNDS:-5}
[ "$NODE" = 1 ] || { serve; exit; }
fail() { log "$*"; mosctl ps; echo "MOS_FAIL bench"; exit 1; }
insmod /mos/mosix.ko || fail "insmod failed"
start_mosd || fail "mosd did not start"
wait_for 90 "$NODES nodes up" all_up || fail "the cluster did not form"
MOS_LOG=info mosrun /mos/bin/memtouch 64 100000 20 > /tmp/native.out 2> /tmp/native.err &
MOS_ENGINE=portable MOS_LOG=info mosrun /mos/bin/memtouch 64 100000 20 > /tmp/portable.out 2> /tmp/portable.err &
both_filled() { has_lines /tmp/native.out 3 && has_lines /tmp/portable.out 3; }
wait_for 120 "both jobs to fill their memory" both_filled || fail "the jobs did not start"
pids=$(mosctl ps | awk '/memtouch/ { print $1 }')
set -- $pids
[ $# = 2 ] || fail "expected two jobs, have: $pids"
# Which pid runs under which engine: the portable mosrun's child has MOS_ENGINE in its environment.
if tr '\0' '\n' < /proc/$1/environ | grep -q '^MOS_ENGINE=portable$'; then P=$1 N=$2; else N=$1 P=$2; fi
field() { sed -n "s/.*\"$2\": *\([0-9]*\).*/\1/p" "$1" | head -1; }
move() { # ENGINE PID MODE
  mosctl migrate --wait --json $3 "$2" 2 > /tmp/m.json 2>&1 || fail "$1 $3 move of $2 to node 2 failed: $(cat /tmp/m.json)"
  echo "MOS_BENCH engine=$1 mode=${3:-pre-copy} frozen_us=$(field /tmp/m.json frozen_us) total_us=$(field /tmp/m.json total_us) bytes=$(field /tmp/m.json bytes_sent)"
  mosctl migrate --wait "$2" home > /dev/null 2>&1 || fail "$1: return home of $2 failed"
}
r=1
while [ $r -le $ROUNDS ]; do
  for mode in --stop-copy ""; do
    move native "$N" "$mode"
    move portable "$P" "$mode"
  done
  r=$((r + 1))
done
kill -TERM $N $P 2>/dev/null
gone() { [ -z "$(mosctl ps | awk '/memtouch/')" ]; }
wait_for 60 "the 64 MiB jobs to end" gone || fail "the jobs did not end"
# Then the recovery bench, on the same VM (scenario restorebench).
INCLUDED=1 . /mos/scenarios/restorebench.sh
grep -h 'moved by' /tmp/native.err /tmp/portable.err | head -4
echo "MOS_PASS bench"
