//! Cluster key, hostile traffic and permissions (issue 7).
use mos_tests::{after, wait_until, Cluster};
use serde_json::Value;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const KEY_A: &str = "the cluster key of nodes one and two\n";
const KEY_B: &str = "another cluster's key, node three\n";
const WL_RUST: &str = env!("CARGO_BIN_EXE_wl_rust");

fn node_state(c: &Cluster, i: u32, n: u32) -> Option<String> {
    let v = c.mosctl_json(i, &["status", "--json"]);
    v["nodes"].as_array()?.iter().find(|r| r["node"].as_u64() == Some(u64::from(n))).and_then(|r| r["state"].as_str().map(str::to_string))
}

fn own_row(c: &Cluster, i: u32) -> Value {
    let v = c.mosctl_json(i, &["status", &i.to_string(), "--json"]);
    v["nodes"][0].clone()
}

/// A tiny xorshift generator: the test needs arbitrary bytes, not cryptographic ones.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Nodes 1-2 share a key, node 3 has another: over 15 s, node 3 is never shown up on nodes 1-2
/// nor they on node 3, while 1 and 2 see each other; the dropped datagrams are counted. Then
/// 20,000 datagrams of random bytes and sizes and 200 TCP connections sending random bytes at
/// node 1's port change nothing: node 1 stays up, its view is the same, its RSS stays < 100 MB,
/// and the drops show in its status.
#[test]
fn wrong_key_and_random_traffic_are_dropped_and_counted() {
    let c = Cluster::start_with_env(3, &[(1, "MOS_TEST_KEY", KEY_A), (2, "MOS_TEST_KEY", KEY_A), (3, "MOS_TEST_KEY", KEY_B)]);
    wait_until(after(Duration::from_secs(20)), "nodes 1 and 2 to see each other up", || {
        (node_state(&c, 1, 2).as_deref() == Some("up") && node_state(&c, 2, 1).as_deref() == Some("up")).then_some(())
    });
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        for (i, n) in [(1, 3), (2, 3), (3, 1), (3, 2)] {
            assert_ne!(node_state(&c, i, n).as_deref(), Some("up"), "node {i} shows node {n} (other key) up");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let before = own_row(&c, 1);
    assert!(before["dropped_datagrams"].as_u64().unwrap_or(0) > 0, "node 3's datagrams were not counted: {before}");
    let view_before: Vec<(u32, Option<String>)> = (1..=3).map(|n| (n, node_state(&c, 1, n))).collect();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let target = format!("{}:{}", c.addr(1), c.port());
    let sock = UdpSocket::bind("127.0.0.9:0").expect("bind sender");
    let pid1 = c.mosctl_json(1, &["ps", "--json"]); // node 1 answers before the flood
    assert!(pid1["processes"].is_array());
    let mut sent = 0;
    for k in 0..20_000 {
        // Random sizes: up to 2 KiB, and every 50th up to the UDP maximum (65,507 bytes).
        let max = if k % 50 == 0 { 65_508 } else { 2048 };
        let len = (rng.next() % max) as usize;
        if sock.send_to(&rng.bytes(len), &target).is_ok() {
            sent += 1;
        }
        // Paced, so that the receive buffer does not overflow (drops there are not mosd's).
        if k % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(&target) {
            let n = (rng.next() % 65_536) as usize;
            let _ = s.write_all(&rng.bytes(n));
        }
    }
    println!("sent {sent} random datagrams and 200 random connections to node 1");
    let after_row = wait_until(after(Duration::from_secs(30)), "node 1 to count the random traffic", || {
        let r = own_row(&c, 1);
        let d = r["dropped_datagrams"].as_u64().unwrap_or(0) - before["dropped_datagrams"].as_u64().unwrap_or(0);
        let cn = r["dropped_connections"].as_u64().unwrap_or(0);
        (d >= 19_000 && cn >= 190).then_some(r)
    });
    println!("node 1 after: {after_row}");
    let view_after: Vec<(u32, Option<String>)> = (1..=3).map(|n| (n, node_state(&c, 1, n))).collect();
    assert_eq!(view_after, view_before, "node 1's view changed");
    let mut c = c;
    let pid = c.node_pid(1).expect("node 1 still running");
    let rss = mos_tests::rss_kib(pid).unwrap_or(u64::MAX);
    println!("node 1 mosd RSS after the flood: {} KiB", rss);
    assert!(rss < 100 * 1024, "mosd RSS {rss} KiB ≥ 100 MiB");
}

/// Only a process's owner (or root) may move it: another uid's `mosctl migrate` is refused with
/// the reason, and the process does not move.
#[test]
fn another_user_cannot_migrate_my_process() {
    let c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, WL_RUST, &["40", "40"]);
    let out = c.mosctl_as(65534, 1, &["migrate", &pid.to_string(), "2"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains("permission denied"), "migrate by uid 65534: {err}");
    let row = c.ps_row(1, pid, false).expect("process row");
    assert_eq!(row["node"].as_u64(), Some(1), "the process moved anyway");
    assert_eq!(job.wait(Duration::from_secs(120)).code(), Some(7));
}

/// Guest sandbox: a file that exists on the hosting node but not at home cannot be read by a
/// guest (its open goes to the deputy at home and fails there). Home (node 1: mosd and mosrun)
/// runs in a mount namespace where the directory is an empty tmpfs; node 2 sees the file.
#[test]
fn a_guest_cannot_read_a_file_that_exists_only_on_its_host() {
    use mos_tests::vnode::VNodeSpec;
    let dir = tempfile::Builder::new().prefix("mos-hostonly-").tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "host-only contents\n").expect("write the host-only file");
    let specs = [VNodeSpec { hide: vec![dir.path().to_path_buf()], ..VNodeSpec::default() }, VNodeSpec::default()];
    let c = Cluster::start_virtual(&specs, &[]);
    let (mut job, pid) = c.start_job(1, mos_tests::wl::OPENER_DYNAMIC, &["40", "50", secret.to_str().unwrap()]);
    job.wait_lines(2, Duration::from_secs(60));
    c.migrate(1, pid, "2");
    assert!(c.ps_row(2, pid, true).is_some(), "node 2 does not host the process");
    let st = job.wait(Duration::from_secs(120));
    let err = String::from_utf8_lossy(&job.stderr()).into_owned();
    let out = String::from_utf8_lossy(&job.stdout()).into_owned();
    assert!(!out.contains("host-only"), "the guest read a file of its host:\n{out}");
    assert_eq!(st.code(), Some(1), "opener's status (1 = open failed); stderr: {err}");
    assert!(err.contains("No such file or directory"), "open's error: {err}");
    assert!(secret.exists(), "the file is still there on the host");
}

