//! `mosctl stay|nostay|lstay|nolstay|block|noblock|expel|bring|shutdown` (root only).
use crate::client::ask;
use mos_proto::control::{AdminOp, Reply, Request};
use std::path::Path;

pub fn run(control: &Path, op: AdminOp) -> Result<(), String> {
    match ask(control, &Request::Admin { op })? {
        Reply::Ok => Ok(()),
        other => Err(format!("unexpected reply: {other:?}")),
    }
}
