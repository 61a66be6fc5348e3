# Scenario "vmkill": VM 2 dies (reboot -f: the whole VM vanishes, no FIN/RST) while a 48 MiB
# process started with mosrun on VM 1 streams to it; the migration must fail, the process keep
# running at home, and its output equal an unmigrated run's. With pre-copy (the default) the
# pages stream while the process runs, so the job must outlast the ~30 s the sender waits for the
# vanished VM (TCP_USER_TIMEOUT; 33-43 s measured under TCG): 1200 steps of 50 ms.
. /mos/lib.sh
ARGS="48 1200 50"
insmod /mos/mosix.ko || { echo "MOS_FAIL vmkill"; exit 1; }
if [ "$NODE" = 2 ]; then
  start_mosd || exit 1
  # Die as soon as a process other than mosd (the stub being filled) holds more than 16 MiB.
  while :; do
    for s in /proc/[0-9]*/status; do
      awk '/^Name:/ { n = $2 } /^VmRSS:/ { r = $2 } END { exit !(n != "mosd" && r > 16384) }' "$s" 2>/dev/null || continue
      log "a process holds $(awk '/^VmRSS:/ { print $2 }' "$s") kB: VM 2 dies now"
      reboot -f
    done
    sleep 0.1
  done
fi
[ "$NODE" = 1 ] || { serve; exit; }
fail() { log "$*"; mosctl ps; echo "MOS_FAIL vmkill"; exit 1; }
echo "MOS_ENGINE native"
start_mosd || fail "mosd did not start"
wait_for 90 "$NODES nodes up" all_up || fail "the cluster did not form"
/mos/bin/memtouch $ARGS > /tmp/ref.out; rc=$?
[ $rc = 0 ] || fail "the reference run exited with $rc"
mosrun /mos/bin/memtouch $ARGS > /tmp/mig.out &
mr=$!
wait_for 60 "the job in mosctl ps" listed memtouch || fail "no job under mosrun"
pid=$(pid_of memtouch)
wait_for 120 "2 lines" has_lines /tmp/mig.out 2 || fail "the job did not start"
s=$(cut -d' ' -f1 /proc/uptime)
mosctl migrate "$pid" 2 > /tmp/migrate.out 2>&1; rc=$?
e=$(cut -d' ' -f1 /proc/uptime)
log "mosctl migrate exited with $rc after $(awk -v a=$s -v b=$e 'BEGIN{print b-a}') s: $(cat /tmp/migrate.out)"
[ $rc != 0 ] || fail "the migration to the dying VM succeeded"
grep -q "keeps running at home" /tmp/migrate.out || fail "mosctl does not say the process keeps running at home"
mosctl ps | awk -v p="$pid" '$1 == p && $3 == 1 { ok = 1 } END { exit !ok }' || fail "pid $pid is not shown at home"
wait $mr; rc=$?
[ $rc = 0 ] || fail "mosrun exited with $rc, want 0"
cmp /tmp/ref.out /tmp/mig.out || fail "the output differs from the unmigrated run's"
echo "MOS_PASS vmkill engine=portable"
