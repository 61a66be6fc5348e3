//! What the engine's benchmarks share: the child process they migrate and one stop-and-copy move of
//! it over loopback TCP, plain or on a keyed (secure) connection.
use mos_engine::channel::{self, Channel};
use mos_engine::migrate;
use mos_proto::auth::ClusterKey;
use mos_proto::migration::Stats;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds (for tickets).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// In the child copy of a benchmark (`MOS_BENCH_CHILD=MIB`), becomes the child; else returns.
pub fn child_mode() {
    if let Ok(m) = std::env::var("MOS_BENCH_CHILD") {
        child(m.parse().unwrap());
    }
}

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

/// Starts a child of `mib` MiB and moves it by stop-and-copy over loopback TCP to a receiver in
/// this process, on a secure connection when `key` is given; returns the move's statistics.
pub fn move_once(mib: usize, key: Option<ClusterKey>) -> Stats {
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new(exe).env("MOS_BENCH_CHILD", mib.to_string()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = [0u8; 6];
    c.stdout.as_mut().unwrap().read_exact(&mut line).unwrap();
    let pid = Pid::from_raw(c.id() as i32);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let keyed = key.is_some();
    let cred = key.as_ref().map(|k| k.issue(0, 0, 1, now_ms(), [2; 16]));
    let server = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let (mut s, _) = channel::accept(s, key.as_ref()).expect("handshake");
        assert_eq!(s.is_secure(), keyed);
        let (g, _) = migrate::accept_guest(&mut s, |_| Ok(())).expect("restore");
        // Hold the connection until the sender has released the deputy, then end the guest.
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
        let _ = kill(g.pid, Signal::SIGKILL);
        let _ = waitpid(g.pid, None);
    });
    let away = migrate::migrate_out(pid, 1, addr, mos_proto::control::Mode::StopCopy, cred.as_ref()).expect("migration");
    assert_eq!(matches!(away.stream, Channel::Secure(_)), keyed);
    let st = away.stats.clone();
    drop(away);
    server.join().unwrap();
    let _ = kill(pid, Signal::SIGKILL);
    let _ = c.wait();
    st
}
