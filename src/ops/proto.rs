//! The control protocol: typed requests and responses, shared by the client
//! (`wavault` commands) and the server (`wavault run`).
//!
//! On the socket: one request line, the JSON of an [`Envelope`] (a
//! [`Request`] tagged by `op`, plus the length of the raw bytes that follow
//! the line: a backup to restore); then one answer line,
//! `{"ok":true,"data":<Response>,"payload":N}` followed by N raw bytes (an
//! exported backup), or `{"ok":false,"error":"...","code":N}` where `code`
//! is the exit code ([`crate::error::exit`]). A request line is at most
//! [`MAX_REQUEST`] bytes; a payload at most [`MAX_PAYLOAD`].

use serde::{Deserialize, Serialize};

use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::passphrase::Passphrase;
use crate::vault::crypto::KdfParams;
use crate::vault::BotConfig;

/// The longest request line.
pub const MAX_REQUEST: usize = 64 * 1024;
/// The largest payload (a backup) either way: 4 GiB.
pub const MAX_PAYLOAD: u64 = 4 << 30;

/// Argon2id parameters on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl From<KdfParams> for Kdf {
    fn from(p: KdfParams) -> Kdf {
        Kdf {
            memory_kib: p.memory_kib,
            iterations: p.iterations,
            parallelism: p.parallelism,
        }
    }
}

impl Kdf {
    /// The parameters, refused (usage error) when out of range: a socket
    /// request meets the same limits as the flags.
    pub fn params(self) -> Result<KdfParams> {
        let p = KdfParams {
            memory_kib: self.memory_kib,
            iterations: self.iterations,
            parallelism: self.parallelism,
        };
        if p.exceeds_cap() || p.iterations == 0 || p.parallelism == 0 || p.memory_kib < 8 {
            return Err(Error::Usage(format!(
                "Argon2id parameters out of range (m={} KiB, t={}, p={})",
                p.memory_kib, p.iterations, p.parallelism
            )));
        }
        Ok(p)
    }
}

/// What `wavault queue` does to a bot's inbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueAction {
    /// List the waiting and held messages.
    List,
    /// Put held messages back in line.
    Retry,
    /// Drop held messages.
    Drop,
}

/// One operation. Every field is checked again by the operation: the
/// socket is no way around the command line's rules.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Dashboard rows.
    Status,
    /// `bot list`.
    Bots,
    /// `bot show`.
    BotShow {
        bot: BotId,
        #[serde(default)]
        show_phone: bool,
    },
    /// `stats` over `since..now` (unix seconds).
    Stats {
        #[serde(default)]
        bots: Vec<BotId>,
        since: i64,
        now: i64,
    },
    /// `bot add`: started at once when enabled and `run` holds the vault.
    BotAdd { config: BotConfig },
    /// One bot's stored configuration (what `bot set` changes).
    BotConfig { bot: BotId },
    /// `bot set`: the whole new configuration.
    BotSet { config: BotConfig },
    /// `bot remove`: stopped first when running.
    BotRemove { bot: BotId },
    /// `bot enable` (started at once under `run`) / `bot disable` (stopped).
    BotEnable { bot: BotId, enabled: bool },
    /// `bot reauth`.
    Reauth { bot: BotId },
    /// `queue list|retry|drop`.
    Queue { bot: BotId, action: QueueAction },
    /// `send` (only through a running `run`).
    Send {
        bot: BotId,
        message: crate::messaging::outbox::Outgoing,
    },
    /// `media get`: the answer's payload is the verified file (only
    /// through a running `run`).
    MediaGet { bot: BotId, id: String },
    /// `sweep`.
    Sweep { older_than_secs: u64, dry_run: bool },
    /// `token show`.
    TokenShow,
    /// `token rotate`.
    TokenRotate,
    /// `webhook secret show`: what `bot` (none: the `run` default) signs with.
    WebhookSecretShow {
        #[serde(default)]
        bot: Option<BotId>,
    },
    /// `webhook secret rotate`: the old secret keeps signing for `grace_secs`.
    WebhookSecretRotate {
        #[serde(default)]
        bot: Option<BotId>,
        grace_secs: u64,
    },
    /// `validate`.
    Validate,
    /// `rotate key`.
    RotateKey,
    /// `rotate passphrase`: `current` must open the vault's slot (proof of
    /// knowledge, like `passwd`).
    RotatePassphrase {
        current: Passphrase,
        new: Passphrase,
        kdf: Option<Kdf>,
    },
    /// `export`: the answer's payload is the backup file.
    Export {
        #[serde(default)]
        bots: Vec<BotId>,
        #[serde(default)]
        move_bots: bool,
        passphrase: Passphrase,
        kdf: Kdf,
    },
    /// `restore`: the request's payload is the backup file.
    Restore {
        #[serde(default)]
        bots: Vec<BotId>,
        #[serde(default)]
        force: bool,
        #[serde(default)]
        keep_hooks: bool,
        passphrase: Passphrase,
        max_kdf_memory_kib: u32,
    },
}

