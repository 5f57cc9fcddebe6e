//! One process owns a vault at a time.
//!
//! The lock is an exclusive advisory lock (`flock`) on `wavault.lock` in the
//! vault folder, held for the life of the [`VaultLock`]. The holder writes its
//! pid into the file so a second process can name it in its error. The lock
//! dies with the process, so a crash never leaves a stale lock behind.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// File name of the lock inside the vault folder.
pub const LOCK_FILE: &str = "wavault.lock";

/// How long a lock apparently held by this same process is retried.
pub const SELF_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Holds the vault's lock until dropped.
#[derive(Debug)]
pub struct VaultLock {
    _file: File,
}

impl VaultLock {
    /// Takes the lock or fails with [`Error::VaultInUse`]: at once when
    /// another process holds it. When the recorded holder is this very
    /// process, the lock may be a copy briefly inherited by a child being
    /// spawned (between fork and exec) or a handle being dropped, so it is
    /// retried for up to [`SELF_RETRY`] before giving up.
    pub fn acquire(dir: &Path) -> Result<VaultLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = open_lock_file(&path)?;
        let deadline = std::time::Instant::now() + SELF_RETRY;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = read_pid(&mut file);
                    if holder != Some(std::process::id()) || std::time::Instant::now() >= deadline {
                        return Err(Error::VaultInUse {
                            path: dir.to_path_buf(),
                            holder,
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io(format!("locking {}", path.display()), e))
                }
            }
        }
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(VaultLock { _file: file })
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_and_names_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = VaultLock::acquire(dir.path()).unwrap();
        match VaultLock::acquire(dir.path()) {
            Err(Error::VaultInUse { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("expected VaultInUse, got {other:?}"),
        }
        drop(_held);
        VaultLock::acquire(dir.path()).expect("lock free again after drop");
    }
}
