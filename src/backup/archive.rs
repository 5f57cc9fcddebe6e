//! What a backup file holds inside its encrypted stream ([`super::stream`]),
//! and export, inspect and restore on top of it.
//!
//! The plaintext is a sequence of frames, each a 4-byte little-endian length
//! and a codec-encoded value (version byte + bincode, see `codec.rs`): first
//! a [`Manifest`], then one [`BotDump`] per bot in manifest order, nothing
//! after. The stream authenticates every byte and the end; this layer checks
//! that the frames agree with the manifest. Bytes are in docs/FORMAT.md.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::stream::{self, HeaderInfo, DEFAULT_MAX_READ_MEMORY_KIB};
use crate::botid::BotId;
use crate::codec;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::messaging::hook::keys;
use crate::vault::crypto::KdfParams;
use crate::vault::{now, BotConfig, BotDump, ReplaceGroups, Vault};

/// Largest frame a reader accepts (the codec's own limit).
pub const MAX_FRAME: u32 = codec::MAX_DECODE as u32;

/// The first frame: what the file holds and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Unix seconds when the export started.
    pub created_at: i64,
    /// The id of the vault it was exported from.
    pub source_vault: [u8; 16],
    /// The wavault version that wrote it.
    pub wavault_version: String,
    /// The bots, in the order their frames follow.
    pub bots: Vec<ManifestBot>,
}

/// One bot as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBot {
    pub id: BotId,
    /// Number of records (credentials, Signal state, metadata, history).
    pub records: u64,
}

/// A whole backup, read and verified.
#[derive(Debug)]
pub struct Backup {
    pub header: HeaderInfo,
    pub manifest: Manifest,
    pub bots: Vec<BotDump>,
}

/// Progress callback: (done, total) in the unit of the operation.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub file: PathBuf,
    pub bots: Vec<String>,
    pub records: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// Reads the next frame; `None` at a clean end of the payload.
fn read_frame<R: Read, T: serde::de::DeserializeOwned>(
    input: &mut R,
    what: &str,
) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(malformed(format!(
                    "the payload ends inside a frame length ({what})"
                )))
            }
            Ok(n) => got += n,
            Err(e) => return Err(stream_error(e)),
        }
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(malformed(format!(
            "{what} declares {len} bytes, over the {MAX_FRAME}-byte limit"
        )));
    }
    let mut buf = zeroize::Zeroizing::new(vec![0u8; len as usize]);
    input.read_exact(&mut buf).map_err(|e| {
        let from_stream = e.get_ref().is_some();
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof if !from_stream => {
                malformed(format!("the payload ends inside {what}"))
            }
            _ => stream_error(e),
        }
    })?;
    codec::decode(&buf)
        .map(Some)
        .map_err(|e| malformed(format!("{what} does not decode: {e}")))
}

/// An authenticated payload that does not parse: written by a broken or
/// foreign tool, since tampering fails authentication first.
fn malformed(what: String) -> Error {
    Error::Damaged {
        what: format!("the backup file authenticates but its contents are malformed: {what}"),
        hint: "the file was not written by a compatible wavault; use another copy of the backup",
    }
}

/// The stream reports its own failures (tampering, truncation) as an
/// io::Error wrapping a `BackupError`: unwrap it to keep its message and exit code.
fn stream_error(e: std::io::Error) -> Error {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<super::stream::BackupError>())
    {
        let inner = e.into_inner().expect("checked above");
        match inner.downcast::<super::stream::BackupError>() {
            Ok(b) => Error::from(*b),
            Err(other) => Error::Other(other.to_string()),
        }
    } else {
        Error::io("reading the backup", e)
    }
}

/// A verified backup in memory: what `export` writes to a file or a pipe.
pub struct Exported {
    /// The bots, in the file's order.
    pub bots: Vec<String>,
    /// Records written, over all bots.
    pub records: u64,
    /// The whole encrypted file.
    pub bytes: Vec<u8>,
}

/// How to change a bot's configuration as the backup carries it (the state
/// in the vault is not touched): `export --move` disables the bot here
/// before its last snapshot, but the file carries it as it was.
pub type Adjust<'a> = &'a (dyn Fn(&mut BotDump) + Sync);

