//! Deputy benchmark: cost of forwarded system calls after migration and of local computation,
//! beside a loopback TCP round trip measured in the same run.
//!
//! Run (root): `cargo build --bins && cargo run -p mos-tests --bin deputy_bench` (release:
//! `cargo build --release --bins && cargo run --release -p mos-tests --bin deputy_bench`).
//! Starts a 2-node cluster on loopback, runs the `callbench` workload under mosrun, takes its
//! rounds at home, migrates it to node 2 while it waits at its gate, takes its rounds there, and
//! prints medians. Each run does this twice: with both nodes sharing the host's CPUs, and with
//! each node confined to a CPU of its own (virtual nodes with cpusets, like separate machines).
use mos_tests::vnode::VNodeSpec;
use mos_tests::{wl, Cluster};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Loopback TCP round trip of 64 bytes between two threads, each on `cpus` (None: where the
/// scheduler puts them).
fn tcp_rtt_ns(n: usize, cpus: Option<(usize, usize)>) -> u64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let srv = std::thread::spawn(move || {
        if let Some((_, c)) = cpus {
            pin(c);
        }
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 64];
        for _ in 0..n {
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        }
    });
    let me = std::thread::spawn(move || {
        if let Some((c, _)) = cpus {
            pin(c);
        }
        let mut s = TcpStream::connect(a).unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [7u8; 64];
        let t = Instant::now();
        for _ in 0..n {
            s.write_all(&b).unwrap();
            s.read_exact(&mut b).unwrap();
        }
        (t.elapsed().as_nanos() / n as u128) as u64
    });
    srv.join().unwrap();
    me.join().unwrap()
}

/// Binds the calling thread to CPU `c`.
fn pin(c: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(c).expect("cpu number");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("sched_setaffinity");
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// (getppid, read4k, write4k, compute_us, raise_ns) of one output line.
fn parse(line: &str) -> Option<[u64; 5]> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let get = |k: &str| f.iter().position(|w| *w == k).and_then(|i| f.get(i + 1)).and_then(|v| v.parse().ok());
    Some([get("getppid_ns")?, get("read4k_ns")?, get("write4k_ns")?, get("compute_us")?, get("raise_ns")?])
}

type Row = [u64; 5];

/// Runs `callbench` on node 1 of `c`, moves it to node 2 after its home rounds: (home, away) rows.
fn measure(c: &Cluster) -> (Vec<Row>, Vec<Row>) {
    const HOME_ROUNDS: usize = 6;
    const AWAY_ROUNDS: usize = 6;
    // The workload stops at its gate after the home rounds until it has been moved.
    let rounds = (HOME_ROUNDS + AWAY_ROUNDS).to_string();
    let (mut job, pid) = c.start_job(1, wl::CALLBENCH_DYNAMIC, &[&rounds, &HOME_ROUNDS.to_string()]);
    job.wait_lines(HOME_ROUNDS + 1, Duration::from_secs(60));
    c.migrate(1, pid, "2");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGUSR1).expect("open the gate");
    job.wait(Duration::from_secs(300));
    let out = String::from_utf8_lossy(&job.stdout()).into_owned();
    let rows: Vec<Row> = out.lines().filter_map(parse).collect();
    let home = rows[..HOME_ROUNDS.min(rows.len())].to_vec();
    let away = rows.get(HOME_ROUNDS..).unwrap_or(&[]).to_vec();
    assert!(home.len() >= 3 && away.len() >= 3, "too few rounds: {} home, {} away", home.len(), away.len());
    (home, away)
}

fn col(v: &[Row], i: usize) -> u64 {
    median(v.iter().map(|r| r[i]).collect())
}

