# Scenario "callbench" (not part of `run test`): forwarded-call latency, native vs portable engine,
# in the same run. VM 2's mosd intercepts a guest's calls with mosix.ko (MOSIX_IOC_INTERCEPT);
# VM 3's mosd runs with MOS_ENGINE=portable (seccomp user notification). A `callrate` job started
# on VM 1 (getppid in batches, the mean ns per call printed per batch) is moved to VM 2, home,
# VM 3, home, ROUNDS times; VM 1 prints each stay's median batch (MOS_CALLBENCH lines) and the
# job's time at home. Run: qemu-harness/run boot callbench -n 3 -t 900
. /mos/lib.sh
ROUNDS=${ROUNDS:-5}
insmod /mos/mosix.ko || { echo "MOS_FAIL callbench: insmod"; exit 1; }
[ "$NODE" = 3 ] && export MOS_ENGINE=portable
# VMs 2 and 3 echo for the TCP round-trip floor (pingpong.c).
[ "$NODE" = 1 ] || { /mos/bin/pingpong serve 5000 & serve; exit; }
fail() { log "$*"; mosctl ps; echo "MOS_FAIL callbench"; exit 1; }
start_mosd || fail "mosd did not start"
wait_for 90 "$NODES nodes up" all_up || fail "the cluster did not form"
# The floors under a forwarded call on these VMs: two tasks of one VM handing a byte over and
# back (two wake-ups), a one-byte TCP round trip between user processes of VM 1 and VM 2/3, and
# an ICMP echo (answered by VM 2/3's kernel: the network alone).
floors() {
  for t in 1 2 3; do
    echo "MOS_CALLBENCH floor $(/mos/bin/pingpong pipe 2000)"
    for vm in 2 3; do
      echo "MOS_CALLBENCH floor vm$vm $(/mos/bin/pingpong tcp 10.77.0.$vm 5000 1000)"
      echo "MOS_CALLBENCH floor vm$vm icmp $(ping -c 50 -i 0.05 -q 10.77.0.$vm | tail -1)"
    done
  done
}
floors
mosrun /mos/bin/callrate 100000 200 > /tmp/cr.out 2> /tmp/cr.err &
wait_for 60 "the job" listed callrate || fail "no job under mosrun"
pid=$(pid_of callrate)
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "none" }'; }
field() { sed -n "s/.*\"$2\": *\([0-9]*\).*/\1/p" "$1" | head -1; }
stay() { # WHERE LABEL [FROM]: batches 3..12 after the move
  if [ "$1" = home ]; then
    # The return home's own figures: the guest is frozen by VM 2's module (native) or by ptrace
    # on VM 3 (portable), for a process in the same state.
    mosctl migrate --wait --json "$pid" home > /tmp/m.json 2>&1 || fail "move home failed: $(cat /tmp/m.json)"
    echo "MOS_CALLBENCH return from=$3 frozen_us=$(field /tmp/m.json frozen_us) total_us=$(field /tmp/m.json total_us)"
  else
    mosctl migrate "$pid" "$1" > /dev/null || fail "move to $1 failed"
  fi
  from=$(( $(lines /tmp/cr.out) + 3 ))
  wait_for 300 "12 batches at $1" has_lines /tmp/cr.out $((from + 9)) || fail "no progress at $1"
  m=$(sed -n "${from},$((from + 9))p" /tmp/cr.out | median)
  echo "MOS_CALLBENCH where=$2 ns_per_call=$m"
}
r=1
while [ $r -le $ROUNDS ]; do
  stay 2 native
  stay home home native
  stay 3 portable
  stay home home portable
  r=$((r + 1))
done
kill -TERM "$pid" 2>/dev/null
echo "MOS_PASS callbench"
