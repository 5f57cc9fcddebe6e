//! Integration tests of the whatsapp-rust backend over the vault.
//! One binary with modules, so the whole stack links once.

mod common;
mod crash;
mod differential;
mod isolation;
#[allow(dead_code)] // each binary uses part of it
#[path = "../support/powerfs.rs"]
mod powerfs;
mod queue_cut;
mod semantics;
mod signal_roundtrip;
