//! The bearer token of the web surface: 32 random bytes, hex, sealed in
//! `<vault>/web.token` under a key derived from the vault's master key.
//!
//! File: version byte `0x01`, 24-byte nonce, XChaCha20-Poly1305 ciphertext
//! of the 64 hex characters with its tag; associated data
//! `"wavault web token" ‖ vault id`. Replaced atomically (0600).

use crate::error::{Error, Result};
use crate::vault::crypto;
use crate::vault::{fsutil, Vault};

/// File name inside the vault folder.
pub const FILE: &str = "web.token";
const VERSION: u8 = 1;

fn ad(vault: &Vault) -> Vec<u8> {
    [b"wavault web token".as_slice(), &vault.id()].concat()
}

fn write(vault: &Vault, token: &str) -> Result<()> {
    let key = vault.purpose_key("web-token");
    let nonce = crypto::random_nonce();
    let sealed = crypto::seal(&key, &nonce, &ad(vault), token.as_bytes());
    let bytes = [&[VERSION][..], &nonce, &sealed].concat();
    fsutil::write_atomic(&vault.dir().join(FILE), &bytes)
}

fn fresh() -> String {
    let mut b = [0u8; 32];
    crypto::fill_random(&mut b);
    crate::vault::hex(&b)
}

/// The current token, if one was created.
pub fn load(vault: &Vault) -> Result<Option<String>> {
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
    if bytes.len() < 1 + crypto::NONCE_LEN + crypto::TAG_LEN || bytes[0] != VERSION {
        return Err(damaged());
    }
    let mut nonce = [0u8; crypto::NONCE_LEN];
    nonce.copy_from_slice(&bytes[1..1 + crypto::NONCE_LEN]);
    let key = vault.purpose_key("web-token");
    let plain = crypto::open(&key, &nonce, &ad(vault), &bytes[1 + crypto::NONCE_LEN..])
        .map_err(|_| damaged())?;
    String::from_utf8(plain.to_vec())
        .map(Some)
        .map_err(|_| damaged())
}

/// The current token, created on first use.
pub fn load_or_create(vault: &Vault) -> Result<String> {
    if let Some(t) = load(vault)? {
        return Ok(t);
    }
    let t = fresh();
    write(vault, &t)?;
    Ok(t)
}

/// Replaces the token; the old one stops working (a running `run` reads
/// the file again on its next request).
pub fn rotate(vault: &Vault) -> Result<String> {
    let t = fresh();
    write(vault, &t)?;
    Ok(t)
}

/// Constant-time comparison of a presented token with the expected one.
pub fn matches(presented: &str, expected: &str) -> bool {
    use subtle_eq::ct_eq;
    ct_eq(presented.as_bytes(), expected.as_bytes())
}

mod subtle_eq {
    /// Equal length and equal bytes, without an early exit on the first difference.
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}
