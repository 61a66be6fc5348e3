# Scenario "module": mosix.ko loads, /dev/mosix answers its ABI version and rejects bad requests,
# a second load is refused, and the module unloads cleanly. Runs on VM 1 only (-n 1 is enough).
. /mos/lib.sh
[ "$NODE" = 1 ] || { serve; exit; }
fail=0
insmod /mos/mosix.ko || { log "insmod failed"; fail=1; }
ls -l /dev/mosix
mosix-probe || fail=1
if insmod /mos/mosix.ko 2>/dev/null; then log "a second insmod succeeded"; fail=1; else log "a second insmod is refused: ok"; fi
# A freeze that was given up leaves its task_work queued on the (stopped) process: the module must
# stay loaded until that process has run it, else the process would call into freed code.
p=$(mosix-probe --pending) || { log "mosix-probe --pending failed"; fail=1; }
if rmmod mosix 2>/dev/null; then log "rmmod succeeded with a freeze's work still queued on $p"; fail=1; insmod /mos/mosix.ko
else log "rmmod refused while a queued freeze work is pending on $p: ok"; fi
# Let it run (its work finds the freeze given up and returns) and go back to sleep, then end it:
# nothing of the module is in use any more.
state() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1; }
asleep() { [ "$(state "$1")" = S ]; }
kill -CONT "$p"
wait_for 10 "pid $p to run its given-up freeze work and sleep again" asleep "$p" || fail=1
kill -KILL "$p"
wait_for 10 "rmmod to succeed" rmmod mosix || { log "rmmod failed"; fail=1; }
[ -e /dev/mosix ] && { log "/dev/mosix still exists after rmmod"; fail=1; }
insmod /mos/mosix.ko && { mosix-probe > /tmp/probe2.log || { grep -v "^mosix-probe: ok" /tmp/probe2.log; false; }; } && rmmod mosix || { log "reload + probe + unload failed"; fail=1; }
if dmesg | grep -E 'WARNING|BUG|Oops|Call Trace'; then log "kernel warnings (above)"; fail=1; fi
dmesg | grep mosix
[ $fail = 0 ] && echo "MOS_PASS module" || echo "MOS_FAIL module"
exit $fail
