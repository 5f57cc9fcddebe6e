//! Private files and folders, and atomic durable file replacement.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Creates `dir` (and parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    set_mode(dir, 0o700)
}

/// Sets unix permission bits (no-op elsewhere).
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("setting permissions of {}", path.display()), e))?;
    }
    let _ = (path, mode);
    Ok(())
}

/// Folders 0700, files 0600, for everything under `root`.
pub fn restrict_tree(root: &Path) -> Result<()> {
    set_mode(root, 0o700)?;
    let entries =
        std::fs::read_dir(root).map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
        let p = e.path();
        if p.is_dir() {
            restrict_tree(&p)?;
        } else {
            set_mode(&p, 0o600)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: temp file (0600), fsync, rename, fsync folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| Error::io(ctx("creating"), e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io(ctx("writing"), e))?;
    f.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
    drop(f);
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("replacing {}", path.display()), e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// fsyncs the folder holding `path` (`.` for a bare name), so that
/// `path`'s creation or rename survives a power cut.
pub fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
}

/// fsyncs a folder so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = std::fs::File::open(dir)
            .map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
        d.sync_all()
            .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))?;
    }
    let _ = dir;
    Ok(())
}

/// The error for a vault path this process may not read: which path, whose
/// it is, and the way out (run as its owner, or fix the permissions).
pub fn unreadable(path: &Path, e: std::io::Error) -> Error {
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        return Error::io(format!("reading {}", path.display()), e);
    }
    use std::os::unix::fs::MetadataExt;
    // The path itself, or the nearest folder above it this process can see.
    let owner = path.ancestors().find_map(|p| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (p.to_path_buf(), m.uid()))
    });
    let me = rustix::process::getuid().as_raw();
    let whose = match owner {
        Some((p, uid)) if uid != me => {
            format!(
                " ({} belongs to uid {uid}; this process runs as uid {me})",
                p.display()
            )
        }
        _ => String::new(),
    };
    Error::Other(format!(
        "{} cannot be read: permission denied{whose}. Run wavault as the vault's owner \
         (e.g. `sudo -u USER wavault ...`, the systemd unit's User=) or fix its permissions",
        path.display()
    ))
}