/// With a cluster key, migration and deputy streams are Noise-encrypted (node 2 logs the
/// connection as secure): a job moves to node 2, its forwarded output calls work there, it moves
/// back home and its output and exit status are those of an unmigrated run.
#[test]
fn keyed_nodes_migrate_and_forward_calls_over_secure_streams() {
    let c = Cluster::start_with_env(2, &[(1, "MOS_TEST_KEY", KEY_A), (2, "MOS_TEST_KEY", KEY_A)]);
    let want = mos_tests::reference(WL_RUST, &["30", "30"], Duration::from_secs(120));
    let (mut job, pid) = c.start_job(1, WL_RUST, &["30", "30"]);
    job.wait_lines(3, Duration::from_secs(60));
    c.migrate(1, pid, "2");
    assert!(c.ps_row(2, pid, true).is_some(), "node 2 does not host the process");
    // Lines printed while away went through the deputy (forwarded writes on the secure stream).
    let away_from = job.lines();
    job.wait_lines(away_from + 3, Duration::from_secs(60));
    c.migrate(1, pid, "home");
    let st = job.wait(Duration::from_secs(120));
    assert_eq!(st.code(), Some(7), "exit status; stderr: {}", String::from_utf8_lossy(&job.stderr()));
    mos_tests::assert_same_output(&job.stdout(), &want.stdout, "wl_rust moved over secure streams");
    assert!(c.log(2).contains("secure=true"), "node 2 did not take the process on a secure stream:\n{}", c.log(2));
    assert_eq!(own_row(&c, 2)["dropped_connections"].as_u64(), Some(0), "a good connection was counted as dropped");
}

