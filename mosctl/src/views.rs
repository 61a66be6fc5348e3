//! `mosctl ps` and `mosctl status`.
use crate::client::ask;
use mos_proto::control::{Reply, Request};
use std::path::Path;

pub fn ps(control: &Path, json: bool) -> Result<(), String> {
    let Reply::Ps { processes } = ask(control, &Request::Ps)? else { return Err("unexpected reply".into()) };
    if json {
        println!("{}", serde_json::json!({ "processes": processes }));
        return Ok(());
    }
    println!("{:>8} {:>5} {:>5} {:>6} {:>9}  COMMAND", "PID", "HOME", "NODE", "GUEST", "LOCALPID");
    for p in processes {
        println!(
            "{:>8} {:>5} {:>5} {:>6} {:>9}  {}",
            p.pid,
            p.home,
            p.node,
            if p.guest { "yes" } else { "no" },
            p.local_pid.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            p.command
        );
    }
    Ok(())
}

pub fn whois(control: &Path, name: &str) -> Result<(), String> {
    let Reply::Whois { node, address } = ask(control, &Request::Whois { name: name.to_string() })? else {
        return Err("unexpected reply".into());
    };
    if name.parse::<u32>().is_ok() {
        println!("{address}");
    } else {
        println!("{node}");
    }
    Ok(())
}

pub fn status(control: &Path, only: Option<&str>, json: bool) -> Result<(), String> {
    let Reply::Status { mut nodes } = ask(control, &Request::Status)? else { return Err("unexpected reply".into()) };
    if let Some(name) = only {
        let Reply::Whois { node, .. } = ask(control, &Request::Whois { name: name.to_string() })? else {
            return Err("unexpected reply".into());
        };
        nodes.retain(|n| n.node == node);
        if nodes.is_empty() {
            return Err(format!("node {node} is in the map but this node knows nothing about it yet"));
        }
    }
    if json {
        println!("{}", serde_json::json!({ "nodes": nodes }));
        return Ok(());
    }
    println!(
        "{:>5} {:<16} {:<7} {:>5} {:>6} {:>6} {:>10} {:>10} {:>6} {:>7} {:>7}",
        "NODE", "ADDRESS", "STATE", "CPUS", "SPEED", "LOAD", "MEMFREE", "MEMTOTAL", "PROCS", "GUESTS", "AGE_MS"
    );
    let dropped = nodes.iter().find(|n| n.age_ms == 0).map(|n| (n.node, n.dropped_datagrams, n.dropped_connections));
    for n in nodes {
        println!(
            "{:>5} {:<16} {:<7} {:>5} {:>6} {:>6.2} {:>9}M {:>9}M {:>6} {:>7} {:>7}",
            n.node,
            n.address,
            n.state,
            n.ncpus,
            n.speed,
            n.load,
            n.mem_free >> 20,
            n.mem_total >> 20,
            n.procs,
            n.guests,
            n.age_ms
        );
    }
    if let Some((me, d, c)) = dropped.filter(|(_, d, c)| d + c > 0) {
        println!("node {me} dropped {d} gossip datagram(s) and {c} connection(s) (bad key, replayed or malformed)");
    }
    Ok(())
}
