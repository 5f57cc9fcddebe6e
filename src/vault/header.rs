//! The key file (`vault.keys`): key slots and data-key terms.
//!
//! This file is parsed by hand with fixed, bounded sizes because it is read
//! before anything is authenticated: a crafted file can make the parser
//! return an error, never allocate much or run an expensive KDF (the Argon2
//! parameters are checked against [`KdfParams::MAX`] before use).
//! The byte layout is documented in docs/FORMAT.md; this module is the
//! reference for it.

use super::crypto::{KdfParams, NONCE_LEN, TAG_LEN};

/// Magic bytes at the start of the key file.
pub const MAGIC: &[u8; 8] = b"WAVAULTK";
/// Version of the key-file layout this build writes.
pub const HEADER_VERSION: u8 = 1;
/// Most key slots a vault may have.
pub const MAX_SLOTS: usize = 8;
/// Most data-key terms alive at once (active plus those being retired).
pub const MAX_TERMS: usize = 4;
/// KDF identifier for Argon2id version 0x13.
pub const KDF_ARGON2ID: u8 = 1;
/// Length of the vault id.
pub const VAULT_ID_LEN: usize = 16;
/// Length of a slot's salt.
pub const SALT_LEN: usize = 16;
/// A wrapped 32-byte key: ciphertext plus tag.
pub const WRAPPED_LEN: usize = 32 + TAG_LEN;
/// Bytes of one slot.
pub const SLOT_LEN: usize = 1 + 1 + 12 + SALT_LEN + NONCE_LEN + WRAPPED_LEN;
/// Bytes of one term.
pub const TERM_LEN: usize = 4 + 1 + NONCE_LEN + WRAPPED_LEN;
/// Bytes of the header MAC.
pub const MAC_LEN: usize = 32;
const FIXED_PREFIX: usize = 8 + 1 + VAULT_ID_LEN + 8;

/// One key slot: the master key wrapped under a passphrase-derived key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub id: u8,
    pub kdf: u8,
    pub params: KdfParams,
    pub salt: [u8; SALT_LEN],
    pub nonce: [u8; NONCE_LEN],
    pub wrapped: [u8; WRAPPED_LEN],
}

/// State of a data-key term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermState {
    /// New records are sealed with this term.
    Active = 1,
    /// Records are being re-sealed away from this term; it still opens them.
    Retiring = 2,
}

/// One data-key term: a record key wrapped under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub number: u32,
    pub state: TermState,
    pub nonce: [u8; NONCE_LEN],
    pub wrapped: [u8; WRAPPED_LEN],
}

/// The parsed key file. `mac` covers every byte before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub vault_id: [u8; VAULT_ID_LEN],
    pub created_at: u64,
    pub slots: Vec<Slot>,
    pub terms: Vec<Term>,
    pub mac: [u8; MAC_LEN],
}

/// Why a key file could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("not a wavault key file (bad magic)")]
    BadMagic,
    #[error("key file version {0} is newer than this wavault understands (max {HEADER_VERSION}); upgrade wavault")]
    FutureVersion(u8),
    #[error("key file is truncated")]
    Truncated,
    #[error("key file has {0} trailing bytes")]
    Trailing(usize),
    #[error("key file is malformed: {0}")]
    Malformed(&'static str),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HeaderError> {
        if self.buf.len() < n {
            return Err(HeaderError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, HeaderError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

impl Header {
    /// Parses a key file. Checks structure only: nothing here is authenticated.
    pub fn parse(bytes: &[u8]) -> Result<Header, HeaderError> {
        let mut r = Reader { buf: bytes };
        if r.take(8).map_err(|_| HeaderError::BadMagic)? != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = r.u8()?;
        if version != HEADER_VERSION {
            return Err(HeaderError::FutureVersion(version));
        }
        let vault_id = r.array()?;
        let created_at = r.u64()?;
        let slots = parse_list(&mut r, MAX_SLOTS, parse_slot)?;
        let terms = parse_list(&mut r, MAX_TERMS, parse_term)?;
        validate_terms(&terms)?;
        let mac = r.array()?;
        if !r.buf.is_empty() {
            return Err(HeaderError::Trailing(r.buf.len()));
        }
        Ok(Header {
            vault_id,
            created_at,
            slots,
            terms,
            mac,
        })
    }

    /// The bytes the MAC covers (everything but the MAC itself).
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            FIXED_PREFIX + 2 + self.slots.len() * SLOT_LEN + self.terms.len() * TERM_LEN,
        );
        out.extend_from_slice(MAGIC);
        out.push(HEADER_VERSION);
        out.extend_from_slice(&self.vault_id);
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.push(self.slots.len() as u8);
        for s in &self.slots {
            out.push(s.id);
            out.push(s.kdf);
            out.extend_from_slice(&s.params.memory_kib.to_be_bytes());
            out.extend_from_slice(&s.params.iterations.to_be_bytes());
            out.extend_from_slice(&s.params.parallelism.to_be_bytes());
            out.extend_from_slice(&s.salt);
            out.extend_from_slice(&s.nonce);
            out.extend_from_slice(&s.wrapped);
        }
        out.push(self.terms.len() as u8);
        for t in &self.terms {
            out.extend_from_slice(&t.number.to_be_bytes());
            out.push(t.state as u8);
            out.extend_from_slice(&t.nonce);
            out.extend_from_slice(&t.wrapped);
        }
        out
    }

    /// The whole file: body then MAC.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body_bytes();
        out.extend_from_slice(&self.mac);
        out
    }

    /// The term new records are sealed with.
    pub fn active_term(&self) -> &Term {
        // `parse` and every writer keep exactly one active term.
        self.terms
            .iter()
            .find(|t| t.state == TermState::Active)
            .expect("exactly one active term (checked on parse)")
    }

    /// Associated data binding a slot's wrapped master key to its vault and parameters.
    pub fn slot_ad(&self, s: &Slot) -> Vec<u8> {
        let mut ad = b"wavault slot v1".to_vec();
        ad.extend_from_slice(&self.vault_id);
        ad.push(s.id);
        ad.push(s.kdf);
        ad.extend_from_slice(&s.params.memory_kib.to_be_bytes());
        ad.extend_from_slice(&s.params.iterations.to_be_bytes());
        ad.extend_from_slice(&s.params.parallelism.to_be_bytes());
        ad.extend_from_slice(&s.salt);
        ad
    }

    /// Associated data binding a term key to its vault and number.
    pub fn term_ad(&self, number: u32) -> Vec<u8> {
        let mut ad = b"wavault term v1".to_vec();
        ad.extend_from_slice(&self.vault_id);
        ad.extend_from_slice(&number.to_be_bytes());
        ad
    }
}

