//! The operator's hook: where a bot's inbound messages go, how long it may
//! take, and what its answer may ask the bot to do.
//!
//! Two kinds: a webhook (`POST` of one JSON object, any 2xx accepts) or a
//! command (`sh -c CMD` with the JSON on stdin, exit 0 accepts). The answer
//! (response body or standard output) may carry actions for the bot in the
//! message's chat:
//!
//! - nothing, or anything that is not JSON: accepted, no action;
//! - `{"reply": "text"}`;
//! - `{"actions": [...]}` or a bare `[...]` of
//!   `{"type":"reply","text":"..."}`, `{"type":"react","emoji":"👍"}`,
//!   `{"type":"read"}` (mark the message read), `{"send_file": {...}}` /
//!   `{"type":"send_file",...}` (a file: `messaging::attach`).
//!
//! Limits of an answer (README "Messages: hooks, replies, sending"): at
//! most [`MAX_ACTIONS`] actions, a reply of at most [`MAX_TEXT`] bytes (the
//! limit of `send`) and not empty, an emoji of at most [`MAX_EMOJI`] bytes,
//! no fields an action does not know (an action cannot name another chat),
//! at most [`MAX_ANSWER`] bytes in all. An answer over a limit is ignored as
//! a whole, like a malformed one: the message counts as delivered (the hook
//! did take it; calling it again would get the same answer, forever) and a
//! WARN line without identifiers says why.
//!
//! Settings live in the bot's config (`bot add`/`bot set`), with the
//! defaults of `run` for bots that name no hook of their own.

use crate::error::{Error, Result};
use crate::messaging::events::EventKinds;
use crate::messaging::process;
use crate::messaging::DeliveryError;
pub use crate::messaging::MAX_TEXT;
use crate::vault::BotConfig;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::time::Duration;

/// Keys of the hook settings in [`BotConfig::extra`].
pub mod keys {
    pub const ON_MESSAGE: &str = "on_message";
    pub const TIMEOUT_MS: &str = "hook_timeout_ms";
    pub const CONCURRENCY: &str = "hook_concurrency";
    pub const QUEUE_MAX: &str = "queue_max";
    pub const QUEUE_MAX_AGE_SECS: &str = "queue_max_age_secs";
    /// `--send-rate`: `N/min`, or `off`.
    pub const SEND_RATE: &str = "send_rate";
    /// The kinds of event the hook gets (`messaging::events`), comma-separated.
    pub const EVENTS: &str = "events";
    /// Where events go (`bot set --sink`): see [`super::Sink`].
    pub const SINK: &str = "sink";
}

/// Where a bot's events go (`bot set --sink`, stored as written here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The bot's hook (its webhook or command, or `run`'s default).
    Hook,
    /// The fleet's events stream only (`run --nats`).
    Nats,
    /// The events stream first, then the hook.
    NatsAndHook,
}

impl Sink {
    /// Parses `nats`, `hook` (also `webhook`, `command`), or both
    /// comma-separated.
    pub fn parse(s: &str) -> std::result::Result<Sink, String> {
        let (mut nats, mut hook) = (false, false);
        for w in s.split(',').map(str::trim) {
            match w {
                "nats" => nats = true,
                "hook" | "webhook" | "command" => hook = true,
                _ => {
                    return Err(format!(
                        "unknown sink {w:?}: give nats, webhook, command (or hook), or nats,webhook"
                    ))
                }
            }
        }
        match (nats, hook) {
            (true, true) => Ok(Sink::NatsAndHook),
            (true, false) => Ok(Sink::Nats),
            (false, true) => Ok(Sink::Hook),
            (false, false) => Err("the sink is empty".into()),
        }
    }

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Hook => "hook",
            Sink::Nats => "nats",
            Sink::NatsAndHook => "nats,hook",
        }
    }
}

/// Default time limit of one hook call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of hook calls of one bot in flight at once (never more
/// than one per chat: order within a chat is kept).
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default size limit of a bot's inbound queue.
pub const DEFAULT_QUEUE_MAX: usize = 10_000;
/// Default age limit of a queued message.
pub const DEFAULT_QUEUE_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
/// Largest answer read from a hook; a longer one is ignored.
pub const MAX_ANSWER: u64 = 1024 * 1024;
/// Most actions one answer may ask for; an answer with more is ignored.
pub const MAX_ACTIONS: usize = 16;
/// Longest emoji of a reaction, in bytes (one emoji with modifiers fits).
pub const MAX_EMOJI: usize = 64;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Webhook(String),
    Command(String),
}

