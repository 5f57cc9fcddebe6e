//! Where passphrases come from. Never from argv.
//!
//! Order: an explicit file (`--passphrase-file`), then an environment
//! variable (`WAVAULT_PASSPHRASE`), then a systemd credential
//! (`$CREDENTIALS_DIRECTORY/wavault-passphrase`), then a prompt on the
//! controlling terminal. With no source and no terminal the caller gets a
//! clear error at once instead of a hang.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

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

impl Source {
    /// Resolves the passphrase from the first source that has one.
    pub fn resolve(&self) -> Result<Passphrase> {
        if let Some(f) = &self.file {
            return read_file(f, self.label);
        }
        if let Some(v) = std::env::var_os(self.env) {
            let bytes = v.into_encoded_bytes();
            return non_empty(Passphrase::new(bytes), self.label, self.env);
        }
        if let (Some(name), Some(dir)) =
            (self.credential, std::env::var_os("CREDENTIALS_DIRECTORY"))
        {
            let p = Path::new(&dir).join(name);
            if p.exists() {
                return read_file(&p, self.label);
            }
        }
        self.prompt()
    }

    fn prompt(&self) -> Result<Passphrase> {
        if std::fs::File::open("/dev/tty").is_err() {
            return Err(Error::Usage(format!(
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
        non_empty(Passphrase(first), self.label, self.env)
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
