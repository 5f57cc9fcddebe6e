//! The backup file stream: a header, then the payload sealed in 64 KiB chunks.
//!
//! The header is parsed by hand with fixed sizes because it is read before
//! anything is authenticated: a crafted file can make the reader return an
//! error, never allocate much or run an expensive KDF (the Argon2 parameters
//! are checked against [`KdfParams::MAX`] before use). The payload follows the
//! STREAM construction: every chunk's nonce holds its position and whether it
//! is the last one, so a truncated, reordered, spliced or extended file never
//! reads as complete. The byte layout is documented in docs/FORMAT.md
//! ("Backup files"); this module is the reference for it.
//!
//! Checks on read, in order: magic ([`BackupError::NotABackup`]), version
//! ([`BackupError::FutureVersion`]), KDF cap ([`BackupError::KdfTooExpensive`],
//! before any KDF work), the reader's memory limit
//! ([`BackupError::KdfMemoryAboveLimit`], 1 GiB unless raised), unwrap of the file key ([`BackupError::WrongPassphrase`]),
//! header MAC ([`BackupError::HeaderTampered`]); then per chunk: frame length,
//! tag ([`BackupError::ChunkTampered`]), end of input
//! ([`BackupError::Truncated`], [`BackupError::TrailingBytes`]).

use std::io::{self, Read, Write};

use zeroize::{Zeroize, Zeroizing};

use crate::vault::crypto::{self, KdfParams, SecretKey, KEY_LEN, NONCE_LEN, TAG_LEN};

/// Magic bytes at the start of a backup file.
pub const MAGIC: &[u8; 8] = b"WAVAULTB";
/// Version of the backup layout this build writes (and the newest it reads).
pub const VERSION: u8 = 1;
/// Plaintext bytes in every chunk but the last (the last holds fewer).
pub const CHUNK_LEN: usize = 64 * 1024;
/// Length of the Argon2id salt.
pub const SALT_LEN: usize = 16;
/// Length of the per-file nonce prefix of the payload chunks.
pub const NONCE_PREFIX_LEN: usize = 16;
/// A wrapped 32-byte file key: ciphertext plus tag.
pub const WRAPPED_LEN: usize = KEY_LEN + TAG_LEN;
/// Bytes of the header MAC.
pub const MAC_LEN: usize = 32;
/// Offset of the Argon2id parameters (three u32 little endian).
pub const KDF_OFFSET: usize = 9;
/// Bytes of the length field in front of each chunk.
pub const FRAME_LEN: usize = 4;
/// Bytes of a full (non-last) chunk on disk: length field, ciphertext, tag.
pub const FULL_CHUNK_FRAME: usize = FRAME_LEN + CHUNK_LEN + TAG_LEN;
/// Most chunks a file may have: the chunk counter in the nonce is 7 bytes.
pub const MAX_CHUNKS: u64 = 1 << 56;

const SALT_OFFSET: usize = KDF_OFFSET + 12;
const PREFIX_OFFSET: usize = SALT_OFFSET + SALT_LEN;
/// The wrapped file key's associated data is every header byte before it.
const WRAP_AD_LEN: usize = PREFIX_OFFSET + NONCE_PREFIX_LEN;
const MAC_OFFSET: usize = WRAP_AD_LEN + NONCE_LEN + WRAPPED_LEN;
/// Bytes of the whole header.
pub const HEADER_LEN: usize = MAC_OFFSET + MAC_LEN;

/// The most Argon2id memory (KiB) a backup file may ask for when it is read,
/// unless the reader raises it (`--max-kdf-memory-mib`, up to
/// [`KdfParams::MAX`]): 1 GiB. The parameters are used before anything is
/// authenticated, so a crafted header must not pick how much memory restore
/// allocates.
pub const DEFAULT_MAX_READ_MEMORY_KIB: u32 = 1024 * 1024;

/// HKDF info of the header-MAC key (sub-key of the file key).
const HEADER_MAC_INFO: &[u8] = b"backup header-mac v1";
/// HKDF info of the payload key (sub-key of the file key).
const PAYLOAD_INFO: &[u8] = b"backup payload v1";

/// What the header says, available after `open` authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    pub version: u8,
    pub kdf: KdfParams,
}

/// Error for everything this module reports. Each variant's Display is a
/// complete message that names the problem and the way out.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("this is not a wavault backup file (it is too short or does not start with the backup magic): check the file name given")]
    NotABackup,

    #[error("this backup file has format version {0}: it was made by a newer wavault (this one reads version {VERSION}); upgrade wavault to read it")]
    FutureVersion(u8),

    #[error("the backup file asks for Argon2id parameters above the cap (memory 4 GiB, 64 iterations, 64 lanes), so it was refused before any key derivation: it is damaged or crafted; use an intact copy of the backup")]
    KdfTooExpensive,

    #[error("the backup file asks for {asked_mib} MiB of memory for Argon2id, above the {limit_mib} MiB this command accepts, so it was refused before any key derivation: if you made this backup with that much memory on purpose, pass --max-kdf-memory-mib {asked_mib} (at most {max_mib}); otherwise the file is damaged or crafted", asked_mib = asked_kib.div_ceil(1024), limit_mib = limit_kib / 1024, max_mib = KdfParams::MAX.memory_kib / 1024)]
    KdfMemoryAboveLimit { asked_kib: u32, limit_kib: u32 },

    #[error("wrong passphrase for this backup file: nothing was changed; check --backup-passphrase-file / WAVAULT_BACKUP_PASSPHRASE (a file whose header salt, Argon2id parameters, nonces or wrapped key were changed fails the same way: if the passphrase is surely right, use another copy of the backup)")]
    WrongPassphrase,

    #[error("the backup file's header fails authentication (damaged or tampered) although its passphrase is right: use another copy of the backup")]
    HeaderTampered,

    #[error("chunk {index} of the backup file fails authentication (flipped, reordered or substituted data): the file is damaged or was tampered with; use another copy of the backup")]
    ChunkTampered { index: u64 },

    #[error("the backup file is truncated after {after_chunks} chunks of 64 KiB: it was not copied completely; copy it again")]
    Truncated { after_chunks: u64 },

    #[error("the backup file has bytes after its last chunk: something was appended to it or it was joined with another file; use the original copy of the backup")]
    TrailingBytes,

    #[error("I/O error on the backup file: {0}")]
    Io(#[source] io::Error),
}

impl From<io::Error> for BackupError {
    /// Unwraps the `BackupError` a [`StreamReader`] put inside an `io::Error`;
    /// any other I/O error becomes [`BackupError::Io`].
    fn from(e: io::Error) -> Self {
        if e.get_ref().is_some_and(|inner| inner.is::<BackupError>()) {
            if let Some(Ok(b)) = e.into_inner().map(|inner| inner.downcast::<BackupError>()) {
                return *b;
            }
            // Unreachable: the check above saw a BackupError inside.
            return BackupError::Io(io::Error::other("lost backup error"));
        }
        BackupError::Io(e)
    }
}

