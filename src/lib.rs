//! wavault: run many WhatsApp bots from one binary, with every credential
//! and all Signal state in an encrypted embedded vault.
//!
//! Layers, bottom up: [`codec`] (bytes), [`vault`] (keys, sealed records,
//! sled), [`store`] (the whatsapp-rust backend over a vault view), and
//! [`cli`] (the command line, a thin shell).
#![forbid(unsafe_code)]

pub mod backup;
pub mod botid;
pub mod cli;
pub mod codec;
pub mod error;
pub mod fleet;
pub mod fsutil;
pub mod fuzzing;
pub mod hardening;
pub mod logs;
pub mod messaging;
pub mod ops;
pub mod passphrase;
pub mod runner;
pub mod sessions;
pub mod stats;
pub mod status;
pub mod store;
pub mod sweep;
pub mod table;
pub mod testpoint;
pub mod token;
pub mod vault;
pub mod web;

pub use botid::BotId;
pub use error::{Error, Result};
pub use vault::Vault;

/// The README's code examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
