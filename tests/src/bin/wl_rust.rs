//! `wl_rust ITER [MS_PER_STEP]`: the Rust twin of `workloads/counter.c`, printing the same lines
//! for the same arguments. State: a 1 MiB heap array mutated by a xorshift64 chain, a
//! floating-point accumulator and a thread-local counter. Each step does a fixed amount of state
//! work, burns about MS_PER_STEP ms of CPU (busy loop timed with `Instant`, i.e. the vDSO's
//! clock_gettime; time never reaches the output), prints one line and flushes stdout. Exit code 7.
use std::cell::Cell;
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

const WORDS: usize = (1 << 20) / 8;
const UPDATES_PER_STEP: u32 = 65536;
/// 2^-53.
const TWO_POW_M53: f64 = 1.0 / 9_007_199_254_740_992.0;

thread_local! {
    static TLS_STEPS: Cell<u64> = const { Cell::new(0) };
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: wl_rust ITER [MS_PER_STEP]");
        std::process::exit(2);
    }
    let iter: i64 = args[1].parse().unwrap_or(0);
    let ms: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut a = vec![0u64; WORDS];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for w in a.iter_mut() {
        x = xorshift(x);
        *w = x;
    }
    let mut facc = 0.0f64;
    let stdout = std::io::stdout();
    for step in 1..=iter {
        for _ in 0..UPDATES_PER_STEP {
            x = xorshift(x);
            let j = (x % WORDS as u64) as usize;
            a[j] = a[j].wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407) ^ x;
            facc += (a[j] >> 11) as f64 * TWO_POW_M53;
        }
        let tls = TLS_STEPS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        let mut sum: u64 = 0;
        for w in &a {
            sum = (sum ^ w).wrapping_mul(0x0100_0000_01B3);
        }
        if ms > 0 {
            let end = Instant::now() + Duration::from_millis(ms);
            let mut y = step as u64;
            while Instant::now() < end {
                for _ in 0..1000 {
                    y = y.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(3_037_000_493);
                }
                y = black_box(y);
            }
        }
        let mut out = stdout.lock();
        // A closed stdout ends the workload with a distinct status.
        if writeln!(out, "step {step} x={x:016x} sum={sum:016x} f={:016x} tls={tls}", facc.to_bits()).and_then(|()| out.flush()).is_err() {
            std::process::exit(4);
        }
    }
    std::process::exit(7);
}
