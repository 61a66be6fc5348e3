//! `mosctl migrate [--stop-copy] [--wait] [--json] PID NODE|home`.
use crate::client::ask;
use mos_proto::control::{Mode, Reply, Request};
use std::path::Path;

pub fn run(control: &Path, pid: u32, node: &str, mode: Mode, json: bool) -> Result<(), String> {
    match ask(control, &Request::MigrateMode { pid, target: node.to_string(), mode })? {
        Reply::Migrated { stats } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&stats).expect("stats serialize"));
            } else {
                println!(
                    "migrated {pid} to {node}: frozen {:.1} ms, total {:.1} ms, {} round(s), {} pages scanned, {} sent ({:.1} MB), skipped {} zero / {} untouched / {} same-file, {:.0} MB/s",
                    stats.frozen_us as f64 / 1e3,
                    stats.total_us as f64 / 1e3,
                    stats.rounds,
                    stats.pages_scanned,
                    stats.pages_sent,
                    stats.bytes_sent as f64 / 1e6,
                    stats.pages_skipped_zero,
                    stats.pages_skipped_absent,
                    stats.pages_skipped_file,
                    stats.mb_per_s()
                );
            }
            Ok(())
        }
        other => Err(format!("unexpected reply: {other:?}")),
    }
}
