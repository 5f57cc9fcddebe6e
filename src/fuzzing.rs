//! Entry points for the fuzz targets under `fuzz/`. The normal test suite
//! runs the same functions over the committed corpus (tests/vault/fuzz_corpus.rs).
//! Each must return without panicking for every input.

use crate::backup::stream::{self, BackupError};
use crate::vault::crypto::{self, KdfParams, SecretKey};
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

/// The passphrase of the backup_reader seed corpus.
pub const BACKUP_PASSPHRASE: &[u8] = b"fuzz";

/// The most Argon2 work `backup_reader` lets an input ask for: 64 KiB, two
/// passes, two lanes (well under a millisecond). Inputs within the cap but
/// above this are skipped, so the fuzzer spends its time in the parsers, not
/// in Argon2; the seed corpus uses [`KdfParams::INSECURE_FOR_TESTS`].
pub const BACKUP_FUZZ_KDF_LIMIT: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 2,
    parallelism: 2,
};

/// The backup reader: header checks, KDF cap, key unwrap, header MAC, then
/// every chunk, under [`BACKUP_PASSPHRASE`].
///
/// Inputs declaring Argon2 parameters above [`KdfParams::MAX`] are read too:
/// they must be refused before any key derivation (so never with a
/// passphrase or authentication error). Inputs declaring parameters within
/// the cap but above [`BACKUP_FUZZ_KDF_LIMIT`] are skipped (see there).
pub fn backup_reader(data: &[u8]) {
    if let Some(kdf) = stream::declared_kdf(data) {
        if kdf.exceeds_cap() {
            let res = stream::read_all(data, BACKUP_PASSPHRASE);
            assert!(
                matches!(
                    res,
                    Err(BackupError::KdfTooExpensive
                        | BackupError::NotABackup
                        | BackupError::FutureVersion(_)
                        | BackupError::Truncated { after_chunks: 0 })
                ),
                "parameters above the cap must stop the reader before the KDF: {res:?}"
            );
            return;
        }
        let limit = BACKUP_FUZZ_KDF_LIMIT;
        if kdf.memory_kib > limit.memory_kib
            || kdf.iterations > limit.iterations
            || kdf.parallelism > limit.parallelism
        {
            return;
        }
    }
    if let Ok((info, plain)) = stream::read_all(data, BACKUP_PASSPHRASE) {
        // Only a complete, authenticated file reads; its size follows from the plaintext.
        assert_eq!(info.version, stream::VERSION);
        let chunks = plain.len() / stream::CHUNK_LEN;
        let expected = stream::HEADER_LEN
            + chunks * stream::FULL_CHUNK_FRAME
            + stream::FRAME_LEN
            + plain.len() % stream::CHUNK_LEN
            + crypto::TAG_LEN;
        assert_eq!(
            data.len(),
            expected,
            "accepted backup has the size its plaintext implies"
        );
    }
}