/// A bot's hook settings, resolved against the runner's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSettings {
    /// `None`: the bot has no hook; inbound messages are only counted
    /// (unless they go to NATS).
    pub target: Option<Target>,
    /// Events are published to the fleet's events stream first (`--sink
    /// nats`, or `run --nats` for a bot with no hook).
    pub nats: bool,
    pub timeout: Duration,
    pub concurrency: usize,
    pub queue_max: usize,
    pub queue_max_age: Duration,
    /// Outbound messages a minute (`--send-rate`); `None`: unpaced.
    pub send_rate: Option<u32>,
    /// The kinds of event the hook gets.
    pub events: EventKinds,
}

/// Defaults of `run` (`--webhook`, `--on-message`, limits, `--events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDefaults {
    pub target: Option<Target>,
    /// `run --nats`: a bot with no hook and no `--sink` publishes to NATS.
    pub nats: bool,
    /// `run --sink`: the sink of bots with none of their own.
    pub sink: Option<Sink>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub queue_max: usize,
    pub queue_max_age: Duration,
    pub send_rate: Option<u32>,
    pub events: EventKinds,
}

impl Default for HookDefaults {
    fn default() -> Self {
        HookDefaults {
            target: None,
            nats: false,
            sink: None,
            timeout: DEFAULT_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            queue_max: DEFAULT_QUEUE_MAX,
            queue_max_age: DEFAULT_QUEUE_MAX_AGE,
            send_rate: None,
            events: EventKinds::default(),
        }
    }
}

fn num<T: std::str::FromStr>(cfg: &BotConfig, key: &str) -> Option<T> {
    cfg.extra.get(key).and_then(|v| v.parse().ok())
}

impl HookSettings {
    /// Whether events are queued for anyone (a hook or NATS).
    pub fn delivers(&self) -> bool {
        self.target.is_some() || self.nats
    }

    /// The bot's own settings, falling back to `d` for each one it leaves unset.
    pub fn resolve(cfg: &BotConfig, d: &HookDefaults) -> HookSettings {
        let own = match (&cfg.webhook, cfg.extra.get(keys::ON_MESSAGE)) {
            (Some(u), _) => Some(Target::Webhook(u.clone())),
            (None, Some(c)) => Some(Target::Command(c.clone())),
            (None, None) => None,
        };
        let target = own.or_else(|| d.target.clone());
        let sink = cfg
            .extra
            .get(keys::SINK)
            .and_then(|v| Sink::parse(v).ok())
            .or(d.sink);
        let (target, nats) = match sink {
            Some(Sink::Nats) => (None, true),
            Some(Sink::NatsAndHook) => (target, true),
            Some(Sink::Hook) => (target, false),
            None => {
                let nats = d.nats && target.is_none();
                (target, nats)
            }
        };
        HookSettings {
            target,
            nats,
            timeout: num(cfg, keys::TIMEOUT_MS)
                .map(Duration::from_millis)
                .unwrap_or(d.timeout),
            concurrency: num(cfg, keys::CONCURRENCY).unwrap_or(d.concurrency).max(1),
            queue_max: num(cfg, keys::QUEUE_MAX).unwrap_or(d.queue_max).max(1),
            queue_max_age: num(cfg, keys::QUEUE_MAX_AGE_SECS)
                .map(Duration::from_secs)
                .unwrap_or(d.queue_max_age),
            send_rate: match cfg.extra.get(keys::SEND_RATE) {
                Some(r) => super::pacing::parse_rate(r).unwrap_or(d.send_rate),
                None => d.send_rate,
            },
            events: cfg
                .extra
                .get(keys::EVENTS)
                .and_then(|v| EventKinds::parse(v).ok())
                .unwrap_or(d.events),
        }
    }
}

/// Checks a webhook URL given on the command line.
pub fn check_webhook(url: &str) -> Result<()> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "webhook must be an http:// or https:// URL, got {url:?}"
        )))
    }
}

/// One thing the hook asked the bot to do in the message's chat.
///
/// Unknown fields are refused: an action acts in the message's chat only,
/// and a hook that writes `"to": ...` must hear that it is not obeyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Send a text message.
    Reply { text: String },
    /// React to the message (an empty emoji removes a reaction).
    React { emoji: String },
    /// Mark the message read.
    Read,
    /// Send a file (`{"send_file": {...}}` in an answer): exactly one of
    /// `path` (under `run --media-dir`), `url` (on `run --media-url-allow`)
    /// or `base64`; the rest as for `send --file`.
    SendFile {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mimetype: Option<String>,
    },
}

impl Action {
    /// A `send_file` action's source of bytes.
    pub fn file_source(&self) -> Option<crate::messaging::attach::Source> {
        use crate::messaging::attach::Source;
        match self {
            Action::SendFile {
                path, url, base64, ..
            } => match (path, url, base64) {
                (Some(p), None, None) => Some(Source::Path(p.clone())),
                (None, Some(u), None) => Some(Source::Url(u.clone())),
                (None, None, Some(b)) => Some(Source::Base64(b.clone())),
                _ => None,
            },
            _ => None,
        }
    }
}

