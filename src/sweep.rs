//! The retention sweep: `wavault sweep` and the runner's timer.
//!
//! What it removes, each only when older than the retention:
//! - the credentials and Signal state of bots that are dead: status
//!   `logged_out`, `replaced` or `error` since before the cutoff (the time of
//!   the history entry that entered that status, else the metadata's last
//!   update). Their configuration, metadata and history stay, so the bot
//!   can pair again. An automatic backup of those bots comes first; if it
//!   fails, nothing is removed;
//! - history entries older than the cutoff, for every bot;
//! - orphan records (belonging to no bot), whatever their age;
//! - idempotency keys of sends older than 24 h, whatever the retention
//!   (`messaging::outbox`; not in the report, logged);
//! - the sealed download parameters of inbound media (media key, path,
//!   hashes) of messages queued before the cutoff (`messaging::media`;
//!   not in the report, logged): past the retention a message's media can
//!   no longer be fetched;
//! - automatic backups beyond the kept count or age.
//!
//! Then, when the vault is marked "rotation due" (this sweep purged
//! credentials or orphans, or a `bot remove`, `bot reauth`, `queue drop` or
//! restore over a bot deleted something since the last rotation), the data
//! key is rotated, once: the deleted values, which sled keeps in its files
//! until it reuses the space, no longer open with any key in the key file
//! (see `vault::shred`). History pruning does not mark: status history holds
//! no credentials or message text, and it would rotate on most sweeps.
//!
//! Bots in any other status are never touched, however idle: a paired bot
//! that has been quiet for a year still has its credentials. Each bot's
//! purge is one atomic batch; a crash leaves every bot wholly before or
//! wholly after. Time is passed in, so tests inject it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backup::auto;
use crate::botid::BotId;
use crate::error::Result;
use crate::sessions::{Sessions, Status};
use crate::vault::{Kind, TreeId, Vault};

/// What one bot lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotSweep {
    pub bot: String,
    pub status: Status,
    /// Credentials and Signal records removed (dead bots only).
    pub credential_records: u64,
    pub credential_bytes: u64,
    pub history_entries: u64,
    pub history_bytes: u64,
}

/// What a sweep removed (or, in a dry run, would remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    pub dry_run: bool,
    /// Unix seconds: older than this is removed.
    pub cutoff: i64,
    /// Bots with something to remove.
    pub bots: Vec<BotSweep>,
    pub orphan_records: u64,
    pub orphan_bytes: u64,
    /// Automatic backup of the dead bots, taken before their purge.
    pub auto_backup: Option<PathBuf>,
    /// Automatic backups removed by the keep rules.
    pub pruned_backups: Vec<PathBuf>,
    /// Deleted data awaits a data-key rotation: set after a sweep that
    /// purged something or followed another deletion (a dry run reports
    /// what a real sweep would do), false once the rotation ran.
    #[serde(default)]
    pub rotation_due: bool,
    /// The term the data key was rotated to at the end of this sweep.
    #[serde(default)]
    pub rotated_to_term: Option<u32>,
    /// Terms this sweep's rotation retired (their values no longer open).
    #[serde(default)]
    pub retired_terms: Vec<u32>,
}

impl SweepReport {
    /// Total bytes removed.
    pub fn bytes(&self) -> u64 {
        self.orphan_bytes
            + self
                .bots
                .iter()
                .map(|b| b.credential_bytes + b.history_bytes)
                .sum::<u64>()
    }

    /// One line for logs and the runner's job event.
    pub fn summary(&self) -> String {
        let creds = self
            .bots
            .iter()
            .filter(|b| b.credential_records > 0)
            .count();
        let hist: u64 = self.bots.iter().map(|b| b.history_entries).sum();
        let rotation = match (self.rotated_to_term, self.rotation_due) {
            (Some(t), _) => {
                format!("; data key rotated to term {t} (deleted data no longer opens)")
            }
            (None, true) if self.dry_run => "; would rotate the data key".to_string(),
            (None, true) => "; data-key rotation still due".to_string(),
            (None, false) => String::new(),
        };
        format!(
            "{}credentials of {creds} dead bot(s), {hist} history entries, {} orphan records, {} automatic backups: {} bytes{rotation}",
            if self.dry_run { "would remove " } else { "removed " },
            self.orphan_records,
            self.pruned_backups.len(),
            self.bytes()
        )
    }
}