impl Request {
    /// The operation's name as on the wire (logs, errors).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Bots => "bots",
            Request::BotShow { .. } => "bot_show",
            Request::Stats { .. } => "stats",
            Request::BotAdd { .. } => "bot_add",
            Request::BotConfig { .. } => "bot_config",
            Request::BotSet { .. } => "bot_set",
            Request::BotRemove { .. } => "bot_remove",
            Request::BotEnable { .. } => "bot_enable",
            Request::Reauth { .. } => "reauth",
            Request::Queue { .. } => "queue",
            Request::Send { .. } => "send",
            Request::MediaGet { .. } => "media_get",
            Request::Sweep { .. } => "sweep",
            Request::TokenShow => "token_show",
            Request::TokenRotate => "token_rotate",
            Request::WebhookSecretShow { .. } => "webhook_secret_show",
            Request::WebhookSecretRotate { .. } => "webhook_secret_rotate",
            Request::Validate => "validate",
            Request::RotateKey => "rotate_key",
            Request::RotatePassphrase { .. } => "rotate_passphrase",
            Request::Export { .. } => "export",
            Request::Restore { .. } => "restore",
        }
    }

    /// Operations that may take long (whole-vault work, key derivation):
    /// the client waits longer for their answer.
    pub fn is_long(&self) -> bool {
        matches!(
            self,
            Request::Validate
                | Request::RotateKey
                | Request::RotatePassphrase { .. }
                | Request::Export { .. }
                | Request::Restore { .. }
                | Request::Sweep { .. }
                | Request::Reauth { .. }
                | Request::Send { .. }
                | Request::MediaGet { .. }
        )
    }
}

/// A request line: the request and the length of the bytes after it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(flatten)]
    pub request: Request,
    /// Raw bytes that follow the line (a backup for `restore`).
    #[serde(default)]
    pub payload: u64,
}

/// What `bot enable|disable` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toggled {
    pub bot: String,
    pub enabled: bool,
    /// A running `run` started (enable) or stopped (disable) it now.
    pub live: bool,
}

/// What `bot remove` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub bot: String,
    pub records: usize,
    /// A running `run` stopped it first.
    pub stopped: bool,
    /// The automatic backup of the bot taken before the removal.
    #[serde(default)]
    pub auto_backup: Option<std::path::PathBuf>,
}

/// What `export` wrote (the file itself is the answer's payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    pub bots: Vec<String>,
    pub records: u64,
    pub bytes: u64,
    /// `--move`: the bots stopped (under `run`) and disabled here.
    pub moved: Vec<String>,
}

/// One row of `bot list`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BotRow {
    pub id: String,
    pub enabled: bool,
    pub created_at: i64,
    pub records: usize,
}

/// What `bot show` prints: the whole configuration. A `None` hook or limit
/// means the bot has none of its own and the `run` default applies.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BotShow {
    pub id: String,
    pub enabled: bool,
    pub created_at: i64,
    /// The pair-code phone number, masked unless asked otherwise.
    pub phone: Option<String>,
    pub webhook: Option<String>,
    pub on_message: Option<String>,
    pub hook_timeout_ms: Option<u64>,
    pub hook_concurrency: Option<u64>,
    pub queue_max: Option<u64>,
    pub queue_max_age_secs: Option<u64>,
    /// Every other stored setting (and a limit that is not a number), as stored.
    pub extra: std::collections::BTreeMap<String, String>,
    pub records: usize,
}

