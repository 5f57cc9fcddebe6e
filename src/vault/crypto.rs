//! Every cryptographic primitive wavault uses, in one place.
//!
//! Nothing outside this module calls `chacha20poly1305`, `argon2`, `hmac` or
//! `hkdf` directly: the rest of the vault speaks in terms of [`SecretKey`],
//! [`seal`], [`open`], [`derive_kek`], [`subkey`] and [`blind`]. Keeping the
//! primitives here keeps them reviewable and makes a future algorithm change
//! a one-file change.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of every symmetric key.
pub const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of a Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of a blind index (truncated HMAC-SHA256).
pub const BLIND_LEN: usize = 16;

/// A 256-bit secret key, on the heap: moving a `SecretKey` (into a map, out
/// of a function) moves a pointer and leaves no copy of the key bytes
/// behind; keys are generated, derived and unwrapped straight into the box.
/// Its `Debug` is redacted, it is neither `Clone` nor `Copy` (a second copy
/// would be a second thing to wipe; share one through a reference or an
/// `Arc`), and the bytes are wiped when it is dropped. Read it only through
/// [`SecretKey::expose`].
pub struct SecretKey(Box<[u8; KEY_LEN]>);

impl SecretKey {
    /// An all-zero key, to be filled in place.
    fn zeroed() -> Self {
        SecretKey(Box::new([0u8; KEY_LEN]))
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn random() -> Self {
        let mut k = Self::zeroed();
        fill_random(&mut k.0[..]);
        k
    }

    /// Copies raw key bytes (a decrypted slot or term) into a new key; `None`
    /// unless `bytes` is exactly [`KEY_LEN`] long. The caller wipes its copy
    /// (e.g. by holding it in `Zeroizing`, as [`open`] returns it).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut k = Self::zeroed();
        k.0.copy_from_slice(bytes);
        Some(k)
    }

    /// Wraps raw key bytes. The array is taken by value, so the caller's
    /// copy is left for it to wipe: prefer [`SecretKey::from_slice`] from a
    /// `Zeroizing` buffer.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let mut k = Self::zeroed();
        *k.0 = bytes;
        bytes.zeroize();
        k
    }

    /// The raw bytes: only for sealing them under another key.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Zeroize for SecretKey {
    fn zeroize(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Argon2id cost parameters as stored in a key slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations (time cost).
    pub iterations: u32,
    /// Lanes (parallelism).
    pub parallelism: u32,
}

impl KdfParams {
    /// RFC 9106 second recommended option: m = 64 MiB, t = 3, p = 4.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };
    /// The most a stored slot may ask for. A crafted file asking for more is
    /// refused before any memory is allocated.
    pub const MAX: KdfParams = KdfParams {
        memory_kib: 4 * 1024 * 1024,
        iterations: 64,
        parallelism: 64,
    };
    /// Deliberately weak parameters for tests and benchmarks. Never a default.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    /// True when any parameter is above [`KdfParams::MAX`].
    pub fn exceeds_cap(&self) -> bool {
        self.memory_kib > Self::MAX.memory_kib
            || self.iterations > Self::MAX.iterations
            || self.parallelism > Self::MAX.parallelism
    }

    /// True when any parameter is below the default (weaker than RFC 9106).
    pub fn below_default(&self) -> bool {
        self.memory_kib < Self::DEFAULT.memory_kib
            || self.iterations < Self::DEFAULT.iterations
            || self.parallelism < Self::DEFAULT.parallelism
    }
}

/// Why a cryptographic operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("authentication failed (wrong key, or the data was changed)")]
    Auth,
    #[error("argon2 parameters rejected: {0}")]
    Params(String),
}

/// Fills `buf` with random bytes from the operating system.
pub fn fill_random(buf: &mut [u8]) {
    // The OS RNG failing is unrecoverable: there is no safe way to make a key.
    getrandom::getrandom(buf).expect("operating system random number generator failed");
}

/// A random 24-byte nonce.
pub fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    fill_random(&mut n);
    n
}