/// Writes an automatic backup of the given bots; returns its path.
pub type TakeBackup<'a> = dyn FnMut(&[BotId]) -> Result<PathBuf> + 'a;

/// How a sweep runs.
pub struct SweepOptions<'a> {
    /// Older than this is removed.
    pub retention: Duration,
    pub dry_run: bool,
    /// Unix seconds now.
    pub now: i64,
    /// Writes the automatic backup of the dead bots; `None` skips their
    /// purge (reported with zero credentials removed) when no backup can be taken.
    pub backup: Option<&'a mut TakeBackup<'a>>,
}

/// Since when the bot has been in its current status.
fn status_since(s: &Sessions, now: i64) -> Result<(Status, i64)> {
    let meta = s.load(now)?;
    let since = s
        .history()?
        .iter()
        .rev()
        .find(|h| h.to == meta.status)
        .map_or(meta.updated_at, |h| h.at);
    Ok((meta.status, since))
}

/// Runs the sweep over every bot of `vault`.
pub fn sweep(vault: &Vault, mut opts: SweepOptions<'_>) -> Result<SweepReport> {
    // Whoever calls (the CLI's parsed flag, the control socket's JSON, the
    // runner's timer), a zero retention would delete every history entry
    // and a huge one must not wrap around into a short one.
    if opts.retention.as_secs() == 0 {
        return Err(crate::Error::Usage(
            "the sweep's retention must be at least 1s (e.g. 30d)".into(),
        ));
    }
    let retention = i64::try_from(opts.retention.as_secs()).unwrap_or(i64::MAX);
    let cutoff = opts.now.saturating_sub(retention);
    let plans = plan(vault, cutoff, opts.now)?;
    let (orphans, orphan_size) = vault.orphan_records()?;
    let backups_dir = vault.dir().join(auto::DIR);
    let mut report = SweepReport {
        dry_run: opts.dry_run,
        cutoff,
        bots: Vec::new(),
        orphan_records: orphan_size.records,
        orphan_bytes: orphan_size.bytes,
        auto_backup: None,
        pruned_backups: Vec::new(),
        rotation_due: false,
        rotated_to_term: None,
        retired_terms: Vec::new(),
    };
    let dead: Vec<BotId> = plans
        .iter()
        .filter(|p| p.sweep.credential_records > 0)
        .map(|p| p.id.clone())
        .collect();
    let purge_credentials = !dead.is_empty() && opts.backup.is_some();
    if opts.dry_run {
        report.pruned_backups = would_prune(&backups_dir, opts.now)?;
        report.rotation_due = vault.rotation_due()? || purge_credentials || orphan_size.records > 0;
        report.bots = plans.into_iter().map(|p| p.sweep).collect();
        return Ok(report);
    }
    if purge_credentials {
        let take = opts.backup.as_mut().expect("checked above");
        report.auto_backup = Some(take(&dead)?);
    }
    for p in plans {
        if let Some(done) = carry_out(vault, p, cutoff, purge_credentials)? {
            report.bots.push(done);
        }
    }
    if !orphans.is_empty() {
        vault.purging(|| vault.delete_records(orphans))?;
    }
    let mut keys = 0;
    for cfg in vault.list_bots()? {
        keys += crate::messaging::outbox::prune(&vault.view(&cfg.id), opts.now)?;
    }
    if keys > 0 {
        tracing::info!("sweep: {keys} idempotency key(s) older than 24 h removed");
    }
    let mut media = 0;
    for cfg in vault.list_bots()? {
        media += crate::messaging::media::prune(&vault.view(&cfg.id), cutoff)?;
    }
    if media > 0 {
        tracing::info!(
            "sweep: media download parameters of {media} message(s) past the retention removed"
        );
    }
    vault.flush()?;
    let current = report.auto_backup.clone().unwrap_or_default();
    report.pruned_backups = auto::prune(
        &backups_dir,
        &current,
        auto::KEEP_COUNT,
        auto::KEEP_AGE,
        unix_time(opts.now),
    )?;
    // One rotation however many deletions marked the vault since the last.
    if vault.rotation_due()? {
        let r = vault.rotate_key(&mut |_, _| {})?;
        report.rotated_to_term = Some(r.new_term);
        report.retired_terms = r.retired;
    }
    report.rotation_due = vault.rotation_due()?;
    Ok(report)
}

