# Scenario "migrate": a workload started with mosrun on VM 1 is moved to VM 2, then to VM 3, and
# ends there; its output at VM 1 must be byte-identical to an unmigrated run's, its exit status 7.
. /mos/lib.sh
[ "$NODE" = 1 ] || { serve; exit; }
STEPS=60 MS=100
fail() { log "$*"; mosctl ps; echo "MOS_FAIL migrate"; exit 1; }
insmod /mos/mosix.ko
# The native engine is not implemented yet: mosd and mosrun use the portable one, module or not.
echo "MOS_ENGINE portable"
start_mosd || fail "mosd did not start"
wait_for 90 "$NODES nodes up" all_up || fail "the cluster did not form"
t0=$(cut -d' ' -f1 /proc/uptime)
/mos/bin/counter $STEPS 0 > /tmp/ref.out; rc=$?
[ $rc = 7 ] || fail "the reference run exited with $rc"
log "reference run done ($(lines /tmp/ref.out) lines, started at $t0)"
mosrun /mos/bin/counter $STEPS $MS > /tmp/mig.out &
mr=$!
job_pid() { mosctl ps | awk '/counter/ { print $1; exit }'; }
has_job() { [ -n "$(job_pid)" ]; }
wait_for 60 "the job in mosctl ps" has_job || fail "no job under mosrun"
pid=$(job_pid)
log "job pid $pid under mosrun $mr"
wait_for 60 "5 lines" has_lines /tmp/mig.out 5 || fail "the job did not start"
for target in 2 3; do
  at=$(lines /tmp/mig.out)
  s=$(cut -d' ' -f1 /proc/uptime)
  mosctl migrate "$pid" "$target" || fail "migration to node $target failed"
  e=$(cut -d' ' -f1 /proc/uptime)
  log "migrated to node $target at line $at (mosctl migrate took $(awk -v a=$s -v b=$e 'BEGIN{print b-a}') s)"
  mosctl ps
  mosctl ps | awk -v p="$pid" -v n="$target" '$1 == p && $3 == n { ok = 1 } END { exit !ok }' ||
    fail "mosctl ps does not show pid $pid on node $target"
  [ "$(lines /tmp/mig.out)" -lt $STEPS ] || fail "the job ended before it could be moved to node $target"
  wait_for 60 "10 more lines" has_lines /tmp/mig.out $((at + 10)) || fail "no progress on node $target"
done
wait $mr; rc=$?
log "mosrun exited with $rc after $(lines /tmp/mig.out) lines"
[ $rc = 7 ] || fail "mosrun exited with $rc, want 7"
cmp /tmp/ref.out /tmp/mig.out || { diff /tmp/ref.out /tmp/mig.out | head; fail "the output differs from the unmigrated run's"; }
echo "MOS_PASS migrate engine=portable"
exit 0
