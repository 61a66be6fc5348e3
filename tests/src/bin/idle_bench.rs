//! Idle cost of the cluster brain: 8 mosd, each in its own network namespace on one bridge (so
//! each node's traffic is counted exactly on its own interface), nothing running. After a warm-up,
//! measures per node over a window: datagrams and bytes sent (/proc/net/dev of its namespace),
//! CPU (utime+stime of its mosd), RSS.
//!
//! Run (root): `cargo build --release --bins && MOS_BIN_DIR=$PWD/target/release cargo run --release
//! -p mos-tests --bin idle_bench [SECONDS]` (default 30).
use mos_tests::vnode::VNodeSpec;
use mos_tests::Cluster;
use std::process::Command;
use std::time::{Duration, Instant};

const NODES: u32 = 8;

/// (packets, bytes) sent on eth0 inside the namespace at `ns`.
fn tx(ns: &std::path::Path) -> (u64, u64) {
    let out = Command::new("nsenter").arg(format!("--net={}", ns.display())).args(["cat", "/proc/net/dev"]).output().expect("nsenter");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.trim_start().starts_with("eth0:")).expect("eth0 in the namespace");
    let f: Vec<u64> = line.split_once(':').unwrap().1.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit: bytes packets ...
    (f[9], f[8])
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let specs: Vec<VNodeSpec> = (0..NODES).map(|_| VNodeSpec { netns: true, ..VNodeSpec::default() }).collect();
    let mut c = Cluster::start_virtual(&specs, &[]);
    std::thread::sleep(Duration::from_secs(5));
    let pids: Vec<u32> = (1..=NODES).map(|i| c.node_pid(i).expect("mosd running")).collect();
    let ns: Vec<_> = (1..=NODES).map(|i| c.vnode_netns(i).expect("netns")).collect();
    let before: Vec<(u64, u64, u64)> = (0..NODES as usize).map(|k| (tx(&ns[k]).0, tx(&ns[k]).1, cpu_ticks(pids[k]))).collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let dt = t.elapsed().as_secs_f64();
    let hz = 100.0; // USER_HZ
    println!("idle cost per node, {NODES} mosd in their own network namespaces, {dt:.0} s window");
    println!("| node | datagrams/s sent | bytes/s sent | CPU % | RSS MiB |");
    println!("|---:|---:|---:|---:|---:|");
    let (mut sp, mut sb, mut sc, mut sr) = (0.0, 0.0, 0.0, 0.0);
    for k in 0..NODES as usize {
        let (p, b) = tx(&ns[k]);
        let cpu = (cpu_ticks(pids[k]) - before[k].2) as f64 / hz / dt * 100.0;
        let rss = mos_tests::rss_kib(pids[k]).unwrap_or(0) as f64 / 1024.0;
        let (pp, bb) = ((p - before[k].0) as f64 / dt, (b - before[k].1) as f64 / dt);
        println!("| {} | {pp:.1} | {bb:.0} | {cpu:.3} | {rss:.1} |", k + 1);
        (sp, sb, sc, sr) = (sp + pp, sb + bb, sc + cpu, sr + rss);
    }
    let n = f64::from(NODES);
    println!("| mean | {:.1} | {:.0} | {:.3} | {:.1} |", sp / n, sb / n, sc / n, sr / n);
}
