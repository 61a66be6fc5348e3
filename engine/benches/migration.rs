//! Migration benchmark: moves processes of 64 MiB, 256 MiB and 1 GiB (every page distinct,
//! non-zero) over loopback TCP with the portable engine, and measures raw loopback TCP bandwidth in
//! the same run as the baseline. Prints a table and writes target/bench-migration.json.
//!
//! Run: `cargo bench -p mos-engine --bench migration` (as root). `MOS_BENCH_SIZES=64,256` and
//! `MOS_BENCH_REPS=3` change the sizes (MiB) and repetitions.
#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn loopback_bandwidth(bytes: usize) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let rx = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n;
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let buf = vec![7u8; 1 << 20];
    let t = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&buf).unwrap();
        sent += buf.len();
    }
    rx.join().unwrap();
    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
}

struct Row {
    mib: usize,
    total_ms: f64,
    frozen_ms: f64,
    mb_s: f64,
    pages_sent: u64,
    pages_skipped: u64,
    tcp_mb_s: f64,
}

fn one(mib: usize) -> Row {
    let st = common::move_once(mib, None);
    let tcp = loopback_bandwidth(mib << 20);
    Row {
        mib,
        total_ms: st.total_us as f64 / 1e3,
        frozen_ms: st.frozen_us as f64 / 1e3,
        mb_s: st.bytes_sent as f64 / st.frozen_us.max(1) as f64,
        pages_sent: st.pages_sent,
        pages_skipped: st.pages_skipped_zero + st.pages_skipped_absent + st.pages_skipped_file,
        tcp_mb_s: tcp,
    }
}

fn main() {
    common::child_mode();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> =
        std::env::var("MOS_BENCH_SIZES").unwrap_or_else(|_| "64,256,1024".into()).split(',').map(|s| s.trim().parse().unwrap()).collect();
    let reps: usize = std::env::var("MOS_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    println!("portable engine, stop-and-copy over loopback TCP; {reps} runs per size, median shown");
    println!(
        "{:>6} {:>10} {:>10} {:>9} {:>11} {:>11} {:>12} {:>9}",
        "MiB", "total ms", "frozen ms", "MB/s", "pages sent", "skipped", "raw TCP MB/s", "ratio"
    );
    let mut json = Vec::new();
    for mib in sizes {
        let mut rows: Vec<Row> = (0..reps).map(|_| one(mib)).collect();
        rows.sort_by(|a, b| a.frozen_ms.total_cmp(&b.frozen_ms));
        let r = &rows[rows.len() / 2];
        let ratio = r.mb_s / r.tcp_mb_s;
        println!(
            "{:>6} {:>10.1} {:>10.1} {:>9.0} {:>11} {:>11} {:>12.0} {:>9.2}",
            r.mib, r.total_ms, r.frozen_ms, r.mb_s, r.pages_sent, r.pages_skipped, r.tcp_mb_s, ratio
        );
        json.push(format!(
            "{{\"mib\":{},\"total_ms\":{:.1},\"frozen_ms\":{:.1},\"mb_s\":{:.0},\"pages_sent\":{},\"pages_skipped\":{},\"tcp_mb_s\":{:.0},\"ratio_to_tcp\":{:.3}}}",
            r.mib, r.total_ms, r.frozen_ms, r.mb_s, r.pages_sent, r.pages_skipped, r.tcp_mb_s, ratio
        ));
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("bench-migration.json"), format!("[{}]\n", json.join(",")));
}