/// What the sweep would remove of one bot.
struct Plan {
    id: BotId,
    sessions: Sessions,
    sweep: BotSweep,
}

/// Every bot with something to remove: the credentials of bots dead
/// (logged out, replaced, failed) since before `cutoff`, and history
/// entries older than `cutoff`.
fn plan(vault: &Vault, cutoff: i64, now: i64) -> Result<Vec<Plan>> {
    let store_kinds = crate::store::kinds::all();
    let mut plans = Vec::new();
    for cfg in vault.list_bots()? {
        let s = Sessions::new(vault.view(&cfg.id));
        let (status, since) = status_since(&s, now)?;
        let dead = status.is_permanent() && since < cutoff;
        let creds = if dead {
            vault.footprint(&cfg.id, &store_kinds)?
        } else {
            Default::default()
        };
        let (history_entries, history_bytes) = prunable_size(vault, &cfg.id, &s, cutoff)?;
        if creds.records > 0 || history_entries > 0 {
            plans.push(Plan {
                id: cfg.id.clone(),
                sessions: s,
                sweep: BotSweep {
                    bot: cfg.id.to_string(),
                    status,
                    credential_records: creds.records,
                    credential_bytes: creds.bytes,
                    history_entries,
                    history_bytes,
                },
            });
        }
    }
    Ok(plans)
}

/// How many of the bot's history entries are older than `cutoff`, and
/// their bytes as stored.
fn prunable_size(vault: &Vault, id: &BotId, s: &Sessions, cutoff: i64) -> Result<(u64, u64)> {
    let view = vault.view(id);
    let (mut entries, mut bytes) = (0, 0);
    for h in s.prunable_history(cutoff)? {
        let key = view.key(Kind::SESSION_HISTORY, &h.seq.to_be_bytes());
        if let Some(v) = vault.db().get(TreeId::Records, &key)? {
            entries += 1;
            bytes += (key.len() + v.len()) as u64;
        }
    }
    Ok((entries, bytes))
}

/// Removes what `p` planned: the credentials only when they were backed up
/// (`purge_credentials`), old history always. What was removed, if anything.
fn carry_out(
    vault: &Vault,
    mut p: Plan,
    cutoff: i64,
    purge_credentials: bool,
) -> Result<Option<BotSweep>> {
    if p.sweep.credential_records > 0 {
        if purge_credentials {
            vault.purging(|| crate::store::clear_credentials(&vault.view(&p.id)))?;
            crate::testpoint::pause("sweep-purged-bot");
        } else {
            tracing::warn!(
                "sweep: no automatic backup possible here; credentials of a dead bot kept"
            );
            p.sweep.credential_records = 0;
            p.sweep.credential_bytes = 0;
        }
    }
    if p.sweep.history_entries > 0 {
        p.sessions.prune_history(cutoff)?;
    }
    let removed = p.sweep.credential_records > 0 || p.sweep.history_entries > 0;
    Ok(removed.then_some(p.sweep))
}

/// Runs the sweep now (the `sweep` command, its control-socket op and the
/// runner's timer). The automatic backup before purging dead bots is sealed
/// with `passphrase`; without one their credentials are kept.
pub fn sweep_now(
    vault: &Vault,
    retention: Duration,
    dry_run: bool,
    passphrase: Option<&[u8]>,
) -> Result<SweepReport> {
    let mut take =
        |bots: &[BotId]| auto::take(vault, bots, passphrase.unwrap_or_default(), "sweep");
    sweep(
        vault,
        SweepOptions {
            retention,
            dry_run,
            now: crate::vault::now(),
            backup: if passphrase.is_some() {
                Some(&mut take)
            } else {
                None
            },
        },
    )
}

