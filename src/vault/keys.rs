//! Key slots and data-key terms: what a passphrase unlocks (the master
//! key, then the keys derived from it and the terms it unwraps), and the key
//! file that holds them (read, MAC-checked, written atomically).

use std::collections::HashMap;
use std::path::Path;

use super::crypto::{self, KdfParams, SecretKey};
use super::header::{self, Header, HeaderError, Slot, Term, TermState};
use super::{fsutil, KEY_FILE};
use crate::error::{Error, Result};

/// Keys derived after a successful unlock.
pub(super) struct Keys {
    pub(super) master: SecretKey,
    pub(super) blind: SecretKey,
    pub(super) header_mac: SecretKey,
    pub(super) term_wrap: SecretKey,
}

/// The data-key terms currently usable.
pub(super) struct Terms {
    pub(super) active: u32,
    pub(super) keys: HashMap<u32, SecretKey>,
}

pub(super) fn derive_keys(master: SecretKey) -> Keys {
    Keys {
        blind: crypto::subkey(&master, b"blind-index v1"),
        header_mac: crypto::subkey(&master, b"header-mac v1"),
        term_wrap: crypto::subkey(&master, b"term-wrap v1"),
        master,
    }
}

pub(super) fn make_slot(
    h: &Header,
    id: u8,
    master: &SecretKey,
    passphrase: &[u8],
    params: KdfParams,
) -> Result<Slot> {
    let mut salt = [0u8; header::SALT_LEN];
    crypto::fill_random(&mut salt);
    let mut slot = Slot {
        id,
        kdf: header::KDF_ARGON2ID,
        params,
        salt,
        nonce: crypto::random_nonce(),
        wrapped: [0; header::WRAPPED_LEN],
    };
    let kek =
        crypto::derive_kek(passphrase, &salt, params).map_err(|e| Error::Usage(e.to_string()))?;
    let ct = crypto::seal(&kek, &slot.nonce, &h.slot_ad(&slot), master.expose());
    slot.wrapped.copy_from_slice(&ct);
    Ok(slot)
}

pub(super) fn wrap_term(
    h: &Header,
    wrap: &SecretKey,
    number: u32,
    state: TermState,
    key: &SecretKey,
) -> Term {
    let nonce = crypto::random_nonce();
    let ct = crypto::seal(wrap, &nonce, &h.term_ad(number), key.expose());
    let mut wrapped = [0u8; header::WRAPPED_LEN];
    wrapped.copy_from_slice(&ct);
    Term {
        number,
        state,
        nonce,
        wrapped,
    }
}

pub(super) fn unlock(h: &Header, passphrase: &[u8], dir: &Path) -> Result<(u8, SecretKey)> {
    for slot in &h.slots {
        if slot.kdf != header::KDF_ARGON2ID {
            continue;
        }
        if slot.params.exceeds_cap() {
            return Err(Error::damaged(format!(
                "key slot {} asks for Argon2 parameters above the cap (m={} KiB, t={}, p={}); refusing to run them",
                slot.id, slot.params.memory_kib, slot.params.iterations, slot.params.parallelism
            )));
        }
        let kek = crypto::derive_kek(passphrase, &slot.salt, slot.params)
            .map_err(|e| Error::damaged(format!("key slot {}: {e}", slot.id)))?;
        if let Ok(plain) = crypto::open(&kek, &slot.nonce, &h.slot_ad(slot), &slot.wrapped) {
            // Copied from the zeroizing plaintext straight into the key's box.
            if let Some(master) = SecretKey::from_slice(&plain) {
                return Ok((slot.id, master));
            }
        }
    }
    Err(Error::WrongPassphrase(dir.to_path_buf()))
}

/// Unlocks a slot of `h` with `passphrase`, checks the key file's MAC and
/// unwraps its terms: every key the vault's files give to a passphrase.
pub(super) fn unlock_keys(h: &Header, passphrase: &[u8], dir: &Path) -> Result<(u8, Keys, Terms)> {
    let (slot_id, master) = unlock(h, passphrase, dir)?;
    let keys = derive_keys(master);
    if !crypto::verify_mac(&keys.header_mac, &[&h.body_bytes()], &h.mac) {
        return Err(Error::damaged(format!(
            "{} failed its integrity check (edited or corrupted)",
            dir.join(KEY_FILE).display()
        )));
    }
    let terms = unwrap_terms(h, &keys.term_wrap)?;
    Ok((slot_id, keys, terms))
}

pub(super) fn unwrap_terms(h: &Header, wrap: &SecretKey) -> Result<Terms> {
    let mut keys = HashMap::new();
    for t in &h.terms {
        let plain = crypto::open(wrap, &t.nonce, &h.term_ad(t.number), &t.wrapped)
            .map_err(|_| Error::damaged(format!("data-key term {} does not unwrap", t.number)))?;
        let k = SecretKey::from_slice(&plain).ok_or_else(|| {
            Error::damaged(format!("data-key term {} has a bad length", t.number))
        })?;
        keys.insert(t.number, k);
    }
    Ok(Terms {
        active: h.active_term().number,
        keys,
    })
}

/// Reads and parses the key file.
pub(super) fn read_header(dir: &Path) -> Result<Header> {
    let path = dir.join(KEY_FILE);
    let bytes =
        std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Header::parse(&bytes).map_err(|e| match e {
        HeaderError::FutureVersion(_) => Error::Other(format!("{}: {e}", path.display())),
        _ => Error::damaged(format!("{}: {e}", path.display())),
    })
}

/// MACs `h` and replaces the key file atomically and durably.
pub(super) fn write_header(dir: &Path, mac_key: &SecretKey, h: &mut Header) -> Result<()> {
    h.mac = crypto::mac(mac_key, &[&h.body_bytes()]);
    fsutil::write_atomic(&dir.join(KEY_FILE), &h.to_bytes())
}