impl BackupError {
    /// The error as an `io::Error` whose inner error is `self`.
    fn into_io(self) -> io::Error {
        let kind = match &self {
            BackupError::Io(e) => e.kind(),
            BackupError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }
}

/// The nonce of chunk `index`: prefix ‖ 7-byte big-endian counter ‖ last flag.
fn chunk_nonce(prefix: &[u8; NONCE_PREFIX_LEN], index: u64, last: bool) -> [u8; NONCE_LEN] {
    debug_assert!(index < MAX_CHUNKS);
    let mut n = [0u8; NONCE_LEN];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..NONCE_LEN - 1].copy_from_slice(&index.to_be_bytes()[1..]);
    n[NONCE_LEN - 1] = u8::from(last);
    n
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The fields of a complete header whose magic and version were checked.
/// Nothing here is authenticated yet.
struct Fields {
    kdf: KdfParams,
    salt: [u8; SALT_LEN],
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    wrap_nonce: [u8; NONCE_LEN],
    wrapped: [u8; WRAPPED_LEN],
    mac: [u8; MAC_LEN],
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    // Every caller takes a fixed size from a HEADER_LEN array: never short.
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        a
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N));
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
}

impl Fields {
    fn parse(header: &[u8; HEADER_LEN]) -> Fields {
        let mut c = Cursor {
            buf: &header[KDF_OFFSET..],
        };
        let fields = Fields {
            kdf: KdfParams {
                memory_kib: c.u32(),
                iterations: c.u32(),
                parallelism: c.u32(),
            },
            salt: c.array(),
            nonce_prefix: c.array(),
            wrap_nonce: c.array(),
            wrapped: c.array(),
            mac: c.array(),
        };
        debug_assert!(c.buf.is_empty());
        fields
    }
}

/// The Argon2id parameters a backup file declares, read without any check
/// beyond the magic (for the fuzz target's cost filter and diagnostics).
/// `None` when the bytes are too short or not a backup file.
pub fn declared_kdf(bytes: &[u8]) -> Option<KdfParams> {
    if bytes.len() < SALT_OFFSET || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let u = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    Some(KdfParams {
        memory_kib: u(KDF_OFFSET),
        iterations: u(KDF_OFFSET + 4),
        parallelism: u(KDF_OFFSET + 8),
    })
}

/// Writes a backup: header first, then `Write` the plaintext into it; `finish`
/// seals the last chunk, flushes and returns the inner writer.
///
/// A writer dropped without `finish` leaves a file that reads as truncated.
/// After any error the writer refuses further use.
pub struct StreamWriter<W: Write> {
    out: W,
    key: SecretKey,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    header_mac: [u8; MAC_LEN],
    /// Plaintext of the chunk being filled; never above CHUNK_LEN, so never reallocated.
    buf: Zeroizing<Vec<u8>>,
    next_chunk: u64,
    written: u64,
    poisoned: bool,
}

impl<W: Write> std::fmt::Debug for StreamWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("next_chunk", &self.next_chunk)
            .field("bytes_written", &self.written)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl<W: Write> StreamWriter<W> {
    /// Writes the header of a new backup file to `out`: a fresh random file key,
    /// salt and nonce prefix, the file key wrapped under Argon2id(`passphrase`, `kdf`).
    ///
    /// Parameters above [`KdfParams::MAX`] give [`BackupError::KdfTooExpensive`];
    /// parameters Argon2 rejects (e.g. zero lanes) give an `InvalidInput` [`BackupError::Io`].
    pub fn create(mut out: W, passphrase: &[u8], kdf: KdfParams) -> Result<Self, BackupError> {
        if kdf.exceeds_cap() {
            return Err(BackupError::KdfTooExpensive);
        }
        let mut salt = [0u8; SALT_LEN];
        crypto::fill_random(&mut salt);
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        crypto::fill_random(&mut nonce_prefix);
        let file_key = SecretKey::random();
        let kek = crypto::derive_kek(passphrase, &salt, kdf).map_err(|e| {
            BackupError::Io(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
        })?;

        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.extend_from_slice(&kdf.memory_kib.to_le_bytes());
        header.extend_from_slice(&kdf.iterations.to_le_bytes());
        header.extend_from_slice(&kdf.parallelism.to_le_bytes());
        header.extend_from_slice(&salt);
        header.extend_from_slice(&nonce_prefix);
        debug_assert_eq!(header.len(), WRAP_AD_LEN);
        let wrap_nonce = crypto::random_nonce();
        let wrapped = crypto::seal(&kek, &wrap_nonce, &header, file_key.expose());
        header.extend_from_slice(&wrap_nonce);
        header.extend_from_slice(&wrapped);
        debug_assert_eq!(header.len(), MAC_OFFSET);
        let header_mac = crypto::mac(&crypto::subkey(&file_key, HEADER_MAC_INFO), &[&header]);
        header.extend_from_slice(&header_mac);
        debug_assert_eq!(header.len(), HEADER_LEN);

        out.write_all(&header).map_err(BackupError::Io)?;
        Ok(StreamWriter {
            out,
            key: crypto::subkey(&file_key, PAYLOAD_INFO),
            nonce_prefix,
            header_mac,
            buf: Zeroizing::new(Vec::with_capacity(CHUNK_LEN)),
            next_chunk: 0,
            written: HEADER_LEN as u64,
            poisoned: false,
        })
    }

    /// Seals the last chunk (possibly empty), flushes and returns the inner writer.
    pub fn finish(mut self) -> Result<W, BackupError> {
        self.check_usable().map_err(BackupError::Io)?;
        self.seal_chunk(true).map_err(BackupError::Io)?;
        self.out.flush().map_err(BackupError::Io)?;
        let StreamWriter { out, .. } = self;
        Ok(out)
    }

    /// Ciphertext bytes written to the inner writer so far, header included.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other(
                "an earlier write of this backup file failed; start the backup again",
            ));
        }
        Ok(())
    }

    /// Seals the buffered plaintext as the next chunk and writes its frame.
    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let index = self.next_chunk;
        if index >= MAX_CHUNKS {
            self.poisoned = true;
            return Err(io::Error::other(
                "the backup is larger than the format allows (2^56 chunks)",
            ));
        }
        let nonce = chunk_nonce(&self.nonce_prefix, index, last);
        let sealed = crypto::seal(&self.key, &nonce, &self.header_mac, &self.buf);
        let len = (self.buf.len() as u32).to_le_bytes();
        let res = self
            .out
            .write_all(&len)
            .and_then(|()| self.out.write_all(&sealed));
        if let Err(e) = res {
            self.poisoned = true;
            return Err(e);
        }
        self.written += (FRAME_LEN + sealed.len()) as u64;
        self.next_chunk += 1;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> Write for StreamWriter<W> {
    /// Buffers up to [`CHUNK_LEN`] bytes and seals every full chunk.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check_usable()?;
        let n = (CHUNK_LEN - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_LEN {
            // A full chunk is never the last one: the last holds < CHUNK_LEN bytes.
            self.seal_chunk(false)?;
        }
        Ok(n)
    }

    /// Flushes the inner writer. A partly filled chunk stays buffered until
    /// it fills or [`StreamWriter::finish`] seals it.
    fn flush(&mut self) -> io::Result<()> {
        self.check_usable()?;
        self.out.flush()
    }
}