fn parse_list<T>(
    r: &mut Reader<'_>,
    max: usize,
    item: fn(&mut Reader<'_>) -> Result<T, HeaderError>,
) -> Result<Vec<T>, HeaderError> {
    let n = r.u8()? as usize;
    if n == 0 || n > max {
        return Err(HeaderError::Malformed("list count out of range"));
    }
    (0..n).map(|_| item(r)).collect()
}

fn parse_slot(r: &mut Reader<'_>) -> Result<Slot, HeaderError> {
    Ok(Slot {
        id: r.u8()?,
        kdf: r.u8()?,
        params: KdfParams {
            memory_kib: r.u32()?,
            iterations: r.u32()?,
            parallelism: r.u32()?,
        },
        salt: r.array()?,
        nonce: r.array()?,
        wrapped: r.array()?,
    })
}

fn parse_term(r: &mut Reader<'_>) -> Result<Term, HeaderError> {
    let number = r.u32()?;
    let state = match r.u8()? {
        1 => TermState::Active,
        2 => TermState::Retiring,
        _ => return Err(HeaderError::Malformed("unknown term state")),
    };
    Ok(Term {
        number,
        state,
        nonce: r.array()?,
        wrapped: r.array()?,
    })
}

fn validate_terms(terms: &[Term]) -> Result<(), HeaderError> {
    let active = terms
        .iter()
        .filter(|t| t.state == TermState::Active)
        .count();
    if active != 1 {
        return Err(HeaderError::Malformed(
            "there must be exactly one active term",
        ));
    }
    for (i, t) in terms.iter().enumerate() {
        if terms[..i].iter().any(|o| o.number == t.number) {
            return Err(HeaderError::Malformed("duplicate term number"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            vault_id: [7; VAULT_ID_LEN],
            created_at: 1_700_000_000,
            slots: vec![Slot {
                id: 0,
                kdf: KDF_ARGON2ID,
                params: KdfParams::DEFAULT,
                salt: [1; SALT_LEN],
                nonce: [2; NONCE_LEN],
                wrapped: [3; WRAPPED_LEN],
            }],
            terms: vec![Term {
                number: 1,
                state: TermState::Active,
                nonce: [4; NONCE_LEN],
                wrapped: [5; WRAPPED_LEN],
            }],
            mac: [6; MAC_LEN],
        }
    }

    #[test]
    fn round_trip() {
        let h = sample();
        assert_eq!(Header::parse(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = sample().to_bytes();
        for n in 0..b.len() {
            assert!(Header::parse(&b[..n]).is_err(), "prefix {n} parsed");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(Header::parse(&long), Err(HeaderError::Trailing(1)));
    }

    #[test]
    fn future_version_is_named() {
        let mut b = sample().to_bytes();
        b[8] = 9;
        assert_eq!(Header::parse(&b), Err(HeaderError::FutureVersion(9)));
    }

    #[test]
    fn slot_count_is_bounded() {
        let mut b = sample().to_bytes();
        b[FIXED_PREFIX] = 200;
        assert!(matches!(Header::parse(&b), Err(HeaderError::Malformed(_))));
    }
}