/// The bots to export: `bots`, which must exist (sorted, once each), or
/// every bot when empty.
pub fn select(vault: &Vault, bots: &[BotId]) -> Result<Vec<BotId>> {
    if bots.is_empty() {
        return Ok(vault.list_bots()?.into_iter().map(|c| c.id).collect());
    }
    for b in bots {
        vault.bot_config(b)?;
    }
    let mut v = bots.to_vec();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Exports `bots` (every bot when empty) into memory and verifies the
/// result in full. Each bot is one snapshot ([`Vault::dump_bot`]): its
/// records as they were at one instant, even while a runner writes them;
/// all dumps are taken before the manifest, which is built from them.
/// `progress` counts bots.
///
/// Uses every core (up to 4): the bots are dumped and encoded by as many
/// workers, the stream's chunks are sealed and verified in parallel
/// ([`stream::seal_all`], [`stream::open_all`]). The verification opens the
/// whole file again with `passphrase` and checks that its payload is
/// byte for byte the frames encoded from the dumps and that the manifest
/// decodes back equal.
pub fn export_bytes(
    vault: &Vault,
    bots: &[BotId],
    passphrase: &[u8],
    kdf: KdfParams,
    adjust: Adjust<'_>,
    progress: Progress<'_>,
) -> Result<Exported> {
    let ids = select(vault, bots)?;
    let threads = stream::default_threads();
    let frames = dump_frames(vault, &ids, adjust, threads, progress)?;
    let manifest = Manifest {
        created_at: now(),
        source_vault: vault.id(),
        wavault_version: env!("CARGO_PKG_VERSION").to_string(),
        bots: frames.iter().map(|(m, _)| m.clone()).collect(),
    };
    let manifest_frame = codec::encode(&manifest);
    let total = 4 * (frames.len() + 1)
        + manifest_frame.len()
        + frames.iter().map(|(_, f)| f.len()).sum::<usize>();
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(total));
    push_frame(&mut plain, &manifest_frame)?;
    for (_, f) in &frames {
        push_frame(&mut plain, f)?;
    }
    drop(frames);
    let bytes = stream::seal_all(&plain, passphrase, kdf, threads)?;
    // Our own bytes: their parameters are what the caller chose.
    let (_, back) = stream::open_all(&bytes, passphrase, KdfParams::MAX.memory_kib, threads)?;
    let differs = || Error::Other("the backup read back differs from what was written".into());
    if back[..] != plain[..] {
        return Err(differs());
    }
    let mut payload = &back[..];
    let read: Option<Manifest> = read_frame(&mut payload, "the manifest")?;
    if read.as_ref() != Some(&manifest) {
        return Err(differs());
    }
    Ok(Exported {
        bots: ids.iter().map(|b| b.to_string()).collect(),
        records: manifest.bots.iter().map(|b| b.records).sum(),
        bytes,
    })
}

/// Appends one frame (length, then `encoded`) to the payload.
fn push_frame(out: &mut Vec<u8>, encoded: &[u8]) -> Result<()> {
    let len = u32::try_from(encoded.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| Error::Other(format!("one bot's state is larger than {MAX_FRAME} bytes")))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(encoded);
    Ok(())
}

/// Each bot of `ids` dumped ([`Vault::dump_bot`], one snapshot each),
/// adjusted and encoded as its frame, in `ids` order, by `threads` workers
/// taking the next bot in turn (this thread is one of them and reports
/// `progress`). The first error stops every worker.
fn dump_frames(
    vault: &Vault,
    ids: &[BotId],
    adjust: Adjust<'_>,
    threads: usize,
    progress: Progress<'_>,
) -> Result<Vec<(ManifestBot, zeroize::Zeroizing<Vec<u8>>)>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    type Frame = (ManifestBot, zeroize::Zeroizing<Vec<u8>>);
    let total = ids.len();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let one = |id: &BotId| -> Result<Frame> {
        let mut dump = vault.dump_bot(id)?;
        adjust(&mut dump);
        let head = ManifestBot {
            id: dump.config.id.clone(),
            records: dump.records.len() as u64,
        };
        Ok((head, zeroize::Zeroizing::new(codec::encode(&dump))))
    };
    // Takes bots until none is left or a worker failed; `tick` after each.
    let work = |tick: &mut dyn FnMut()| -> Result<Vec<(usize, Frame)>> {
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= total || failed.load(Ordering::Relaxed) {
                return Ok(out);
            }
            match one(&ids[i]) {
                Ok(f) => out.push((i, f)),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
            tick();
        }
    };
    let results: Vec<Result<Vec<(usize, Frame)>>> = std::thread::scope(|s| {
        let others: Vec<_> = (1..threads.min(total).max(1))
            .map(|_| s.spawn(|| work(&mut || {})))
            .collect();
        let mut results = vec![work(&mut || {
            progress(done.load(Ordering::Relaxed) as u64, total as u64)
        })];
        for h in others {
            results.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        results
    });
    let mut slots: Vec<Option<Frame>> = (0..total).map(|_| None).collect();
    for r in results {
        for (i, f) in r? {
            slots[i] = Some(f);
        }
    }
    progress(total as u64, total as u64);
    Ok(slots
        .into_iter()
        .map(|f| f.expect("every bot dumped when no worker failed"))
        .collect())
}

