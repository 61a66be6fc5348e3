//! Virtual nodes on one host, for the test suites and benchmarks: each node is its own cgroup
//! (CPU quota and/or memory limit), optionally its own network namespace joined to the other
//! nodes by a bridge, and optionally a mount namespace where some directories are hidden.
//!
//! One [`VNodes`] set has the id `TAG-PID.START-SEQ`: PID and START (in clock ticks since boot)
//! name the process that made it, so a leftover of a crashed run is recognised by its owner being
//! gone; SEQ counts the sets that process made. For node I:
//! * cgroup `mos-ID-I`: in cgroup v1, below this process's own cgroup of that hierarchy (a limit
//!   put on the test run also bounds its nodes); in v2, below the root (a v2 cgroup holding
//!   processes cannot have children with controllers). CPU quota period 100 ms; a memory limit
//!   comes without swap (`memory.swap.max` 0, v1 `memory.swappiness` 0 and `memsw` when present).
//! * network namespace `mos-ID-I` (under /run/netns), with loopback up and `eth0` at 10.X.Y.I/24,
//!   the peer of veth `mvHHHHHHnI` on bridge `mbHHHHHH` in the root namespace, which has
//!   10.X.Y.254/24 so the test process reaches the nodes too. HHHHHH is a hash of the id (alias
//!   `mos-vnodes:ID` on the bridge), 10.X.Y.0/24 a subnet no route or address of the host overlaps.
//! * hidden directories: every process started by [`VNodes::command`] gets a private mount
//!   namespace with an empty tmpfs over each.
//!
//! Dropping the set kills every task of its cgroups, then removes cgroups, veths, namespaces and
//! the bridge. `create` first removes what sets of the same tag left when their owner died.
//! Everything here needs root; what is missing is named in the error.
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What one virtual node is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VNodeSpec {
    /// CPU quota in CPUs (0.5 = half a CPU); None = no quota.
    pub cpu: Option<f64>,
    /// Memory limit in bytes (without swap); None = no limit.
    pub mem_bytes: Option<u64>,
    /// The CPUs the node may run on (a cpuset list such as `0` or `0-1`), as if it were a
    /// machine of its own with those CPUs; None = all of the host's.
    pub cpus: Option<String>,
    /// Own network namespace on the set's bridge (address 10.X.Y.I) instead of 127.0.0.I.
    pub netns: bool,
    /// Absolute directories that look empty to the node's processes.
    pub hide: Vec<PathBuf>,
}

/// A set of virtual nodes, numbered from 1 in the order of their specs. Owns everything it made.
#[derive(Debug)]
pub struct VNodes {
    id: String,
    nodes: Vec<VNode>,
    bridge: Option<String>,
    tools: Tools,
}

#[derive(Debug)]
struct VNode {
    cgroups: Vec<PathBuf>,
    netns: Option<String>,
    veth: Option<String>,
    hide: Vec<PathBuf>,
    addr: IpAddr,
}

/// External programs, found in PATH when `create` runs (the commands may clear the environment).
#[derive(Debug, Default)]
struct Tools {
    nsenter: Option<PathBuf>,
    unshare: Option<PathBuf>,
    mount: Option<PathBuf>,
}

/// Where a cgroup controller is: the directory new node cgroups go in.
#[derive(Debug, Clone, PartialEq)]
struct Hierarchy {
    base: PathBuf,
    v2: bool,
}

const NETNS_DIR: &str = "/run/netns";
const PERIOD_US: u64 = 100_000;
const CLEANUP_TIME: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Joins the cgroups, hides the directories, then becomes the program (same pid):
/// `sh -c LAUNCH mos-vnode MOUNT CGROUP_PROCS... -- HIDDEN_DIRS... -- PROGRAM ARGS...`.
const LAUNCH: &str = r#"m=$1; shift
while [ "$1" != -- ]; do echo $$ >"$1" || { echo "mos-vnode: cannot join cgroup $1" >&2; exit 125; }; shift; done; shift
while [ "$1" != -- ]; do "$m" -t tmpfs -o mode=0755 mos-hidden "$1" || { echo "mos-vnode: cannot hide $1" >&2; exit 125; }; shift; done; shift
exec "$@""#;

