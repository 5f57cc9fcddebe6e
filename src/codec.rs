//! The one place that turns Rust values into bytes and back.
//!
//! bincode is frozen upstream, so it lives behind this module only. Every
//! encoded value starts with a codec version byte; a future codec gets a new
//! byte and this module keeps reading the old one, so files never break.
//!
//! Layout: `[CODEC_V1] ++ bincode(varint, little endian, no trailing bytes)`.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

/// Codec byte for bincode 1.3 with varint integers.
pub const CODEC_V1: u8 = 1;
/// The largest value the codec will decode (guards allocation on bad input).
pub const MAX_DECODE: u64 = 64 * 1024 * 1024;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty input")]
    Empty,
    #[error("unknown codec version {0} (written by a newer wavault?)")]
    UnknownVersion(u8),
    #[error("malformed value: {0}")]
    Malformed(String),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_DECODE)
        .reject_trailing_bytes()
}

/// Encodes `value` with the current codec.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![CODEC_V1];
    // Serializing our own plain data types into a Vec cannot fail.
    options()
        .serialize_into(&mut out, value)
        .expect("in-memory serialization of plain data");
    out
}

/// Decodes bytes written by [`encode`] (any codec version this build knows).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        CODEC_V1 => options()
            .deserialize(body)
            .map_err(|e| CodecError::Malformed(e.to_string())),
        other => Err(CodecError::UnknownVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_byte() {
        let v = (7u32, String::from("x"), vec![1u8, 2]);
        let b = encode(&v);
        assert_eq!(b[0], CODEC_V1);
        assert_eq!(decode::<(u32, String, Vec<u8>)>(&b).unwrap(), v);
    }

    #[test]
    fn rejects_unknown_version_trailing_and_huge() {
        let mut b = encode(&5u32);
        b[0] = 9;
        assert!(matches!(
            decode::<u32>(&b),
            Err(CodecError::UnknownVersion(9))
        ));
        let mut b = encode(&5u32);
        b.push(0);
        assert!(decode::<u32>(&b).is_err());
        // A length prefix claiming 2^60 bytes must not allocate.
        let mut b = vec![CODEC_V1, 0xff];
        b.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<Vec<u8>>(&b).is_err());
        assert!(matches!(decode::<u32>(&[]), Err(CodecError::Empty)));
    }
}