/// Where a reader stands.
#[derive(Debug, Clone, Copy)]
enum State {
    /// More chunks to read.
    Reading,
    /// The last chunk verified and no byte follows it.
    Done,
    /// A read failed; every later read repeats the failure.
    Failed(Failure),
}

/// A copyable record of a failure, to repeat it on later reads.
#[derive(Debug, Clone, Copy)]
enum Failure {
    ChunkTampered(u64),
    Truncated(u64),
    TrailingBytes,
    Io(io::ErrorKind),
}

impl Failure {
    fn of(e: &BackupError) -> Failure {
        match e {
            BackupError::ChunkTampered { index } => Failure::ChunkTampered(*index),
            BackupError::Truncated { after_chunks } => Failure::Truncated(*after_chunks),
            BackupError::TrailingBytes => Failure::TrailingBytes,
            BackupError::Io(e) => Failure::Io(e.kind()),
            // Header errors end `open`; a chunk read never returns them.
            _ => Failure::Io(io::ErrorKind::InvalidData),
        }
    }

    fn error(self) -> BackupError {
        match self {
            Failure::ChunkTampered(index) => BackupError::ChunkTampered { index },
            Failure::Truncated(after_chunks) => BackupError::Truncated { after_chunks },
            Failure::TrailingBytes => BackupError::TrailingBytes,
            Failure::Io(kind) => BackupError::Io(io::Error::new(
                kind,
                "an earlier read of this backup file failed",
            )),
        }
    }
}

/// Reads a backup: `open` parses and authenticates the header; then `Read`
/// yields authenticated plaintext.
///
/// A chunk's bytes are released only after its tag verified, and the last
/// chunk's only after the input was seen to end right behind it. Reading to
/// EOF (`Ok(0)`) happens only after the last-chunk flag was seen and the input
/// has no trailing bytes; otherwise `read` returns an `io::Error` whose inner
/// error (`get_ref()` / `into_inner()`) is the [`BackupError`];
/// `BackupError::from(io_error)` unwraps it. After an error every later read
/// fails the same way.
pub struct StreamReader<R: Read> {
    input: R,
    key: SecretKey,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    header_mac: [u8; MAC_LEN],
    next_chunk: u64,
    /// Authenticated plaintext of the current chunk, and how much was handed out.
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    /// Ciphertext of the chunk being read (reused).
    sealed: Vec<u8>,
    state: State,
    consumed: u64,
}

impl<R: Read> std::fmt::Debug for StreamReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("next_chunk", &self.next_chunk)
            .field("bytes_read", &self.consumed)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<R: Read> StreamReader<R> {
    /// Reads the header from `input` and authenticates it with `passphrase`.
    /// Runs the KDF once, and only for parameters within [`KdfParams::MAX`]
    /// and memory within [`DEFAULT_MAX_READ_MEMORY_KIB`].
    pub fn open(input: R, passphrase: &[u8]) -> Result<(HeaderInfo, Self), BackupError> {
        Self::open_limited(input, passphrase, DEFAULT_MAX_READ_MEMORY_KIB)
    }

    /// [`StreamReader::open`] accepting up to `max_memory_kib` of Argon2id
    /// memory (never more than [`KdfParams::MAX`]): a header asking for
    /// more is [`BackupError::KdfMemoryAboveLimit`], before any KDF work.
    pub fn open_limited(
        mut input: R,
        passphrase: &[u8],
        max_memory_kib: u32,
    ) -> Result<(HeaderInfo, Self), BackupError> {
        let mut header = [0u8; HEADER_LEN];
        // Magic and version first: a newer version may have another header length.
        let got = read_full(&mut input, &mut header[..=MAGIC.len()]).map_err(BackupError::Io)?;
        if got < MAGIC.len() || &header[..MAGIC.len()] != MAGIC {
            return Err(BackupError::NotABackup);
        }
        if got == MAGIC.len() {
            return Err(BackupError::Truncated { after_chunks: 0 });
        }
        let version = header[MAGIC.len()];
        if version == 0 {
            return Err(BackupError::NotABackup);
        }
        if version > VERSION {
            return Err(BackupError::FutureVersion(version));
        }
        let rest = read_full(&mut input, &mut header[KDF_OFFSET..]).map_err(BackupError::Io)?;
        if rest < HEADER_LEN - KDF_OFFSET {
            return Err(BackupError::Truncated { after_chunks: 0 });
        }
        let f = Fields::parse(&header);
        if f.kdf.exceeds_cap() {
            return Err(BackupError::KdfTooExpensive);
        }
        let limit_kib = max_memory_kib.min(KdfParams::MAX.memory_kib);
        if f.kdf.memory_kib > limit_kib {
            return Err(BackupError::KdfMemoryAboveLimit {
                asked_kib: f.kdf.memory_kib,
                limit_kib,
            });
        }
        // Parameters Argon2 itself rejects (zero lanes, too little memory) are
        // never written: the header was changed.
        let kek = crypto::derive_kek(passphrase, &f.salt, f.kdf)
            .map_err(|_| BackupError::HeaderTampered)?;
        let unwrapped = crypto::open(&kek, &f.wrap_nonce, &header[..WRAP_AD_LEN], &f.wrapped)
            .map_err(|_| BackupError::WrongPassphrase)?;
        let mut raw = [0u8; KEY_LEN];
        // The wrap is WRAPPED_LEN bytes, so the opened key is exactly KEY_LEN.
        raw.copy_from_slice(&unwrapped);
        let file_key = SecretKey::from_bytes(raw);
        raw.zeroize();
        drop(unwrapped);
        let mac_key = crypto::subkey(&file_key, HEADER_MAC_INFO);
        if !crypto::verify_mac(&mac_key, &[&header[..MAC_OFFSET]], &f.mac) {
            return Err(BackupError::HeaderTampered);
        }
        let info = HeaderInfo {
            version,
            kdf: f.kdf,
        };
        let reader = StreamReader {
            input,
            key: crypto::subkey(&file_key, PAYLOAD_INFO),
            nonce_prefix: f.nonce_prefix,
            header_mac: f.mac,
            next_chunk: 0,
            plain: Zeroizing::new(Vec::new()),
            pos: 0,
            sealed: Vec::new(),
            state: State::Reading,
            consumed: HEADER_LEN as u64,
        };
        Ok((info, reader))
    }

    /// Ciphertext bytes consumed from the input so far, header included.
    pub fn bytes_read(&self) -> u64 {
        self.consumed
    }

    fn read_counted(&mut self, buf: &mut [u8]) -> Result<usize, BackupError> {
        let got = read_full(&mut self.input, buf).map_err(BackupError::Io)?;
        self.consumed += got as u64;
        Ok(got)
    }

    /// Reads, verifies and stores the next chunk's plaintext.
    fn next_chunk(&mut self) -> Result<(), BackupError> {
        let index = self.next_chunk;
        if index >= MAX_CHUNKS {
            return Err(BackupError::ChunkTampered { index });
        }
        let mut frame = [0u8; FRAME_LEN];
        if self.read_counted(&mut frame)? < FRAME_LEN {
            return Err(BackupError::Truncated {
                after_chunks: index,
            });
        }
        let len = u32::from_le_bytes(frame) as usize;
        if len > CHUNK_LEN {
            return Err(BackupError::ChunkTampered { index });
        }
        let last = len < CHUNK_LEN;
        let mut sealed = std::mem::take(&mut self.sealed);
        sealed.resize(len + TAG_LEN, 0);
        let got = self.read_counted(&mut sealed);
        self.sealed = sealed;
        if got? < self.sealed.len() {
            return Err(BackupError::Truncated {
                after_chunks: index,
            });
        }
        let nonce = chunk_nonce(&self.nonce_prefix, index, last);
        let plain = crypto::open(&self.key, &nonce, &self.header_mac, &self.sealed)
            .map_err(|_| BackupError::ChunkTampered { index })?;
        if last {
            let mut probe = [0u8; 1];
            if self.read_counted(&mut probe)? > 0 {
                return Err(BackupError::TrailingBytes);
            }
            self.state = State::Done;
        }
        self.next_chunk = index + 1;
        self.plain = plain;
        self.pos = 0;
        Ok(())
    }
}

