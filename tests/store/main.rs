//! Integration tests of the whatsapp-rust backend over the vault.
//! One binary with modules, so the whole stack links once.

mod common;
mod crash;
mod differential;
mod isolation;
mod semantics;
mod signal_roundtrip;
