//! The bearer token of the web surface: 32 random bytes, hex, sealed in
//! `<vault>/web.token` under a key derived from the vault's master key.
//!
//! File: a sealed blob ([`crypto::seal_blob`]): version byte `0x01`, 24-byte
//! nonce, XChaCha20-Poly1305 ciphertext of the 64 hex characters with its
//! tag; associated data `"wavault web token" ‖ vault id`. Replaced
//! atomically (0600). In memory the token is a [`Token`], wiped when dropped.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::vault::crypto;
use crate::vault::Vault;

/// File name inside the vault folder.
pub const FILE: &str = "web.token";

/// The token's text, zeroized when dropped.
pub type Token = Zeroizing<String>;

fn ad(vault: &Vault) -> Vec<u8> {
    [b"wavault web token".as_slice(), &vault.id()].concat()
}

fn write(vault: &Vault, token: &str) -> Result<()> {
    let key = vault.purpose_key("web-token");
    let bytes = crypto::seal_blob(&key, &ad(vault), token.as_bytes());
    fsutil::write_atomic(&vault.dir().join(FILE), &bytes)
}

fn fresh() -> Token {
    let mut b = Zeroizing::new([0u8; 32]);
    crypto::fill_random(&mut b[..]);
    Zeroizing::new(crate::vault::hex(&b[..]))
}

/// The current token, if one was created.
pub fn load(vault: &Vault) -> Result<Option<Token>> {
    let path = vault.dir().join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let damaged = || Error::Damaged {
        what: format!("{} does not open", path.display()),
        hint: "replace it with `wavault token rotate`",
    };
    let key = vault.purpose_key("web-token");
    let plain = crypto::open_blob(&key, &ad(vault), &bytes).map_err(|_| damaged())?;
    match std::str::from_utf8(&plain) {
        Ok(s) => Ok(Some(Zeroizing::new(s.to_owned()))),
        Err(_) => Err(damaged()),
    }
}

/// The current token, created on first use.
pub fn load_or_create(vault: &Vault) -> Result<Token> {
    if let Some(t) = load(vault)? {
        return Ok(t);
    }
    let t = fresh();
    write(vault, &t)?;
    Ok(t)
}

/// Replaces the token; the old one stops working (a running `run` reads
/// the file again on its next request).
pub fn rotate(vault: &Vault) -> Result<Token> {
    let t = fresh();
    write(vault, &t)?;
    Ok(t)
}

/// Constant-time comparison of a presented token with the expected one
/// (`subtle`; only the length can differ early, and every token has the same length).
pub fn matches(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::crypto::KdfParams;

    #[test]
    fn file_written_by_the_old_envelope_still_opens() {
        let d = tempfile::tempdir().unwrap();
        let v = Vault::create(&d.path().join("v"), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
        // The envelope token.rs wrote before the shared sealed-blob helper:
        // 0x01 ‖ nonce ‖ seal(key, nonce, ad, token).
        let token = "ab".repeat(32);
        let key = v.purpose_key("web-token");
        let nonce = crypto::random_nonce();
        let old = [
            &[1u8][..],
            &nonce,
            &crypto::seal(&key, &nonce, &ad(&v), token.as_bytes()),
        ]
        .concat();
        std::fs::write(v.dir().join(FILE), &old).unwrap();
        assert_eq!(
            load(&v).unwrap().as_deref().map(String::as_str),
            Some(token.as_str())
        );

        // And what it writes now has the same layout.
        let new = rotate(&v).unwrap();
        let bytes = std::fs::read(v.dir().join(FILE)).unwrap();
        assert_eq!(bytes.len(), 1 + crypto::NONCE_LEN + 64 + crypto::TAG_LEN);
        assert_eq!(bytes[0], 1);
        let mut n = [0u8; crypto::NONCE_LEN];
        n.copy_from_slice(&bytes[1..1 + crypto::NONCE_LEN]);
        let plain = crypto::open(&key, &n, &ad(&v), &bytes[1 + crypto::NONCE_LEN..]).unwrap();
        assert_eq!(&plain[..], new.as_bytes());

        // A changed byte: damaged, exit 5.
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        std::fs::write(v.dir().join(FILE), &bad).unwrap();
        assert_eq!(load(&v).unwrap_err().exit_code(), 5);
    }

    #[test]
    fn matches_is_exact() {
        let t = "0123456789abcdef".repeat(4);
        assert!(matches(&t, &t));
        assert!(!matches(&t[..63], &t));
        assert!(!matches(&format!("{t}0"), &t));
        assert!(!matches(&t.replace('f', "e"), &t));
        assert!(!matches("", &t));
    }
}
