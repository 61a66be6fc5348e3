//! The test bench's virtual nodes (mos_tests::vnode): a CPU quota holds a busy loop to its
//! share, a memory limit stops a process that touches more, netns nodes reach each other over TCP
//! on their 10.x addresses, hidden directories are empty inside and intact outside, a command is
//! the program itself (pid, cgroup, exit status), and leftovers of a dead run are removed.
//! Needs root and the cpu and memory cgroup controllers: without them every test fails, naming
//! what is missing.
use mos_tests::vnode::{VNodeSpec, VNodes};
use mos_tests::{after, cpu_ticks, describe, run, wait_until, wl, Proc};
use std::io::Read;
use std::net::{IpAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

fn create(tag: &str, specs: &[VNodeSpec]) -> VNodes {
    VNodes::create(tag, specs).unwrap_or_else(|e| panic!("cannot create virtual nodes: {e}"))
}

fn in_cgroup(dir: &Path, pid: u32) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines().any(|l| l.trim() == pid.to_string())
}

#[test]
fn cpu_quota_holds_a_busy_loop_to_half_a_cpu() {
    let v = create("vncpu", &[VNodeSpec { cpu: Some(0.5), ..Default::default() }]);
    let mut p = Proc::spawn(v.command(1, Path::new("/bin/sh"), &["-c", "while :; do :; done"]), "busy loop in a 0.5-CPU vnode", true);
    let pid = p.id();
    let cg = v.cgroup_dirs(1);
    wait_until(after(TIMEOUT), "the busy loop to join its cgroup", || in_cgroup(&cg[0], pid).then_some(()));
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().expect("CLK_TCK") as f64;
    let (t0, w0) = (cpu_ticks(pid), Instant::now());
    // The measuring window (20 quota periods), not a synchronisation.
    std::thread::sleep(Duration::from_secs(2));
    let share = (cpu_ticks(pid) - t0) as f64 / hz / w0.elapsed().as_secs_f64();
    eprintln!("CPU share of a busy loop in a 0.5-CPU virtual node: {share:.3}");
    assert!((0.35..=0.65).contains(&share), "a busy loop in a 0.5-CPU virtual node got {share:.3} CPU");
    p.kill();
}

#[test]
fn memory_limit_stops_a_process_touching_more() {
    let v = create("vnmem", &[VNodeSpec { mem_bytes: Some(64 << 20), ..Default::default() }]);
    let small = run(v.command(1, Path::new(wl::MEMTOUCH_STATIC), &["16", "1"]), "memtouch 16 MiB in a 64 MiB vnode", TIMEOUT);
    assert!(small.status.success(), "16 MiB in a 64 MiB virtual node failed: {}", describe(&small.status));
    let big = run(v.command(1, Path::new(wl::MEMTOUCH_STATIC), &["256", "1"]), "memtouch 256 MiB in a 64 MiB vnode", TIMEOUT);
    eprintln!("touching 256 MiB in a 64 MiB virtual node: {}", describe(&big.status));
    assert!(!big.status.success(), "touching 256 MiB in a 64 MiB virtual node succeeded");
}

#[test]
fn a_cpuset_confines_a_node_to_its_cpus() {
    let v = create("vncpuset", &[VNodeSpec { cpus: Some("1".into()), ..Default::default() }, VNodeSpec::default()]);
    let list = |i: u32| {
        let out =
            run(v.command(i, Path::new("/bin/sh"), &["-c", "grep Cpus_allowed_list /proc/self/status"]), "read Cpus_allowed_list", TIMEOUT);
        assert!(out.status.success(), "sh in node {i}: {}", describe(&out.status));
        String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap_or("").to_string()
    };
    assert_eq!(list(1), "1", "node 1 is confined to CPU 1");
    assert_ne!(list(2), "1", "node 2 has no cpuset: all the host's CPUs");
    let bad = VNodes::create("vnbadcpus", &[VNodeSpec { cpus: Some("one".into()), ..Default::default() }]);
    assert!(bad.is_err_and(|e| e.contains("CPU list")), "a malformed CPU list is refused");
}

/// A TCP listener made in the network namespace `ns` (a thread enters it; the socket stays there).
fn listen_in(ns: PathBuf) -> TcpListener {
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).unwrap_or_else(|e| panic!("{}: {e}", ns.display()));
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the node's network namespace");
        TcpListener::bind("0.0.0.0:0").expect("bind in the node's network namespace")
    })
    .join()
    .expect("listener thread")
}

/// Runs `bash -c 'echo MSG >/dev/tcp/TO/PORT'` in node `from` and returns what the listener got
/// and from which address.
fn send(v: &VNodes, from: u32, l: &TcpListener, to: IpAddr, msg: &str) -> (String, IpAddr) {
    let port = l.local_addr().expect("local addr").port();
    let script = format!("echo {msg} >/dev/tcp/{to}/{port}");
    let mut client = Proc::spawn(v.command(from, Path::new("/bin/bash"), &["-c", &script]), format!("TCP client in node {from}"), true);
    let (mut s, peer) = wait_until(after(TIMEOUT), &format!("node {from} to connect to {to}:{port}"), || match l.accept() {
        Ok(c) => Some(c),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            if let Some(st) = client.try_status() {
                panic!(
                    "the client in node {from} ended ({}) without connecting: {}",
                    describe(&st),
                    String::from_utf8_lossy(&client.stderr())
                );
            }
            None
        }
        Err(e) => panic!("accept: {e}"),
    });
    s.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    let mut got = String::new();
    s.read_to_string(&mut got).expect("read from the client");
    let st = client.wait(after(TIMEOUT));
    assert!(st.success(), "client in node {from}: {}", describe(&st));
    (got, peer.ip())
}

