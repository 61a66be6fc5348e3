//! Simulation tests: everything goes through the real codec (see `mos_brain::sim`).

use mos_brain::membership::State;
use mos_brain::rng::{Rng, XorShift64};
use mos_brain::sim::{Sim, SimConfig};
use mos_brain::theory::expected_ages;
use mos_brain::wire;

/// Time-averaged average age (steps): sampled at uniformly random instants.
fn measured_avg_age(n: usize, w: usize, sync: bool, seed: u64) -> f64 {
    let mut cfg = SimConfig::new(n, w, seed);
    cfg.sync = sync;
    let step = cfg.node.step_ms;
    let mut sim = Sim::new(cfg);
    let warmup = 100 * step;
    let span = 2000 * step;
    let mut times: Vec<u64> = (0..1000).map(|_| warmup + sim.rng().below(span)).collect();
    times.sort();
    let mut sum = 0.0;
    for &t in &times {
        sim.run_until(t);
        let (avg, _, unknown) = sim.ages();
        assert_eq!(unknown, 0);
        sum += avg;
    }
    sum / times.len() as f64 / step as f64
}

#[test]
fn average_age_matches_the_closed_form() {
    for (n, w) in [(8, 4), (16, 8)] {
        let (expected, max) = expected_ages(n, w).unwrap();
        let sync = measured_avg_age(n, w, true, 42 + n as u64);
        let phased = measured_avg_age(n, w, false, 42 + n as u64);
        let err = (sync - expected) / expected * 100.0;
        println!(
            "N={n:2} w={w}: closed form avg {expected:.2} steps (max {max:.2}); measured time-averaged: synchronous steps {sync:.2} ({err:+.1} %), random phases {phased:.2} ({:+.1} %)",
            (phased - expected) / expected * 100.0
        );
        assert!(err.abs() < 10.0, "N={n} w={w}: measured {sync:.2} vs {expected:.2}");
    }
}

#[test]
fn thousand_nodes_converge() {
    // Stated bound: with w = 128 every node knows every other within 60 s (120 steps).
    let n = 1000;
    let cfg = SimConfig::new(n, 128, 7);
    let mut sim = Sim::new(cfg);
    let mut t = 0;
    let converged_at = loop {
        t += 1000;
        sim.run_until(t);
        if sim.unknown_pairs() == 0 {
            break t;
        }
        assert!(t < 60_000, "not converged after 60 s: {} unknown pairs", sim.unknown_pairs());
    };
    let (avg, max, _) = sim.ages();
    println!(
        "N=1000 w=128: converged at {:.1} s virtual; then avg age {:.1} steps, max {:.1}; closed form avg {:.1} max {:.1}; {} datagrams, {:.0} B each",
        converged_at as f64 / 1000.0,
        avg / 500.0,
        max as f64 / 500.0,
        expected_ages(n, 128).unwrap().0,
        expected_ages(n, 128).unwrap().1,
        sim.stats.sent,
        sim.stats.bytes as f64 / sim.stats.sent as f64
    );
    assert!(sim.changes.iter().all(|c| c.3 != State::Down), "false Down during convergence");
}

fn first_change(sim: &Sim, observer: u32, node: u32, state: State, after: u64) -> Option<u64> {
    sim.changes.iter().find(|c| c.0 >= after && c.1 == observer && c.2 == node && c.3 == state).map(|c| c.0)
}

#[test]
fn dead_node_is_declared_down_within_the_bound_and_up_after_restart() {
    let n = 16;
    let cfg = SimConfig::new(n, 8, 11);
    let bound = cfg.node.detection_bound_ms(n) + 10 * cfg.latency_ms;
    let mut sim = Sim::new(cfg);
    sim.run_until(20_000);
    let victim = 5usize;
    let killed_at = sim.now;
    sim.kill(victim);
    sim.run_until(killed_at + bound + 1_000);
    let mut worst = 0;
    for obs in (0..n).filter(|&i| i != victim) {
        let t = first_change(&sim, obs as u32 + 1, victim as u32 + 1, State::Down, killed_at).expect("never declared Down");
        worst = worst.max(t - killed_at);
    }
    println!(
        "N=16 w=8: suspect after {} ms, {} probes; bound {} ms; slowest observer declared Down after {} ms",
        cfg.node.suspect_after(n),
        cfg.node.probe_attempts,
        bound,
        worst
    );
    assert!(worst <= bound);
    // Restart: every node sees it Up again soon.
    let back = sim.now;
    sim.restart(victim);
    sim.run_until(back + 15_000);
    let mut slowest = 0;
    for obs in (0..n).filter(|&i| i != victim) {
        let t = first_change(&sim, obs as u32 + 1, victim as u32 + 1, State::Up, back).expect("never Up again");
        slowest = slowest.max(t - back);
        assert_eq!(sim.node(obs).membership().state(victim as u32 + 1), State::Up);
    }
    println!("restarted node seen Up by all within {slowest} ms");
}

