# Helpers for the scenario scripts (sourced; busybox sh). NODE and NODES come from /init.

log() { echo "MOS_LOG vm$NODE $(cut -d' ' -f1 /proc/uptime): $*"; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_for() {
  _limit=$(( $1 * 10 )); _what=$2; shift 2; _i=0
  until "$@" >/dev/null 2>&1; do
    _i=$((_i + 1))
    if [ $_i -ge $_limit ]; then log "timed out waiting for $_what"; return 1; fi
    sleep 0.1
  done
}

# start_mosd: mosd of this node, its log on the console prefixed with [mosd vmN]. Automatic
# balancing is off unless BALANCE=1.
start_mosd() {
  _nb=--no-balance; [ "${BALANCE:-0}" = 1 ] && _nb=
  ( MOS_LOG=${MOS_LOG:-info} mosd --map /etc/mos.map --node "$NODE" $_nb 2>&1 | sed "s/^/[mosd vm$NODE] /" ) &
  wait_for 60 "mosd's control socket" mosctl status || return 1
  log "mosd up"
}

# nodes_up: how many nodes `mosctl status` shows up.
nodes_up() { mosctl status 2>/dev/null | awk '$3 == "up" { n++ } END { print n + 0 }'; }
all_up() { [ "$(nodes_up)" -ge "$NODES" ]; }

# serve: what the other VMs do while VM 1 drives a scenario (the harness ends them).
serve() { start_mosd || return 1; while :; do sleep 3600; done; }

# pid_of NAME: the pid of the first process `mosctl ps` lists with NAME in its line;
# listed NAME: whether there is one.
pid_of() { mosctl ps | awk -v n="$1" 'index($0, n) { print $1; exit }'; }
listed() { [ -n "$(pid_of "$1")" ]; }

# lines FILE: number of lines in FILE.
lines() { wc -l < "$1" 2>/dev/null || echo 0; }
has_lines() { [ "$(lines "$1")" -ge "$2" ]; }