#[test]
fn netns_nodes_reach_each_other_over_tcp() {
    let net = VNodeSpec { netns: true, ..Default::default() };
    let v = create("vnnet", &[net.clone(), net]);
    let (a1, a2) = (v.addr(1), v.addr(2));
    assert!(matches!(a1, IpAddr::V4(a) if a.octets()[0] == 10 && a.octets()[3] == 1), "node 1 address {a1}");
    assert!(matches!(a2, IpAddr::V4(a) if a.octets()[0] == 10 && a.octets()[3] == 2), "node 2 address {a2}");
    let l = listen_in(v.netns_path(1).expect("node 1 has a network namespace"));
    l.set_nonblocking(true).expect("nonblocking listener");
    // Node 2 to node 1: the listener sees node 2's address, so the client ran in node 2.
    assert_eq!(send(&v, 2, &l, a1, "from-2"), ("from-2\n".to_string(), a2));
    // Node 1 to itself over its own loopback.
    let lo: IpAddr = "127.0.0.1".parse().expect("loopback");
    assert_eq!(send(&v, 1, &l, lo, "loopback"), ("loopback\n".to_string(), lo));

    let (cgroups, ns) = (v.cgroup_dirs(1), v.netns_path(1).expect("netns"));
    drop(l);
    drop(v);
    assert!(!ns.exists(), "{} survived the set", ns.display());
    assert!(cgroups.iter().all(|d| !d.exists()), "cgroups {cgroups:?} survived the set");
}

#[test]
fn hidden_directory_is_empty_inside_and_intact_outside() {
    let home = tempfile::Builder::new().prefix("mos-vnode-home-").tempdir().expect("temp dir");
    let secret = home.path().join("secret");
    std::fs::write(&secret, "home only\n").expect("write secret");
    let v = create("vnhide", &[VNodeSpec { hide: vec![home.path().to_path_buf()], ..Default::default() }]);
    let dir = home.path().to_str().expect("utf-8 temp dir");
    let out =
        run(v.command(1, Path::new("/bin/sh"), &["-c", "ls -A \"$0\" && echo inside >\"$0/written\"", dir]), "ls in the vnode", TIMEOUT);
    assert!(out.status.success(), "ls in the vnode: {} {}", describe(&out.status), String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "the hidden directory is not empty inside the vnode");
    assert_eq!(std::fs::read_to_string(&secret).expect("secret outside"), "home only\n");
    assert!(!home.path().join("written").exists(), "a file written inside the vnode appeared outside");
}

#[test]
fn command_is_the_program_in_its_cgroups() {
    let v = create("vnexec", &[VNodeSpec::default(), VNodeSpec { cpu: Some(1.0), mem_bytes: Some(256 << 20), ..Default::default() }]);
    for i in [1, 2] {
        let mut p = Proc::spawn(v.command(i, Path::new("/bin/sh"), &["-c", "echo $$; exec sleep 60"]), format!("sleep in node {i}"), true);
        p.wait_lines(1, after(TIMEOUT));
        let printed: u32 = String::from_utf8_lossy(&p.stdout()).trim().parse().expect("a pid");
        assert_eq!(printed, p.id(), "the program is not the spawned process");
        let dirs = v.cgroup_dirs(i);
        assert!(!dirs.is_empty(), "node {i} has no cgroup");
        for d in &dirs {
            assert!(in_cgroup(d, p.id()), "pid {} is not in {}", p.id(), d.display());
        }
        p.kill();
    }
    let st = run(v.command(2, Path::new("/bin/sh"), &["-c", "exit 7"]), "exit 7", TIMEOUT).status;
    assert_eq!(st.code(), Some(7), "exit status: {}", describe(&st));
    let st = run(v.command(2, Path::new("/bin/sh"), &["-c", "kill -TERM $$"]), "kill -TERM $$", TIMEOUT).status;
    assert_eq!(st.signal(), Some(15), "exit status: {}", describe(&st));
}

#[test]
fn leftovers_of_a_dead_run_are_removed() {
    let v = create("vnleft", &[VNodeSpec::default()]);
    let base = v.cgroup_dirs(1)[0].parent().expect("cgroup parent").to_path_buf();
    // A cgroup named for a process that has ended, as a crashed run leaves it.
    let mut gone = std::process::Command::new("true").spawn().expect("spawn true");
    gone.wait().expect("wait true");
    let leftover = base.join(format!("mos-vnleft-{}.1-0-1", gone.id()));
    std::fs::create_dir(&leftover).expect("make a leftover cgroup");
    let w = create("vnleft", &[VNodeSpec::default()]);
    assert!(!leftover.exists(), "leftover {} not removed", leftover.display());
    // A live set with the same tag is left alone.
    assert!(v.cgroup_dirs(1)[0].exists() && w.cgroup_dirs(1)[0].exists());
}
