//! Random fault suite (issue 7): many migrations on three virtual nodes, each in its own network
//! namespace on one bridge, each under a random fault: the target mosd killed at a random point
//! of the migration (`MOS_FAULT`), a partition of the target (all its packets dropped by nftables
//! for 0.3-2 s, starting just before the move), or 2-15 % random packet loss in and out of the
//! target for 0.3-2 s from just before the move; then the process comes home. Each move is made
//! by pre-copy, post-copy (`--lazy`; a kill may then also come in its lazy phase, `mid-lazy`) or
//! stop-and-copy, in turns from a random one (`MOS_FAULT_MODES=pre-copy,post-copy,stop-and-copy`
//! restricts the choice; with only pre-copy the faults are those of the runs before post-copy
//! joined). Counts processes lost (the job did not end with its own status) and wrong outputs
//! (not byte-identical to an unmigrated run).
//! Used by `tests/tests/faults.rs` (a few rounds) and `src/bin/fault_bench.rs` (100 rounds).
use crate::vnode::VNodeSpec;
use crate::Cluster;
use std::process::Command;
use std::time::Duration;

/// About 2.5 s of work: long enough to still run when a slow (lossy, partitioned) move ends.
const ARGS: [&str; 2] = ["80", "30"];
const TIMEOUT: Duration = Duration::from_secs(180);
const POINTS: [&str; 4] = ["after-offer", "after-accept", "mid-pages", "before-resumed"];
/// The ways of moving: report name and `mosctl migrate` option.
pub const MODES: [(&str, Option<&str>); 3] = [("pre-copy", None), ("post-copy", Some("--lazy")), ("stop-and-copy", Some("--stop-copy"))];

/// What happened over the rounds.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub rounds: usize,
    pub lost: usize,
    pub wrong: usize,
    /// Moves that failed (the process stayed home, as it should when the target fails).
    pub moves_failed: usize,
    pub moves_ok: usize,
    /// Per fault kind: rounds.
    pub kills: usize,
    pub partitions: usize,
    pub losses: usize,
    /// Per way of moving ([`MODES`]): rounds.
    pub modes: [usize; 3],
    /// Descriptions of lost or wrong rounds.
    pub problems: Vec<String>,
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Runs `nft` inside node `i`'s network namespace.
fn nft(c: &Cluster, i: u32, args: &str) {
    let ns = c.vnode_netns(i).expect("netns virtual node");
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg("nft")
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("cannot run nft ({e}): install the Debian package `nftables`"));
    assert!(out.status.success(), "nft {args} in node {i}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Drops `percent` % of node `i`'s packets in both directions (100 = partition).
pub fn impair(c: &Cluster, i: u32, percent: u64) {
    nft(c, i, "add table inet mosfault");
    for hook in ["input", "output"] {
        nft(c, i, &format!("add chain inet mosfault {hook} {{ type filter hook {hook} priority 0 ; }}"));
        let rule = if percent >= 100 { "drop".to_string() } else { format!("numgen random mod 100 < {percent} drop") };
        nft(c, i, &format!("add rule inet mosfault {hook} {rule}"));
    }
}

/// Impairs node `i` (see [`impair`]) now and heals it after `ms` on a thread, so that the move
/// started meanwhile meets the fault and outlives it.
fn impair_for(c: &Cluster, i: u32, percent: u64, ms: u64) -> std::thread::JoinHandle<()> {
    impair(c, i, percent);
    let ns = c.vnode_netns(i).expect("netns virtual node");
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        let _ =
            Command::new("nsenter").arg(format!("--net={}", ns.display())).args(["nft", "delete", "table", "inet", "mosfault"]).output();
    })
}

