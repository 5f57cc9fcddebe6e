//! The record kinds of the whatsapp-rust backend (0x10..=0x7f of the vault's
//! kind space; below 0x10 belongs to the vault itself).
//!
//! A kind is part of the on-disk key (`bot tag ++ kind ++ blind name`), so a
//! number, once shipped, never changes meaning. New kinds take new numbers.
//! Groups: 0x10 device and Signal state, 0x20 app-state sync, 0x30 protocol
//! metadata, 0x40 message secrets.

use crate::vault::Kind;

/// The `Device` (credentials: noise key, identity key, signed pre-key, pn).
pub const DEVICE: Kind = Kind(0x10);
/// Remote identity keys, by Signal address.
pub const IDENTITY: Kind = Kind(0x11);
/// Signal sessions, by Signal address.
pub const SESSION: Kind = Kind(0x12);
/// One-time pre-keys, by id (u32 big endian) with their uploaded flag.
pub const PREKEY: Kind = Kind(0x13);
/// Signed pre-keys, by id (u32 big endian).
pub const SIGNED_PREKEY: Kind = Kind(0x14);
/// Group sender keys, by sender-key name.
pub const SENDER_KEY: Kind = Kind(0x15);
/// Markers "this user has had Signal state", for `has_signal_state_for_user`.
pub const SIGNAL_USER: Kind = Kind(0x16);

/// App-state sync keys, by key id.
pub const SYNC_KEY: Kind = Kind(0x20);
/// The id of the most recently stored sync key (one record).
pub const SYNC_KEY_LATEST: Kind = Kind(0x21);
/// App-state collection versions (hash state), by collection name.
pub const APP_STATE_VERSION: Kind = Kind(0x22);
/// App-state mutation MACs, by (collection, index MAC).
pub const MUTATION_MAC: Kind = Kind(0x23);

/// Per-group sender-key distribution status of devices, by group JID.
pub const SENDER_KEY_DEVICES: Kind = Kind(0x30);
/// LID to phone-number mappings, by LID.
pub const LID_MAPPING: Kind = Kind(0x31);
/// Reverse index: phone number to the LIDs mapped to it.
pub const PN_INDEX: Kind = Kind(0x32);
/// Saved base keys for retry collision detection, by (address, message id).
pub const BASE_KEY: Kind = Kind(0x33);
/// Device lists, by user.
pub const DEVICE_LIST: Kind = Kind(0x34);
/// Cached group metadata blobs, by group JID.
pub const GROUP_METADATA: Kind = Kind(0x35);
/// Trusted-contact tokens, by JID.
pub const TC_TOKEN: Kind = Kind(0x36);
/// Sent messages kept for retries, by (chat, message id).
pub const SENT_MESSAGE: Kind = Kind(0x37);
/// Decrypted inbound messages awaiting the durability hook, by (chat, sender, id).
pub const PENDING_INBOUND: Kind = Kind(0x38);

/// Message secrets, by (chat, sender, message id).
pub const MSG_SECRET: Kind = Kind(0x40);

/// Every kind of this backend with its name (for `wavault validate`).
pub const ALL: &[(Kind, &str)] = &[
    (DEVICE, "wa_device"),
    (IDENTITY, "wa_identity"),
    (SESSION, "wa_session"),
    (PREKEY, "wa_prekey"),
    (SIGNED_PREKEY, "wa_signed_prekey"),
    (SENDER_KEY, "wa_sender_key"),
    (SIGNAL_USER, "wa_signal_user"),
    (SYNC_KEY, "wa_sync_key"),
    (SYNC_KEY_LATEST, "wa_sync_key_latest"),
    (APP_STATE_VERSION, "wa_app_state_version"),
    (MUTATION_MAC, "wa_mutation_mac"),
    (SENDER_KEY_DEVICES, "wa_sender_key_devices"),
    (LID_MAPPING, "wa_lid_mapping"),
    (PN_INDEX, "wa_pn_index"),
    (BASE_KEY, "wa_base_key"),
    (DEVICE_LIST, "wa_device_list"),
    (GROUP_METADATA, "wa_group_metadata"),
    (TC_TOKEN, "wa_tc_token"),
    (SENT_MESSAGE, "wa_sent_message"),
    (PENDING_INBOUND, "wa_pending_inbound"),
    (MSG_SECRET, "wa_msg_secret"),
];

/// Every kind of this backend.
pub fn all() -> Vec<Kind> {
    ALL.iter().map(|(k, _)| *k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_in_the_backend_range() {
        let mut seen = std::collections::HashSet::new();
        for (k, name) in ALL {
            assert!((0x10..=0x7f).contains(&k.0), "{name} out of range");
            assert!(seen.insert(k.0), "{name} reuses 0x{:02x}", k.0);
            assert!(name.starts_with("wa_"));
        }
    }
}
