//! The sweep's test vault: four bots with credentials and history at
//! known ages (shared by `tests/vault/sweep.rs` and the power-cut campaign).

use crate::common::*;
use crate::signal_state;
use std::sync::Arc;
use wacore::store::traits::Backend;
use wavault::sessions::{Sessions, Status};
use wavault::Vault;

pub const DAY: i64 = 86_400;

/// Four bots with credentials, as of `now`: `old-dead` logged out 31 days
/// ago, `young-dead` logged out 29 days ago, `idle` connected a year ago and
/// quiet since, `fine` connected now.
pub fn setup_at(dir: &std::path::Path, now: i64) -> Vault {
    let v = new_vault(dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (i, (name, status, at)) in [
        ("old-dead", Status::LoggedOut, now - 31 * DAY),
        ("young-dead", Status::LoggedOut, now - 29 * DAY),
        ("idle", Status::Connected, now - 365 * DAY),
        ("fine", Status::Connected, now - 60),
    ]
    .into_iter()
    .enumerate()
    {
        let id = add_bot(&v, name);
        let backend: Arc<dyn Backend> = v.bot_backend(&id).unwrap();
        rt.block_on(signal_state::fill(&backend, i as u64));
        let s = Sessions::new(v.view(&id));
        s.set_status(now - 400 * DAY, Status::Connecting, Some("start"))
            .unwrap();
        s.set_status(now - 399 * DAY, Status::Connected, Some("paired"))
            .unwrap();
        if status != Status::Connected {
            s.set_status(at, status, Some("logged out by server"))
                .unwrap();
        } else {
            s.set_status(at - 10, Status::Reconnecting, Some("connection lost"))
                .unwrap();
            s.set_status(at, status, Some("logged in")).unwrap();
        }
    }
    v.flush().unwrap();
    v
}

pub fn creds(v: &Vault, id: &str) -> usize {
    let kinds = wavault::store::kinds::all();
    v.footprint(&bot(id), &kinds).unwrap().records as usize
}
