//! `mosctl checkpoint PID [FILE]` and `mosctl migrate PID checkpoint|chkstop|chkexit` (MOSIX).
use crate::client::ask;
use mos_proto::control::{AfterCheckpoint, Reply, Request};
use std::path::Path;

/// The checkpoint action a `mosctl migrate` target names, if it names one.
pub fn action(target: &str) -> Option<AfterCheckpoint> {
    match target {
        "checkpoint" => Some(AfterCheckpoint::Continue),
        "chkstop" => Some(AfterCheckpoint::Stop),
        "chkexit" => Some(AfterCheckpoint::Exit),
        _ => None,
    }
}

pub fn run(control: &Path, pid: u32, file: Option<&Path>, then: AfterCheckpoint, json: bool) -> Result<(), String> {
    // mosrun writes the file: name it absolutely, relative to this command's directory.
    let file = match file {
        Some(f) => Some(std::path::absolute(f).map_err(|e| format!("bad file name {}: {e}", f.display()))?.to_string_lossy().into_owned()),
        None => None,
    };
    match ask(control, &Request::Checkpoint { pid, file, then })? {
        Reply::Checkpointed(done) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&done).expect("checkpoint result serializes"));
            } else {
                let after = match then {
                    AfterCheckpoint::Continue => "it continues",
                    AfterCheckpoint::Stop => "it is stopped (kill -CONT resumes it)",
                    AfterCheckpoint::Exit => "it has ended",
                };
                println!(
                    "checkpointed {pid} to {} ({:.1} MB, frozen {:.1} ms, total {:.1} ms); {after}",
                    done.path,
                    done.bytes as f64 / 1e6,
                    done.frozen_us as f64 / 1e3,
                    done.total_us as f64 / 1e3
                );
            }
            Ok(())
        }
        other => Err(format!("unexpected reply: {other:?}")),
    }
}