/// Moves `pid` from node 1 to `target`; Ok = moved. A failure is printed (the process should
/// then still run at home).
fn try_move(c: &Cluster, pid: u32, target: u32, mode: Option<&str>) -> bool {
    let (pid, target) = (pid.to_string(), target.to_string());
    let args: Vec<&str> = ["migrate"].into_iter().chain(mode).chain([pid.as_str(), target.as_str()]).collect();
    let out = c.try_mosctl(1, &args, TIMEOUT);
    if !out.status.success() {
        println!("  move failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    out.status.success()
}

/// Runs `rounds` rounds with random faults chosen from `seed`, printing one line per round.
/// With `MOS_FAULT_KEY=TEXT` in the environment every node has that cluster key (secure streams).
pub fn run(rounds: usize, seed: u64, program: &str) -> Report {
    let want = crate::reference(program, &ARGS, TIMEOUT);
    let specs: Vec<VNodeSpec> = (0..3).map(|_| VNodeSpec { netns: true, ..VNodeSpec::default() }).collect();
    let key = std::env::var("MOS_FAULT_KEY").ok();
    let keyed: Vec<(u32, &str, &str)> = key.iter().flat_map(|k| (1..=3).map(move |i| (i, "MOS_TEST_KEY", k.as_str()))).collect();
    let with_key = |env: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        env.iter().copied().chain(key.as_deref().map(|k| ("MOS_TEST_KEY", k))).collect()
    };
    let mut c = Cluster::start_virtual(&specs, &keyed);
    let mut rng = Rng(seed | 1);
    // The way of moving has its own stream: the faults of a seed stay what they were.
    let mut mode_rng = Rng((seed ^ 0x6d6f_6465_7321) | 1);
    let allowed: Vec<usize> = match std::env::var("MOS_FAULT_MODES") {
        Ok(v) => MODES.iter().enumerate().filter(|(_, (name, _))| v.split(',').any(|m| m.trim() == *name)).map(|(i, _)| i).collect(),
        Err(_) => (0..MODES.len()).collect(),
    };
    assert!(!allowed.is_empty(), "MOS_FAULT_MODES names none of pre-copy, post-copy, stop-and-copy");
    // The ways take turns (from a random one): a short run covers each of them.
    let first = mode_rng.below(allowed.len() as u64) as usize;
    let mut r = Report::default();
    for round in 0..rounds {
        let t0 = std::time::Instant::now();
        let target = 2 + rng.below(2) as u32;
        let kind = rng.below(3);
        let m = allowed[(first + round) % allowed.len()];
        let (mode_name, mode) = MODES[m];
        r.modes[m] += 1;
        let (mut job, pid) = c.start_job(1, program, &ARGS);
        job.wait_lines(2, TIMEOUT);
        let (ok, what) = match kind {
            0 => {
                let mut point = POINTS[rng.below(4) as usize];
                if mode_name == "post-copy" && mode_rng.below(4) == 0 {
                    point = "mid-lazy";
                }
                c.restart_node(target, &with_key(&[("MOS_FAULT", point)]));
                let ok = try_move(&c, pid, target, mode);
                r.kills += 1;
                // The node died at that point (or was never reached): start it again, clean.
                c.restart_node(target, &with_key(&[]));
                (ok, format!("kill node {target} at {point}"))
            }
            1 => {
                let ms = 300 + rng.below(1700);
                let healer = impair_for(&c, target, 100, ms);
                let ok = try_move(&c, pid, target, mode);
                let _ = healer.join();
                r.partitions += 1;
                (ok, format!("partition node {target} for {ms} ms"))
            }
            _ => {
                let (percent, ms) = (2 + rng.below(14), 300 + rng.below(1700));
                let healer = impair_for(&c, target, percent, ms);
                let ok = try_move(&c, pid, target, mode);
                let _ = healer.join();
                r.losses += 1;
                (ok, format!("{percent} % loss at node {target} for {ms} ms"))
            }
        };
        if ok {
            r.moves_ok += 1;
        } else {
            r.moves_failed += 1;
        }
        // Bring it home if it is away (it may also have finished meanwhile).
        let _ = c.try_mosctl(1, &["migrate", &pid.to_string(), "home"], TIMEOUT);
        let st = job.wait(TIMEOUT);
        r.rounds += 1;
        let what = format!("{mode_name}, {what}");
        let line = if st.code() != Some(7) {
            r.lost += 1;
            let p = format!(
                "round {round} ({what}): LOST, {}; stderr: {}",
                crate::describe(&st),
                String::from_utf8_lossy(&job.stderr()).trim()
            );
            r.problems.push(p.clone());
            for i in [1, target] {
                let log = c.log(i);
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                println!("  --- node {i} log (last lines) ---");
                for l in tail.into_iter().rev() {
                    println!("  {l}");
                }
            }
            p
        } else if job.stdout() != want.stdout {
            r.wrong += 1;
            let p = format!("round {round} ({what}): WRONG OUTPUT");
            r.problems.push(p.clone());
            p
        } else {
            format!("round {round} ({what}): ok")
        };
        let line = format!("{line} [{:.1} s]", t0.elapsed().as_secs_f64());
        println!("{line}");
    }
    r
}