/// Exports `bots` (every bot when empty) to the new file `out`
/// ([`export_bytes`], then [`write_new_file`]). Refuses to overwrite an
/// existing file. `progress` counts bots.
pub fn export(
    vault: &Vault,
    bots: &[BotId],
    out: &Path,
    passphrase: &[u8],
    kdf: KdfParams,
    progress: Progress<'_>,
) -> Result<ExportReport> {
    refuse_existing(out)?;
    let e = export_bytes(vault, bots, passphrase, kdf, &|_| {}, progress)?;
    write_new_file(out, &e.bytes)?;
    Ok(ExportReport {
        file: out.to_path_buf(),
        bots: e.bots,
        records: e.records,
        bytes: e.bytes.len() as u64,
    })
}

fn refuse_existing(out: &Path) -> Result<()> {
    if out.exists() {
        return Err(Error::AlreadyExists(format!(
            "{} exists: choose another file name or remove it first",
            out.display()
        )));
    }
    Ok(())
}

/// Writes `bytes` as the new file `out` (mode 0600): into a temporary file
/// beside it, synced, then renamed into place and the folder synced. Refuses
/// to overwrite a file, also one that appears meanwhile.
pub fn write_new_file(out: &Path, bytes: &[u8]) -> Result<()> {
    refuse_existing(out)?;
    let tmp = temp_path(out);
    let written = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts
            .open(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if out.exists() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::AlreadyExists(format!(
            "{} appeared while exporting",
            out.display()
        )));
    }
    std::fs::rename(&tmp, out)
        .map_err(|e| Error::io(format!("renaming into {}", out.display()), e))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsutil::sync_dir(parent)?;
    }
    Ok(())
}

fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    out.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Reads and verifies a whole backup file into memory. Nothing is trusted
/// before the stream authenticated it, and the frames must agree with the
/// manifest. A header asking for more Argon2id memory than
/// [`DEFAULT_MAX_READ_MEMORY_KIB`] (1 GiB) is refused before the KDF runs;
/// [`read_file_limited`] takes another limit. `progress` counts bytes of the file.
pub fn read_file(path: &Path, passphrase: &[u8], progress: Progress<'_>) -> Result<(u64, Backup)> {
    read_file_limited(path, passphrase, DEFAULT_MAX_READ_MEMORY_KIB, progress)
}

/// [`read_file`] accepting up to `max_kdf_memory_kib` of Argon2id memory
/// (never more than the format's cap, [`KdfParams::MAX`]). The file is
/// read into memory, then verified as [`read_bytes_limited`] does.
pub fn read_file_limited(
    path: &Path,
    passphrase: &[u8],
    max_kdf_memory_kib: u32,
    progress: Progress<'_>,
) -> Result<(u64, Backup)> {
    let mut file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("backup file {}", path.display())),
        _ => Error::io(format!("opening {}", path.display()), e),
    })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let backup = read_bytes_limited(&bytes, passphrase, max_kdf_memory_kib, progress)?;
    Ok((bytes.len() as u64, backup))
}