/// `{"send_file": {...}}` as the tagged form `{"type": "send_file", ...}`;
/// anything else as it is.
fn untag_send_file(a: &serde_json::Value) -> serde_json::Value {
    if let Some(o) = a.as_object() {
        if o.len() == 1 {
            if let Some(serde_json::Value::Object(f)) = o.get("send_file") {
                let mut f = f.clone();
                f.insert("type".into(), "send_file".into());
                return serde_json::Value::Object(f);
            }
        }
    }
    a.clone()
}

/// Reads a hook's answer. `Err` names what is wrong with a JSON answer that
/// is not a valid action list or breaks a limit (the message still counts
/// as accepted; the answer is ignored).
pub fn parse_answer(body: &str) -> std::result::Result<Vec<Action>, AnswerIgnored> {
    let body = body.trim();
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return Ok(Vec::new());
    };
    let reply;
    let mut list: Vec<&serde_json::Value> = Vec::new();
    match &v {
        serde_json::Value::Array(a) => list.extend(a),
        serde_json::Value::Object(o) => {
            if let Some(r) = o.get("reply") {
                let text = r
                    .as_str()
                    .ok_or_else(|| AnswerIgnored("\"reply\" must be a string".into()))?;
                reply = serde_json::json!({"type": "reply", "text": text});
                list.push(&reply);
            }
            if let Some(a) = o.get("actions") {
                list.extend(
                    a.as_array()
                        .ok_or_else(|| AnswerIgnored("\"actions\" must be a list".into()))?,
                );
            }
        }
        _ => return Ok(Vec::new()),
    }
    if list.len() > MAX_ACTIONS {
        return Err(AnswerIgnored(format!(
            "the answer asks for {} actions; at most {MAX_ACTIONS} are carried out per message",
            list.len()
        )));
    }
    list.into_iter()
        .map(|a| {
            let action: Action = serde_json::from_value(untag_send_file(a)).map_err(|e| {
                AnswerIgnored(format!(
                    "bad action: {} (types: reply, react, read, send_file; an action acts in the message's chat only)",
                    shorten(&e.to_string())
                ))
            })?;
            check_action(&action)?;
            Ok(action)
        })
        .collect()
}

/// `s` cut to a length fit for one log line (serde quotes what it refused,
/// which may be long: the reason must stay readable).
fn shorten(s: &str) -> String {
    const MAX: usize = 120;
    if s.chars().count() <= MAX {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(MAX).collect();
    out.push('…');
    out
}

/// The limits of one action.
fn check_action(a: &Action) -> std::result::Result<(), AnswerIgnored> {
    let e = match a {
        Action::Reply { text } if text.is_empty() => "a reply's text is empty".to_string(),
        Action::Reply { text } if text.len() > MAX_TEXT => format!(
            "a reply is {} bytes; the limit is {MAX_TEXT} (the same as for `wavault send`)",
            text.len()
        ),
        Action::React { emoji } if emoji.len() > MAX_EMOJI => format!(
            "a reaction's emoji is {} bytes; the limit is {MAX_EMOJI}",
            emoji.len()
        ),
        Action::SendFile { .. } if a.file_source().is_none() => {
            "a send_file needs exactly one of \"path\", \"url\" or \"base64\"".to_string()
        }
        Action::SendFile {
            base64: Some(b), ..
        } if crate::messaging::attach::decode_base64(b).is_err() => {
            "a send_file's base64 is invalid".to_string()
        }
        Action::SendFile { kind: Some(k), .. }
            if crate::messaging::attach::MediaKind::parse(k).is_err() =>
        {
            format!(
                "a send_file's \"as\" {k:?} is not one of {}",
                crate::messaging::attach::KINDS
            )
        }
        Action::SendFile {
            caption: Some(c), ..
        } if c.len() > MAX_TEXT => format!(
            "a send_file's caption is {} bytes; the limit is {MAX_TEXT}",
            c.len()
        ),
        Action::SendFile {
            mimetype,
            file_name,
            ..
        } if crate::messaging::attach::check_meta(mimetype.as_deref(), file_name.as_deref())
            .is_err() =>
        {
            "a send_file's mimetype or file_name is invalid".to_string()
        }
        _ => return Ok(()),
    };
    Err(AnswerIgnored(e))
}

/// Why a hook's answer is ignored: what is wrong with it. The message
/// still counts as accepted (asking again would get the same answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AnswerIgnored(pub String);

impl AnswerIgnored {
    /// Whether the reason contains `s` (tests).
    pub fn contains(&self, s: &str) -> bool {
        self.0.contains(s)
    }
}

/// What identifies one delivery attempt to the hook: the event's id (the
/// same for every attempt), the attempt's time, and for a webhook the
/// `webhook-signature` value (`messaging::signing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub id: String,
    /// Unix seconds of this attempt.
    pub timestamp: i64,
    pub signature: Option<String>,
}

