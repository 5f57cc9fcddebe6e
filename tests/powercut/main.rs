//! Power cuts, not process kills: the commands that rewrite the vault run
//! on the power-cut simulator (`tests/support/powerfs.rs`) and lose power
//! at random points (see docs/DESIGN.md, "What durable means"). The
//! backend and inbound-queue campaigns live in `tests/store`.
//!
//! Its own binary: a campaign spawns hundreds of commands, and a child
//! spawned by one test thread holds copies of every file this process has
//! open until its exec, vault locks included; beside the other vault tests
//! that made their children find the vault "in use".

mod commands;
#[allow(dead_code)] // shared with tests/vault; this binary uses part of it
#[path = "../vault/common.rs"]
mod common;
#[allow(dead_code)] // shared with tests/store
#[path = "../support/powerfs.rs"]
mod powerfs;
#[path = "../support/signal_state.rs"]
mod signal_state;
#[path = "../support/sweep_state.rs"]
mod sweep_state;