/// [`read_file_limited`] of a backup held in memory (read from a pipe).
/// The stream's chunks are opened on every core ([`stream::open_all`]):
/// nothing is decoded before the whole file authenticated; then the bot
/// frames are decoded in parallel and checked against the manifest in
/// file order (the first problem in the file is the one reported).
pub fn read_bytes_limited(
    bytes: &[u8],
    passphrase: &[u8],
    max_kdf_memory_kib: u32,
    progress: Progress<'_>,
) -> Result<Backup> {
    let size = bytes.len() as u64;
    let threads = stream::default_threads();
    let (header, plain) = stream::open_all(bytes, passphrase, max_kdf_memory_kib, threads)?;
    progress(size / 2, size);
    let (manifest, bots) = parse_payload(&plain, threads)?;
    progress(size, size);
    Ok(Backup {
        header,
        manifest,
        bots,
    })
}

/// The frames of an authenticated payload: the manifest, then its bots.
fn parse_payload(plain: &[u8], threads: usize) -> Result<(Manifest, Vec<BotDump>)> {
    let mut input = plain;
    let manifest: Manifest = read_frame(&mut input, "the manifest")?
        .ok_or_else(|| malformed("the payload is empty (no manifest)".into()))?;
    let n = manifest.bots.len();
    // Split the bot frames (lengths only); a structural problem is reported
    // after the frames before it decoded and matched the manifest.
    let mut frames: Vec<(usize, &[u8])> = Vec::with_capacity(n.min(100_000));
    let mut structural: Option<Error> = None;
    for i in 0..n {
        match split_frame(&mut input, &format!("bot {} of {n}", i + 1)) {
            Ok(Some(f)) => frames.push((i, f)),
            Ok(None) => {
                structural = Some(malformed(format!(
                    "the manifest lists {n} bots but the file holds {i}"
                )));
                break;
            }
            Err(e) => {
                structural = Some(e);
                break;
            }
        }
    }
    let decoded = stream::split_work(frames, threads, |run| {
        run.into_iter()
            .map(|(i, f)| {
                codec::decode::<BotDump>(f)
                    .map_err(|e| malformed(format!("bot {} of {n} does not decode: {e}", i + 1)))
            })
            .collect::<Vec<_>>()
    });
    let mut bots = Vec::with_capacity(n.min(100_000));
    for (i, (dump, b)) in decoded
        .into_iter()
        .flatten()
        .zip(&manifest.bots)
        .enumerate()
    {
        let dump = dump?;
        if dump.config.id != b.id || dump.records.len() as u64 != b.records {
            return Err(malformed(format!(
                "bot frame {} does not match the manifest entry for {}",
                i + 1,
                b.id
            )));
        }
        bots.push(dump);
    }
    if let Some(e) = structural {
        return Err(e);
    }
    if read_frame::<_, BotDump>(&mut input, "an extra frame")?.is_some() {
        return Err(malformed(
            "frames after the last bot in the manifest".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if !manifest.bots.iter().all(|b| seen.insert(b.id.clone())) {
        return Err(malformed("a bot is listed twice".into()));
    }
    Ok((manifest, bots))
}

/// The next frame's bytes from an authenticated payload, not decoded;
/// `None` at a clean end. The same checks and messages as [`read_frame`].
fn split_frame<'a>(input: &mut &'a [u8], what: &str) -> Result<Option<&'a [u8]>> {
    if input.is_empty() {
        return Ok(None);
    }
    if input.len() < 4 {
        return Err(malformed(format!(
            "the payload ends inside a frame length ({what})"
        )));
    }
    let len = u32::from_le_bytes(input[..4].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Err(malformed(format!(
            "{what} declares {len} bytes, over the {MAX_FRAME}-byte limit"
        )));
    }
    let rest = &input[4..];
    if rest.len() < len as usize {
        return Err(malformed(format!("the payload ends inside {what}")));
    }
    let (frame, rest) = rest.split_at(len as usize);
    *input = rest;
    Ok(Some(frame))
}

/// A bot's hooks as a backup carries them: the webhook URL and the
/// on-message command (`sh -c`), each when set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hooks {
    pub webhook: Option<String>,
    pub on_message: Option<String>,
}

impl Hooks {
    /// The hooks of `cfg`.
    pub fn of(cfg: &BotConfig) -> Hooks {
        Hooks {
            webhook: cfg.webhook.clone(),
            on_message: cfg.extra.get(keys::ON_MESSAGE).cloned(),
        }
    }

