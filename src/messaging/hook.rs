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
//!   `{"type":"read"}` (mark the message read).
//!
//! Settings live in the bot's config (`bot add`/`bot set`), with the
//! defaults of `run` for bots that name no hook of their own.

use crate::error::{Error, Result};
use crate::vault::BotConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Keys of the hook settings in [`BotConfig::extra`].
pub mod keys {
    pub const ON_MESSAGE: &str = "on_message";
    pub const TIMEOUT_MS: &str = "hook_timeout_ms";
    pub const CONCURRENCY: &str = "hook_concurrency";
    pub const QUEUE_MAX: &str = "queue_max";
    pub const QUEUE_MAX_AGE_SECS: &str = "queue_max_age_secs";
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
/// Largest answer read from a hook.
pub const MAX_ANSWER: u64 = 1024 * 1024;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Webhook(String),
    Command(String),
}

/// A bot's hook settings, resolved against the runner's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSettings {
    /// `None`: the bot has no hook; inbound messages are only counted.
    pub target: Option<Target>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub queue_max: usize,
    pub queue_max_age: Duration,
}

/// Defaults of `run` (`--webhook`, `--on-message`, limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDefaults {
    pub target: Option<Target>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub queue_max: usize,
    pub queue_max_age: Duration,
}

impl Default for HookDefaults {
    fn default() -> Self {
        HookDefaults {
            target: None,
            timeout: DEFAULT_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            queue_max: DEFAULT_QUEUE_MAX,
            queue_max_age: DEFAULT_QUEUE_MAX_AGE,
        }
    }
}

fn num<T: std::str::FromStr>(cfg: &BotConfig, key: &str) -> Option<T> {
    cfg.extra.get(key).and_then(|v| v.parse().ok())
}

impl HookSettings {
    /// The bot's own settings, falling back to `d` for each one it leaves unset.
    pub fn resolve(cfg: &BotConfig, d: &HookDefaults) -> HookSettings {
        let own = match (&cfg.webhook, cfg.extra.get(keys::ON_MESSAGE)) {
            (Some(u), _) => Some(Target::Webhook(u.clone())),
            (None, Some(c)) => Some(Target::Command(c.clone())),
            (None, None) => None,
        };
        HookSettings {
            target: own.or_else(|| d.target.clone()),
            timeout: num(cfg, keys::TIMEOUT_MS)
                .map(Duration::from_millis)
                .unwrap_or(d.timeout),
            concurrency: num(cfg, keys::CONCURRENCY).unwrap_or(d.concurrency).max(1),
            queue_max: num(cfg, keys::QUEUE_MAX).unwrap_or(d.queue_max).max(1),
            queue_max_age: num(cfg, keys::QUEUE_MAX_AGE_SECS)
                .map(Duration::from_secs)
                .unwrap_or(d.queue_max_age),
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Send a text message.
    Reply { text: String },
    /// React to the message (an empty emoji removes a reaction).
    React { emoji: String },
    /// Mark the message read.
    Read,
}

/// Reads a hook's answer. `Err` names what is wrong with a JSON answer that
/// is not a valid action list (the message still counts as accepted).
pub fn parse_answer(body: &str) -> std::result::Result<Vec<Action>, String> {
    let body = body.trim();
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return Ok(Vec::new());
    };
    let list = match &v {
        serde_json::Value::Array(a) => a.clone(),
        serde_json::Value::Object(o) => {
            let mut out = Vec::new();
            if let Some(r) = o.get("reply") {
                let text = r.as_str().ok_or("\"reply\" must be a string")?.to_owned();
                out.push(serde_json::json!({"type": "reply", "text": text}));
            }
            if let Some(a) = o.get("actions") {
                out.extend(
                    a.as_array()
                        .ok_or("\"actions\" must be a list")?
                        .iter()
                        .cloned(),
                );
            }
            out
        }
        _ => return Ok(Vec::new()),
    };
    list.into_iter()
        .map(|a| serde_json::from_value(a).map_err(|e| format!("bad action: {e}")))
        .collect()
}

/// Calls the hook with `json`; `Ok` with the actions when it accepted the
/// message, `Err` with the reason otherwise (the message is retried).
pub async fn call(
    target: &Target,
    json: &str,
    timeout: Duration,
    bot: &str,
) -> std::result::Result<Vec<Action>, String> {
    let answer = match target {
        Target::Webhook(url) => post(url.clone(), json.to_owned(), timeout).await?,
        Target::Command(cmd) => run_command(cmd, json, timeout, bot).await?,
    };
    Ok(parse_answer(&answer).unwrap_or_else(|e| {
        tracing::warn!("hook answer ignored: {e}");
        Vec::new()
    }))
}

async fn post(url: String, body: String, timeout: Duration) -> std::result::Result<String, String> {
    let call = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build()
            .into();
        let mut resp = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body)
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => format!("webhook timed out after {timeout:?}"),
                e => format!("webhook: {e}"),
            })?;
        resp.body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| format!("webhook answer: {e}"))
    });
    // The agent's own limit ends the request; this one is a backstop.
    match tokio::time::timeout(timeout + Duration::from_secs(1), call).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("webhook task: {e}")),
        Err(_) => Err(format!("webhook timed out after {timeout:?}")),
    }
}

async fn run_command(
    cmd: &str,
    json: &str,
    timeout: Duration,
    bot: &str,
) -> std::result::Result<String, String> {
    use tokio::io::AsyncReadExt;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("WAVAULT_BOT", bot)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("hook command could not start: {e}"))?;
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let work = async {
        if let Some(mut s) = stdin.take() {
            // A command that does not read its input is its own business.
            let _ = s.write_all(json.as_bytes()).await;
            let _ = s.write_all(b"\n").await;
        }
        let mut out = Vec::new();
        if let Some(o) = stdout.as_mut() {
            o.take(MAX_ANSWER)
                .read_to_end(&mut out)
                .await
                .map_err(|e| format!("reading the hook command's output: {e}"))?;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| format!("hook command: {e}"))?;
        if status.success() {
            Ok(String::from_utf8_lossy(&out).into_owned())
        } else {
            Err(format!("hook command exited with {status}"))
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        // Dropping the future drops the child: kill_on_drop ends it.
        Err(_) => Err(format!("hook command timed out after {timeout:?}")),
    }
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
        assert!(r.unwrap_err().contains("exit status: 3"));
    }

    /// Accepts one HTTP request, answers with `status` and `reply`, returns the request.
    fn one_shot_server(
        status: &'static str,
        reply: &'static str,
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
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
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
        assert!(r.unwrap_err().contains("503"));
        server.join().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/hook");
        let r = rt().block_on(call(
            &Target::Webhook(url),
            "{}",
            Duration::from_secs(5),
            "s",
        ));
        assert!(r.is_err());
    }

    #[test]
    fn hanging_command_hits_its_time_limit() {
        let t = Target::Command("sleep 30".into());
        let started = std::time::Instant::now();
        let r = rt().block_on(call(&t, "{}", Duration::from_millis(300), "sales"));
        assert!(r.unwrap_err().contains("timed out"));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
