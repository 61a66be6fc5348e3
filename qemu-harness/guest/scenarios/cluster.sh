# Scenario "cluster": one mosd per VM; `mosctl status` on VM 1 shows every node up.
. /mos/lib.sh
[ "$NODE" = 1 ] || { serve; exit; }
insmod /mos/mosix.ko
start_mosd || { echo "MOS_FAIL cluster"; exit 1; }
if wait_for 90 "$NODES nodes up" all_up; then
  mosctl status
  log "$(nodes_up) of $NODES nodes up"
  echo "MOS_PASS cluster"
  exit 0
fi
mosctl status
echo "MOS_FAIL cluster"
exit 1
