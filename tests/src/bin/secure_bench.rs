//! Cost of the cluster key on forwarded system calls: the `callbench` workload of
//! `deputy_bench`, migrated to node 2 of a 2-node cluster without a key (plain deputy channel)
//! and with one (Noise-encrypted channel), alternating in one run; prints the medians away.
//!
//! Run (root): `cargo build --release --bins && MOS_BIN_DIR=target/release cargo run --release -p mos-tests --bin secure_bench [PAIRS]`
//! (PAIRS: plain/keyed runs of each, default 2).
use mos_tests::{wl, Cluster};
use std::time::Duration;

const KEY: &str = "the benchmark's cluster key\n";

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// (getppid, read4k, write4k) of one output line, ns.
fn parse(line: &str) -> Option<[u64; 3]> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let get = |k: &str| f.iter().position(|w| *w == k).and_then(|i| f.get(i + 1)).and_then(|v| v.parse().ok());
    Some([get("getppid_ns")?, get("read4k_ns")?, get("write4k_ns")?])
}

/// The rounds taken away from home, on a cluster with or without a key.
fn away_rounds(keyed: bool) -> Vec<[u64; 3]> {
    const HOME_ROUNDS: usize = 3;
    const AWAY_ROUNDS: usize = 6;
    let c = if keyed { Cluster::start_with_env(2, &[(1, "MOS_TEST_KEY", KEY), (2, "MOS_TEST_KEY", KEY)]) } else { Cluster::start(2) };
    let rounds = (HOME_ROUNDS + AWAY_ROUNDS).to_string();
    let (mut job, pid) = c.start_job(1, wl::CALLBENCH_DYNAMIC, &[&rounds, &HOME_ROUNDS.to_string()]);
    job.wait_lines(HOME_ROUNDS + 1, Duration::from_secs(60));
    c.migrate(1, pid, "2");
    assert_eq!(c.log(2).contains("secure=true"), keyed, "node 2's connection is not what was asked for");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGUSR1).expect("open the gate");
    job.wait(Duration::from_secs(300));
    let out = String::from_utf8_lossy(&job.stdout()).into_owned();
    let rows: Vec<[u64; 3]> = out.lines().filter_map(parse).collect();
    let away = rows.get(HOME_ROUNDS..).unwrap_or(&[]).to_vec();
    assert!(away.len() >= 3, "too few rounds away: {}", away.len());
    away
}

fn main() {
    let pairs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let (mut plain, mut keyed) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        plain.extend(away_rounds(false));
        keyed.extend(away_rounds(true));
    }
    let col = |v: &[[u64; 3]], i: usize| median(v.iter().map(|r| r[i]).collect());
    println!("forwarded calls away (node 2 of 2, loopback), medians of {} rounds each; plain and keyed runs alternate", plain.len());
    println!("{:<20} {:>12} {:>12} {:>8}", "", "no key", "cluster key", "ratio");
    for (i, n) in ["getppid (ns)", "read 4 KiB (ns)", "write 4 KiB (ns)"].iter().enumerate() {
        let (p, k) = (col(&plain, i), col(&keyed, i));
        println!("{:<20} {:>12} {:>12} {:>8.2}", n, p, k, k as f64 / p.max(1) as f64);
    }
}
