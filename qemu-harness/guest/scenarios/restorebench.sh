# Scenario "restorebench" (not part of `run test`; also the end of scenario "bench"): recovery of
# a 32 MiB checkpoint by the native restore (MOSIX_IOC_RESTORE) and by the portable one (ptrace),
# in turns, ROUNDS times each. mosrun logs the recovery time (us=: file check, read, rebuild) and
# the rebuild alone (rebuild_us=: after the file was opened and verified); one MOS_BENCH_RESTORE
# line per recovery. Run: qemu-harness/run boot restorebench -n 2 -t 900
if [ -z "${INCLUDED:-}" ]; then
  . /mos/lib.sh
  ROUNDS=${ROUNDS:-5}
  [ "$NODE" = 1 ] || { serve; exit; }
  fail() { log "$*"; mosctl ps; echo "MOS_FAIL restorebench"; exit 1; }
  insmod /mos/mosix.ko || fail "insmod failed"
  start_mosd || fail "mosd did not start"
fi
# The VM has 256 MiB and /tmp is in memory: the checkpoint file and the recovered process must
# fit beside whatever else runs (in "bench" its 64 MiB jobs end first), so the job is of 32 MiB.
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
  rb=$(echo "$line" | sed -n 's/.* rebuild_us=\([0-9]*\).*/\1/p')
  np=$(echo "$line" | sed -n 's/.* pid=\([0-9]*\).*/\1/p')
  echo "MOS_BENCH_RESTORE engine=$1 by=$by restore_us=$us rebuild_us=$rb"
  kill -KILL "$np" 2>/dev/null
  wait $rm_pid
}
r=1
while [ $r -le $ROUNDS ]; do
  recover native
  recover portable
  r=$((r + 1))
done
[ -n "${INCLUDED:-}" ] || echo "MOS_PASS restorebench"
