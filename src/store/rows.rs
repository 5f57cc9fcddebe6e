//! What the backend stores in each record: record names and the row types.
//!
//! Rows are this crate's own serde types, encoded with [`crate::codec`], not
//! the whatsapp-rust types themselves: their serde shapes use attributes a
//! non-self-describing codec cannot honour (`skip_serializing_if`), and the
//! vault's format must not change when a dependency reorders a struct. The
//! one exception is the `Device`, stored as itself behind a layout number
//! (see `device.rs`).

use crate::codec;
use serde::{Deserialize, Serialize};
use wacore::store::error::StoreError;

/// A `StoreError` for bytes that do not decode as the expected row.
pub fn malformed(what: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Validation(format!("stored {what} is malformed: {e}"))
}

/// Decodes a row written by [`codec::encode`].
pub fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|e| malformed(what, e))
}

// ----- names -----

/// Name of a record keyed by a u32 id: big endian, so names sort like ids.
pub fn id_name(id: u32) -> [u8; 4] {
    id.to_be_bytes()
}

/// The id back from an [`id_name`].
pub fn parse_id(name: &[u8]) -> Result<u32, StoreError> {
    let b: [u8; 4] = name
        .try_into()
        .map_err(|_| malformed("pre-key id", format!("{} bytes", name.len())))?;
    Ok(u32::from_be_bytes(b))
}

/// Name of a record keyed by several strings: length-prefixed, so
/// `("a", "bc")` and `("ab", "c")` never collide.
pub fn composite(parts: &[&[u8]]) -> Vec<u8> {
    codec::encode(&parts)
}

/// The parts back from a [`composite`] name.
pub fn parse_composite(name: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
    decode("record name", name)
}

// ----- rows -----

/// A one-time pre-key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreKeyRow {
    pub record: Vec<u8>,
    pub uploaded: bool,
}

/// An app-state sync key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncKeyRow {
    pub key_data: Vec<u8>,
    pub fingerprint: Vec<u8>,
    pub timestamp: i64,
}

/// An app-state collection's hash state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HashStateRow {
    pub version: u64,
    pub hash: Vec<u8>,
    /// Sorted by index, so equal states encode equally.
    pub index_value_map: Vec<(String, Vec<u8>)>,
    pub mac_mismatch_fatal: bool,
}

/// A LID to phone-number mapping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LidRow {
    pub lid: String,
    pub phone_number: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub learning_source: String,
}

/// The LIDs mapped to one phone number, oldest mapping first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PnIndexRow {
    pub lids: Vec<String>,
}

/// One device of a device list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceInfoRow {
    pub device_id: u32,
    pub key_index: Option<u32>,
    pub is_hosted: bool,
}

/// A user's device list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceListRow {
    pub user: String,
    pub devices: Vec<DeviceInfoRow>,
    pub timestamp: i64,
    pub phash: Option<String>,
    pub raw_id: Option<u32>,
}

/// A trusted-contact token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcTokenRow {
    pub token: Vec<u8>,
    pub token_timestamp: i64,
    pub sender_timestamp: Option<i64>,
}

/// A message secret with its retention deadline and parent message time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MsgSecretRow {
    pub secret: Vec<u8>,
    pub expires_at: i64,
    pub message_ts: i64,
}

/// The sender-key distribution status of a group's devices, sorted by device.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SenderKeyDevicesRow {
    pub devices: Vec<(String, bool)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_names_do_not_collide_and_round_trip() {
        let a = composite(&[b"a", b"bc"]);
        let b = composite(&[b"ab", b"c"]);
        assert_ne!(a, b);
        assert_eq!(
            parse_composite(&a).unwrap(),
            vec![b"a".to_vec(), b"bc".to_vec()]
        );
    }

    #[test]
    fn id_names_round_trip_and_reject_bad_lengths() {
        assert_eq!(parse_id(&id_name(0xdead_beef)).unwrap(), 0xdead_beef);
        assert!(parse_id(b"abc").is_err());
    }
}