/// Calls the hook with `json`; `Ok` with the actions when it accepted the
/// message, `Err` with the reason otherwise (the message is retried). A
/// webhook gets the stamp as the Standard Webhooks headers, a command as
/// `WAVAULT_EVENT_ID` and `WAVAULT_EVENT_TIMESTAMP`.
pub async fn call(
    target: &Target,
    json: &str,
    timeout: Duration,
    bot: &str,
    stamp: &Stamp,
) -> std::result::Result<Vec<Action>, DeliveryError> {
    let answer = match target {
        Target::Webhook(url) => post(url.clone(), json.to_owned(), timeout, stamp.clone()).await?,
        Target::Command(cmd) => {
            let parent: Vec<_> = std::env::vars_os().collect();
            run_command(cmd, json, timeout, bot, stamp, parent).await?
        }
    };
    let Some(answer) = answer else {
        tracing::warn!("hook answer ignored: longer than {MAX_ANSWER} bytes");
        return Ok(Vec::new());
    };
    Ok(parse_answer(&answer).unwrap_or_else(|e| {
        tracing::warn!("hook answer ignored: {e}");
        Vec::new()
    }))
}

/// Longest redirect target quoted in an error.
const MAX_LOCATION_SHOWN: usize = 200;

/// `Ok(None)`: the answer was longer than [`MAX_ANSWER`].
async fn post(
    url: String,
    body: String,
    timeout: Duration,
    stamp: Stamp,
) -> std::result::Result<Option<String>, DeliveryError> {
    use crate::messaging::signing::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
    let call = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // A redirect would turn the POST into a GET without the message
            // and count its 2xx as delivered: never follow one.
            .max_redirects(0)
            .build()
            .into();
        let mut req = agent
            .post(&url)
            .header("content-type", "application/json")
            .header(HEADER_ID, &stamp.id)
            .header(HEADER_TIMESTAMP, stamp.timestamp.to_string());
        if let Some(sig) = &stamp.signature {
            req = req.header(HEADER_SIGNATURE, sig);
        }
        let mut resp = req.send(body).map_err(|e| match e {
            ureq::Error::Timeout(_) => DeliveryError::TimedOut {
                what: "webhook",
                after: timeout,
            },
            e => DeliveryError::Webhook(e.to_string()),
        })?;
        let status = resp.status();
        if status.is_redirection() {
            let location: String = resp
                .headers()
                .get("location")
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
                .unwrap_or_else(|| "nowhere".into())
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_LOCATION_SHOWN)
                .collect();
            return Err(DeliveryError::Redirect {
                status: status.as_u16(),
                location,
            });
        }
        if !status.is_success() {
            return Err(DeliveryError::Status(status.as_u16()));
        }
        match resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
        {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(ureq::Error::BodyExceedsLimit(_)) => Ok(None),
            Err(e) => Err(DeliveryError::WebhookAnswer(e.to_string())),
        }
    });
    // The agent's own limit ends the request; this one is a backstop.
    match tokio::time::timeout(timeout + Duration::from_secs(1), call).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(DeliveryError::Task(e.to_string())),
        Err(_) => Err(DeliveryError::TimedOut {
            what: "webhook",
            after: timeout,
        }),
    }
}

