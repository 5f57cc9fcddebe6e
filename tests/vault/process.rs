//! `wavault run` as a process seen from outside: the passphrase variables
//! are gone from its environment (`/proc/<pid>/environ`), core dumps are
//! off (`/proc/<pid>/limits`) and it is non-dumpable.
//!
//! Non-dumpable shows as the owner of the files in `/proc/<pid>/`: root
//! instead of the process's user. When these tests run as root that difference would be
//! invisible, so they then run wavault as `nobody` (uid 65534), from a copy
//! of the binary and a vault folder that user can reach.

use crate::common::*;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BACKUP_PASS: &str = "backup-passphrase-7f3a9c-do-not-leak";
const NOBODY: u32 = 65534;

fn am_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// A `wavault run` child, killed on drop.
struct Running {
    child: Child,
    /// The uid it runs as.
    uid: u32,
    tmp: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary and a vault folder, reachable by `uid`.
struct Setup {
    tmp: tempfile::TempDir,
    bin: PathBuf,
    vault: PathBuf,
    uid: u32,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    std::fs::create_dir(&vault).unwrap();
    if !am_root() {
        let uid = std::fs::metadata(tmp.path()).unwrap().uid();
        return Setup {
            tmp,
            bin: env!("CARGO_BIN_EXE_wavault").into(),
            vault,
            uid,
        };
    }
    let bin = tmp.path().join("wavault");
    // A hard link, not a copy: a copy is open for writing while it is made,
    // and a child forked meanwhile by another test thread would keep it
    // open, so running it could fail with "text file busy" (ETXTBSY).
    if std::fs::hard_link(env!("CARGO_BIN_EXE_wavault"), &bin).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_wavault"), &bin).unwrap();
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&vault, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).unwrap();
    Setup {
        tmp,
        bin,
        vault,
        uid: NOBODY,
    }
}

impl Setup {
    /// `common::wavault`, but this binary and as this user.
    fn cmd(&self) -> Command {
        let base = wavault(&self.vault);
        let mut c = Command::new(&self.bin);
        c.args(base.get_args());
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if am_root() {
            c.uid(self.uid).gid(self.uid);
        }
        c
    }

    /// A vault with one disabled bot (nothing dials WhatsApp), then `run`
    /// with both passphrase variables set; returns once the control socket
    /// is there.
    fn run(self) -> Running {
        let out = run(self.cmd().args(cheap_init_args()));
        assert_eq!(code(&out), 0, "init: {}", stderr(&out));
        let out = run(self.cmd().args(["bot", "add", "idle", "--disabled"]));
        assert_eq!(code(&out), 0, "bot add: {}", stderr(&out));
        let child = self
            .cmd()
            .arg("run")
            .env("WAVAULT_BACKUP_PASSPHRASE", BACKUP_PASS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.tmp.path().join("run.log")).unwrap())
            .spawn()
            .unwrap();
        let mut running = Running {
            child,
            uid: self.uid,
            tmp: self.tmp,
        };
        wait_for(&self.vault.join("control.sock"), &mut running);
        running
    }
}

/// Polls for `path` (deadline 30 s); fails early if the child exits.
fn wait_for(path: &Path, r: &mut Running) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "`wavault run` did not create {} within 30 s",
            path.display()
        );
        if let Some(status) = r.child.try_wait().unwrap() {
            panic!(
                "`wavault run` exited early: {status}: {}",
                std::fs::read_to_string(r.tmp.path().join("run.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Running {
    fn proc(&self, file: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{file}", self.child.id()))
    }

    /// Non-dumpable: the kernel shows the files in `/proc/<pid>/` as root's
    /// (the folder itself keeps the process's owner).
    fn non_dumpable(&self) -> bool {
        let owner = std::fs::metadata(self.proc("status")).unwrap().uid();
        assert_ne!(self.uid, 0, "the check needs a non-root child");
        owner == 0
    }
}

#[test]
fn run_has_no_passphrase_in_its_environment() {
    let r = setup().run();
    let environ = match std::fs::read(r.proc("environ")) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // Not root: a non-dumpable process's environ is closed to its
            // own user too, which is protection enough.
            eprintln!("/proc/<pid>/environ unreadable ({e}): checking non-dumpable instead");
            assert!(
                r.non_dumpable(),
                "environ closed but the process is dumpable?"
            );
            return;
        }
        Err(e) => panic!("reading /proc/<pid>/environ: {e}"),
    };
    let text = String::from_utf8_lossy(&environ);
    assert!(
        text.contains("WAVAULT_DIR") || text.contains("RUST_LOG"),
        "the environment is readable (positive control): {text:?}"
    );
    let pass = std::str::from_utf8(PASS).unwrap();
    for needle in [
        "WAVAULT_PASSPHRASE",
        "WAVAULT_BACKUP_PASSPHRASE",
        pass,
        BACKUP_PASS,
    ] {
        assert!(
            !text.contains(needle),
            "{needle:?} is still in /proc/<pid>/environ of `wavault run`: {text:?}"
        );
    }
}

#[test]
fn run_has_core_dumps_off_and_is_not_dumpable() {
    let r = setup().run();
    let limits = std::fs::read_to_string(r.proc("limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core size line");
    let values: Vec<&str> = core.split_whitespace().skip(4).take(2).collect();
    assert_eq!(values, ["0", "0"], "soft and hard core limit: {core:?}");
    assert!(
        r.non_dumpable(),
        "/proc/<pid>/status of `wavault run` belongs to uid {}: the process is dumpable",
        std::fs::metadata(r.proc("status")).unwrap().uid()
    );
}
