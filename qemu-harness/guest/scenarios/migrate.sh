# Scenario "migrate": a workload started with mosrun on VM 1 is moved to VM 2, back home, then to
# VM 3, and ends there; its output at VM 1 must be byte-identical to an unmigrated run's, its exit
# status 7. With mosix.ko loaded, both moves out of home are made by the native engine (the
# process is frozen and its context captured by the module, without ptrace), which mosrun's log
# must show; the guest's return home is frozen by VM 2's module (its log says so); the restores
# are the portable engine's.
. /mos/lib.sh
# Every node loads mosix.ko: VM 1 freezes and captures with it, VMs 2 and 3 intercept their
# guests' system calls with it.
insmod /mos/mosix.ko || { echo "MOS_FAIL: insmod on node $NODE"; exit 1; }
[ "$NODE" = 1 ] || { serve; exit; }
STEPS=60 MS=100
fail() { log "$*"; mosctl ps; echo "MOS_FAIL migrate"; exit 1; }
start_mosd || fail "mosd did not start"
wait_for 90 "$NODES nodes up" all_up || fail "the cluster did not form"
t0=$(cut -d' ' -f1 /proc/uptime)
/mos/bin/counter $STEPS 0 > /tmp/ref.out; rc=$?
[ $rc = 7 ] || fail "the reference run exited with $rc"
log "reference run done ($(lines /tmp/ref.out) lines, started at $t0)"
MOS_LOG=info mosrun /mos/bin/counter $STEPS $MS > /tmp/mig.out 2> /tmp/mosrun.err &
mr=$!
wait_for 60 "the job in mosctl ps" listed counter || fail "no job under mosrun"
pid=$(pid_of counter)
log "job pid $pid under mosrun $mr"
wait_for 60 "5 lines" has_lines /tmp/mig.out 5 || fail "the job did not start"
for target in 2 home 3; do
  at=$(lines /tmp/mig.out)
  s=$(cut -d' ' -f1 /proc/uptime)
  mosctl migrate "$pid" "$target" || fail "migration to node $target failed"
  e=$(cut -d' ' -f1 /proc/uptime)
  log "migrated to node $target at line $at (mosctl migrate took $(awk -v a=$s -v b=$e 'BEGIN{print b-a}') s)"
  mosctl ps
  where=$target; [ "$target" = home ] && where=1
  mosctl ps | awk -v p="$pid" -v n="$where" '$1 == p && $3 == n { ok = 1 } END { exit !ok }' ||
    fail "mosctl ps does not show pid $pid on node $where"
  [ "$(lines /tmp/mig.out)" -lt $STEPS ] || fail "the job ended before it could be moved to node $target"
  wait_for 60 "10 more lines" has_lines /tmp/mig.out $((at + 10)) || fail "no progress on node $target"
done
wait $mr; rc=$?
cat /tmp/mosrun.err
native=$(grep -c 'engine="native"' /tmp/mosrun.err)
portable=$(grep -c 'engine="portable"' /tmp/mosrun.err)
log "moves out of home: $native by the native engine, $portable by the portable engine"
engine=portable; [ "$native" -ge 2 ] && [ "$portable" = 0 ] && engine=native
echo "MOS_ENGINE $engine"
[ "$engine" = native ] || fail "the moves out of home were not made by the native engine"
log "mosrun exited with $rc after $(lines /tmp/mig.out) lines"
[ $rc = 7 ] || fail "mosrun exited with $rc, want 7"
cmp /tmp/ref.out /tmp/mig.out || { diff /tmp/ref.out /tmp/mig.out | head; fail "the output differs from the unmigrated run's"; }
# A call only home runs (execve), made on VM 2: VM 2's guest holds it, answers it "restart", and
# freezes the process with the module; it goes home and makes the call there.
/mos/bin/execer 60 100 > /tmp/exref.out; rc=$?
[ $rc = 3 ] || fail "the reference run of execer exited with $rc"
MOS_LOG=info mosrun /mos/bin/execer 60 100 > /tmp/ex.out 2> /tmp/ex.err &
mr=$!
wait_for 60 "execer in mosctl ps" listed execer || fail "no execer under mosrun"
pid=$(pid_of execer)
wait_for 60 "3 lines" has_lines /tmp/ex.out 3 || fail "execer did not start"
mosctl migrate "$pid" 2 || fail "moving execer to node 2 failed"
[ "$(lines /tmp/ex.out)" -lt 60 ] || fail "execer reached its exec before it was moved"
wait $mr; rc=$?
log "execer: mosrun exited with $rc after $(lines /tmp/ex.out) lines"
[ $rc = 3 ] || { cat /tmp/ex.err; fail "mosrun of execer exited with $rc, want 3"; }
cmp /tmp/exref.out /tmp/ex.out || { diff /tmp/exref.out /tmp/ex.out | head; fail "execer's output differs from the unmigrated run's"; }
echo "MOS_PASS migrate engine=$engine"
exit 0
