//! Entry points for the fuzz targets under `fuzz/`. The normal test suite
//! runs the same functions over the committed corpus (tests/vault/fuzz_corpus.rs).
//! Each must return without panicking for every input.

use crate::vault::crypto::{self, SecretKey};
use crate::vault::header::Header;
use crate::vault::record::{record_ad, Envelope, RecordBody};

/// The record decoder: envelope parse, open under a fixed key, body decode.
pub fn record_decoder(data: &[u8]) {
    let Ok(env) = Envelope::parse(data) else {
        return;
    };
    let key = SecretKey::from_bytes([7; 32]);
    let ad = record_ad(&[0; 16], b"records", b"key", env.term, env.version);
    // Unauthenticated bytes must fail cleanly; a forged tag is impossible here.
    let _ = crypto::open(&key, &env.nonce, &ad, env.ciphertext);
    // The decoder behind the AEAD must also be total on arbitrary plaintext.
    let _ = crate::codec::decode::<RecordBody>(env.ciphertext);
}

/// The key-slot (key file) parser, and re-encoding of what it accepts.
pub fn slot_parser(data: &[u8]) {
    if let Ok(h) = Header::parse(data) {
        assert_eq!(
            h.to_bytes(),
            data,
            "accepted key files re-encode byte for byte"
        );
        for s in &h.slots {
            // Parameters above the cap are refused before any work.
            if s.params.exceeds_cap() {
                assert!(crypto::derive_kek(b"x", &s.salt, s.params).is_err());
            }
        }
    }
}
