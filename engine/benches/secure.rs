//! Cost of the secure streams (docs/SECURITY.md): raw stream throughput over loopback TCP plain
//! and with each Noise suite, a 64-byte request/reply round trip plain and secure, and a whole
//! migration (stop-and-copy of a process with distinct non-zero pages) over a plain and a secure
//! connection, interleaved in one run. Prints a table.
//!
//! Run: `cargo bench -p mos-engine --bench secure` (as root). `MOS_BENCH_MIB=256` (migration size),
//! `MOS_BENCH_REPS=3`.
#[path = "common/mod.rs"]
mod common;

use common::now_ms;
use mos_proto::auth::ClusterKey;
use mos_proto::secure::{self, SUITES};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn key() -> ClusterKey {
    ClusterKey::from_file_bytes(b"the benchmark's cluster key").unwrap()
}

/// A connected pair over loopback: plain (`suite` None) or secure with that suite.
fn pair(suite: Option<&'static str>) -> (Box<dyn ReadWrite>, Box<dyn ReadWrite>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let srv = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        match suite {
            None => Box::new(s) as Box<dyn ReadWrite>,
            Some(x) => Box::new(secure::respond_with(s, &key(), now_ms(), x).unwrap().0),
        }
    });
    let s = TcpStream::connect(a).unwrap();
    s.set_nodelay(true).unwrap();
    let c: Box<dyn ReadWrite> = match suite {
        None => Box::new(s),
        Some(x) => Box::new(secure::initiate_with(s, &key().issue(0, 0, 1, now_ms(), [1; 16]), x).unwrap()),
    };
    (c, srv.join().unwrap())
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// MB/s of `bytes` sent in 1 MiB writes.
fn throughput(suite: Option<&'static str>, bytes: usize) -> f64 {
    let (mut c, mut s) = pair(suite);
    let rx = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n;
        }
    });
    let buf = vec![7u8; 1 << 20];
    let t = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        c.write_all(&buf).unwrap();
        sent += buf.len();
    }
    rx.join().unwrap();
    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// MB/s of encrypting and decrypting `bytes` in memory on one thread (the cipher alone).
fn seal_open(suite: &'static str, bytes: usize) -> f64 {
    let k = key();
    let cred = k.issue(0, 0, 1, now_ms(), [3; 16]);
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let r = std::thread::spawn(move || secure::respond_with(b, &k, now_ms(), suite).unwrap().0);
    let mut c = secure::initiate_with(a, &cred, suite).unwrap();
    let mut s = r.join().unwrap();
    // One thread: two messages' worth written (the socket buffer holds them), then read back.
    let chunk = 2 * secure::MAX_PLAIN;
    let buf = vec![9u8; chunk];
    let mut out = vec![0u8; chunk];
    let t = Instant::now();
    let mut done = 0;
    while done < bytes {
        c.write_all(&buf).unwrap();
        s.read_exact(&mut out).unwrap();
        done += chunk;
    }
    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// Median round trip (ns) of a 64-byte message and its echo.
fn rtt(suite: Option<&'static str>, n: usize) -> u64 {
    let (mut c, mut s) = pair(suite);
    let echo = std::thread::spawn(move || {
        let mut b = [0u8; 64];
        for _ in 0..n {
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        }
    });
    let mut b = [7u8; 64];
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
        v.push(t.elapsed().as_nanos() as u64);
    }
    echo.join().unwrap();
    v.sort_unstable();
    v[v.len() / 2]
}

/// (frozen ms, MB/s while frozen) of one migration of a `mib` MiB process.
fn migration(mib: usize, keyed: bool) -> (f64, f64) {
    let st = common::move_once(mib, keyed.then(key));
    (st.frozen_us as f64 / 1e3, st.bytes_sent as f64 / st.frozen_us.max(1) as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    common::child_mode();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib: usize = std::env::var("MOS_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let reps: usize = std::env::var("MOS_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let kinds: [(&str, Option<&'static str>); 3] = [("plain TCP", None), ("AESGCM", Some(SUITES[0])), ("ChaChaPoly", Some(SUITES[1]))];
    println!("secure streams over loopback TCP; {reps} runs each, interleaved, median shown (protocol in use: {})", secure::PROTOCOL);
    println!("{:<12} {:>16} {:>18} {:>22}", "stream", "MB/s (512 MiB)", "64 B RTT (ns)", "seal+open MB/s, 1 thr");
    let mut tp = vec![Vec::new(); 3];
    let mut rt = vec![Vec::new(); 3];
    let mut so = vec![Vec::new(); 3];
    for _ in 0..reps {
        for (i, (_, s)) in kinds.iter().enumerate() {
            tp[i].push(throughput(*s, 512 << 20));
            rt[i].push(rtt(*s, 20_000) as f64);
            so[i].push(s.map(|x| seal_open(x, 512 << 20)).unwrap_or(f64::NAN));
        }
    }
    for (i, (name, _)) in kinds.iter().enumerate() {
        println!("{:<12} {:>16.0} {:>18.0} {:>22.0}", name, median(tp[i].clone()), median(rt[i].clone()), median(so[i].clone()));
    }
    println!();
    println!("migration of a {mib} MiB process (distinct non-zero pages), stop-and-copy");
    println!("{:<12} {:>12} {:>14}", "connection", "frozen ms", "MB/s frozen");
    let (mut plain, mut keyed) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        plain.push(migration(mib, false));
        keyed.push(migration(mib, true));
    }
    for (name, v) in [("plain", &plain), ("secure", &keyed)] {
        println!("{:<12} {:>12.1} {:>14.0}", name, median(v.iter().map(|r| r.0).collect()), median(v.iter().map(|r| r.1).collect()));
    }
    let (p, k) = (median(plain.iter().map(|r| r.1).collect()), median(keyed.iter().map(|r| r.1).collect()));
    println!("secure/plain migration throughput: {:.2}", k / p);
}