/// A node with another cluster key cannot move a process in: the handshake fails, the
/// connection is dropped and counted at the target, and the process keeps running at home.
#[test]
fn a_node_with_another_key_cannot_migrate_a_process_in() {
    let c = Cluster::start_with_env(3, &[(1, "MOS_TEST_KEY", KEY_A), (2, "MOS_TEST_KEY", KEY_A), (3, "MOS_TEST_KEY", KEY_B)]);
    let before = own_row(&c, 1)["dropped_connections"].as_u64().unwrap_or(0);
    let (mut job, pid) = c.start_job(3, WL_RUST, &["30", "30"]);
    job.wait_lines(2, Duration::from_secs(60));
    let out = c.migrate_fails(3, pid, c.addr(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("secure connection"), "mosctl's error names the failed handshake: {err}");
    wait_until(after(Duration::from_secs(10)), "node 1 to count the refused connection", || {
        (own_row(&c, 1)["dropped_connections"].as_u64().unwrap_or(0) > before).then_some(())
    });
    assert!(c.ps_row(1, pid, true).is_none(), "node 1 hosts the process anyway");
    let row = c.ps_row(3, pid, false).expect("process row at home");
    assert_eq!(row["node"].as_u64(), Some(3), "the process is not at home");
    assert_eq!(job.wait(Duration::from_secs(120)).code(), Some(7), "the process did not finish at home");
}

/// A ticket binds a connection to a user: a peer holding a valid ticket for uid 65534 cannot move
/// in a process that runs as root (the target refuses the offer, counts it, and the process
/// stays where it was); the same process with a ticket for its own uid moves (the check is what
/// refuses, not something else).
#[test]
fn a_ticket_for_another_user_cannot_move_a_root_process() {
    use mos_proto::auth::ClusterKey;
    let c = Cluster::start_with_env(2, &[(1, "MOS_TEST_KEY", KEY_A), (2, "MOS_TEST_KEY", KEY_A)]);
    let key = ClusterKey::from_file_bytes(KEY_A.as_bytes()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let target: std::net::SocketAddr = format!("{}:{}", c.addr(2), c.port()).parse().unwrap();
    let mut child = std::process::Command::new("sleep").arg("60").spawn().expect("sleep");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
    assert_ne!(uid, 65534, "run as root or another uid than nobody");
    let before = own_row(&c, 2)["dropped_connections"].as_u64().unwrap_or(0);
    let other = key.issue(65534, 65534, 1, now, [1; 16]);
    let f = mos_engine::migrate::migrate_out(pid, 1, target, mos_proto::control::Mode::PreCopy, Some(&other))
        .expect_err("moved with another user's ticket");
    assert!(f.at_home && f.to_string().contains("does not match its connection's ticket"), "failure: {f}");
    assert!(own_row(&c, 2)["dropped_connections"].as_u64().unwrap_or(0) > before, "the forged offer was not counted");
    assert!(child.try_wait().unwrap().is_none(), "the process did not survive the refused move");
    let own = key.issue(uid, gid, 1, now, [2; 16]);
    let away = mos_engine::migrate::migrate_out(pid, 1, target, mos_proto::control::Mode::PreCopy, Some(&own))
        .expect("the same move with its own ticket");
    assert!(away.stream.is_secure());
    drop(away);
    let _ = child.kill();
    let _ = child.wait();
}

/// The deputy channel of a child forked away (`ForkJoin`, kind 40) is taken only from home: a
/// connection naming no guest, or a guest that is not forking, or without home's token, gets
/// `Failed` and no child; the guest goes on undisturbed.
#[test]
fn fork_join_without_homes_token_gets_no_child() {
    use mos_proto::deputy::ForkJoin;
    use mos_proto::frame::{self, Kind};
    let c = Cluster::start(2);
    let mut job = c.spawn_mosrun(1, mos_tests::wl::COUNTER_STATIC, &["4000", "5"]);
    let pid = job.pid();
    c.wait_registered(1, pid);
    c.migrate(1, pid, "2");
    assert!(c.ps_row(2, pid, true).is_some(), "node 2 does not host {pid}");
    let target = format!("{}:{}", c.addr(2), c.port());
    for (parent_pid, what) in [(pid + 100_000, "no such guest"), (pid, "a guest that is not forking, wrong token")] {
        let mut s = TcpStream::connect(&target).expect("connect to node 2");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        frame::write_msg(&mut s, Kind::ForkJoin, &ForkJoin { home_node: 1, parent_pid, child_pid: pid + 1, token: 42 }).unwrap();
        let f = frame::read_frame(&mut s).unwrap_or_else(|e| panic!("{what}: no answer from node 2: {e}"));
        assert_eq!(f.kind, Kind::Failed, "{what}: node 2 answered {:?}", f.kind);
    }
    assert!(!c.log(2).contains("forked child resumed here"), "node 2 made a child: {}", c.log(2));
    assert!(c.ps_row(2, pid, true).is_some(), "the guest is gone from node 2: {}", c.log(2));
    job.proc.kill();
}
