//! The one error type of the library, and the exit code each variant maps to.
//!
//! Every message says what happened and what to do about it. The exit codes
//! are part of the command-line contract and are documented in README.md.

use std::path::PathBuf;

/// Process exit codes, documented in README.md ("Exit codes").
pub mod exit {
    pub const OK: u8 = 0;
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const WRONG_PASSPHRASE: u8 = 3;
    pub const IN_USE: u8 = 4;
    pub const DAMAGED: u8 = 5;
    pub const NOT_FOUND: u8 = 6;
    pub const UNAVAILABLE: u8 = 7;
}

/// Everything that can go wrong in wavault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("wrong passphrase for the vault at {0}: nothing was changed. Check the passphrase source (--passphrase-file, WAVAULT_PASSPHRASE, $CREDENTIALS_DIRECTORY/wavault-passphrase)")]
    WrongPassphrase(PathBuf),

    /// A wrong vault passphrase, with where it came from.
    #[error("wrong passphrase for the vault at {path} (the one {origin}): nothing was changed. Check that source, or unset it to be asked on the terminal")]
    WrongPassphraseFrom { path: PathBuf, origin: String },

    #[error("the vault at {path} is in use by another wavault process{}; stop it first, or use its control socket", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    VaultInUse { path: PathBuf, holder: Option<u32> },

    #[error("damaged or tampered data: {what}. {hint}")]
    Damaged { what: String, hint: &'static str },

    #[error("not found: {0}")]
    NotFound(String),

    #[error("{0}")]
    Usage(String),

    /// No passphrase source and no terminal to ask on (a usage error:
    /// exit 2); its own variant so callers can say why one was needed.
    #[error("{0}")]
    NoPassphraseSource(String),

    #[error("already exists: {0}")]
    AlreadyExists(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Other(String),

    /// The bot cannot do it now (not running, not connected); retrying
    /// later may work.
    #[error("{0}")]
    Unavailable(String),

    /// A backup file could not be written or read; the message says which
    /// check failed and what to do.
    /// An error the running `wavault run` answered on the control socket:
    /// its message and exit code, as if the work had been done here.
    #[error("{msg}")]
    Remote { code: u8, msg: String },

    /// A backup file that cannot be read (the backup module says which
    /// exit code its problem gets: 3 wrong passphrase, 5 damaged, 1 I/O).
    #[error("{msg}")]
    Backup { msg: String, code: u8 },
}

/// The hint for damaged vault files.
pub const RESTORE_HINT: &str =
    "Run `wavault validate` to list every damaged record; restore the affected bots from a backup (`wavault restore`)";

impl Error {
    /// The documented process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::WrongPassphrase(_) | Error::WrongPassphraseFrom { .. } => exit::WRONG_PASSPHRASE,
            Error::VaultInUse { .. } => exit::IN_USE,
            Error::Damaged { .. } => exit::DAMAGED,
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::Usage(_) | Error::NoPassphraseSource(_) => exit::USAGE,
            Error::Unavailable(_) => exit::UNAVAILABLE,
            Error::AlreadyExists(_) | Error::Io { .. } | Error::Other(_) => exit::OTHER,
            Error::Remote { code, .. } => *code,
            Error::Backup { code, .. } => *code,
        }
    }

    /// A damaged-data error with the standard way out.
    pub fn damaged(what: impl Into<String>) -> Self {
        Error::Damaged {
            what: what.into(),
            hint: RESTORE_HINT,
        }
    }

    /// An I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
