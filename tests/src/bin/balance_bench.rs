//! Balancing benchmark on virtual nodes (cgroups with a CPU quota and/or memory limit): makespans
//! of fixed-work jobs all started on node 1 with automatic migration, beside the same run with
//! migration off (`mosrun -L`), in one run.
//!
//! Run (root): `cargo build --release --bins && MOS_BIN_DIR=$PWD/target/release cargo run --release
//! -p mos-tests --bin balance_bench [WORK]` (WORK: millions of rounds per job, default 6000 ≈ 10 s
//! of CPU on the reference core). Scenarios: `homogeneous` (4 × 0.5 CPU, 8 jobs), `heterogeneous`
//! (0.25/0.5/0.5/0.75 CPU, 8 jobs), `memory` (node 1: 2 CPUs but 256 MiB; nodes 2-4: 1 CPU; 2 jobs
//! of twice the work that grow to 150 MiB each). Pass scenario names after WORK to run only those.
use mos_tests::vnode::VNodeSpec;
use mos_tests::{wl, Cluster, RunningJob};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(3600);

struct Outcome {
    makespan: f64,
    ok: usize,
    failed: Vec<String>,
    /// Per job: moves to another node (including moves on), and returns home.
    moves: Vec<(usize, usize)>,
    /// Moves decided by memory ushering, on any node.
    ushered: usize,
}

/// Moves per home pid from node 1's log: `process moved pid=P node=N` lines.
fn moves_of(log: &str) -> BTreeMap<u32, (usize, usize)> {
    let mut m: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for l in log.lines().filter(|l| l.contains("process moved")) {
        let field = |k: &str| l.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse::<u32>().ok());
        if let (Some(pid), Some(node)) = (field("pid="), field("node=")) {
            let e = m.entry(pid).or_default();
            if node == 1 {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
    }
    m
}

fn run(specs: &[VNodeSpec], jobs: usize, args: &[&str], auto: bool, want: &[u8]) -> Outcome {
    let env: Vec<(u32, &str, &str)> = (1..=specs.len() as u32).map(|i| (i, "MOS_TEST_BALANCE", "1")).collect();
    let c = Cluster::start_virtual(specs, &env);
    // Node 1 must know every other node as up (with its load) before the jobs start.
    let n = specs.len();
    mos_tests::wait_until(mos_tests::after(Duration::from_secs(30)), "node 1 to see every node up", || {
        let v = c.mosctl_json(1, &["status", "--json"]);
        let up = v["nodes"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|r| r["state"] == "up" && r["age_ms"].as_u64().is_some_and(|x| x < 3000)).count());
        (up == n).then_some(())
    });
    let opts: &[&str] = if auto { &[] } else { &["-L"] };
    let start = Instant::now();
    let mut running: Vec<(RunningJob, u32)> = (0..jobs)
        .map(|_| {
            let mut j = c.spawn_mosrun_with(1, opts, wl::CPUJOB_STATIC, args);
            let pid = j.pid();
            (j, pid)
        })
        .collect();
    let mut ok = 0;
    let mut failed = Vec::new();
    for (job, pid) in running.iter_mut() {
        let st = job.wait(TIMEOUT);
        if st.success() && job.stdout() == want {
            ok += 1;
        } else {
            failed.push(format!("job {pid}: {} {}", mos_tests::describe(&st), String::from_utf8_lossy(&job.stderr()).trim()));
        }
    }
    let makespan = start.elapsed().as_secs_f64();
    let log = c.log(1);
    let per = moves_of(&log);
    let ushered = (1..=specs.len() as u32).map(|i| c.log(i).matches("why=Memory").count()).sum();
    let moves = running.iter().map(|(_, p)| per.get(p).copied().unwrap_or_default()).collect();
    Outcome { makespan, ok, failed, moves, ushered }
}

fn row(name: &str, o: &Outcome, ideal: f64, jobs: usize) {
    let max_away = o.moves.iter().map(|m| m.0).max().unwrap_or(0);
    let total: usize = o.moves.iter().map(|m| m.0 + m.1).sum();
    println!(
        "| {name} | {:.1} s | {:.2} | {}/{jobs} | {total} ({} ushered) | {max_away} |",
        o.makespan,
        if ideal > 0.0 { o.makespan / ideal } else { 0.0 },
        o.ok,
        o.ushered
    );
    for f in &o.failed {
        eprintln!("  {name}: {f}");
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let work: u64 = argv.first().and_then(|w| w.parse().ok()).unwrap_or(6000);
    let only: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let wanted = |s: &str| only.is_empty() || only.contains(&s);
    let work_s = work.to_string();
    let cpu_args = [work_s.as_str(), "0", "20"];
    // One job alone on an idle core: its CPU time, and the reference output.
    let t = Instant::now();
    let reference = mos_tests::reference(wl::CPUJOB_STATIC, &cpu_args, TIMEOUT);
    let t1 = t.elapsed().as_secs_f64();
    println!("one job alone: {t1:.2} s (WORK {work} M rounds)");
    println!();
    println!("| scenario | makespan | / ideal | correct | migrations (all; by memory ushering) | max moves away per job |");
    println!("|---|---:|---:|---:|---:|---:|");
    let half = VNodeSpec { cpu: Some(0.5), ..VNodeSpec::default() };
    if wanted("homogeneous") {
        let specs = vec![half.clone(), half.clone(), half.clone(), half.clone()];
        let ideal = 8.0 * t1 / 2.0;
        println!("| homogeneous 4×0.5 CPU, 8 jobs: ideal {ideal:.1} s | | | | | |");
        row("  balancing on", &run(&specs, 8, &cpu_args, true, &reference.stdout), ideal, 8);
        row("  migration off (-L)", &run(&specs, 8, &cpu_args, false, &reference.stdout), ideal, 8);
    }
    if wanted("heterogeneous") {
        let specs: Vec<VNodeSpec> = [0.25, 0.5, 0.5, 0.75].iter().map(|c| VNodeSpec { cpu: Some(*c), ..VNodeSpec::default() }).collect();
        let ideal = 8.0 * t1 / 2.0;
        println!("| heterogeneous 0.25/0.5/0.5/0.75 CPU, 8 jobs: ideal {ideal:.1} s | | | | | |");
        row("  balancing on", &run(&specs, 8, &cpu_args, true, &reference.stdout), ideal, 8);
        row("  migration off (-L)", &run(&specs, 8, &cpu_args, false, &reference.stdout), ideal, 8);
    }
    if wanted("memory") {
        // Node 1 has CPU for both jobs (2 CPUs: no load-balancing move) but only 256 MiB for two
        // jobs that grow to 150 MiB each over the first half of their run (twice WORK: about
        // 17 MiB/s each): one must leave.
        let work2 = (2 * work).to_string();
        let mem_args = [work2.as_str(), "150", "60"];
        let want = mos_tests::reference(wl::CPUJOB_STATIC, &mem_args, TIMEOUT);
        let one = VNodeSpec { cpu: Some(1.0), ..VNodeSpec::default() };
        let specs = vec![VNodeSpec { cpu: Some(2.0), mem_bytes: Some(256 << 20), ..VNodeSpec::default() }, one.clone(), one.clone(), one];
        let ideal = 2.0 * t1;
        println!("| memory: node 1 2 CPUs but 256 MiB, 2 jobs (2×WORK) growing to 150 MiB: ideal {ideal:.1} s | | | | | |");
        row("  balancing on", &run(&specs, 2, &mem_args, true, &want.stdout), ideal, 2);
        row("  migration off (-L)", &run(&specs, 2, &mem_args, false, &want.stdout), ideal, 2);
    }
}
