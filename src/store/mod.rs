//! The whatsapp-rust storage backend over the vault: one bot = one view.
//!
//! [`VaultBackend`] implements whatsapp-rust 0.7's storage traits for one bot
//! over its [`BotView`]; [`Vault::bot_backend`](crate::Vault::bot_backend)
//! is the entry point. Every record is one vault record of a kind from
//! [`kinds`] (0x10..=0x7f), so names (JIDs, LIDs, phone numbers, message ids)
//! are blind-indexed on disk and values are sealed.
//!
//! Durability: writes the client relies on before putting ciphertext on the
//! wire or acknowledging the server return only once on disk: session,
//! identity and sender-key puts and deletes, pre-key and signed pre-key
//! writes and removals, the pending-inbound buffer, and the device
//! (`save`, `create`). They share fsyncs through the vault's group commit.
//! Other writes (app-state, LID mappings, tokens, sent messages, message
//! secrets...) are made durable by the next such write or by sled's own
//! periodic flush (500 ms); sled recovers a prefix of the writes, so a crash
//! loses at most the last moments of those, never the order.
//!
//! Atomicity: each batch method is one `BotView::apply` (all rows or none);
//! read-modify-write paths are atomic as described in `backend.rs`.

mod appsync;
mod backend;
mod device;
pub mod kinds;
mod protocol;
mod rows;
mod secrets;
mod signal;

pub use backend::VaultBackend;
pub use device::{decode_device, encode_device, DEVICE_LAYOUT_WACORE_0_7};

use crate::error::Result;
use crate::vault::{BotView, Kind};

/// The name of a record kind owned by the backend, if it is one.
pub fn kind_name(kind: Kind) -> Option<&'static str> {
    kinds::ALL
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, name)| *name)
}

/// Whether a bot's stored credentials are complete: `paired` (a readable
/// device with `pn`, noise key, identity key and signed pre-key), `unpaired`
/// (nothing of this backend stored), or `incomplete` (something stored but the
/// device is missing, unreadable or has no `pn`: it will need a QR; a device
/// created but never paired reports this too). `None` when the vault itself
/// cannot be read.
pub fn credentials_state(view: &BotView) -> Option<Credentials> {
    let present = view.kinds().ok()?;
    let ours = present
        .iter()
        .any(|(k, n)| *n > 0 && kind_name(*k).is_some());
    if !ours {
        return Some(Credentials::Unpaired);
    }
    let paired = matches!(
        view.get(kinds::DEVICE, device::DEVICE_NAME),
        Ok(Some(bytes)) if decode_device(&bytes).is_ok_and(|d| d.pn.is_some())
    );
    Some(Credentials::of(paired))
}

/// A bot's credentials, as far as the vault tells ([`credentials_state`]).
/// Written in lowercase in JSON and tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Credentials {
    /// Nothing of the whatsapp-rust backend stored: a QR (or pair code) is needed.
    Unpaired,
    /// A readable, paired device: logs in without a QR.
    Paired,
    /// Something stored but no usable device: a QR will be needed.
    Incomplete,
}

impl Credentials {
    fn of(paired: bool) -> Credentials {
        if paired {
            Credentials::Paired
        } else {
            Credentials::Incomplete
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Credentials::Unpaired => "unpaired",
            Credentials::Paired => "paired",
            Credentials::Incomplete => "incomplete",
        }
    }
}

impl std::fmt::Display for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`credentials_state`] for a bot's dumped state (a backup's content).
pub fn dump_credentials_state(dump: &crate::vault::BotDump) -> Credentials {
    if !dump
        .records
        .iter()
        .any(|r| kind_name(Kind(r.kind)).is_some())
    {
        return Credentials::Unpaired;
    }
    let paired = dump.records.iter().any(|r| {
        r.kind == kinds::DEVICE.0
            && r.name == device::DEVICE_NAME
            && decode_device(&r.data).is_ok_and(|d| d.pn.is_some())
    });
    Credentials::of(paired)
}

/// [`Vault::validate`](crate::Vault::validate) with this layer's kinds
/// named and each bot's credentials stated (what `wavault validate` shows).
pub fn validate(vault: &crate::Vault) -> Result<crate::vault::validate::Report> {
    vault.validate_with(&kind_name, &|view| {
        credentials_state(view).map(|c| c.to_string())
    })
}

/// Deletes every credential and Signal record of the bot behind `view` (every
/// kind of [`kinds`]) in one atomic batch and flushes, keeping the vault's own
/// records (configuration, session metadata). For logout and re-pairing:
/// afterwards the bot pairs again with a QR. Returns how many were deleted.
pub fn clear_credentials(view: &BotView) -> Result<usize> {
    let n = view.clear(&kinds::all())?;
    view.vault().flush()?;
    Ok(n)
}
