//! The random fault suite at full size: `cargo build --bins && cargo run -p mos-tests --bin
//! fault_bench [ROUNDS] [SEED]` (root; needs nftables). Prints one line per round and a summary.
fn main() {
    let mut a = std::env::args().skip(1);
    let rounds: usize = a.next().and_then(|v| v.parse().ok()).unwrap_or(100);
    let seed: u64 = a.next().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_0007);
    let program = mos_tests::bin("wl_rust");
    let t = std::time::Instant::now();
    let r = mos_tests::faults::run(rounds, seed, program.to_str().expect("utf-8 path"));
    println!(
        "{} rounds in {:.0} s: {} kills of the target mid-migration, {} partitions, {} lossy links; {} pre-copy, {} post-copy, {} stop-and-copy; moves ok {}, failed (process stayed home) {}; LOST {}, WRONG {}",
        r.rounds,
        t.elapsed().as_secs_f64(),
        r.kills,
        r.partitions,
        r.losses,
        r.modes[0],
        r.modes[1],
        r.modes[2],
        r.moves_ok,
        r.moves_failed,
        r.lost,
        r.wrong
    );
    for p in &r.problems {
        println!("  {p}");
    }
}