impl<R: Read> Read for StreamReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.plain.len() {
                let n = (self.plain.len() - self.pos).min(buf.len());
                buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match self.state {
                State::Done => return Ok(0),
                State::Failed(f) => return Err(f.error().into_io()),
                State::Reading => {}
            }
            if let Err(e) = self.next_chunk() {
                self.state = State::Failed(Failure::of(&e));
                return Err(e.into_io());
            }
        }
    }
}

/// Convenience: open and read everything into memory, verifying the whole file.
pub fn read_all<R: Read>(
    input: R,
    passphrase: &[u8],
) -> Result<(HeaderInfo, Vec<u8>), BackupError> {
    let (info, mut reader) = StreamReader::open(input, passphrase)?;
    // Wiped if reading fails half way.
    let mut out = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut out).map_err(BackupError::from)?;
    Ok((info, std::mem::take(&mut *out)))
}

/// How many threads [`seal_all`] and [`open_all`] use by default: the
/// machine's cores, at most 4.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Splits `items` into at most `threads` contiguous runs and calls `work`
/// on each run, the first on this thread and the others on scoped threads.
/// Returns the runs' results in order.
pub(crate) fn split_work<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    work: impl Fn(Vec<T>) -> R + Sync,
) -> Vec<R> {
    let per = items.len().div_ceil(threads.max(1)).max(1);
    let mut runs: Vec<Vec<T>> = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        runs.push(items.by_ref().take(per).collect());
    }
    if runs.len() <= 1 {
        return runs.into_iter().map(&work).collect();
    }
    let work = &work;
    std::thread::scope(|s| {
        let mut runs = runs.into_iter();
        let first = runs.next().expect("two runs or more");
        let others: Vec<_> = runs.map(|r| s.spawn(move || work(r))).collect();
        let mut out = vec![work(first)];
        for h in others {
            // A worker only panics on a bug; pass the panic on.
            out.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        out
    })
}

/// Seals `plain` into a whole backup file in memory, chunks sealed on up to
/// `threads` threads: byte for byte the layout [`StreamWriter`] writes (a
/// fresh key, salt and nonces; the same header, chunk framing and nonces).
pub fn seal_all(
    plain: &[u8],
    passphrase: &[u8],
    kdf: KdfParams,
    threads: usize,
) -> Result<Vec<u8>, BackupError> {
    let full = plain.len() / CHUNK_LEN;
    let last_len = plain.len() % CHUNK_LEN;
    if full as u64 >= MAX_CHUNKS {
        return Err(BackupError::Io(io::Error::other(
            "the backup is larger than the format allows (2^56 chunks)",
        )));
    }
    let total = HEADER_LEN + full * FULL_CHUNK_FRAME + FRAME_LEN + last_len + TAG_LEN;
    let mut out = Vec::with_capacity(total);
    let w = StreamWriter::create(&mut out, passphrase, kdf)?;
    let (key, nonce_prefix, header_mac) = (w.key, w.nonce_prefix, w.header_mac);
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.resize(total, 0);
    // Frame slot i of the output and plaintext chunk i (the last may be empty).
    let slots: Vec<(usize, &mut [u8])> = out[HEADER_LEN..]
        .chunks_mut(FULL_CHUNK_FRAME)
        .enumerate()
        .collect();
    debug_assert_eq!(slots.len(), full + 1);
    split_work(slots, threads, |run| {
        for (i, slot) in run {
            let start = i * CHUNK_LEN;
            let chunk = &plain[start..(start + CHUNK_LEN).min(plain.len())];
            let nonce = chunk_nonce(&nonce_prefix, i as u64, i == full);
            let sealed = crypto::seal(&key, &nonce, &header_mac, chunk);
            slot[..FRAME_LEN].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
            slot[FRAME_LEN..].copy_from_slice(&sealed);
        }
    });
    Ok(out)
}