#[test]
fn no_false_down_at_30_percent_loss() {
    let n = 16;
    for seed in 1..=3 {
        let mut cfg = SimConfig::new(n, 8, seed);
        cfg.loss = 0.3;
        let mut sim = Sim::new(cfg);
        sim.run_until(30_000);
        let downs = sim.changes.iter().filter(|c| c.3 == State::Down).count();
        let suspects = sim.changes.iter().filter(|c| c.3 == State::Suspect).count();
        let (avg, max, _) = sim.ages();
        println!(
            "N=16 w=8 loss 30 % seed {seed}: {suspects} suspicions, {downs} Down in 30 s; avg age {:.2} steps, max {:.1}",
            avg / 500.0,
            max as f64 / 500.0
        );
        assert_eq!(downs, 0);
    }
}

#[test]
fn partition_heals() {
    let n = 16;
    let cfg = SimConfig::new(n, 8, 5);
    let mut sim = Sim::new(cfg);
    sim.run_until(10_000);
    sim.partition(|i| u32::from(i >= 8));
    sim.run_until(40_000);
    // Each side has declared the other Down.
    assert_eq!(sim.node(0).membership().state(16), State::Down);
    assert_eq!(sim.node(15).membership().state(1), State::Down);
    assert_eq!(sim.node(0).membership().state(2), State::Up);
    sim.heal();
    let healed = sim.now;
    sim.run_until(healed + 30_000);
    let down: usize =
        (0..n).map(|i| (1..=n as u32).filter(|&j| sim.node(i).membership().state(j) != State::Up && j != i as u32 + 1).count()).sum();
    println!("partition 8|8 for 30 s, then healed: {down} (observer, node) pairs not Up 30 s later");
    assert_eq!(down, 0);
}

#[test]
fn decoder_never_panics_on_garbage() {
    let mut rng = XorShift64::new(99);
    let valid = wire::encode(&wire::Message::Gossip {
        from: 1,
        entries: (1..=30).map(|n| wire::Entry { node: n, origin_ms: 1 << 40, load: 1234, ..wire::Entry::default() }).collect(),
    })
    .unwrap();
    let mut ok = 0;
    for i in 0..200_000u32 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let len = rng.below(200) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if i % 4 == 0 && b.len() >= 12 {
                b[..4].copy_from_slice(b"MOSG");
                b[4..6].copy_from_slice(&1u16.to_be_bytes());
                b[6..8].copy_from_slice(&(1 + rng.below(5) as u16).to_be_bytes());
                let l = (b.len() - 12) as u32;
                b[8..12].copy_from_slice(&l.to_be_bytes());
            }
            b
        } else {
            // Mutations of a valid datagram: flipped bytes, truncation.
            let mut b = valid.clone();
            for _ in 0..=rng.below(4) {
                let p = rng.below(b.len() as u64) as usize;
                b[p] ^= 1 << rng.below(8);
            }
            if rng.below(3) == 0 {
                b.truncate(rng.below(b.len() as u64) as usize);
            }
            b
        };
        ok += usize::from(wire::decode(&bytes).is_ok());
    }
    println!("200000 garbage datagrams: {ok} decoded, none panicked");
    assert!(wire::decode(&vec![0u8; wire::MAX_DATAGRAM + 1]).is_err());
}

/// Writes the seed corpus of the `gossip` fuzz target (fuzz/corpus/gossip): one datagram of each
/// kind. Run: `cargo test -p mos-brain --test sim write_fuzz_seeds -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/gossip");
    std::fs::create_dir_all(&dir).unwrap();
    let e = |n: u32| wire::Entry { node: n, addr: 0x7f00_0000 + n, origin_ms: 1 << 40, load: 1234, ncpus: 2, ..wire::Entry::default() };
    let msgs = [
        ("gossip", wire::Message::Gossip { from: 1, entries: (1..=4).map(e).collect() }),
        ("probe", wire::Message::Probe { from: 2, seq: 9 }),
        ("ack", wire::Message::Ack { from: 3, seq: 9, entry: e(3) }),
        ("join", wire::Message::Join { entry: e(4) }),
        ("leave", wire::Message::Leave { node: 5, addr: 0x7f00_0005 }),
    ];
    for (name, m) in msgs {
        std::fs::write(dir.join(name), wire::encode(&m).unwrap()).unwrap();
    }
}
