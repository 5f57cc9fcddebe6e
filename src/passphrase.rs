//! Where passphrases come from. Never from argv.
//!
//! Order: an explicit file (`--passphrase-file`), then an environment
//! variable (`WAVAULT_PASSPHRASE`), then a systemd credential
//! (`$CREDENTIALS_DIRECTORY/wavault-passphrase`), then a prompt on the
//! controlling terminal. With no source and no terminal the caller gets a
//! clear error at once instead of a hang.
//!
//! The `wavault` binary moves the passphrase variables ([`ENV_VARS`]) out of
//! its environment at the very start of `main` ([`stash_env`]): children
//! never inherit them and `/proc/<pid>/environ` no longer shows them. The
//! variable step of [`Source::resolve`] reads the live variable (a library
//! caller may set it itself) and, when it is unset, that in-memory stash.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use zeroize::Zeroizing;

/// The environment variables that carry passphrases (and the NATS URL,
/// which may hold a user and password).
pub const ENV_VARS: [&str; 4] = [
    "WAVAULT_PASSPHRASE",
    "WAVAULT_NEW_PASSPHRASE",
    "WAVAULT_BACKUP_PASSPHRASE",
    NATS_URL_VAR,
];

/// `$WAVAULT_NATS_URL`: the fleet's NATS server when `--nats` is not given.
pub const NATS_URL_VAR: &str = "WAVAULT_NATS_URL";

/// A stashed (or live) variable of [`ENV_VARS`] as text.
pub fn env_text(name: &str) -> Option<String> {
    from_env(name).and_then(|p| String::from_utf8(p.expose().to_vec()).ok())
}

/// Passphrase variables taken out of the environment by [`stash_env`],
/// kept (zeroizing) for the life of the process: a command may resolve the
/// same source more than once.
static STASH: Mutex<Vec<Stashed>> = Mutex::new(Vec::new());

/// A variable's name and value.
type Stashed = (&'static str, Zeroizing<Vec<u8>>);

/// Moves every set variable of [`ENV_VARS`] from the process environment
/// into the in-memory stash; returns the names it moved. Call it while the
/// process is single-threaded (first thing in `main`): the environment is
/// not safe to change while other threads may read it. The bytes of the
/// original environment block are scrubbed separately
/// ([`crate::hardening::scrub_environ_block`]).
pub fn stash_env() -> Vec<&'static str> {
    let mut stash = STASH.lock().unwrap_or_else(|e| e.into_inner());
    let mut moved = Vec::new();
    for name in ENV_VARS {
        if let Some(v) = std::env::var_os(name) {
            let bytes = Zeroizing::new(v.into_encoded_bytes());
            std::env::remove_var(name);
            stash.retain(|(n, _)| *n != name);
            stash.push((name, bytes));
            moved.push(name);
        }
    }
    moved
}

/// The variable's value: the live environment (a library caller may set it
/// at any time; the binary has removed it), else the stash.
fn from_env(name: &str) -> Option<Passphrase> {
    if let Some(v) = std::env::var_os(name) {
        return Some(Passphrase::new(v.into_encoded_bytes()));
    }
    let stash = STASH.lock().unwrap_or_else(|e| e.into_inner());
    stash
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| Passphrase::new(v.to_vec()))
}

/// A passphrase held in memory that is wiped on drop.
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Wraps bytes (tests and benchmarks).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Passphrase(Zeroizing::new(bytes.into()))
    }

    /// The bytes, to feed the KDF.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// On the control socket (a 0600 socket that only the vault's owner may
/// use) a passphrase travels as an array of bytes: any bytes a file may hold.
impl serde::Serialize for Passphrase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Passphrase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes = Zeroizing::new(<Vec<u8>>::deserialize(d)?);
        Ok(Passphrase(bytes))
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// One family of passphrase sources (the vault's, the new one, a backup's).
#[derive(Debug, Clone)]
pub struct Source {
    /// What it is for, in prompts and errors ("vault passphrase").
    pub label: &'static str,
    /// `--...-file` value.
    pub file: Option<PathBuf>,
    /// The environment variable consulted.
    pub env: &'static str,
    /// The systemd credential name consulted, if any.
    pub credential: Option<&'static str>,
    /// Ask twice on a prompt (creating something).
    pub confirm: bool,
}