/// Opens and verifies a whole backup held in memory, chunks opened on up to
/// `threads` threads; returns its plaintext. Accepts and refuses exactly
/// what [`StreamReader`] does, with the same error (the first problem in
/// file order); no plaintext comes out unless the whole file verified.
pub fn open_all(
    bytes: &[u8],
    passphrase: &[u8],
    max_memory_kib: u32,
    threads: usize,
) -> Result<(HeaderInfo, Zeroizing<Vec<u8>>), BackupError> {
    let (info, reader) = StreamReader::open_limited(bytes, passphrase, max_memory_kib)?;
    let body = reader.input;
    // Walk the frame lengths (nothing authenticated yet): every chunk up to
    // the last, or up to the first structural problem, which is reported
    // only if every chunk before it verifies (as a sequential read would).
    let mut chunks: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    let mut at = 0usize;
    let mut plain_len = 0usize;
    let mut structural: Option<BackupError> = None;
    loop {
        let index = chunks.len() as u64;
        if body.len() - at < FRAME_LEN {
            structural = Some(BackupError::Truncated {
                after_chunks: index,
            });
            break;
        }
        let len = u32::from_le_bytes(body[at..at + FRAME_LEN].try_into().expect("4 bytes"));
        let len = len as usize;
        if len > CHUNK_LEN {
            structural = Some(BackupError::ChunkTampered { index });
            break;
        }
        let start = at + FRAME_LEN;
        if body.len() - start < len + TAG_LEN {
            structural = Some(BackupError::Truncated {
                after_chunks: index,
            });
            break;
        }
        at = start + len + TAG_LEN;
        chunks.push((plain_len, start..at));
        plain_len += len;
        if len < CHUNK_LEN {
            if at < body.len() {
                structural = Some(BackupError::TrailingBytes);
            }
            break;
        }
    }
    let mut plain = Zeroizing::new(vec![0u8; plain_len]);
    let mut work = Vec::with_capacity(chunks.len());
    let mut rest: &mut [u8] = &mut plain;
    for (i, (_, sealed)) in chunks.iter().enumerate() {
        let len = sealed.len() - TAG_LEN;
        let (slot, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        work.push((i, sealed.clone(), slot));
    }
    let n = chunks.len();
    let (key, prefix, mac) = (&reader.key, &reader.nonce_prefix, &reader.header_mac);
    // Each run reports its first failing chunk.
    let failed = split_work(work, threads, |run| {
        for (i, sealed, slot) in run {
            let last = sealed.len() - TAG_LEN < CHUNK_LEN;
            let nonce = chunk_nonce(prefix, i as u64, last);
            match crypto::open(key, &nonce, mac, &body[sealed]) {
                Ok(p) => slot.copy_from_slice(&p),
                Err(_) => return Some(i as u64),
            }
        }
        None
    });
    if let Some(index) = failed.into_iter().flatten().min() {
        return Err(BackupError::ChunkTampered { index });
    }
    if let Some(e) = structural {
        return Err(e);
    }
    debug_assert!(n > 0);
    Ok((info, plain))
}

impl BackupError {
    /// The exit code of this problem: 3 for a wrong passphrase (and the
    /// header changes that read as one), 5 for a file that is not a sound
    /// backup, 1 for I/O.
    pub fn exit_code(&self) -> u8 {
        use crate::error::exit;
        match self {
            BackupError::WrongPassphrase => exit::WRONG_PASSPHRASE,
            BackupError::NotABackup
            | BackupError::FutureVersion(_)
            | BackupError::KdfTooExpensive
            | BackupError::KdfMemoryAboveLimit { .. }
            | BackupError::HeaderTampered
            | BackupError::ChunkTampered { .. }
            | BackupError::Truncated { .. }
            | BackupError::TrailingBytes => exit::DAMAGED,
            BackupError::Io(_) => exit::OTHER,
        }
    }
}

impl From<BackupError> for crate::error::Error {
    fn from(e: BackupError) -> Self {
        crate::error::Error::Backup {
            code: e.exit_code(),
            msg: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PW: &[u8] = b"correct horse battery staple";
    const K: KdfParams = KdfParams::INSECURE_FOR_TESTS;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    fn make(plain: &[u8]) -> Vec<u8> {
        let mut w = StreamWriter::create(Vec::new(), PW, K).unwrap();
        w.write_all(plain).unwrap();
        let written = w.bytes_written();
        let out = w.finish().unwrap();
        assert!(written <= out.len() as u64);
        out
    }

    /// [`seal_all`] writes what [`StreamWriter`] writes: the same length,
    /// read back by both readers, whatever the number of threads.
    #[test]
    fn seal_all_and_open_all_match_the_stream() {
        for n in [
            0,
            1,
            CHUNK_LEN - 1,
            CHUNK_LEN,
            CHUNK_LEN + 1,
            5 * CHUNK_LEN + 3,
        ] {
            let plain = data(n);
            for threads in [1, 2, 3, 8] {
                let file = seal_all(&plain, PW, K, threads).unwrap();
                assert_eq!(file.len(), expected_len(n), "{n} bytes, {threads} threads");
                let (info, back) = read_all(&file[..], PW).unwrap();
                assert_eq!(info, HeaderInfo { version: 1, kdf: K });
                assert_eq!(back, plain, "{n} bytes sealed on {threads} threads");
                let (_, back) = open_all(&file, PW, DEFAULT_MAX_READ_MEMORY_KIB, threads).unwrap();
                assert_eq!(
                    &back[..],
                    &plain[..],
                    "{n} bytes opened on {threads} threads"
                );
            }
            let (_, back) = open_all(&make(&plain), PW, DEFAULT_MAX_READ_MEMORY_KIB, 2).unwrap();
            assert_eq!(&back[..], &plain[..]);
        }
    }

    /// The error of reading `bytes`, the same from [`StreamReader`] and from
    /// [`open_all`] on one and on three threads.
    fn err(bytes: &[u8]) -> BackupError {
        let e = match read_all(bytes, PW) {
            Ok((_, p)) => panic!("accepted, {} bytes of plaintext", p.len()),
            Err(e) => e,
        };
        for threads in [1, 3] {
            match open_all(bytes, PW, DEFAULT_MAX_READ_MEMORY_KIB, threads) {
                Ok((_, p)) => panic!("open_all accepted, {} bytes of plaintext", p.len()),
                Err(p) => assert_eq!(
                    format!("{p:?}"),
                    format!("{e:?}"),
                    "open_all on {threads} threads differs from StreamReader"
                ),
            }
        }
        e
    }

    /// Byte range of chunk `i`'s frame, for files whose chunks before `i` are full.
    fn frame(i: usize, file_len: usize) -> std::ops::Range<usize> {
        let start = HEADER_LEN + i * FULL_CHUNK_FRAME;
        start..(start + FULL_CHUNK_FRAME).min(file_len)
    }

    fn expected_len(plain: usize) -> usize {
        HEADER_LEN
            + (plain / CHUNK_LEN) * FULL_CHUNK_FRAME
            + FRAME_LEN
            + plain % CHUNK_LEN
            + TAG_LEN
    }

    /// Reads with small buffers; returns what was yielded and the error that stopped it.
    fn read_until_error(bytes: &[u8]) -> (Vec<u8>, Option<BackupError>) {
        let (_, mut r) = StreamReader::open(bytes, PW).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return (got, None),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => {
                    assert!(
                        e.get_ref().is_some_and(|i| i.is::<BackupError>()),
                        "inner error is a BackupError"
                    );
                    // The failure repeats.
                    assert!(r.read(&mut buf).is_err());
                    return (got, Some(BackupError::from(e)));
                }
            }
        }
    }

    #[test]
    fn round_trip_edge_lengths() {
        for n in [0, 1, CHUNK_LEN - 1, CHUNK_LEN, CHUNK_LEN + 1, 3 * CHUNK_LEN] {
            let plain = data(n);
            let file = make(&plain);
            assert_eq!(file.len(), expected_len(n), "file length for {n}");
            let (info, back) = read_all(&file[..], PW).unwrap();
            assert_eq!(info, HeaderInfo { version: 1, kdf: K });
            assert_eq!(back, plain, "round trip of {n} bytes");
            let (_, mut r) = StreamReader::open(&file[..], PW).unwrap();
            assert_eq!(r.bytes_read(), HEADER_LEN as u64);
            let mut sink = Vec::new();
            r.read_to_end(&mut sink).unwrap();
            assert_eq!(r.bytes_read(), file.len() as u64);
        }
    }

    #[test]
    fn bytes_written_counts_every_byte() {
        let mut w = StreamWriter::create(Vec::new(), PW, K).unwrap();
        assert_eq!(w.bytes_written(), HEADER_LEN as u64);
        w.write_all(&data(CHUNK_LEN + 7)).unwrap();
        assert_eq!(w.bytes_written(), (HEADER_LEN + FULL_CHUNK_FRAME) as u64);
        let out = w.finish().unwrap();
        assert_eq!(out.len(), expected_len(CHUNK_LEN + 7));
    }

    #[test]
    fn many_small_writes_and_reads() {
        let plain = data(CHUNK_LEN + 10);
        let mut w = StreamWriter::create(Vec::new(), PW, K).unwrap();
        for b in plain.chunks(1) {
            assert_eq!(w.write(b).unwrap(), 1);
        }
        w.flush().unwrap();
        let file = w.finish().unwrap();
        let (_, mut r) = StreamReader::open(&file[..], PW).unwrap();
        let mut back = Vec::new();
        let mut one = [0u8; 1];
        while r.read(&mut one).unwrap() == 1 {
            back.push(one[0]);
        }
        assert_eq!(back, plain);
        assert_eq!(r.read(&mut one).unwrap(), 0, "EOF stays EOF");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn round_trip_random_splits(
            len in 0usize..(3 * CHUNK_LEN + 300),
            writes in prop::collection::vec(1usize..(CHUNK_LEN + 200), 1..12),
            read_buf in 1usize..(2 * CHUNK_LEN),
        ) {
            let plain = data(len);
            let mut w = StreamWriter::create(Vec::new(), PW, K).unwrap();
            let mut at = 0;
            let mut sizes = writes.iter().cycle();
            while at < plain.len() {
                let end = (at + sizes.next().unwrap()).min(plain.len());
                // `write` may take less than offered; write_all loops.
                w.write_all(&plain[at..end]).unwrap();
                at = end;
            }
            let file = w.finish().unwrap();
            prop_assert_eq!(file.len(), expected_len(len));
            let (_, mut r) = StreamReader::open(&file[..], PW).unwrap();
            let mut back = Vec::new();
            let mut buf = vec![0u8; read_buf];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 { break; }
                back.extend_from_slice(&buf[..n]);
            }
            prop_assert_eq!(back, plain);
            prop_assert_eq!(r.bytes_read(), file.len() as u64);
        }
    }

    #[test]
    fn fresh_salt_prefix_and_key_per_file() {
        let a = make(b"same");
        let b = make(b"same");
        assert_eq!(a[..KDF_OFFSET], b[..KDF_OFFSET]);
        assert_ne!(a[SALT_OFFSET..PREFIX_OFFSET], b[SALT_OFFSET..PREFIX_OFFSET]);
        assert_ne!(a[PREFIX_OFFSET..WRAP_AD_LEN], b[PREFIX_OFFSET..WRAP_AD_LEN]);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }

    #[test]
    fn wrong_passphrase() {
        let file = make(b"secret");
        assert!(matches!(
            read_all(&file[..], b"not it"),
            Err(BackupError::WrongPassphrase)
        ));
    }

    #[test]
    fn future_version_is_named_even_with_another_header_length() {
        let mut file = make(b"x");
        for v in [2u8, 9, 255] {
            file[8] = v;
            assert!(matches!(err(&file), BackupError::FutureVersion(x) if x == v));
            assert!(matches!(err(&file[..9]), BackupError::FutureVersion(x) if x == v));
        }
        assert!(err(&file).to_string().contains("upgrade wavault"));
    }

    #[test]
    fn memory_above_the_read_limit_is_refused_before_any_work() {
        let mut f = make(b"x");
        // 2 GiB: within the format's cap, above the default read limit.
        f[KDF_OFFSET..KDF_OFFSET + 4].copy_from_slice(&(2 * 1024 * 1024u32).to_le_bytes());
        let e = err(&f);
        assert!(
            matches!(
                e,
                BackupError::KdfMemoryAboveLimit {
                    asked_kib: 2_097_152,
                    limit_kib: DEFAULT_MAX_READ_MEMORY_KIB
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        for needle in [
            "2048 MiB",
            "1024 MiB",
            "--max-kdf-memory-mib 2048",
            "at most 4096",
        ] {
            assert!(msg.contains(needle), "{needle:?} in {msg}");
        }
        // A raised limit lets a real file through; a lower one refuses it.
        let file = make(b"y");
        assert!(StreamReader::open_limited(&file[..], PW, K.memory_kib).is_ok());
        assert!(matches!(
            StreamReader::open_limited(&file[..], PW, K.memory_kib - 1),
            Err(BackupError::KdfMemoryAboveLimit { asked_kib, limit_kib })
                if asked_kib == K.memory_kib && limit_kib == K.memory_kib - 1
        ));
        // Never above the format's cap, whatever the caller asks.
        let mut f = make(b"z");
        f[KDF_OFFSET..KDF_OFFSET + 4]
            .copy_from_slice(&(KdfParams::MAX.memory_kib + 1).to_le_bytes());
        assert!(matches!(
            StreamReader::open_limited(&f[..], PW, u32::MAX),
            Err(BackupError::KdfTooExpensive)
        ));
    }

    #[test]
    fn kdf_above_cap_is_refused_before_any_work() {
        let file = make(b"x");
        for (at, value) in [
            (KDF_OFFSET, u32::MAX),
            (KDF_OFFSET, KdfParams::MAX.memory_kib + 1),
            (KDF_OFFSET + 4, KdfParams::MAX.iterations + 1),
            (KDF_OFFSET + 8, KdfParams::MAX.parallelism + 1),
        ] {
            let mut f = file.clone();
            f[at..at + 4].copy_from_slice(&value.to_le_bytes());
            // No timing claim (a sub-second bound is not reliable under load):
            // the variant shows the header's cap check answered, before the KDF.
            assert!(matches!(err(&f), BackupError::KdfTooExpensive));
        }
        let big = KdfParams {
            memory_kib: u32::MAX,
            ..K
        };
        assert!(matches!(
            StreamWriter::create(Vec::new(), PW, big),
            Err(BackupError::KdfTooExpensive)
        ));
    }

    #[test]
    fn invalid_kdf_params_on_create_are_invalid_input() {
        let zero = KdfParams {
            parallelism: 0,
            ..K
        };
        match StreamWriter::create(Vec::new(), PW, zero) {
            Err(BackupError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_a_backup() {
        let mut garbage = vec![0u8; 1000];
        crypto::fill_random(&mut garbage);
        let mut version_zero = make(b"x");
        version_zero[8] = 0;
        let mut key_file = make(b"x");
        key_file[..8].copy_from_slice(b"WAVAULTK");
        for bytes in [
            &b""[..],
            b"WAV",
            b"WAVAULT",
            &garbage[..],
            &version_zero[..],
            &key_file[..],
        ] {
            assert!(
                matches!(err(bytes), BackupError::NotABackup),
                "{:?}",
                &bytes[..bytes.len().min(9)]
            );
        }
    }

    /// 4 chunks: three full, the last holding 5 bytes.
    fn four_chunks() -> (Vec<u8>, Vec<u8>) {
        let plain = data(3 * CHUNK_LEN + 5);
        let file = make(&plain);
        (plain, file)
    }

    #[test]
    fn truncation_at_every_chunk_boundary() {
        let (_, file) = four_chunks();
        for i in 0..4 {
            let cut = HEADER_LEN + i * FULL_CHUNK_FRAME;
            assert!(
                matches!(err(&file[..cut]), BackupError::Truncated { after_chunks } if after_chunks == i as u64),
                "cut before chunk {i}"
            );
        }
        // A multiple of CHUNK_LEN ends with an empty last chunk; dropping it is truncation.
        let even = make(&data(2 * CHUNK_LEN));
        let cut = HEADER_LEN + 2 * FULL_CHUNK_FRAME;
        assert_eq!(even.len(), cut + FRAME_LEN + TAG_LEN);
        assert!(matches!(
            err(&even[..cut]),
            BackupError::Truncated { after_chunks: 2 }
        ));
        assert!(err(&even[..cut])
            .to_string()
            .contains("truncated after 2 chunks of 64 KiB"));
    }

    #[test]
    fn truncation_at_every_header_offset_and_sampled_payload_offsets() {
        let (_, file) = four_chunks();
        for cut in 0..HEADER_LEN {
            let e = err(&file[..cut]);
            if cut < MAGIC.len() {
                assert!(matches!(e, BackupError::NotABackup), "cut {cut}: {e:?}");
            } else {
                assert!(
                    matches!(e, BackupError::Truncated { after_chunks: 0 }),
                    "cut {cut}: {e:?}"
                );
            }
        }
        let mut cuts: Vec<usize> = (HEADER_LEN..file.len()).step_by(7919).collect();
        for i in 0..4 {
            let start = HEADER_LEN + i * FULL_CHUNK_FRAME;
            for d in [1, 2, 3, 4, 5, 17, FULL_CHUNK_FRAME - 1] {
                cuts.push(start + d);
            }
        }
        cuts.push(file.len() - 1);
        for cut in cuts.into_iter().filter(|&c| c < file.len()) {
            let chunk = ((cut - HEADER_LEN) / FULL_CHUNK_FRAME) as u64;
            let e = err(&file[..cut]);
            assert!(
                matches!(e, BackupError::Truncated { after_chunks } if after_chunks == chunk),
                "cut {cut}: {e:?}"
            );
        }
    }

    #[test]
    fn random_truncations_and_flips_are_rejected() {
        let (_, file) = four_chunks();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
        runner
            .run(&(0..file.len()), |cut| {
                let e = err(&file[..cut]);
                let ok = if cut < MAGIC.len() {
                    matches!(e, BackupError::NotABackup)
                } else {
                    let chunks = (cut.saturating_sub(HEADER_LEN) / FULL_CHUNK_FRAME) as u64;
                    matches!(e, BackupError::Truncated { after_chunks } if after_chunks == chunks)
                };
                prop_assert!(ok, "cut {}: {:?}", cut, e);
                Ok(())
            })
            .unwrap();
        runner
            .run(&(HEADER_LEN..file.len(), 1u8..=255), |(at, mask)| {
                let mut f = file.clone();
                f[at] ^= mask;
                let chunk = ((at - HEADER_LEN) / FULL_CHUNK_FRAME) as u64;
                let e = err(&f);
                let ok = if (at - HEADER_LEN) % FULL_CHUNK_FRAME < FRAME_LEN {
                    matches!(e, BackupError::ChunkTampered { index } | BackupError::Truncated { after_chunks: index } if index == chunk)
                } else {
                    matches!(e, BackupError::ChunkTampered { index } if index == chunk)
                };
                prop_assert!(ok, "flip {} at {}: {:?}", mask, at, e);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn every_flipped_header_byte_is_rejected() {
        let file = make(b"payload");
        for at in 0..HEADER_LEN {
            let mut f = file.clone();
            f[at] ^= 0x01;
            let e = err(&f);
            match at {
                0..=8 => assert!(matches!(e, BackupError::NotABackup), "{at}: {e:?}"),
                // Argon2 parameters: too expensive, invalid, or a different KEK.
                9..=20 => assert!(
                    matches!(
                        e,
                        BackupError::KdfTooExpensive
                            | BackupError::HeaderTampered
                            | BackupError::WrongPassphrase
                    ),
                    "{at}: {e:?}"
                ),
                // Salt, nonce prefix (associated data), wrap nonce, wrapped key.
                _ if at < MAC_OFFSET => {
                    assert!(matches!(e, BackupError::WrongPassphrase), "{at}: {e:?}")
                }
                _ => assert!(matches!(e, BackupError::HeaderTampered), "{at}: {e:?}"),
            }
        }
    }

    #[test]
    fn flipped_payload_bytes_are_rejected() {
        let (_, file) = four_chunks();
        let mut spots = Vec::new();
        for i in 0..4 {
            let r = frame(i, file.len());
            spots.extend([r.start, r.start + 1, r.start + 2, r.start + 3]);
            spots.extend([
                r.start + FRAME_LEN,
                r.start + FRAME_LEN + 1,
                r.end - 1,
                r.end - TAG_LEN,
            ]);
            spots.push((r.start + r.end) / 2);
        }
        for at in spots {
            let mut f = file.clone();
            f[at] ^= 0x01;
            let chunk = ((at - HEADER_LEN) / FULL_CHUNK_FRAME) as u64;
            let e = err(&f);
            let in_frame_len = (at - HEADER_LEN) % FULL_CHUNK_FRAME < FRAME_LEN;
            if in_frame_len {
                // A changed length reads as another chunk, or runs past the end.
                assert!(
                    matches!(e, BackupError::ChunkTampered { index } | BackupError::Truncated { after_chunks: index } if index == chunk),
                    "{at}: {e:?}"
                );
            } else {
                assert!(
                    matches!(e, BackupError::ChunkTampered { index } if index == chunk),
                    "{at}: {e:?}"
                );
            }
        }
    }

    #[test]
    fn reordered_duplicated_and_dropped_chunks_are_rejected() {
        let (_, file) = four_chunks();
        let chunk = |i: usize| file[frame(i, file.len())].to_vec();
        let build = |order: &[usize]| {
            let mut f = file[..HEADER_LEN].to_vec();
            for &i in order {
                f.extend(chunk(i));
            }
            f
        };
        let tampered = |order: &[usize], at: u64| {
            let e = err(&build(order));
            assert!(
                matches!(e, BackupError::ChunkTampered { index } if index == at),
                "{order:?}: {e:?}"
            );
        };
        assert_eq!(build(&[0, 1, 2, 3]), file);
        tampered(&[1, 0, 2, 3], 0);
        tampered(&[0, 2, 1, 3], 1);
        tampered(&[0, 1, 1, 2, 3], 2);
        tampered(&[0, 0, 1, 2, 3], 1);
        tampered(&[0, 2, 3], 1);
        tampered(&[0, 1, 3], 2);
        tampered(&[3, 0, 1, 2], 0);
        tampered(&[0, 3], 1);
        // The last chunk again after the end: bytes after the last chunk.
        assert!(matches!(
            err(&build(&[0, 1, 2, 3, 3])),
            BackupError::TrailingBytes
        ));
    }

    #[test]
    fn trailing_bytes_are_named() {
        for plain in [data(0), data(10), data(2 * CHUNK_LEN)] {
            let file = make(&plain);
            for extra in [1usize, 100, FULL_CHUNK_FRAME + 3] {
                let mut f = file.clone();
                f.extend(std::iter::repeat_n(0xAB, extra));
                let e = err(&f);
                assert!(matches!(e, BackupError::TrailingBytes), "{e:?}");
                assert!(e.to_string().contains("bytes after its last chunk"));
            }
        }
    }

    #[test]
    fn chunks_from_another_file_are_rejected() {
        let (_, a) = four_chunks();
        let (_, b) = four_chunks();
        let mut spliced = a.clone();
        let r = frame(1, a.len());
        spliced[r.clone()].copy_from_slice(&b[r]);
        assert!(matches!(
            err(&spliced),
            BackupError::ChunkTampered { index: 1 }
        ));
        // Header of one file, payload of the other.
        let mut swapped = b[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&a[HEADER_LEN..]);
        assert!(matches!(
            err(&swapped),
            BackupError::ChunkTampered { index: 0 }
        ));
    }

    #[test]
    fn failed_chunks_never_release_plaintext() {
        let (plain, file) = four_chunks();
        // Chunk 1 flipped: only chunk 0 comes out.
        let mut f = file.clone();
        f[frame(1, file.len()).start + 100] ^= 0x80;
        let (got, e) = read_until_error(&f);
        assert_eq!(got, plain[..CHUNK_LEN]);
        assert!(matches!(e, Some(BackupError::ChunkTampered { index: 1 })));
        // Last chunk flipped: the three full chunks only.
        let mut f = file.clone();
        *f.last_mut().unwrap() ^= 0x80;
        let (got, e) = read_until_error(&f);
        assert_eq!(got, plain[..3 * CHUNK_LEN]);
        assert!(matches!(e, Some(BackupError::ChunkTampered { index: 3 })));
        // Trailing bytes: the valid last chunk is held back as well.
        let mut f = file.clone();
        f.push(0);
        let (got, e) = read_until_error(&f);
        assert_eq!(got, plain[..3 * CHUNK_LEN]);
        assert!(matches!(e, Some(BackupError::TrailingBytes)));
        // Truncated inside the last chunk.
        let (got, e) = read_until_error(&file[..file.len() - 1]);
        assert_eq!(got, plain[..3 * CHUNK_LEN]);
        assert!(matches!(
            e,
            Some(BackupError::Truncated { after_chunks: 3 })
        ));
        // Intact: everything.
        let (got, e) = read_until_error(&file);
        assert_eq!(got, plain);
        assert!(e.is_none());
    }

    #[test]
    fn unfinished_writer_leaves_a_truncated_file() {
        let mut out = Vec::new();
        {
            let mut w = StreamWriter::create(&mut out, PW, K).unwrap();
            w.write_all(&data(CHUNK_LEN + 1)).unwrap();
        }
        assert!(matches!(
            err(&out),
            BackupError::Truncated { after_chunks: 1 }
        ));
    }

    #[test]
    fn io_errors_pass_through() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::PermissionDenied, "nope"))
            }
        }
        match StreamReader::open(Failing, PW) {
            Err(BackupError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied),
            other => panic!("{other:?}"),
        }
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(matches!(
            StreamWriter::create(Full, PW, K),
            Err(BackupError::Io(_))
        ));
    }

    #[test]
    fn exit_codes_and_messages() {
        use crate::error::exit;
        let code = |e: BackupError| crate::Error::from(e).exit_code();
        assert_eq!(code(BackupError::WrongPassphrase), exit::WRONG_PASSPHRASE);
        for e in [
            BackupError::NotABackup,
            BackupError::FutureVersion(2),
            BackupError::KdfTooExpensive,
            BackupError::KdfMemoryAboveLimit {
                asked_kib: 1 << 21,
                limit_kib: 1 << 20,
            },
            BackupError::HeaderTampered,
            BackupError::ChunkTampered { index: 4 },
            BackupError::Truncated { after_chunks: 3 },
            BackupError::TrailingBytes,
        ] {
            assert_eq!(code(e), exit::DAMAGED);
        }
        assert_eq!(code(BackupError::Io(io::Error::other("x"))), exit::OTHER);
        let msg = crate::Error::from(BackupError::WrongPassphrase).to_string();
        assert!(msg.contains("wrong passphrase for this backup file"));
        assert!(msg.contains("WAVAULT_BACKUP_PASSPHRASE"));
        assert!(BackupError::ChunkTampered { index: 4 }
            .to_string()
            .starts_with("chunk 4 of the backup file fails authentication"));
    }

    #[test]
    fn declared_kdf_reads_the_unchecked_params() {
        let file = make(b"");
        assert_eq!(declared_kdf(&file), Some(K));
        assert_eq!(declared_kdf(&file[..SALT_OFFSET - 1]), None);
        assert_eq!(declared_kdf(b"WAVAULTK\x01aaaaaaaaaaaaaaaa"), None);
    }
}
