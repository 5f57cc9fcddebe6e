//! Integration tests of the encrypted vault and its command line.
//! One binary with modules, so the whole stack links once.

mod backup;
mod certcheck;
mod cli;
mod common;
mod first_hour;
mod fuzz_corpus;
mod golden;
mod grep;
mod inputs;
mod kill;
mod live;
mod messaging;
mod process;
mod roundtrip;
mod shred;
#[path = "../support/signal_state.rs"]
mod signal_state;
mod socket;
mod sweep;
#[path = "../support/sweep_state.rs"]
mod sweep_state;
mod tables;
mod tamper;
mod web;