/// Derives a key-encryption key from a passphrase with Argon2id.
pub fn derive_kek(
    passphrase: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<SecretKey, CryptoError> {
    if params.exceeds_cap() {
        return Err(CryptoError::Params(format!(
            "m={} KiB t={} p={} is above the cap",
            params.memory_kib, params.iterations, params.parallelism
        )));
    }
    let p = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(KEY_LEN),
    )
    .map_err(|e| CryptoError::Params(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
    // Derived straight into the key's box; on failure it is wiped on drop.
    let mut key = SecretKey::zeroed();
    argon
        .hash_password_into(passphrase, salt, &mut key.0[..])
        .map_err(|e| CryptoError::Params(e.to_string()))?;
    Ok(key)
}

/// Seals `plaintext` with XChaCha20-Poly1305 under `key` and `nonce`, binding `ad`.
/// Returns ciphertext followed by the 16-byte tag.
pub fn seal(key: &SecretKey, nonce: &[u8; NONCE_LEN], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    // Encryption only fails for inputs beyond 2^38 bytes, which we never build.
    cipher
        .encrypt(
            nonce.into(),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .expect("plaintext within XChaCha20-Poly1305 limits")
}

/// Opens what [`seal`] produced. The plaintext is zeroized when dropped.
pub fn open(
    key: &SecretKey,
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: ciphertext,
                aad: ad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Auth)
}

/// Version byte of a sealed blob ([`seal_blob`]): XChaCha20-Poly1305.
pub const BLOB_VERSION: u8 = 1;

/// A self-contained sealed blob: version byte [`BLOB_VERSION`], a fresh
/// random 24-byte nonce, then [`seal`]'s ciphertext and tag, binding `ad`.
/// For small secrets kept in their own file (the web token).
pub fn seal_blob(key: &SecretKey, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = random_nonce();
    let sealed = seal(key, &nonce, ad, plaintext);
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(BLOB_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens what [`seal_blob`] produced. A short blob, another version byte, a
/// wrong key or `ad`, or changed bytes: [`CryptoError::Auth`].
pub fn open_blob(
    key: &SecretKey,
    ad: &[u8],
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let Some((&version, rest)) = blob.split_first() else {
        return Err(CryptoError::Auth);
    };
    if version != BLOB_VERSION || rest.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Auth);
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce);
    open(key, &n, ad, sealed)
}

/// Derives a purpose-bound sub-key from `master` (HKDF-SHA256, `info` names the purpose).
pub fn subkey(master: &SecretKey, info: &[u8]) -> SecretKey {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(b"wavault subkey v1"), master.expose());
    let mut key = SecretKey::zeroed();
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
    hk.expand(info, &mut key.0[..])
        .expect("HKDF output length valid");
    key
}

/// HMAC-SHA256 of length-prefixed `parts` under `key`.
pub fn mac(key: &SecretKey, parts: &[&[u8]]) -> [u8; 32] {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("HMAC takes any key length");
    for p in parts {
        m.update(&(p.len() as u32).to_be_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Checks a MAC made by [`mac`] in constant time.
pub fn verify_mac(key: &SecretKey, parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("HMAC takes any key length");
    for p in parts {
        m.update(&(p.len() as u32).to_be_bytes());
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

/// A blind index: the first [`BLIND_LEN`] bytes of [`mac`]. Equal inputs give
/// equal indexes; without the key nothing about the input can be learned.
pub fn blind(key: &SecretKey, parts: &[&[u8]]) -> [u8; BLIND_LEN] {
    let full = mac(key, parts);
    let mut out = [0u8; BLIND_LEN];
    out.copy_from_slice(&full[..BLIND_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_ad_binding() {
        let k = SecretKey::random();
        let n = random_nonce();
        let ct = seal(&k, &n, b"ad", b"hello");
        assert_eq!(&open(&k, &n, b"ad", &ct).unwrap()[..], b"hello");
        assert_eq!(open(&k, &n, b"other", &ct), Err(CryptoError::Auth));
        assert_eq!(
            open(&SecretKey::random(), &n, b"ad", &ct),
            Err(CryptoError::Auth)
        );
    }

    #[test]
    fn sealed_blob_layout_round_trip_and_refusals() {
        let k = SecretKey::random();
        let blob = seal_blob(&k, b"ad", b"secret");
        assert_eq!(blob[0], BLOB_VERSION);
        assert_eq!(blob.len(), 1 + NONCE_LEN + 6 + TAG_LEN);
        // The layout is version, nonce, then what `seal` makes with that nonce.
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&blob[1..1 + NONCE_LEN]);
        assert_eq!(
            &open(&k, &n, b"ad", &blob[1 + NONCE_LEN..]).unwrap()[..],
            b"secret"
        );
        assert_eq!(&open_blob(&k, b"ad", &blob).unwrap()[..], b"secret");
        assert_eq!(open_blob(&k, b"other", &blob), Err(CryptoError::Auth));
        let mut v2 = blob.clone();
        v2[0] = 2;
        assert_eq!(open_blob(&k, b"ad", &v2), Err(CryptoError::Auth));
        for len in 0..1 + NONCE_LEN + TAG_LEN {
            assert_eq!(open_blob(&k, b"ad", &blob[..len]), Err(CryptoError::Auth));
        }
    }

    #[test]
    fn kdf_refuses_params_above_cap_before_work() {
        let p = KdfParams {
            memory_kib: KdfParams::MAX.memory_kib + 1,
            ..KdfParams::INSECURE_FOR_TESTS
        };
        assert!(matches!(
            derive_kek(b"x", &[0; 16], p),
            Err(CryptoError::Params(_))
        ));
    }

    #[test]
    fn kdf_is_deterministic_and_salted() {
        let p = KdfParams::INSECURE_FOR_TESTS;
        let a = derive_kek(b"pw", &[1; 16], p).unwrap();
        let b = derive_kek(b"pw", &[1; 16], p).unwrap();
        let c = derive_kek(b"pw", &[2; 16], p).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert_ne!(a.expose(), c.expose());
    }

    #[test]
    fn secret_key_is_boxed_redacted_and_wipeable() {
        // Moving a key (into a map, out of a function) moves a pointer: no
        // stale copy of the key bytes is left where it was.
        assert_eq!(
            std::mem::size_of::<SecretKey>(),
            std::mem::size_of::<usize>()
        );
        let k = SecretKey::random();
        assert_eq!(format!("{k:?}"), "SecretKey(<redacted>)");
        let mut k = SecretKey::random();
        assert_ne!(k.expose(), &[0; KEY_LEN]);
        k.zeroize();
        assert_eq!(k.expose(), &[0; KEY_LEN]);
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<SecretKey>();
    }

    /// Compiles only while `SecretKey` is not `Clone` (and so not `Copy`):
    /// with `Clone`, both impls apply and the call below is ambiguous.
    #[test]
    fn secret_key_is_not_clone() {
        trait AmbiguousIfClone<A> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfClone<()> for T {}
        struct IsClone;
        impl<T: Clone> AmbiguousIfClone<IsClone> for T {}
        <SecretKey as AmbiguousIfClone<_>>::check();
    }

    #[test]
    fn blind_is_length_prefixed() {
        let k = SecretKey::random();
        assert_ne!(blind(&k, &[b"ab", b"c"]), blind(&k, &[b"a", b"bc"]));
        assert_eq!(blind(&k, &[b"ab"]), blind(&k, &[b"ab"]));
    }
}
