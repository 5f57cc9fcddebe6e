//! Integration tests of the encrypted vault and its command line.
//! One binary with modules, so the whole stack links once.

mod backup;
mod cli;
mod common;
mod fuzz_corpus;
mod golden;
mod grep;
mod kill;
mod messaging;
mod roundtrip;
mod shred;
#[path = "../support/signal_state.rs"]
mod signal_state;
mod sweep;
mod tamper;
mod web;
