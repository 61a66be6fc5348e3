# Scenario "bench" (not part of `run test`): native vs portable engine on the same VMs, in the same
# run. A 64 MiB process (memtouch) is started twice under mosrun on VM 1, once with the native
# engine (mosix.ko loaded) and once with MOS_ENGINE=portable; each is moved to VM 2 and back home
# ROUNDS times, alternating the engines, by stop-and-copy and by pre-copy. `mosctl migrate --wait
# --json` gives every move's frozen time, total time and bytes; VM 1 prints one MOS_BENCH line per
# move and the medians. Then a 64 MiB checkpoint is recovered ROUNDS times by each engine's restore
# (MOS_BENCH_RESTORE lines). Run: qemu-harness/run boot bench -n 2 -t 900
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
# Recovery of a 32 MiB checkpoint, native restore (MOSIX_IOC_RESTORE) vs portable (ptrace), in
# turns; mosrun logs the recovery time (file check, read, rebuild) as us=. The VM has 256 MiB and
# /tmp is in memory: the 64 MiB jobs end first, and the checkpoint is of a 32 MiB job (its file,
# the recovered process and the native restore's staging copy must fit).
kill -TERM $N $P 2>/dev/null
gone() { [ -z "$(mosctl ps | awk '/memtouch/')" ]; }
wait_for 60 "the 64 MiB jobs to end" gone || fail "the jobs did not end"
MOS_ENGINE=portable mosrun /mos/bin/memtouch 32 100000 20 > /tmp/ck.out 2> /tmp/ck.err &
wait_for 120 "the 32 MiB job to fill its memory" has_lines /tmp/ck.out 3 || fail "the 32 MiB job did not start"
C=$(mosctl ps | awk '/memtouch/ { print $1; exit }')
mosctl checkpoint "$C" /tmp/bench.ck > /dev/null || fail "the checkpoint of $C failed"
kill -KILL "$C"
recover() { # ENGINE
  MOS_ENGINE=$1 MOS_LOG=info mosrun -R /tmp/bench.ck > /dev/null 2> /tmp/rec.err &
  rm_pid=$!
  recovered() { grep -q 'recovered file=' /tmp/rec.err; }
  wait_for 120 "the recovery" recovered || { cat /tmp/rec.err; fail "$1: the recovery failed"; }
  by=portable; grep -q 'engine="native"' /tmp/rec.err && by=native
  line=$(grep 'recovered file=' /tmp/rec.err)
  us=$(echo "$line" | sed -n 's/.* us=\([0-9]*\).*/\1/p')
  np=$(echo "$line" | sed -n 's/.* pid=\([0-9]*\).*/\1/p')
  echo "MOS_BENCH_RESTORE engine=$1 by=$by restore_us=$us"
  kill -KILL "$np" 2>/dev/null
  wait $rm_pid
}
r=1
while [ $r -le $ROUNDS ]; do
  recover native
  recover portable
  r=$((r + 1))
done
grep -h 'moved by' /tmp/native.err /tmp/portable.err | head -4
echo "MOS_PASS bench"