const USAGE: &str = "usage: deputy_bench [--runs N]   (N runs of each placement, alternating; default 3)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => 3,
        ["--runs", n] => n.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| panic!("{USAGE}")),
        _ => panic!("{USAGE}"),
    };
    // Two placements of the two nodes on this 2-CPU host:
    // - shared: both nodes use both CPUs (the processes of both nodes compete for them);
    // - one CPU each: node i is confined to CPU i-1 (a cpuset), as if each node were a machine of
    //   its own, which is what a cluster is. A forwarded call crosses from one CPU to the other
    //   twice, like a loopback round trip between threads on different CPUs.
    let one_cpu_each =
        [VNodeSpec { cpus: Some("0".into()), ..VNodeSpec::default() }, VNodeSpec { cpus: Some("1".into()), ..VNodeSpec::default() }];
    let mut shared: Vec<(Vec<Row>, Vec<Row>)> = Vec::new();
    let mut pinned: Vec<(Vec<Row>, Vec<Row>)> = Vec::new();
    let mut rtt_free = Vec::new();
    let mut rtt_cross = Vec::new();
    let mut rtt_same = Vec::new();
    for run in 1..=runs {
        shared.push(measure(&Cluster::start(2)));
        pinned.push(measure(&Cluster::start_virtual(&one_cpu_each, &[])));
        rtt_free.push(tcp_rtt_ns(20000, None));
        rtt_cross.push(tcp_rtt_ns(20000, Some((0, 1))));
        rtt_same.push(tcp_rtt_ns(20000, Some((0, 0))));
        let (s, p) = (&shared[run - 1].1, &pinned[run - 1].1);
        eprintln!(
            "run {run}: getppid away {} ns (shared CPUs), {} ns (one CPU per node); TCP RTT {} / {} / {} ns (free / other CPU / same CPU)",
            col(s, 0),
            col(p, 0),
            rtt_free[run - 1],
            rtt_cross[run - 1],
            rtt_same[run - 1]
        );
    }
    let all = |v: &[(Vec<Row>, Vec<Row>)], home: bool| -> Vec<Row> {
        v.iter().flat_map(|(h, a)| if home { h.clone() } else { a.clone() }).collect()
    };
    println!("forwarded calls after migration (portable engine, loopback), medians over {runs} runs of each placement; same run");
    println!("{:<26} {:>10} {:>10} {:>10} {:>12} {:>10}", "", "at home", "away", "away/home", "away, 1 CPU", "away/home");
    println!("{:<26} {:>10} {:>10} {:>10} {:>12} {:>10}", "", "(shared)", "(shared)", "", "per node", "");
    let names = ["getppid (ns)", "read 4 KiB (ns)", "write 4 KiB (ns)", "compute loop (us)", "raise, caught (ns)"];
    let (sh, sa, ph, pa) = (all(&shared, true), all(&shared, false), all(&pinned, true), all(&pinned, false));
    let mut json = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let (h, a, h1, a1) = (col(&sh, i), col(&sa, i), col(&ph, i), col(&pa, i));
        println!("{:<26} {:>10} {:>10} {:>10.3} {:>12} {:>10.3}", n, h, a, a as f64 / h.max(1) as f64, a1, a1 as f64 / h1.max(1) as f64);
        json.push(format!("{{\"what\":\"{n}\",\"home\":{h},\"away\":{a},\"home_one_cpu\":{h1},\"away_one_cpu\":{a1}}}"));
    }
    let (rf, rc, rs) = (median(rtt_free), median(rtt_cross), median(rtt_same));
    println!("{:<26} {:>10} (threads where the scheduler puts them)", "loopback TCP RTT 64 B (ns)", rf);
    println!("{:<26} {:>10} (threads on different CPUs, like two nodes)", "", rc);
    println!("{:<26} {:>10} (threads on one CPU)", "", rs);
    let per_run = |v: &[(Vec<Row>, Vec<Row>)]| {
        v.iter().map(|(_, a)| (col(a, 0) / 100) as f64 / 10.0).map(|u| format!("{u}")).collect::<Vec<_>>().join(" / ")
    };
    println!("getppid away per run (us): shared {}; one CPU per node {}", per_run(&shared), per_run(&pinned));
    // Targets (docs/BENCHMARKS.md): a forwarded getppid within 25 µs; local work away within 2 %.
    let met = |b: bool| if b { "met" } else { "NOT met" };
    let worst = |v: &[(Vec<Row>, Vec<Row>)]| v.iter().map(|(_, a)| col(a, 0)).max().unwrap_or(u64::MAX);
    println!(
        "target getppid away <= 25000 ns, every run: shared {}, one CPU per node {}",
        met(worst(&shared) <= 25_000),
        met(worst(&pinned) <= 25_000)
    );
    let ratio = |h: &[Row], a: &[Row]| col(a, 3) as f64 / col(h, 3).max(1) as f64;
    println!(
        "target compute loop away/home within 2 %: shared {}, one CPU per node {}",
        met((ratio(&sh, &sa) - 1.0).abs() <= 0.02),
        met((ratio(&ph, &pa) - 1.0).abs() <= 0.02)
    );
    json.push(format!("{{\"what\":\"tcp_rtt_ns\",\"free\":{rf},\"other_cpu\":{rc},\"same_cpu\":{rs}}}"));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::write(dir.join("bench-deputy.json"), format!("[{}]\n", json.join(",")));
}
