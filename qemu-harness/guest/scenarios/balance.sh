# Scenario "balance": automatic load balancing spreads 6 CPU-bound jobs started with mosrun on VM 1
# over the three VMs (each has one CPU), moved by the native engine (mosix.ko loaded on every VM);
# every job's output at VM 1 is byte-identical to an unmigrated run's and its exit status is 7.
. /mos/lib.sh
BALANCE=1
# Every node loads mosix.ko: VM 1 freezes and captures with it, VMs 2 and 3 intercept their
# guests' system calls with it.
insmod /mos/mosix.ko || { echo "MOS_FAIL: insmod on node $NODE"; exit 1; }
[ "$NODE" = 1 ] || { serve; exit; }
JOBS=6 STEPS=150 MS=100
fail() { log "$*"; mosctl ps; echo "MOS_FAIL balance"; exit 1; }
start_mosd || fail "mosd did not start"
wait_for 90 "$NODES nodes up" all_up || fail "the cluster did not form"
/mos/bin/counter $STEPS 0 > /tmp/ref.out; rc=$?
[ $rc = 7 ] || fail "the reference run exited with $rc"
i=1
while [ $i -le $JOBS ]; do
  ( MOS_LOG=info mosrun /mos/bin/counter $STEPS $MS > /tmp/job$i.out 2> /tmp/job$i.err; echo $? > /tmp/job$i.rc ) &
  i=$((i + 1))
done
log "$JOBS jobs started on node 1"
# where: the NODE column of every job in mosctl ps; spread: how many nodes host at least one.
where() { mosctl ps | awk '/counter/ { print $3 }' | sort | uniq -c | tr '\n' ' '; }
spread() { [ "$(mosctl ps | awk '/counter/ { print $3 }' | sort -u | wc -l)" -ge "$NODES" ]; }
wait_for 120 "jobs on all $NODES nodes" spread || fail "the jobs were not spread over the nodes: $(where)"
log "jobs per node (count node): $(where)"
mosctl ps
done_all() { for i in $(seq 1 $JOBS); do [ -f /tmp/job$i.rc ] || return 1; done; }
wait_for 600 "all jobs to end" done_all || fail "not every job ended"
bad=0
for i in $(seq 1 $JOBS); do
  rc=$(cat /tmp/job$i.rc)
  [ "$rc" = 7 ] || { log "job $i exited with $rc"; cat /tmp/job$i.err; bad=1; }
  cmp -s /tmp/ref.out /tmp/job$i.out || { log "job $i: output differs from the unmigrated run's"; bad=1; }
done
[ $bad = 0 ] || fail "some jobs failed"
native=$(cat /tmp/job*.err | grep -c 'engine="native"')
portable=$(cat /tmp/job*.err | grep -c 'engine="portable"')
log "automatic moves out of home: $native by the native engine, $portable by the portable engine"
grep -h "balancer" /tmp/job*.err | head -3
[ "$native" -ge 2 ] && [ "$portable" = 0 ] || fail "the automatic moves were not made by the native engine"
echo "MOS_ENGINE native"
echo "MOS_PASS balance"
exit 0
