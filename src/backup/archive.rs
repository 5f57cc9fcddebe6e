//! What a backup file holds inside its encrypted stream ([`super::stream`]),
//! and export, inspect and restore on top of it.
//!
//! The plaintext is a sequence of frames, each a 4-byte little-endian length
//! and a codec-encoded value (version byte + bincode, see `codec.rs`): first
//! a [`Manifest`], then one [`BotDump`] per bot in manifest order, nothing
//! after. The stream authenticates every byte and the end; this layer checks
//! that the frames agree with the manifest. Bytes are in docs/FORMAT.md.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::stream::{HeaderInfo, StreamReader, StreamWriter, DEFAULT_MAX_READ_MEMORY_KIB};
use crate::botid::BotId;
use crate::codec;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::messaging::hook::keys;
use crate::vault::crypto::KdfParams;
use crate::vault::{now, BotConfig, BotDump, Vault};

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

fn write_frame<W: Write, T: Serialize>(out: &mut W, value: &T) -> Result<()> {
    let bytes = zeroize::Zeroizing::new(codec::encode(value));
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| Error::Other(format!("one bot's state is larger than {MAX_FRAME} bytes")))?;
    out.write_all(&len.to_le_bytes())
        .and_then(|_| out.write_all(&bytes))
        .map_err(|e| Error::io("writing the backup", e))
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
pub type Adjust<'a> = &'a dyn Fn(&mut BotDump);

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
pub fn export_bytes(
    vault: &Vault,
    bots: &[BotId],
    passphrase: &[u8],
    kdf: KdfParams,
    adjust: Adjust<'_>,
    progress: Progress<'_>,
) -> Result<Exported> {
    let ids = select(vault, bots)?;
    let total = ids.len() as u64;
    let mut dumps = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let mut dump = vault.dump_bot(id)?;
        adjust(&mut dump);
        dumps.push(dump);
        progress(i as u64 + 1, total);
    }
    let manifest = Manifest {
        created_at: now(),
        source_vault: vault.id(),
        wavault_version: env!("CARGO_PKG_VERSION").to_string(),
        bots: dumps
            .iter()
            .map(|d| ManifestBot {
                id: d.config.id.clone(),
                records: d.records.len() as u64,
            })
            .collect(),
    };
    let mut w = StreamWriter::create(Vec::new(), passphrase, kdf)?;
    write_frame(&mut w, &manifest)?;
    for dump in &dumps {
        write_frame(&mut w, dump)?;
    }
    let bytes = w.finish()?;
    // Our own bytes: their parameters are what the caller chose.
    let back = read_bytes_limited(
        &bytes,
        passphrase,
        KdfParams::MAX.memory_kib,
        &mut |_, _| {},
    )?;
    if back.manifest != manifest {
        return Err(Error::Other(
            "the backup read back differs from what was written".into(),
        ));
    }
    Ok(Exported {
        bots: ids.iter().map(|b| b.to_string()).collect(),
        records: manifest.bots.iter().map(|b| b.records).sum(),
        bytes,
    })
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
/// (never more than the format's cap, [`KdfParams::MAX`]).
pub fn read_file_limited(
    path: &Path,
    passphrase: &[u8],
    max_kdf_memory_kib: u32,
    progress: Progress<'_>,
) -> Result<(u64, Backup)> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("backup file {}", path.display())),
        _ => Error::io(format!("opening {}", path.display()), e),
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let backup = read_from(
        BufReader::new(file),
        size,
        passphrase,
        max_kdf_memory_kib,
        progress,
    )?;
    Ok((size, backup))
}

/// [`read_file_limited`] of a backup held in memory (read from a pipe).
pub fn read_bytes_limited(
    bytes: &[u8],
    passphrase: &[u8],
    max_kdf_memory_kib: u32,
    progress: Progress<'_>,
) -> Result<Backup> {
    read_from(
        bytes,
        bytes.len() as u64,
        passphrase,
        max_kdf_memory_kib,
        progress,
    )
}

fn read_from<R: Read>(
    input: R,
    size: u64,
    passphrase: &[u8],
    max_kdf_memory_kib: u32,
    progress: Progress<'_>,
) -> Result<Backup> {
    let (header, mut r) = StreamReader::open_limited(input, passphrase, max_kdf_memory_kib)?;
    let manifest: Manifest = read_frame(&mut r, "the manifest")?
        .ok_or_else(|| malformed("the payload is empty (no manifest)".into()))?;
    let mut bots = Vec::with_capacity(manifest.bots.len().min(100_000));
    for (i, b) in manifest.bots.iter().enumerate() {
        let dump: BotDump =
            read_frame(&mut r, &format!("bot {} of {}", i + 1, manifest.bots.len()))?.ok_or_else(
                || {
                    malformed(format!(
                        "the manifest lists {} bots but the file holds {i}",
                        manifest.bots.len()
                    ))
                },
            )?;
        if dump.config.id != b.id || dump.records.len() as u64 != b.records {
            return Err(malformed(format!(
                "bot frame {} does not match the manifest entry for {}",
                i + 1,
                b.id
            )));
        }
        progress(r.bytes_read(), size);
        bots.push(dump);
    }
    if read_frame::<_, BotDump>(&mut r, "an extra frame")?.is_some() {
        return Err(malformed(
            "frames after the last bot in the manifest".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if !manifest.bots.iter().all(|b| seen.insert(b.id.clone())) {
        return Err(malformed("a bot is listed twice".into()));
    }
    progress(size, size);
    Ok(Backup {
        header,
        manifest,
        bots,
    })
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
/// its own transaction (wholly old or wholly new after a crash), with its
/// webhook and on-message command removed unless `keep_hooks`. `progress`
/// counts bots.
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
    for (i, dump) in chosen.iter().enumerate() {
        let h = Hooks::of(&dump.config);
        if h.is_empty() || opts.keep_hooks {
            vault.replace_bot(dump)?;
        } else {
            let mut stripped = (*dump).clone();
            stripped.config.webhook = None;
            stripped.config.extra.remove(keys::ON_MESSAGE);
            vault.replace_bot(&stripped)?;
        }
        if !h.is_empty() {
            hooks.push(RestoredHooks {
                bot: dump.config.id.to_string(),
                webhook: h.webhook,
                on_message: h.on_message,
                restored: opts.keep_hooks,
            });
        }
        records += dump.records.len() as u64;
        progress(i as u64 + 1, total);
        crate::testpoint::pause("restore-bot-replaced");
    }
    Ok(RestoreReport {
        restored: chosen.iter().map(|d| d.config.id.to_string()).collect(),
        replaced: clash.iter().map(|b| b.to_string()).collect(),
        records,
        auto_backup,
        hooks,
    })
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
