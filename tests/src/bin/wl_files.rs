//! `wl_files ITER MS_PER_STEP DIR`: a workload whose state lives partly in open files, for the
//! checkpoint tests. It writes DIR/data (ITER numbered lines), then keeps four descriptors open
//! across its steps: DIR/data read line by line (buffered: part of the state is in memory, part is
//! the file offset), DIR/out written at its offset, DIR/log opened O_APPEND, and /dev/null. Each
//! step reads a line, writes a derived line to out and log, burns about MS_PER_STEP ms and prints
//! what it did with out's offset. At the end it reads out and log back and prints their sizes and
//! checksums. Output is deterministic (DIR never appears in it). Exit code 0.
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: wl_files ITER MS_PER_STEP DIR");
        std::process::exit(2);
    }
    let iter: u64 = args[1].parse().unwrap_or(0);
    let ms: u64 = args[2].parse().unwrap_or(0);
    let dir = Path::new(&args[3]);
    let mut data = String::new();
    for i in 1..=iter {
        data.push_str(&format!("line {i} {:016x}\n", fnv(&i.to_le_bytes())));
    }
    std::fs::write(dir.join("data"), &data).expect("write data");
    let mut input = BufReader::with_capacity(64, File::open(dir.join("data")).expect("open data"));
    let mut out = OpenOptions::new().write(true).create(true).truncate(true).open(dir.join("out")).expect("open out");
    let mut log = OpenOptions::new().append(true).create(true).open(dir.join("log")).expect("open log");
    let mut null = OpenOptions::new().write(true).open("/dev/null").expect("open /dev/null");
    let stdout = std::io::stdout();
    let mut acc: u64 = 1;
    for step in 1..=iter {
        let mut line = String::new();
        input.read_line(&mut line).expect("read data");
        acc = acc.wrapping_mul(31).wrapping_add(fnv(line.as_bytes()));
        let rec = format!("{step} {acc:016x} {}", line);
        out.write_all(rec.as_bytes()).expect("write out");
        log.write_all(rec.as_bytes()).expect("write log");
        null.write_all(rec.as_bytes()).expect("write /dev/null");
        if ms > 0 {
            let end = Instant::now() + Duration::from_millis(ms);
            let mut y = step;
            while Instant::now() < end {
                for _ in 0..1000 {
                    y = y.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(3_037_000_493);
                }
                y = black_box(y);
            }
        }
        let off = out.stream_position().expect("out offset");
        let mut o = stdout.lock();
        if writeln!(o, "step {step} acc={acc:016x} out@{off} read {}", line.trim_end()).and_then(|()| o.flush()).is_err() {
            std::process::exit(4);
        }
    }
    drop(out);
    drop(log);
    let mut back = Vec::new();
    File::open(dir.join("out")).and_then(|mut f| f.read_to_end(&mut back)).expect("read out back");
    let logged = std::fs::read(dir.join("log")).expect("read log back");
    let mut f = File::open(dir.join("data")).expect("reopen data");
    let end = f.seek(SeekFrom::End(0)).expect("seek data");
    println!("out {} bytes fnv {:016x}; log {} bytes fnv {:016x}; data {end} bytes", back.len(), fnv(&back), logged.len(), fnv(&logged));
}
