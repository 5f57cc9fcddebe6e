//! The sealed value stored under every key in the vault's sled trees.
//!
//! ```text
//! [0]      record format version (RECORD_VERSION)
//! [1..5]   data-key term, u32 big endian
//! [5..29]  XChaCha20-Poly1305 nonce (random)
//! [29..]   ciphertext of codec(RecordBody) followed by the 16-byte tag
//! ```
//! The associated data binds the vault id, the tree, the full sled key, the
//! term and the format version ([`record_ad`]), so a sealed value copied to
//! another key, bot, tree or vault fails to open.

use super::crypto::{NONCE_LEN, TAG_LEN};
use serde::{Deserialize, Serialize};

/// Version of the sealed-record layout this build writes.
pub const RECORD_VERSION: u8 = 1;
/// Bytes before the ciphertext.
pub const RECORD_PREFIX: usize = 1 + 4 + NONCE_LEN;

/// The parsed, still sealed, envelope of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub version: u8,
    pub term: u32,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: &'a [u8],
}

/// What a record holds once opened: its real name (the key on disk is only
/// a blind index of it), its data, and when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBody {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    /// Unix seconds of the write that produced this value (kept on re-seal).
    pub written_at: i64,
}

/// Why a stored value is not a well-formed envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("record is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("record format version {0} is newer than this wavault understands; upgrade wavault")]
    FutureVersion(u8),
}

impl<'a> Envelope<'a> {
    /// Splits stored bytes into their parts. Authenticates nothing.
    pub fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, EnvelopeError> {
        if bytes.len() < RECORD_PREFIX + TAG_LEN {
            return Err(EnvelopeError::Truncated(bytes.len()));
        }
        if bytes[0] != RECORD_VERSION {
            return Err(EnvelopeError::FutureVersion(bytes[0]));
        }
        let mut term = [0u8; 4];
        term.copy_from_slice(&bytes[1..5]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[5..RECORD_PREFIX]);
        Ok(Envelope {
            version: bytes[0],
            term: u32::from_be_bytes(term),
            nonce,
            ciphertext: &bytes[RECORD_PREFIX..],
        })
    }

    /// Serializes an envelope around `ciphertext`.
    pub fn write(term: u32, nonce: &[u8; NONCE_LEN], ciphertext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_PREFIX + ciphertext.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(&term.to_be_bytes());
        out.extend_from_slice(nonce);
        out.extend_from_slice(ciphertext);
        out
    }
}

/// Associated data for a record stored under `key` in `tree`.
pub fn record_ad(vault_id: &[u8], tree: &[u8], key: &[u8], term: u32, version: u8) -> Vec<u8> {
    let mut ad = Vec::with_capacity(32 + vault_id.len() + tree.len() + key.len());
    ad.extend_from_slice(b"wavault record v1");
    for part in [vault_id, tree, key] {
        ad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        ad.extend_from_slice(part);
    }
    ad.extend_from_slice(&term.to_be_bytes());
    ad.push(version);
    ad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_write_round_trip() {
        let ct = [9u8; 40];
        let b = Envelope::write(3, &[1; NONCE_LEN], &ct);
        let e = Envelope::parse(&b).unwrap();
        assert_eq!(
            (e.version, e.term, e.ciphertext),
            (RECORD_VERSION, 3, &ct[..])
        );
    }

    #[test]
    fn short_and_future_are_rejected() {
        assert_eq!(Envelope::parse(&[1; 10]), Err(EnvelopeError::Truncated(10)));
        let mut b = Envelope::write(1, &[0; NONCE_LEN], &[0; TAG_LEN]);
        b[0] = 2;
        assert_eq!(Envelope::parse(&b), Err(EnvelopeError::FutureVersion(2)));
    }
}