fn unix_time(secs: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// The automatic backups a real sweep at `now` would prune.
fn would_prune(dir: &std::path::Path, now: i64) -> Result<Vec<PathBuf>> {
    let all = auto::list(dir)?;
    let excess = all.len().saturating_sub(auto::KEEP_COUNT);
    Ok(all
        .into_iter()
        .enumerate()
        .filter(|(i, (secs, _))| {
            *i < excess || (now.max(0) as u64).saturating_sub(*secs) > auto::KEEP_AGE.as_secs()
        })
        .map(|(_, (_, p))| p)
        .collect())
}

/// Human report.
pub fn table(r: &SweepReport) -> String {
    use crate::table::{Align::*, Table};
    use std::fmt::Write;
    let mut t = Table::new(&[
        ("BOT", Left),
        ("STATUS", Left),
        ("CREDENTIAL RECORDS", Right),
        ("CREDENTIAL BYTES", Right),
        ("HISTORY ENTRIES", Right),
        ("HISTORY BYTES", Right),
    ]);
    for b in &r.bots {
        t.row([
            b.bot.clone(),
            b.status.as_str().to_owned(),
            b.credential_records.to_string(),
            b.credential_bytes.to_string(),
            b.history_entries.to_string(),
            b.history_bytes.to_string(),
        ]);
    }
    let mut out = if r.bots.is_empty() {
        String::new()
    } else {
        t.render()
    };
    if r.orphan_records > 0 {
        let _ = writeln!(
            out,
            "orphan records: {} ({} bytes)",
            r.orphan_records, r.orphan_bytes
        );
    }
    for p in &r.pruned_backups {
        let _ = writeln!(out, "old automatic backup: {}", p.display());
    }
    if let Some(p) = &r.auto_backup {
        let _ = writeln!(out, "automatic backup before the purge: {}", p.display());
    }
    let _ = writeln!(out, "{}", r.summary());
    out
}

/// What `bot reauth` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReauthReport {
    pub bot: String,
    /// Credential and Signal records deleted.
    pub removed: u64,
    /// The automatic backup taken first.
    pub auto_backup: PathBuf,
}

/// Forces re-authentication of `bot` (which must not be running): an
/// automatic backup of it, then its credentials and Signal state deleted
/// in one batch; configuration, metadata (less `authenticated_at`) and
/// history kept. The next `run` shows a QR code for it.
pub fn reauth(vault: &Vault, bot: &BotId, passphrase: &[u8], now: i64) -> Result<ReauthReport> {
    vault.bot_config(bot)?;
    let backup = auto::take(vault, std::slice::from_ref(bot), passphrase, "reauth")?;
    let removed = vault.purging(|| crate::store::clear_credentials(&vault.view(bot)))? as u64;
    Sessions::new(vault.view(bot)).update(now, Some("reauth"), |m| {
        m.authenticated_at = None;
        m.metadata
            .insert("reauth_requested_at".into(), now.to_string());
    })?;
    vault.flush()?;
    Ok(ReauthReport {
        bot: bot.to_string(),
        removed,
        auto_backup: backup,
    })
}

#[cfg(test)]
mod retention_tests {
    use super::*;
    use crate::vault::{crypto::KdfParams, BotConfig};

    /// The control socket hands the sweep a raw number: zero is refused
    /// (it would delete all history) and a huge one keeps everything
    /// instead of wrapping into a short retention.
    #[test]
    fn zero_is_refused_and_huge_does_not_wrap() {
        let d = tempfile::tempdir().unwrap();
        let v = Vault::create(d.path(), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
        let id = crate::BotId::parse("old").unwrap();
        v.add_bot(&BotConfig::new(id.clone())).unwrap();
        let now = crate::vault::now();
        let opts = |retention| SweepOptions {
            retention,
            dry_run: true,
            now,
            backup: None,
        };
        let e = sweep(&v, opts(Duration::ZERO)).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{e}");
        assert!(e.to_string().contains("at least 1s"), "{e}");
        assert!(sweep(&v, opts(Duration::MAX)).is_ok());
        assert!(sweep(&v, opts(Duration::from_secs(u64::MAX / 2))).is_ok());
    }
}
