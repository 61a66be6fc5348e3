//! Migration benchmark: moves processes of 64 MiB, 256 MiB and 1 GiB (every page distinct,
//! non-zero) over loopback TCP with the portable engine, and measures raw loopback TCP bandwidth in
//! the same run as the baseline. Prints a table and writes target/bench-migration.json.
//!
//! Run: `cargo bench -p mos-engine --bench migration` (as root). `MOS_BENCH_SIZES=64,256` and
//! `MOS_BENCH_REPS=3` change the sizes (MiB) and repetitions.
use mos_engine::migrate;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Child mode: fill `mib` MiB with distinct non-zero pages, say "ready", then compute forever.
fn child(mib: usize) -> ! {
    // Never outlive the benchmark.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let len = mib << 20;
    let mut v: Vec<u64> = Vec::with_capacity(len / 8);
    for i in 0..len / 8 {
        v.push((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    }
    let mut out = std::io::stdout();
    out.write_all(b"ready\n").unwrap();
    out.flush().unwrap();
    let mut x = 1u64;
    loop {
        for k in (0..v.len()).step_by(4096) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(v[k]);
        }
        std::hint::black_box(x);
    }
}

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
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new(exe).env("MOS_BENCH_CHILD", mib.to_string()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = [0u8; 6];
    c.stdout.as_mut().unwrap().read_exact(&mut line).unwrap();
    let pid = Pid::from_raw(c.id() as i32);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut s = mos_engine::channel::Channel::Plain(s);
        let (g, _) = migrate::accept_guest(&mut s, |_| Ok(())).expect("restore");
        // Hold the connection until the sender has released the deputy, then end the guest.
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
        let _ = kill(g.pid, Signal::SIGKILL);
        let _ = waitpid(g.pid, None);
    });
    let away = migrate::migrate_out(pid, 1, addr, mos_proto::control::Mode::StopCopy, None).expect("migration");
    let st = away.stats.clone();
    drop(away);
    server.join().unwrap();
    let _ = kill(pid, Signal::SIGKILL);
    let _ = c.wait();
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
    if let Ok(m) = std::env::var("MOS_BENCH_CHILD") {
        child(m.parse().unwrap());
    }
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
