//! `mosctl mon`: a live terminal view of every node's load and memory, as MOSIX's `mon` showed.
//! Plain ANSI (clear screen, redraw each interval); `--once` prints one frame and exits.
use crate::client::ask;
use mos_proto::control::{NodeStatus, Reply, Request};
use std::path::Path;
use std::time::Duration;

const WIDTH: usize = 40;

fn bar(frac: f64) -> String {
    let n = ((frac.clamp(0.0, 1.0)) * WIDTH as f64).round() as usize;
    format!("{}{}", "#".repeat(n), ".".repeat(WIDTH - n))
}

/// One frame: per node, load and used memory, as bars. The load gossip carries is already
/// relative to the node's capacity (runnable processes per standard CPU it has): 1.0 = full.
pub fn frame(nodes: &[NodeStatus]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:>5} {:<7} {:<w$} {:>6}   {:<w$} {:>6}\n",
        "NODE",
        "STATE",
        "LOAD (1.0 = all cpus busy)",
        "",
        "MEMORY USED",
        "",
        w = WIDTH
    ));
    for n in nodes {
        let used = if n.mem_total == 0 { 0.0 } else { 1.0 - n.mem_free as f64 / n.mem_total as f64 };
        out.push_str(&format!("{:>5} {:<7} {} {:>6.2}   {} {:>5.0}%\n", n.node, n.state, bar(n.load), n.load, bar(used), used * 100.0));
    }
    out
}

pub fn run(control: &Path, interval_ms: u64, once: bool) -> Result<(), String> {
    loop {
        let Reply::Status { nodes } = ask(control, &Request::Status)? else { return Err("unexpected reply".into()) };
        if once {
            print!("{}", frame(&nodes));
            return Ok(());
        }
        println!("\x1b[H\x1b[2J{}(every {interval_ms} ms; Ctrl-C to quit)", frame(&nodes));
        std::thread::sleep(Duration::from_millis(interval_ms.max(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_with_load_per_cpu_and_memory_used() {
        let n = NodeStatus {
            node: 3,
            address: "127.0.0.3".into(),
            state: "up".into(),
            ncpus: 2,
            speed: 10000,
            load: 0.5,
            mem_free: 750,
            mem_total: 1000,
            procs: 0,
            guests: 0,
            age_ms: 0,
            dropped_datagrams: 0,
            dropped_connections: 0,
        };
        let f = frame(&[n]);
        let line = f.lines().nth(1).unwrap();
        assert!(line.contains(&format!("{}{}", "#".repeat(20), ".".repeat(20))), "half-loaded node: {line}");
        assert!(line.contains(&format!("{}{}", "#".repeat(10), ".".repeat(30))), "25 % memory used: {line}");
        assert!(line.trim_end().ends_with("25%"), "{line}");
    }
}