impl VNodes {
    /// Makes one virtual node per spec. `tag` (letters, digits, `_`) names this kind of set; the
    /// id adds this process's pid and a sequence number, so parallel tests never collide.
    pub fn create(tag: &str, specs: &[VNodeSpec]) -> Result<VNodes, String> {
        if tag.is_empty() || tag.len() > 24 || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("vnode tag {tag:?}: use 1 to 24 letters, digits or `_`"));
        }
        if specs.is_empty() || specs.len() > 250 {
            return Err(format!("{} virtual nodes asked for: 1 to 250 are possible", specs.len()));
        }
        for (k, s) in specs.iter().enumerate() {
            check_spec(k as u32 + 1, s)?;
        }
        if !nix::unistd::geteuid().is_root() {
            return Err("virtual nodes need root (cgroups, network namespaces, mounts): run the tests as root".into());
        }
        let want_mem = specs.iter().any(|s| s.mem_bytes.is_some());
        let want_net = specs.iter().any(|s| s.netns);
        let want_hide = specs.iter().any(|s| !s.hide.is_empty());
        let cpu = hierarchy("cpu", specs.iter().any(|s| s.cpu.is_some()))?;
        let mem = if want_mem { Some(hierarchy("memory", true)?) } else { None };
        let cpuset = if specs.iter().any(|s| s.cpus.is_some()) { Some(hierarchy("cpuset", true)?) } else { None };
        let tools = Tools {
            nsenter: if want_net { Some(need_tool("nsenter", "network namespaces")?) } else { None },
            unshare: if want_hide { Some(need_tool("unshare", "hidden directories")?) } else { None },
            mount: if want_hide { Some(need_tool("mount", "hidden directories")?) } else { None },
        };
        if want_net {
            need_tool("ip", "network namespaces")?;
        }
        let bases: Vec<&Path> = [Some(&cpu), mem.as_ref(), cpuset.as_ref()].into_iter().flatten().map(|h| h.base.as_path()).collect();
        clean_leftovers(tag, &bases);

        let me = std::process::id();
        let start = start_time(me).ok_or("cannot read this process's start time from /proc/self/stat")?;
        let id = format!("{tag}-{me}.{start}-{}", SEQ.fetch_add(1, Ordering::Relaxed));
        // From here on, Drop undoes whatever was made if a later step fails.
        let mut set = VNodes { id, nodes: Vec::new(), bridge: None, tools };
        let subnet = if want_net { Some(set.make_bridge()?) } else { None };
        for (k, spec) in specs.iter().enumerate() {
            set.add_node(k as u32 + 1, spec, &cpu, mem.as_ref(), cpuset.as_ref(), subnet)?;
        }
        Ok(set)
    }

    /// The set's id (`TAG-PID.START-SEQ`), part of every name it made.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Number of nodes.
    pub fn len(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// Always false: a set has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn node(&self, i: u32) -> &VNode {
        self.nodes.get((i as usize).wrapping_sub(1)).unwrap_or_else(|| panic!("no virtual node {i} in set {}", self.id))
    }

    /// Address of node `i` (1-based): 127.0.0.i without a network namespace, 10.X.Y.i with one.
    pub fn addr(&self, i: u32) -> IpAddr {
        self.node(i).addr
    }

    /// The network namespace file of node `i` (for `setns`), if it has one.
    pub fn netns_path(&self, i: u32) -> Option<PathBuf> {
        self.node(i).netns.as_ref().map(|n| Path::new(NETNS_DIR).join(n))
    }

    /// A Command that runs `program args` inside node `i`: its cgroups joined, in its network
    /// namespace, in a private mount namespace with its hidden directories. The spawned process
    /// becomes the program itself (same pid: `nsenter`, `unshare` and `sh` exec in turn), so its
    /// signals and exit status are the program's. When the launcher itself fails it exits with
    /// 125 and says why on stderr (`nsenter`/`unshare` failures: their own message and status).
    pub fn command(&self, i: u32, program: &Path, args: &[&str]) -> Command {
        let n = self.node(i);
        let mut argv: Vec<OsString> = Vec::new();
        if let (Some(ns), Some(nsenter)) = (&n.netns, &self.tools.nsenter) {
            argv.extend([nsenter.into(), format!("--net={NETNS_DIR}/{ns}").into(), "--".into()]);
        }
        if let (false, Some(unshare)) = (n.hide.is_empty(), &self.tools.unshare) {
            argv.extend([unshare.into(), "--mount".into(), "--propagation".into(), "private".into(), "--".into()]);
        }
        let mount = self.tools.mount.clone().unwrap_or_else(|| PathBuf::from("mount"));
        argv.extend(["/bin/sh".into(), "-c".into(), LAUNCH.into(), "mos-vnode".into(), mount.into()]);
        argv.extend(n.cgroups.iter().map(|d| d.join("cgroup.procs").into()));
        argv.push("--".into());
        argv.extend(n.hide.iter().map(|d| d.into()));
        argv.push("--".into());
        argv.push(program.into());
        argv.extend(args.iter().map(|a| a.into()));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }

    /// The cgroup directories of node `i` (one per hierarchy used: v1 cpu and memory, or v2).
    pub fn cgroup_dirs(&self, i: u32) -> Vec<PathBuf> {
        self.node(i).cgroups.clone()
    }

    /// Creates the bridge and its address; returns the subnet's (X, Y).
    fn make_bridge(&mut self) -> Result<(u8, u8), String> {
        let h = name_hash(&self.id);
        let bridge = format!("mb{h:06x}");
        let (x, y) = free_subnet(h)?;
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        self.bridge = Some(bridge.clone());
        ip(&["link", "set", "dev", &bridge, "alias", &format!("mos-vnodes:{}", self.id)])?;
        ip(&["addr", "add", &format!("10.{x}.{y}.254/24"), "dev", &bridge])?;
        ip(&["link", "set", "dev", &bridge, "up"])?;
        Ok((x, y))
    }

    fn add_node(
        &mut self,
        i: u32,
        spec: &VNodeSpec,
        cpu: &Hierarchy,
        mem: Option<&Hierarchy>,
        cpuset: Option<&Hierarchy>,
        subnet: Option<(u8, u8)>,
    ) -> Result<(), String> {
        let name = format!("mos-{}-{i}", self.id);
        self.nodes.push(VNode {
            cgroups: Vec::new(),
            netns: None,
            veth: None,
            hide: spec.hide.clone(),
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)),
        });
        let node = self.nodes.last_mut().expect("just pushed");

        let dir = cpu.base.join(&name);
        make_dir(&dir)?;
        node.cgroups.push(dir.clone());
        if let Some(c) = spec.cpu {
            let quota = (c * PERIOD_US as f64).round() as u64;
            if cpu.v2 {
                write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
            } else {
                write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        if let (Some(bytes), Some(mem)) = (spec.mem_bytes, mem) {
            let dir = mem.base.join(&name);
            if !node.cgroups.contains(&dir) {
                make_dir(&dir)?;
                node.cgroups.push(dir.clone());
            }
            if mem.v2 {
                write(&dir.join("memory.max"), &bytes.to_string())?;
                write_if_present(&dir.join("memory.swap.max"), "0")?;
            } else {
                write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                write_if_present(&dir.join("memory.memsw.limit_in_bytes"), &bytes.to_string())?;
                write_if_present(&dir.join("memory.swappiness"), "0")?;
            }
        }
        if let (Some(cpus), Some(set)) = (&spec.cpus, cpuset) {
            let dir = set.base.join(&name);
            if !node.cgroups.contains(&dir) {
                make_dir(&dir)?;
                node.cgroups.push(dir.clone());
            }
            write(&dir.join("cpuset.cpus"), cpus)?;
            if !set.v2 {
                // A v1 cpuset takes no task before its memory nodes are set: the parent's.
                let mems = std::fs::read_to_string(set.base.join("cpuset.mems")).map_err(|e| format!("cpuset.mems: {e}"))?;
                write(&dir.join("cpuset.mems"), mems.trim())?;
            }
        }

        if let (true, Some((x, y)), Some(bridge)) = (spec.netns, subnet, self.bridge.clone()) {
            ip(&["netns", "add", &name])?;
            node.netns = Some(name.clone());
            let veth = format!("mv{:06x}n{i}", name_hash(&self.id));
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name])?;
            node.veth = Some(veth.clone());
            ip(&["link", "set", "dev", &veth, "master", &bridge, "up"])?;
            ip(&["-n", &name, "addr", "add", &format!("10.{x}.{y}.{i}/24"), "dev", "eth0"])?;
            ip(&["-n", &name, "link", "set", "dev", "eth0", "up"])?;
            ip(&["-n", &name, "link", "set", "dev", "lo", "up"])?;
            node.addr = IpAddr::V4(Ipv4Addr::new(10, x, y, i as u8));
        }
        Ok(())
    }
}