    /// True when neither is set (the bot uses the `run` defaults).
    pub fn is_empty(&self) -> bool {
        self.webhook.is_none() && self.on_message.is_none()
    }

    /// "webhook URL" / "on-message command `CMD`", for people.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(u) = &self.webhook {
            parts.push(format!("webhook {u}"));
        }
        if let Some(c) = &self.on_message {
            parts.push(format!("on-message command `{c}`"));
        }
        if parts.is_empty() {
            "none (the `run` default applies)".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The hooks of one restored bot, and whether they were written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoredHooks {
    pub bot: String,
    pub webhook: Option<String>,
    pub on_message: Option<String>,
    /// True with `--keep-hooks`; false: removed, the bot uses the `run` defaults.
    pub restored: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreReport {
    pub restored: Vec<String>,
    /// Bots that existed and were overwritten (`--force`).
    pub replaced: Vec<String>,
    pub records: u64,
    /// Automatic backup of the replaced bots, taken first.
    pub auto_backup: Option<PathBuf>,
    /// The restored bots that carried a webhook or an on-message command.
    pub hooks: Vec<RestoredHooks>,
}

/// How to restore.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions<'a> {
    /// The bots to restore; empty: every bot in the backup.
    pub select: &'a [BotId],
    /// Overwrite bots that exist (after `before_replace`).
    pub force: bool,
    /// Write the bots' webhooks and on-message commands too. Without it they
    /// are removed: a backup made elsewhere must not bring commands that
    /// `run` would execute on this host.
    pub keep_hooks: bool,
}

/// Restores `select` (every bot in the backup when empty) into `vault`,
/// without hooks: [`restore_with`] with `keep_hooks` false.
pub fn restore(
    vault: &Vault,
    backup: &Backup,
    select: &[BotId],
    force: bool,
    before_replace: &mut dyn FnMut(&[BotId]) -> Result<Option<PathBuf>>,
    progress: Progress<'_>,
) -> Result<RestoreReport> {
    let opts = RestoreOptions {
        select,
        force,
        keep_hooks: false,
    };
    restore_with(vault, backup, opts, before_replace, progress)
}

/// A restored configuration that fails [`BotConfig::check`]: exit 5, like
/// any backup whose content is not acceptable.
fn refused(cfg: &BotConfig, p: &crate::messaging::config::ConfigProblem) -> Error {
    Error::Damaged {
        what: format!(
            "the backup's configuration of bot {} is not acceptable: {p}",
            cfg.id
        ),
        hint: "nothing was restored. Fix the bot where the backup was made and export it again, or restore the other bots with --bot ID",
    }
}

/// Restores into `vault`. Checks everything before changing anything: the
/// named bots must be in the backup, every chosen configuration must pass
/// the checks of `bot add`/`bot set` ([`BotConfig::check`]), and bots that
/// exist already need `force`; with `force`, `before_replace` gets the
/// existing bots first (the automatic backup). Then each bot is applied in
/// its own transaction (wholly old or wholly new after a crash or a power
/// cut), with its webhook and on-message command removed unless
/// `keep_hooks`; one durable flush covers a group of bots
/// ([`Vault::replace_bots`]). `progress` counts durable bots.
pub fn restore_with(
    vault: &Vault,
    backup: &Backup,
    opts: RestoreOptions<'_>,
    before_replace: &mut dyn FnMut(&[BotId]) -> Result<Option<PathBuf>>,
    progress: Progress<'_>,
) -> Result<RestoreReport> {
    let select = opts.select;
    let chosen: Vec<&BotDump> = if select.is_empty() {
        backup.bots.iter().collect()
    } else {
        select
            .iter()
            .map(|id| {
                backup
                    .bots
                    .iter()
                    .find(|d| &d.config.id == id)
                    .ok_or_else(|| {
                        Error::NotFound(format!(
                            "bot {id} is not in this backup (see `wavault backup inspect FILE`)"
                        ))
                    })
            })
            .collect::<Result<_>>()?
    };
    for d in &chosen {
        d.config.check().map_err(|p| refused(&d.config, &p))?;
    }
    let existing = vault.list_bots()?;
    let clash: Vec<BotId> = chosen
        .iter()
        .filter(|d| existing.iter().any(|c| c.id == d.config.id))
        .map(|d| d.config.id.clone())
        .collect();
    if !clash.is_empty() && !opts.force {
        return Err(Error::AlreadyExists(format!(
            "{} already in this vault; nothing was changed. Use --force to overwrite (an automatic backup of the current state is taken first)",
            clash.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let auto_backup = if clash.is_empty() {
        None
    } else {
        before_replace(&clash)?
    };
    let total = chosen.len() as u64;
    let mut records = 0;
    let mut hooks = Vec::new();
    let mut configs = Vec::with_capacity(chosen.len());
    for dump in &chosen {
        let h = Hooks::of(&dump.config);
        let mut cfg = dump.config.clone();
        if !opts.keep_hooks {
            cfg.webhook = None;
            cfg.extra.remove(keys::ON_MESSAGE);
        }
        configs.push(cfg);
        if !h.is_empty() {
            hooks.push(RestoredHooks {
                bot: dump.config.id.to_string(),
                webhook: h.webhook,
                on_message: h.on_message,
                restored: opts.keep_hooks,
            });
        }
        records += dump.records.len() as u64;
    }
    let bots: Vec<(&BotConfig, &[crate::vault::DumpedRecord])> = configs
        .iter()
        .zip(&chosen)
        .map(|(c, d)| (c, &d.records[..]))
        .collect();
    // Each bot one transaction; one durable flush per group of bots.
    vault.replace_bots(
        &bots,
        restore_groups(),
        stream::default_threads(),
        &mut |done| {
            progress(done as u64, total);
            crate::testpoint::pause("restore-group-durable");
            Ok(())
        },
    )?;
    Ok(RestoreReport {
        restored: chosen.iter().map(|d| d.config.id.to_string()).collect(),
        replaced: clash.iter().map(|b| b.to_string()).collect(),
        records,
        auto_backup,
        hooks,
    })
}

/// The environment variable that sets how many bots share one durable
/// flush in a restore (debug builds only; for the kill tests).
pub const TEST_GROUP_ENV: &str = "WAVAULT_TEST_RESTORE_GROUP";

/// How a restore groups bots under one durable flush:
/// [`ReplaceGroups::DEFAULT`], or [`TEST_GROUP_ENV`] bots in a debug build.
fn restore_groups() -> ReplaceGroups {
    #[cfg(debug_assertions)]
    if let Some(bots) = std::env::var(TEST_GROUP_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return ReplaceGroups {
            bots,
            bytes: usize::MAX,
        };
    }
    ReplaceGroups::DEFAULT
}

/// One bot as `backup inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InspectBot {
    pub id: String,
    pub enabled: bool,
    pub records: u64,
    /// Bytes of record names and data.
    pub bytes: u64,
    /// Whether it holds paired credentials.
    pub credentials: String,
    /// Its webhook URL, if it has one.
    pub webhook: Option<String>,
    /// Its on-message command (run with `sh -c`), if it has one.
    pub on_message: Option<String>,
}

/// What `backup inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub format_version: u8,
    pub created_at: i64,
    pub source_vault: String,
    pub wavault_version: String,
    pub kdf_memory_mib: u32,
    pub kdf_iterations: u32,
    pub kdf_parallelism: u32,
    pub file_bytes: u64,
    pub bots: Vec<InspectBot>,
}

/// Summarises a verified backup.
pub fn inspect(file_bytes: u64, b: &Backup) -> Inspection {
    Inspection {
        format_version: b.header.version,
        created_at: b.manifest.created_at,
        source_vault: crate::vault::hex(&b.manifest.source_vault),
        wavault_version: b.manifest.wavault_version.clone(),
        kdf_memory_mib: b.header.kdf.memory_kib / 1024,
        kdf_iterations: b.header.kdf.iterations,
        kdf_parallelism: b.header.kdf.parallelism,
        file_bytes,
        bots: b
            .bots
            .iter()
            .map(|d| InspectBot {
                id: d.config.id.to_string(),
                enabled: d.config.enabled,
                records: d.records.len() as u64,
                bytes: d.payload_bytes(),
                credentials: crate::store::dump_credentials_state(d).to_string(),
                webhook: d.config.webhook.clone(),
                on_message: d.config.extra.get(keys::ON_MESSAGE).cloned(),
            })
            .collect(),
    }
}
