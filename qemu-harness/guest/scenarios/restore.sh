# Scenario "restore": both engines speak the same stream, in both directions. A job started with
# mosrun is checkpointed and ended (`mosctl migrate PID chkexit`), then recovered with `mosrun -R`,
# for three pairs of (dump engine, restore engine): portable -> native, native -> portable and
# native -> native. The native restore is the module's MOSIX_IOC_RESTORE (the stub restores itself,
# no ptrace); MOS_ENGINE=portable makes a mosrun use ptrace. Each time the output before the
# checkpoint followed by the recovered output must equal an unmigrated run's, with exit status 7.
. /mos/lib.sh
[ "$NODE" = 1 ] || { serve; exit; }
STEPS=40 MS=100
fail() { log "$*"; mosctl ps; echo "MOS_FAIL restore"; exit 1; }
insmod /mos/mosix.ko || fail "insmod failed"
start_mosd || fail "mosd did not start"
/mos/bin/counter $STEPS 0 > /tmp/ref.out; rc=$?
[ $rc = 7 ] || fail "the reference run exited with $rc"
no_job() { ! listed counter; }
passed=0
for pair in portable:native native:portable native:native; do
  dump=${pair%%:*} rest=${pair##*:}
  c="$dump-$rest"
  MOS_ENGINE=$dump MOS_LOG=info mosrun -C /tmp/$c.ck /mos/bin/counter $STEPS $MS > /tmp/$c.a 2> /tmp/$c.a.err &
  mr=$!
  wait_for 60 "the job in mosctl ps" listed counter || fail "$c: no job under mosrun"
  pid=$(pid_of counter)
  wait_for 60 "8 lines" has_lines /tmp/$c.a 8 || fail "$c: the job did not start"
  mosctl migrate "$pid" chkexit || fail "$c: the checkpoint failed"
  wait $mr
  wait_for 30 "the job to leave mosctl ps" no_job || fail "$c: the checkpointed job is still listed"
  at=$(lines /tmp/$c.a)
  [ -f /tmp/$c.ck.1 ] || { ls -l /tmp; fail "$c: no checkpoint file /tmp/$c.ck.1"; }
  log "$c: checkpointed by the $dump engine at line $at ($(wc -c < /tmp/$c.ck.1) bytes)"
  [ "$at" -lt $STEPS ] || fail "$c: the job ended before its checkpoint"
  s=$(cut -d' ' -f1 /proc/uptime)
  MOS_ENGINE=$rest MOS_LOG=info mosrun -R /tmp/$c.ck.1 > /tmp/$c.b 2> /tmp/$c.b.err; rc=$?
  e=$(cut -d' ' -f1 /proc/uptime)
  cat /tmp/$c.b.err
  by=portable; grep -q 'engine="native"' /tmp/$c.b.err && by=native
  log "$c: recovered by the $by engine, exit status $rc, $(lines /tmp/$c.b) more lines ($(awk -v a=$s -v b=$e 'BEGIN{print b-a}') s)"
  [ "$by" = "$rest" ] || fail "$c: recovered by the $by engine, want $rest"
  [ $rc = 7 ] || fail "$c: the recovered job exited with $rc, want 7"
  cat /tmp/$c.a /tmp/$c.b > /tmp/$c.out
  cmp /tmp/ref.out /tmp/$c.out || { diff /tmp/ref.out /tmp/$c.out | head; fail "$c: the output differs from the unmigrated run's"; }
  echo "MOS_RESTORE $c ok"
  passed=$((passed + 1))
done
echo "MOS_PASS restore $passed pairs"
exit 0