impl Drop for VNodes {
    fn drop(&mut self) {
        let deadline = Instant::now() + CLEANUP_TIME;
        for n in &self.nodes {
            for d in &n.cgroups {
                if let Err(e) = remove_cgroup(d, deadline) {
                    eprintln!("vnode cleanup: {e}");
                }
            }
        }
        for n in &self.nodes {
            if let Some(v) = &n.veth {
                let _ = ip(&["link", "del", "dev", v]);
            }
            if let Some(ns) = &n.netns {
                if let Err(e) = ip(&["netns", "del", ns]) {
                    eprintln!("vnode cleanup: {e}");
                }
            }
        }
        if let Some(b) = &self.bridge {
            if let Err(e) = ip(&["link", "del", "dev", b]) {
                eprintln!("vnode cleanup: {e}");
            }
        }
    }
}

fn check_spec(i: u32, s: &VNodeSpec) -> Result<(), String> {
    if let Some(c) = s.cpu {
        if !(c.is_finite() && c >= 0.01) {
            return Err(format!("virtual node {i}: CPU quota {c} (at least 0.01 CPU)"));
        }
    }
    if let Some(m) = s.mem_bytes {
        if m < 4 << 20 {
            return Err(format!("virtual node {i}: memory limit {m} bytes (at least 4 MiB)"));
        }
    }
    if let Some(c) = &s.cpus {
        let ok = !c.is_empty() && c.split(',').all(|r| r.split('-').all(|n| n.parse::<u32>().is_ok()) && r.split('-').count() <= 2);
        if !ok {
            return Err(format!("virtual node {i}: CPU list {c:?} (use a cpuset list such as 0 or 0-1,3)"));
        }
    }
    for d in &s.hide {
        if !d.is_absolute() || !d.is_dir() {
            return Err(format!("virtual node {i}: cannot hide {}: not an absolute path of a directory", d.display()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// cgroups

/// The hierarchy holding controller `ctrl` (v2 if it offers it, else v1), with the controller
/// enabled for new children in v2 when `enable`.
fn hierarchy(ctrl: &str, enable: bool) -> Result<Hierarchy, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let mounts: Vec<(&str, &str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some((*right.first()?, *left.get(3)?, *left.get(4)?, *right.get(2).unwrap_or(&"")))
        })
        .collect();
    let mut v2_seen = Vec::new();
    for &(_, _, mp, _) in mounts.iter().filter(|m| m.0 == "cgroup2" && m.1 == "/") {
        let base = PathBuf::from(mp);
        let offered = std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        if offered.split_whitespace().any(|c| c == ctrl) {
            let sub = base.join("cgroup.subtree_control");
            let on = std::fs::read_to_string(&sub).unwrap_or_default();
            if enable && !on.split_whitespace().any(|c| c == ctrl) {
                std::fs::write(&sub, format!("+{ctrl}"))
                    .map_err(|e| format!("cannot enable the {ctrl} controller in {} ({e}), needed by virtual nodes", sub.display()))?;
            }
            return Ok(Hierarchy { base, v2: true });
        }
        v2_seen.push(format!("{mp} offers [{}]", offered.trim()));
    }
    if let Some(&(_, root, mp, _)) = mounts.iter().find(|m| m.0 == "cgroup" && m.3.split(',').any(|o| o == ctrl)) {
        // This process's cgroup in that hierarchy, relative to the mount's root.
        let path = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls.split(',').any(|c| c == ctrl).then_some(path)
        });
        let rel = path.and_then(|p| if root == "/" { Some(p) } else { p.strip_prefix(root) }).unwrap_or("/");
        return Ok(Hierarchy { base: Path::new(mp).join(rel.trim_start_matches('/')), v2: false });
    }
    Err(format!(
        "no cgroup hierarchy has the {ctrl} controller, which virtual nodes need: no cgroup v1 mount with it, and {}",
        if v2_seen.is_empty() { "no cgroup v2 mount".to_string() } else { format!("cgroup v2 {}", v2_seen.join(", ")) }
    ))
}

fn make_dir(d: &Path) -> Result<(), String> {
    std::fs::create_dir(d).map_err(|e| format!("cannot create cgroup {}: {e}", d.display()))
}

fn write(p: &Path, v: &str) -> Result<(), String> {
    std::fs::write(p, v).map_err(|e| format!("cannot write {v:?} to {}: {e}", p.display()))
}

fn write_if_present(p: &Path, v: &str) -> Result<(), String> {
    if p.exists() {
        write(p, v)?;
    }
    Ok(())
}

fn procs(d: &Path) -> Vec<i32> {
    std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Kills every task of cgroup `d` and its descendants, then removes them (deepest first).
fn remove_cgroup(d: &Path, deadline: Instant) -> Result<(), String> {
    let mut tree = vec![d.to_path_buf()];
    let mut k = 0;
    while k < tree.len() {
        if let Ok(rd) = std::fs::read_dir(&tree[k]) {
            tree.extend(rd.filter_map(Result::ok).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        k += 1;
    }
    loop {
        let live: Vec<i32> = tree.iter().flat_map(|d| procs(d)).collect();
        if live.is_empty() {
            break;
        }
        for p in live {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
        }
        if Instant::now() >= deadline {
            return Err(format!("tasks of {} survive SIGKILL", d.display()));
        }
        std::thread::sleep(POLL);
    }
    for dir in tree.iter().rev() {
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() >= deadline => return Err(format!("cannot remove cgroup {}: {e}", dir.display())),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Network

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip").args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// 24 bits of a hash of `s`, for interface names (15 characters at most).
fn name_hash(s: &str) -> u32 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    (h.finish() & 0xff_ffff) as u32
}

/// `a.b.c.d/n` (or a bare address, /32) as (network, prefix length).
fn parse_prefix(s: &str) -> Option<(u32, u32)> {
    let (a, n) = s.split_once('/').unwrap_or((s, "32"));
    let a: Ipv4Addr = a.parse().ok()?;
    let n: u32 = n.parse().ok().filter(|n| *n <= 32)?;
    Some((u32::from(a), n))
}

fn overlaps((a, m): (u32, u32), (b, n): (u32, u32)) -> bool {
    let k = m.min(n);
    let mask = if k == 0 { 0 } else { u32::MAX << (32 - k) };
    a & mask == b & mask
}

/// A 10.X.Y.0/24 (X in 100..=249) that no route or address of the host overlaps, starting from a
/// place picked by `h`.
fn free_subnet(h: u32) -> Result<(u8, u8), String> {
    let mut used: Vec<(u32, u32)> = Vec::new();
    for l in ip_output(&["-4", "route", "show", "table", "all"]).lines() {
        let mut f = l.split_whitespace();
        let first = f.next().unwrap_or("");
        let dst = if ["local", "broadcast", "unicast"].contains(&first) { f.next().unwrap_or("") } else { first };
        used.extend(parse_prefix(dst));
    }
    for l in ip_output(&["-4", "-o", "addr", "show"]).lines() {
        used.extend(l.split_whitespace().skip_while(|w| *w != "inet").nth(1).and_then(parse_prefix));
    }
    const SPAN: u32 = 150 * 256;
    for k in 0..256 {
        let v = (h + k * 7919) % SPAN;
        let (x, y) = (100 + v / 256, v % 256);
        let net = (u32::from(Ipv4Addr::new(10, x as u8, y as u8, 0)), 24);
        // The default route (0.0.0.0/0) overlaps everything and does not count.
        if !used.iter().any(|u| u.1 > 0 && overlaps(*u, net)) {
            return Ok((x as u8, y as u8));
        }
    }
    Err("no free 10.X.Y.0/24 subnet for the virtual nodes' bridge".into())
}

// ---------------------------------------------------------------------------------------------
// Processes, tools, leftovers

/// Start time of process `pid` (field 22 of /proc/PID/stat, clock ticks since boot).
fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].split_whitespace().nth(19)?.parse().ok()
}

fn need_tool(name: &str, what: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("virtual nodes with {what} need `{name}` (util-linux / iproute2), which is not in PATH"))
}

/// Whether the set named by `rest` = `PID.START-...` was made by a process that is gone.
fn owner_gone(rest: &str) -> bool {
    let Some((owner, tail)) = rest.split_once('-') else { return false };
    let Some((pid, start)) = owner.split_once('.') else { return false };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else { return false };
    // Only names of exactly our shape (digits and dashes after the owner) are ours to remove.
    if tail.is_empty() || !tail.chars().all(|c| c.is_ascii_digit() || c == '-') {
        return false;
    }
    // A zombie owner is dead too (its parent may take a while to reap it).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rfind(')').and_then(|k| stat[k + 1..].split_whitespace().next());
    start_time(pid) != Some(start) || matches!(state, Some("Z" | "X"))
}

/// Removes cgroups, network namespaces and bridges of sets with this tag whose owner is gone.
fn clean_leftovers(tag: &str, cgroup_bases: &[&Path]) {
    let prefix = format!("mos-{tag}-");
    let deadline = Instant::now() + CLEANUP_TIME;
    for base in cgroup_bases {
        for e in std::fs::read_dir(base).into_iter().flatten().filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.strip_prefix(&prefix).is_some_and(owner_gone) {
                if let Err(err) = remove_cgroup(&e.path(), deadline) {
                    eprintln!("vnode: leftover of a crashed run: {err}");
                }
            }
        }
    }
    for e in std::fs::read_dir(NETNS_DIR).into_iter().flatten().filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.strip_prefix(&prefix).is_some_and(owner_gone) {
            let _ = ip(&["netns", "del", &name]);
        }
    }
    let alias = format!("alias mos-vnodes:{tag}-");
    for l in ip_output(&["-o", "link", "show", "type", "bridge"]).lines() {
        let Some(rest) = l.split_once(&alias).map(|(_, r)| r.split_whitespace().next().unwrap_or("")) else { continue };
        let dev = l.split(": ").nth(1).unwrap_or("");
        if !dev.is_empty() && owner_gone(rest) {
            let _ = ip(&["link", "del", "dev", dev]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_overlap() {
        let net = parse_prefix("10.100.7.0/24").unwrap();
        assert!(overlaps(parse_prefix("10.0.0.0/8").unwrap(), net));
        assert!(overlaps(parse_prefix("10.100.7.9").unwrap(), net));
        assert!(!overlaps(parse_prefix("10.100.8.0/24").unwrap(), net));
        assert!(!overlaps(parse_prefix("192.0.2.0/24").unwrap(), net));
        assert_eq!(parse_prefix("default"), None);
    }

    #[test]
    fn leftover_names() {
        assert!(!owner_gone(&format!("{}.{}-0-1", std::process::id(), start_time(std::process::id()).unwrap())));
        assert!(owner_gone(&format!("{}.1-0-1", std::process::id())));
        assert!(!owner_gone("x-1.2-0-1"));
        assert!(!owner_gone("1.2-"));
        assert!(!owner_gone("12.34-0-abc"));
    }
}
