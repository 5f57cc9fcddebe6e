//! Automatic backups taken before anything destructive (restore --force,
//! bot remove, queue drop,
//! re-auth, sweep purges): ordinary backup files under `<vault>/backups/`,
//! sealed with the vault's passphrase and Argon2id parameters, so
//! `wavault restore FILE` with the vault passphrase brings them back.
//! Kept by count and age: at most [`KEEP_COUNT`] files, none older than
//! [`KEEP_AGE`], and never the one just written.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::archive;
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::vault::Vault;

/// Folder of the automatic backups inside the vault folder.
pub const DIR: &str = "backups";
/// Newest automatic backups kept.
pub const KEEP_COUNT: usize = 20;
/// Automatic backups older than this are pruned.
pub const KEEP_AGE: Duration = Duration::from_secs(30 * 86_400);
const PREFIX: &str = "auto-";
const SUFFIX: &str = ".wvb";

/// Exports `bots` to a new automatic backup named after `reason`
/// (`restore`, `reauth`, `sweep`), then prunes old ones. Returns its path.
pub fn take(vault: &Vault, bots: &[BotId], passphrase: &[u8], reason: &str) -> Result<PathBuf> {
    let dir = vault.dir().join(DIR);
    fsutil::create_private_dir(&dir)?;
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let path = dir.join(format!(
        "{PREFIX}{}-{:09}-{reason}{SUFFIX}",
        stamp.as_secs(),
        stamp.subsec_nanos()
    ));
    archive::export(
        vault,
        bots,
        &path,
        passphrase,
        vault.kdf_params(),
        &mut |_, _| {},
    )?;
    tracing::info!(
        "automatic backup of {} bot(s) written before {reason}",
        bots.len()
    );
    prune(&dir, &path, KEEP_COUNT, KEEP_AGE, SystemTime::now())?;
    Ok(path)
}

/// The automatic backups in `dir`, oldest first (by the time in the name).
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX).filter(|_| name.ends_with(SUFFIX)) else {
            continue;
        };
        if let Some(secs) = rest.split('-').next().and_then(|s| s.parse::<u64>().ok()) {
            out.push((secs, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes automatic backups beyond `keep` newest or older than `max_age`
/// at `now`, never `current`. Returns the paths removed.
pub fn prune(
    dir: &Path,
    current: &Path,
    keep: usize,
    max_age: Duration,
    now: SystemTime,
) -> Result<Vec<PathBuf>> {
    let all = list(dir)?;
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let excess = all.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for (i, (secs, path)) in all.into_iter().enumerate() {
        let too_old = now_secs.saturating_sub(secs) > max_age.as_secs();
        if path != current && (i < excess || too_old) {
            std::fs::remove_file(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, secs: u64) -> PathBuf {
        let p = dir.join(format!("{PREFIX}{secs}-000000000-test{SUFFIX}"));
        std::fs::write(&p, b"x").unwrap();
        p
    }

    #[test]
    fn prune_keeps_by_count_and_age_and_never_the_current_one() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86_400);
        let day = 86_400;
        let ancient = touch(tmp.path(), 10 * day);
        let recent: Vec<_> = (0..5).map(|i| touch(tmp.path(), 95 * day + i)).collect();
        std::fs::write(tmp.path().join("unrelated.txt"), b"keep").unwrap();
        let current = recent[4].clone();
        let removed = prune(tmp.path(), &current, 3, KEEP_AGE, now).unwrap();
        // Age removes the 90-day-old one; count removes the two oldest recent ones.
        assert_eq!(removed, vec![ancient, recent[0].clone(), recent[1].clone()]);
        let left: Vec<_> = list(tmp.path())
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert_eq!(left, recent[2..].to_vec());
        assert!(tmp.path().join("unrelated.txt").exists());
        // The current file survives even when it alone is over every limit.
        let removed = prune(tmp.path(), &current, 0, Duration::ZERO, now).unwrap();
        assert_eq!(removed, recent[2..4].to_vec());
        assert!(current.exists());
    }
}