/// Where a passphrase came from (named when it turns out wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(&'static str),
    Credential(PathBuf),
    /// Typed at the terminal's prompt: a wrong one may be typed again.
    Prompt,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "read from the file {} (--passphrase-file)", p.display()),
            Origin::Env(v) => write!(f, "from the environment variable {v}"),
            Origin::Credential(p) => write!(f, "from the systemd credential {}", p.display()),
            Origin::Prompt => f.write_str("typed at the prompt"),
        }
    }
}

impl Source {
    /// Resolves the passphrase from the first source that has one.
    pub fn resolve(&self) -> Result<Passphrase> {
        self.resolve_traced().map(|(p, _)| p)
    }

    /// [`Source::resolve`], and where the passphrase came from.
    pub fn resolve_traced(&self) -> Result<(Passphrase, Origin)> {
        if let Some(f) = &self.file {
            return Ok((read_file(f, self.label)?, Origin::File(f.clone())));
        }
        if let Some(p) = from_env(self.env) {
            return Ok((non_empty(p, self.label, self.env)?, Origin::Env(self.env)));
        }
        if let (Some(name), Some(dir)) =
            (self.credential, std::env::var_os("CREDENTIALS_DIRECTORY"))
        {
            let p = Path::new(&dir).join(name);
            if p.exists() {
                return Ok((read_file(&p, self.label)?, Origin::Credential(p)));
            }
        }
        Ok((self.prompt()?, Origin::Prompt))
    }

    fn prompt(&self) -> Result<Passphrase> {
        if std::fs::File::open("/dev/tty").is_err() {
            return Err(Error::NoPassphraseSource(format!(
                "no {} given and no terminal to ask on: use --{}-file FILE or set {}",
                self.label,
                self.label.replace(' ', "-").replace("vault-", ""),
                self.env
            )));
        }
        let ask = |msg: &str| {
            rpassword::prompt_password(msg)
                .map(|s| Zeroizing::new(s.into_bytes()))
                .map_err(|e| Error::io(format!("reading the {} from the terminal", self.label), e))
        };
        let first = ask(&format!("{}: ", capitalize(self.label)))?;
        if self.confirm {
            let second = ask(&format!("{} (again): ", capitalize(self.label)))?;
            if *first != *second {
                return Err(Error::Usage(format!(
                    "the two {}s differ; nothing was changed",
                    self.label
                )));
            }
        }
        if first.is_empty() {
            return Err(Error::Usage(format!(
                "the {} typed at the prompt is empty; nothing was changed",
                self.label
            )));
        }
        Ok(Passphrase(first))
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn read_file(path: &Path, label: &str) -> Result<Passphrase> {
    let mut bytes = Zeroizing::new(std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("{label} file {}", path.display())),
        _ => Error::io(format!("reading the {label} file {}", path.display()), e),
    })?);
    // One trailing newline is an artefact of `echo` and editors, not part of the secret.
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    non_empty(Passphrase(bytes), label, &path.display().to_string())
}

fn non_empty(p: Passphrase, label: &str, from: &str) -> Result<Passphrase> {
    if p.expose().is_empty() {
        Err(Error::Usage(format!("the {label} from {from} is empty")))
    } else {
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_strips_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p");
        std::fs::write(&f, "secret\n\n").unwrap();
        let s = Source {
            label: "vault passphrase",
            file: Some(f),
            env: "WAVAULT_TEST_UNUSED",
            credential: None,
            confirm: false,
        };
        assert_eq!(s.resolve().unwrap().expose(), b"secret\n");
    }
}