/// Runs the hook command with `json` on stdin, in the environment
/// [`process::child_env`] makes of `parent` (wavault's own environment in
/// production) plus `WAVAULT_BOT`, `WAVAULT_EVENT_ID` and
/// `WAVAULT_EVENT_TIMESTAMP` (never a secret). Returns its output (`None`:
/// longer than [`MAX_ANSWER`]) when it exits 0.
pub(crate) async fn run_command<I>(
    cmd: &str,
    json: &str,
    timeout: Duration,
    bot: &str,
    stamp: &Stamp,
    parent: I,
) -> std::result::Result<Option<String>, DeliveryError>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let ts = stamp.timestamp.to_string();
    let f = process::run(process::Spec {
        what: "hook command",
        command: cmd,
        input: json.as_bytes(),
        env: process::child_env(
            parent,
            &[
                ("WAVAULT_BOT", bot),
                ("WAVAULT_EVENT_ID", &stamp.id),
                ("WAVAULT_EVENT_TIMESTAMP", &ts),
            ],
        ),
        timeout,
        capture: Some(MAX_ANSWER),
    })
    .await?;
    if !f.status.success() {
        return Err(DeliveryError::Exited {
            what: "hook command",
            status: f.status.to_string(),
        });
    }
    Ok((!f.truncated).then(|| String::from_utf8_lossy(&f.stdout).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(parse_answer(""), Ok(vec![]));
        assert_eq!(parse_answer("ok"), Ok(vec![]));
        assert_eq!(
            parse_answer(r#"{"reply":"hi"}"#),
            Ok(vec![Action::Reply { text: "hi".into() }])
        );
        assert_eq!(
            parse_answer(
                r#"[{"type":"react","emoji":"👍"},{"type":"read"},{"type":"reply","text":"x"}]"#
            ),
            Ok(vec![
                Action::React {
                    emoji: "👍".into()
                },
                Action::Read,
                Action::Reply { text: "x".into() }
            ])
        );
        assert_eq!(
            parse_answer(r#"{"reply":"a","actions":[{"type":"read"}]}"#),
            Ok(vec![Action::Reply { text: "a".into() }, Action::Read])
        );
        assert!(parse_answer(r#"{"reply":3}"#).is_err());
        assert!(parse_answer(r#"[{"type":"dance"}]"#).is_err());
    }

    /// `{"send_file": {...}}` and the tagged form parse alike; no source,
    /// two sources, bad base64, an unknown kind or field: the answer is ignored.
    #[test]
    fn send_file_answers() {
        let want = Action::SendFile {
            path: None,
            url: None,
            base64: Some("aGk=".into()),
            caption: Some("c".into()),
            kind: Some("image".into()),
            file_name: None,
            mimetype: None,
        };
        for body in [
            r#"{"actions":[{"send_file":{"base64":"aGk=","caption":"c","as":"image"}}]}"#,
            r#"[{"type":"send_file","base64":"aGk=","caption":"c","as":"image"}]"#,
        ] {
            assert_eq!(parse_answer(body), Ok(vec![want.clone()]), "{body}");
        }
        let stored = serde_json::to_string(&vec![want.clone()]).unwrap();
        assert_eq!(
            parse_answer(&stored),
            Ok(vec![want]),
            "stored form reads back"
        );
        for (body, says) in [
            (
                r#"{"actions":[{"send_file":{"caption":"c"}}]}"#,
                "exactly one",
            ),
            (
                r#"{"actions":[{"send_file":{"path":"a","url":"https://x/"}}]}"#,
                "exactly one",
            ),
            (r#"{"actions":[{"send_file":{"base64":"***"}}]}"#, "base64"),
            (
                r#"{"actions":[{"send_file":{"base64":"aGk=","as":"gif"}}]}"#,
                "\"as\"",
            ),
            (
                r#"{"actions":[{"send_file":{"base64":"aGk=","to":"x"}}]}"#,
                "unknown field",
            ),
        ] {
            let e = parse_answer(body).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn sinks_resolve_per_bot_then_run_then_by_whether_there_is_a_hook() {
        let mut cfg = BotConfig::new(crate::BotId::parse("a").unwrap());
        let fleet = HookDefaults {
            nats: true,
            ..HookDefaults::default()
        };
        // No hook anywhere, in a fleet: NATS; outside one: nothing.
        let s = HookSettings::resolve(&cfg, &fleet);
        assert!(s.nats && s.target.is_none() && s.delivers());
        assert!(!HookSettings::resolve(&cfg, &HookDefaults::default()).delivers());
        // A hook of its own and no sink: the hook only.
        cfg.webhook = Some("http://own/".into());
        let s = HookSettings::resolve(&cfg, &fleet);
        assert!(!s.nats && s.target.is_some());
        // `run --sink nats,webhook` for bots without their own sink.
        let both = HookDefaults {
            sink: Some(Sink::NatsAndHook),
            ..fleet.clone()
        };
        let s = HookSettings::resolve(&cfg, &both);
        assert!(s.nats && s.target.is_some());
        // The bot's own sink wins.
        cfg.extra.insert(keys::SINK.into(), "nats".into());
        let s = HookSettings::resolve(&cfg, &both);
        assert!(s.nats && s.target.is_none());
        assert_eq!(Sink::parse("webhook, nats"), Ok(Sink::NatsAndHook));
        assert_eq!(Sink::parse("command"), Ok(Sink::Hook));
        assert!(Sink::parse("kafka").unwrap_err().contains("unknown sink"));
        assert!(Sink::parse("").is_err());
        for s in [Sink::Hook, Sink::Nats, Sink::NatsAndHook] {
            assert_eq!(Sink::parse(s.as_str()), Ok(s));
        }
    }

    #[test]
    fn settings_fall_back_to_defaults() {
        let mut cfg = BotConfig::new(crate::BotId::parse("a").unwrap());
        let d = HookDefaults {
            target: Some(Target::Webhook("http://d/".into())),
            ..HookDefaults::default()
        };
        let s = HookSettings::resolve(&cfg, &d);
        assert_eq!(s.target, d.target);
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        cfg.extra
            .insert(keys::ON_MESSAGE.into(), "cat >/dev/null".into());
        cfg.extra.insert(keys::TIMEOUT_MS.into(), "250".into());
        cfg.extra.insert(keys::CONCURRENCY.into(), "0".into());
        let s = HookSettings::resolve(&cfg, &d);
        assert_eq!(s.target, Some(Target::Command("cat >/dev/null".into())));
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(s.concurrency, 1);
        cfg.webhook = Some("http://own/".into());
        assert_eq!(
            HookSettings::resolve(&cfg, &d).target,
            Some(Target::Webhook("http://own/".into()))
        );
    }

    use crate::messaging::test_runtime as rt;

    /// The stamp of the calls below.
    fn stamp() -> Stamp {
        Stamp {
            id: "evt_test".into(),
            timestamp: 1_800_000_000,
            signature: Some("v1,c2ln".into()),
        }
    }

    /// [`super::call`] with [`stamp`].
    async fn call(
        target: &Target,
        json: &str,
        timeout: Duration,
        bot: &str,
    ) -> std::result::Result<Vec<Action>, DeliveryError> {
        super::call(target, json, timeout, bot, &stamp()).await
    }

    #[test]
    fn command_hook_gets_stdin_and_its_answer_counts() {
        let t = Target::Command(
            r#"read line; echo "{\"reply\":\"$WAVAULT_BOT saw ${#line}\"}""#.into(),
        );
        let r = rt().block_on(call(&t, "{\"a\":1}", Duration::from_secs(5), "sales"));
        assert_eq!(
            r,
            Ok(vec![Action::Reply {
                text: "sales saw 7".into()
            }])
        );
        let failing = Target::Command("cat >/dev/null; exit 3".into());
        let r = rt().block_on(call(&failing, "{}", Duration::from_secs(5), "sales"));
        assert!(r.unwrap_err().to_string().contains("exit status: 3"));
    }

    /// Accepts one HTTP request, answers with `status` and `reply`, returns the request.
    fn one_shot_server(
        status: &'static str,
        reply: &'static str,
    ) -> (String, std::thread::JoinHandle<String>) {
        one_shot_server_with(status, String::new(), reply.to_owned())
    }

    /// [`one_shot_server`] with extra header lines (each ending in `\r\n`).
    fn one_shot_server_with(
        status: &'static str,
        headers: String,
        reply: String,
    ) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut s = stream;
            write!(
                s,
                "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
            head + &String::from_utf8(body).unwrap()
        });
        (url, h)
    }

    #[test]
    fn webhook_gets_one_json_object_and_its_reply_counts() {
        let (url, server) = one_shot_server("200 OK", r#"{"reply":"thanks"}"#);
        let body = r#"{"bot":"sales","text":"hi"}"#;
        let r = rt().block_on(call(
            &Target::Webhook(url),
            body,
            Duration::from_secs(5),
            "sales",
        ));
        assert_eq!(
            r,
            Ok(vec![Action::Reply {
                text: "thanks".into()
            }])
        );
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
        assert!(request
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        assert_eq!(request.split("\r\n\r\n").nth(1), Some(body));
        // The stamp, as the Standard Webhooks headers.
        let head = request.to_ascii_lowercase();
        assert!(head.contains("\r\nwebhook-id: evt_test\r\n"), "{request}");
        assert!(
            head.contains("\r\nwebhook-timestamp: 1800000000\r\n"),
            "{request}"
        );
        assert!(
            head.contains("\r\nwebhook-signature: v1,c2ln\r\n"),
            "{request}"
        );
    }

    #[test]
    fn webhook_error_status_and_unreachable_url_are_failures() {
        let (url, server) = one_shot_server("503 Service Unavailable", "down");
        let r = rt().block_on(call(
            &Target::Webhook(url),
            "{}",
            Duration::from_secs(5),
            "s",
        ));
        assert!(r.unwrap_err().to_string().contains("503"));
        server.join().unwrap();
        // Bound but not listening: the port stays ours for the whole test and
        // every connection to it is refused.
        let refusing = tokio::net::TcpSocket::new_v4().unwrap();
        refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let url = format!("http://{}/hook", refusing.local_addr().unwrap());
        let r = rt().block_on(call(
            &Target::Webhook(url),
            "{}",
            Duration::from_secs(5),
            "s",
        ));
        let e = r.unwrap_err().to_string();
        assert!(e.to_lowercase().contains("refused"), "{e}");
        drop(refusing);
    }

    #[test]
    fn hanging_command_hits_its_time_limit() {
        // The command would run for an hour; the call returns at its 300 ms
        // limit. 60 s is a deadline reached only when the limit is not applied.
        let t = Target::Command("sleep 3600".into());
        let started = std::time::Instant::now();
        let r = rt().block_on(call(&t, "{}", Duration::from_millis(300), "sales"));
        assert!(r.unwrap_err().to_string().contains("timed out"));
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    /// A redirect is a failed delivery, not followed: following it turns
    /// the POST into a GET without the message, and its 2xx would count the
    /// message as delivered.
    #[test]
    fn webhook_redirect_is_a_failure_and_not_followed() {
        // Where a followed redirect would land: it answers 200 and a reply.
        let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = format!("http://{}/moved", elsewhere.local_addr().unwrap());
        elsewhere.set_nonblocking(true).unwrap();
        let (url, server) = one_shot_server_with(
            "302 Found",
            format!("location: {target}\r\n"),
            String::new(),
        );
        let followed = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok((mut s, _)) = elsewhere.accept() {
                    s.set_nonblocking(false).unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let body = r#"{"reply":"lost"}"#;
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        });
        let r = rt().block_on(call(
            &Target::Webhook(url),
            "{}",
            Duration::from_secs(2),
            "s",
        ));
        server.join().unwrap();
        let e = r.unwrap_err().to_string();
        assert!(e.contains("302") && e.contains("redirect"), "{e}");
        assert!(e.contains(&target), "{e}");
        assert!(e.contains("fix the webhook URL"), "{e}");
        assert!(!followed.join().unwrap(), "the redirect was followed");
    }

    /// The answer's limits: an answer over one is ignored as a whole (the
    /// message counts as delivered: no retry loop), with a clear reason.
    #[test]
    fn answers_over_the_limits_are_refused() {
        let many = serde_json::to_string(&vec![serde_json::json!({"type": "read"}); 1000]).unwrap();
        let e = parse_answer(&many).unwrap_err();
        assert!(
            e.contains("1000 actions") && e.contains("at most 16"),
            "{e}"
        );
        let e = parse_answer(&format!(r#"{{"actions":{many}}}"#)).unwrap_err();
        assert!(e.contains("1000 actions"), "{e}");
        // Exactly at the limit is fine.
        let sixteen =
            serde_json::to_string(&vec![serde_json::json!({"type": "read"}); 16]).unwrap();
        assert_eq!(parse_answer(&sixteen).map(|a| a.len()), Ok(16));

        let long = "x".repeat(100_000);
        let e = parse_answer(&serde_json::json!({ "reply": long }).to_string()).unwrap_err();
        assert!(e.contains("100000 bytes") && e.contains("65536"), "{e}");
        let at_limit = "x".repeat(MAX_TEXT);
        assert_eq!(
            parse_answer(&serde_json::json!({ "reply": at_limit }).to_string()),
            Ok(vec![Action::Reply { text: at_limit }])
        );
        let e = parse_answer(r#"{"reply":""}"#).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e =
            parse_answer(&serde_json::json!([{"type":"react","emoji":"x".repeat(65)}]).to_string())
                .unwrap_err();
        assert!(e.contains("emoji"), "{e}");
        // An action cannot name another chat.
        let e =
            parse_answer(r#"[{"type":"reply","text":"hi","to":"4915112345678@s.whatsapp.net"}]"#)
                .unwrap_err();
        assert!(e.contains("unknown field") && e.contains("`to`"), "{e}");
    }

    /// A command answering with more than [`MAX_ANSWER`] bytes is accepted
    /// and its answer ignored (not retried forever).
    #[test]
    fn an_overlong_command_answer_is_ignored() {
        let t = Target::Command(format!(
            r#"cat >/dev/null; printf '{{"reply":"x"}}'; head -c {} /dev/zero | tr '\0' ' '"#,
            MAX_ANSWER
        ));
        let r = rt().block_on(call(&t, "{}", Duration::from_secs(10), "s"));
        assert_eq!(r, Ok(vec![]));
    }

    fn secret_env() -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = [
            ("WAVAULT_PASSPHRASE", "vault-secret"),
            ("WAVAULT_BACKUP_PASSPHRASE", "backup-secret"),
            ("WAVAULT_NEW_PASSPHRASE", "new-secret"),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/wavault.service"),
            ("WAVAULT_BOT", "spoofed"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        env.extend(std::env::vars_os().filter(|(k, _)| k == "PATH"));
        env
    }

    /// The hook command, run through the same code as in production with a
    /// parent environment holding every secret wavault may be given, sees
    /// none of them; `PATH` and `WAVAULT_BOT` (the bot's, not a spoofed one) it does.
    #[test]
    fn hook_command_gets_a_clean_environment() {
        let out = rt()
            .block_on(run_command(
                "cat >/dev/null; env",
                "{}",
                Duration::from_secs(10),
                "sales",
                &stamp(),
                secret_env(),
            ))
            .unwrap()
            .unwrap();
        for name in [
            "WAVAULT_PASSPHRASE",
            "WAVAULT_BACKUP_PASSPHRASE",
            "WAVAULT_NEW_PASSPHRASE",
            "CREDENTIALS_DIRECTORY",
            "secret",
        ] {
            assert!(!out.contains(name), "{name} reached the hook: {out}");
        }
        assert!(out.lines().any(|l| l.starts_with("PATH=")), "{out}");
        assert!(out.lines().any(|l| l == "WAVAULT_BOT=sales"), "{out}");
        assert!(
            out.lines().any(|l| l == "WAVAULT_EVENT_ID=evt_test"),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l == "WAVAULT_EVENT_TIMESTAMP=1800000000"),
            "{out}"
        );
    }

    /// Whether `pid` is gone (or a zombie waiting for its new parent).
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    fn wait_gone(pid: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if gone(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A hook past its time limit is killed with its whole process group:
    /// a background job of `sh` does not outlive it.
    #[test]
    fn timeout_kills_the_hooks_grandchildren() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        let t = Target::Command(format!(
            "sleep 300 & echo $! > '{}'; wait",
            pidfile.display()
        ));
        let r = rt().block_on(call(&t, "{}", Duration::from_millis(700), "s"));
        assert!(r.unwrap_err().to_string().contains("timed out"));
        let pid = std::fs::read_to_string(&pidfile).expect("the hook wrote its child's pid");
        let pid = pid.trim();
        assert!(
            wait_gone(pid),
            "the hook's `sleep 300` (pid {pid}) survived its timeout"
        );
    }

    /// Also when the caller stops waiting (the bot is stopped): dropping
    /// the call kills the group.
    #[test]
    fn dropping_the_call_kills_the_hooks_grandchildren() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        let t = Target::Command(format!(
            "sleep 300 & echo $! > '{}'; wait",
            pidfile.display()
        ));
        let rt = rt();
        // The call lives outside `block_on`, so it is still running (not
        // yet dropped) when the grandchild is checked below.
        let mut call = Box::pin(call(&t, "{}", Duration::from_secs(300), "s"));
        rt.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                tokio::select! {
                    r = &mut call => panic!("the hook ended: {r:?}"),
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                if std::fs::read_to_string(&pidfile).is_ok_and(|p| p.ends_with('\n')) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the hook never started"
                );
            }
        });
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let pid = pid.trim();
        assert!(!gone(pid), "the hook's child is running while the call is");
        drop(call);
        drop(rt);
        assert!(
            wait_gone(pid),
            "the hook's `sleep 300` (pid {pid}) survived the dropped call"
        );
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                prop_oneof![
                    4 => Just("reply".to_string()),
                    4 => Just("react".to_string()),
                    4 => Just("read".to_string()),
                    2 => Just("👍".to_string()),
                    8 => ".{0,20}",
                    // Around the reply limit.
                    1 => (MAX_TEXT - 2..MAX_TEXT + 2).prop_map(|n| "y".repeat(n)),
                ]
                .prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 64, 24, |inner| {
                let key = prop_oneof![
                    Just("type".to_string()),
                    Just("text".to_string()),
                    Just("emoji".to_string()),
                    Just("reply".to_string()),
                    Just("actions".to_string()),
                    Just("to".to_string()),
                    "[a-z]{1,6}",
                ];
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..24).prop_map(serde_json::Value::Array),
                    prop::collection::btree_map(key, inner, 0..5)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn action() -> impl Strategy<Value = serde_json::Value> {
            prop_oneof![
                ".{0,10}".prop_map(|t| serde_json::json!({"type": "reply", "text": t})),
                ".{0,3}".prop_map(|e| serde_json::json!({"type": "react", "emoji": e})),
                Just(serde_json::json!({"type": "read"})),
            ]
        }

        fn check(body: &str) {
            match parse_answer(body) {
                Ok(actions) => {
                    assert!(actions.len() <= MAX_ACTIONS, "{} actions", actions.len());
                    for a in &actions {
                        match a {
                            Action::Reply { text } => {
                                assert!(!text.is_empty() && text.len() <= MAX_TEXT)
                            }
                            Action::React { emoji } => assert!(emoji.len() <= MAX_EMOJI),
                            Action::Read | Action::SendFile { .. } => {}
                        }
                    }
                }
                Err(e) => {
                    assert!(e.0.len() > 10 && e.0.len() < 400, "unclear error: {e:?}");
                    assert!(
                        ["reply", "actions", "action", "emoji"]
                            .iter()
                            .any(|w| e.contains(w)),
                        "the error names no part of the answer: {e}"
                    );
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                check(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn random_text(s in ".{0,200}") {
                check(&s);
            }

            #[test]
            fn random_json(v in json_value()) {
                check(&v.to_string());
            }

            #[test]
            fn lists_of_actions(list in prop::collection::vec(action(), 0..40), wrap in 0..3u8) {
                let n = list.len();
                let body = match wrap {
                    0 => serde_json::Value::Array(list),
                    1 => serde_json::json!({ "actions": list }),
                    _ => serde_json::json!({ "reply": "r", "actions": list }),
                }
                .to_string();
                let extra = usize::from(wrap == 2);
                let r = parse_answer(&body);
                if n + extra > MAX_ACTIONS {
                    prop_assert!(r.as_ref().is_err_and(|e| e.contains("actions")), "{:?}", r);
                }
                check(&body);
            }
        }
    }
}