/// One waiting or held message, as `queue list` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QueueRow {
    pub seq: u64,
    pub chat: String,
    pub sender: String,
    pub id: String,
    pub received_at: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// `waiting`, `held` (past the age limit, waiting for retry or drop) or
    /// `actions` (delivered; its reply actions are still being carried out).
    pub state: String,
}

/// What a restore did, and what the running `run` did about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restored {
    #[serde(flatten)]
    pub report: crate::backup::archive::RestoreReport,
    /// Replaced bots that were running and were stopped first.
    pub stopped: Vec<String>,
    /// Restored bots started at once (enabled ones, under `run`).
    pub started: Vec<String>,
    /// True when a running `run` did the restore.
    pub live: bool,
}

/// What `webhook secret show|rotate` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecret {
    /// The bot asked about (none: the `run` default).
    pub bot: Option<String>,
    /// Whose secret signs: `bot` (the bot's own) or `default` (the `run` default's).
    pub scope: String,
    /// `whsec_` + base64.
    pub secret: String,
    /// While the secret before the last rotation still signs: until when
    /// (unix seconds).
    pub previous_until: Option<i64>,
}

/// One answer, by operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Response {
    Status(Vec<crate::status::StatusRow>),
    Bots(Vec<BotRow>),
    BotShow(BotShow),
    Stats(Vec<crate::stats::BotStats>),
    BotConfig(BotConfig),
    Added {
        bot: String,
        started: bool,
    },
    Updated {
        bot: String,
    },
    Removed(Removed),
    Toggled(Toggled),
    Reauth {
        report: crate::sweep::ReauthReport,
        restarted: bool,
    },
    QueueList(Vec<QueueRow>),
    QueueReleased(usize),
    QueueDropped {
        dropped: usize,
        /// The automatic backup of the bot taken first (none when nothing
        /// was held).
        auto_backup: Option<std::path::PathBuf>,
    },
    Sent {
        id: String,
    },
    /// `media get`: the file is the answer's payload.
    Media {
        bot: String,
        id: String,
        kind: String,
        content_type: String,
        size: u64,
    },
    Sweep(crate::sweep::SweepReport),
    Token(String),
    WebhookSecret(WebhookSecret),
    Validate(crate::vault::validate::Report),
    RotateKey(crate::vault::RotateReport),
    RotatePassphrase,
    Exported(Exported),
    Restored(Restored),
}

/// The answer line (with its newline) for an operation's outcome.
pub fn answer(out: &Result<(Response, u64)>) -> String {
    let line = match out {
        Ok((data, payload)) => {
            serde_json::json!({"ok": true, "data": data, "payload": payload})
        }
        Err(e) => serde_json::json!({"ok": false, "error": e.to_string(), "code": e.exit_code()}),
    };
    format!("{line}\n")
}

/// An answer line as the client reads it.
#[derive(Debug, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default)]
    pub data: Option<Response>,
    #[serde(default)]
    pub payload: u64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub code: Option<u8>,
}

/// Parses one request line (as read, with or without its newline). Anything
/// that is not a known operation with well-formed fields is a usage error
/// (exit 2) naming the problem; never panics.
pub fn parse_request(line: &[u8]) -> Result<Envelope> {
    let bad = |what: String| {
        Error::Usage(format!(
            "bad control request: {what}; send one JSON object per line, e.g. {{\"op\":\"status\"}}"
        ))
    };
    if line.len() > MAX_REQUEST {
        return Err(bad(format!("longer than {MAX_REQUEST} bytes")));
    }
    let text = std::str::from_utf8(line).map_err(|_| bad("not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(bad("empty".into()));
    }
    let env: Envelope = serde_json::from_str(text).map_err(|e| bad(format!("{e}")))?;
    if env.payload > MAX_PAYLOAD {
        return Err(bad(format!("a payload over {MAX_PAYLOAD} bytes")));
    }
    Ok(env)
}
