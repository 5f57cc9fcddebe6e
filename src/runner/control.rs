//! The control socket: while `run` holds the vault, other `wavault`
//! processes of the same user ask it for status, statistics and bot lists here.
//!
//! `<vault>/control.sock`, mode 0600 in a 0700 folder; connections from
//! another uid are refused (peer credentials). Protocol: one JSON request
//! line, one JSON response line: `{"op":"status"}` (or
//! `{"op":"stats","bots":[...],"since":T,"now":T}`) →
//! `{"ok":true,"data":...}` or `{"ok":false,"error":"...","code":N}`.
//! A client that has not sent its whole request line within [`READ_TIMEOUT`]
//! gets an error answer and is disconnected; lines are at most 64 KiB.

use super::Shared;
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// File name of the socket inside the vault folder.
pub const SOCKET: &str = "control.sock";

fn path(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// Binds the socket (a leftover from a crashed runner is replaced: we hold the vault lock).
pub fn bind(dir: &Path) -> Result<UnixListener> {
    let p = path(dir);
    let _ = std::fs::remove_file(&p);
    let l = UnixListener::bind(&p).map_err(|e| Error::io(format!("binding {}", p.display()), e))?;
    crate::vault::fsutil::set_mode(&p, 0o600)?;
    Ok(l)
}

/// Removes the socket file.
pub fn unbind(dir: &Path) {
    let _ = std::fs::remove_file(path(dir));
}

fn owner_uid(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| m.uid())
}

/// How long the server waits for a client's request line (and for its
/// answer to be taken): a client that connects and sends nothing, or half a
/// line, is dropped after this.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request line.
const MAX_REQUEST: usize = 64 * 1024;

pub(crate) async fn serve(shared: Arc<Shared>, listener: UnixListener) {
    serve_with(shared, listener, READ_TIMEOUT).await
}

/// [`serve`] with another read timeout (tests).
pub(crate) async fn serve_with(
    shared: Arc<Shared>,
    listener: UnixListener,
    read_timeout: Duration,
) {
    let mut stop = shared.stop.subscribe();
    let uid = owner_uid(shared.vault.dir());
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = conn else { continue };
        let peer_uid = stream.peer_cred().ok().map(|c| c.uid());
        if uid.is_none() || peer_uid != uid {
            tracing::warn!("control socket: refused a connection from another user");
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = handle(shared, stream, read_timeout).await;
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    stream: UnixStream,
    read_timeout: Duration,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(r).take(MAX_REQUEST as u64 + 1);
    let read = reader.read_until(b'\n', &mut line);
    let resp = match tokio::time::timeout(read_timeout, read).await {
        Ok(read) => {
            read?;
            match parse_request(&line) {
                Ok(req) => respond(&shared, &req).await,
                Err(e) => Err(e),
            }
        }
        Err(_) => Err(Error::Usage(format!(
            "no complete control request within {read_timeout:?}: send one JSON object and a newline"
        ))),
    };
    let out = answer(resp);
    // The answer is small; a client that does not take it is dropped too.
    let write = async {
        w.write_all(out.as_bytes()).await?;
        w.shutdown().await
    };
    match tokio::time::timeout(read_timeout, write).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// The response line (with its newline) for a request's outcome.
pub(crate) fn answer(resp: Result<Value>) -> String {
    let out = match resp {
        Ok(data) => json!({"ok": true, "data": data}),
        Err(e) => json!({"ok": false, "error": e.to_string(), "code": e.exit_code()}),
    };
    format!("{out}\n")
}

/// Parses one request line (as read, with or without its newline): a JSON
/// object with a string `op`. Anything else is a usage error (exit 2) that
/// says what was wrong; never panics. Which ops exist is `respond`'s business.
pub(crate) fn parse_request(line: &[u8]) -> Result<Value> {
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
    let req: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    if !req.is_object() {
        return Err(bad("not a JSON object".into()));
    }
    if !req["op"].is_string() {
        return Err(bad("no \"op\" string".into()));
    }
    Ok(req)
}

async fn respond(shared: &Arc<Shared>, req: &Value) -> Result<Value> {
    if req["op"].as_str() == Some("reauth") {
        return reauth(shared, req).await;
    }
    if req["op"].as_str() == Some("send") {
        let id = crate::BotId::parse(req["bot"].as_str().unwrap_or_default())?;
        let to = req["to"].as_str().unwrap_or_default();
        let text = req["text"].as_str().unwrap_or_default();
        let mid = super::deliver::send(shared, &id, to, text).await?;
        return Ok(json!({ "id": mid }));
    }
    let s = shared.clone();
    let req = req.clone();
    tokio::task::spawn_blocking(move || {
        let v = &s.vault;
        match req["op"].as_str().unwrap_or_default() {
            "status" => to_value(&super::status::collect(v)?),
            "bots" => to_value(&crate::cli::bot_rows(v)?),
            "bot_show" => {
                let id = crate::BotId::parse(req["bot"].as_str().unwrap_or_default())?;
                let show_phone = req["show_phone"].as_bool().unwrap_or(false);
                to_value(&crate::cli::bot_show(v, &id, show_phone)?)
            }
            "stats" => {
                let bots: Vec<crate::BotId> = match &req["bots"] {
                    Value::Null => Vec::new(),
                    b => serde_json::from_value(b.clone())
                        .map_err(|e| Error::Usage(format!("bad bot list: {e}")))?,
                };
                let (Some(since), Some(now)) = (req["since"].as_i64(), req["now"].as_i64()) else {
                    return Err(Error::Usage("stats needs since and now".into()));
                };
                to_value(&crate::stats::collect(v, &bots, since, now)?)
            }
            "bot_add" => {
                let cfg: crate::vault::BotConfig = serde_json::from_value(req["config"].clone())
                    .map_err(|e| Error::Usage(format!("bad bot config: {e}")))?;
                // The same checks as typed on the command line: the socket
                // is no way around them.
                cfg.check()
                    .map_err(|p| Error::Usage(format!("bot {}: {p}", cfg.id)))?;
                v.add_bot(&cfg)?;
                if cfg.enabled {
                    s.start_bot(cfg.clone(), std::time::Duration::ZERO);
                }
                to_value(&cfg.id)
            }
            "queue" => {
                let id = crate::BotId::parse(req["bot"].as_str().unwrap_or_default())?;
                v.bot_config(&id)?;
                let inbox = s.inbox(&id);
                // A blocking thread: waiting here for the group commit is fine.
                let out = tokio::runtime::Handle::current().block_on(crate::cli::queue_op(
                    &inbox.queue,
                    req["queue_op"].as_str().unwrap_or_default(),
                    crate::vault::now(),
                ))?;
                inbox.changed();
                Ok(out)
            }
            "bot_config" => {
                let id = crate::BotId::parse(req["bot"].as_str().unwrap_or_default())?;
                to_value(&v.bot_config(&id)?)
            }
            "bot_set" => {
                let cfg: crate::vault::BotConfig = serde_json::from_value(req["config"].clone())
                    .map_err(|e| Error::Usage(format!("bad bot config: {e}")))?;
                // The same checks as typed on the command line: the socket
                // is no way around them.
                cfg.check()
                    .map_err(|p| Error::Usage(format!("bot {}: {p}", cfg.id)))?;
                v.set_bot(&cfg)?;
                // The worker reads its settings again when woken.
                s.inbox(&cfg.id).wake.notify_one();
                to_value(&cfg.id)
            }
            "sweep" => {
                let retention = std::time::Duration::from_secs(
                    req["older_than_secs"]
                        .as_u64()
                        .unwrap_or(s.cfg.retention.as_secs()),
                );
                let dry_run = req["dry_run"].as_bool().unwrap_or(false);
                to_value(&crate::sweep::sweep_now(
                    v,
                    retention,
                    dry_run,
                    s.cfg.backup_passphrase.as_deref().map(|p| p.expose()),
                )?)
            }
            "token_show" => to_value(&*crate::web::token::load_or_create(v)?),
            "token_rotate" => to_value(&*crate::web::token::rotate(v)?),
            other => Err(Error::Usage(format!("unknown control operation {other:?}"))),
        }
    })
    .await
    .map_err(|e| Error::Other(format!("control task: {e}")))?
}

/// Re-auth while running: stop that bot (its connection is dropped), take
/// the automatic backup and delete its credentials, then start it again so
/// it shows a QR code.
async fn reauth(shared: &Arc<Shared>, req: &Value) -> Result<Value> {
    let id = crate::BotId::parse(req["bot"].as_str().unwrap_or_default())?;
    let cfg = shared.vault.bot_config(&id)?;
    let pass = shared.cfg.backup_passphrase.clone().ok_or_else(|| {
        Error::Other(
            "the running wavault has no passphrase for the automatic backup; stop it and run `wavault bot reauth` again"
                .into(),
        )
    })?;
    let was_running = shared.stop_bot(&id).await;
    let v = shared.vault.clone();
    let id2 = id.clone();
    let report = tokio::task::spawn_blocking(move || {
        crate::sweep::reauth(&v, &id2, pass.expose(), crate::vault::now())
    })
    .await
    .map_err(|e| Error::Other(format!("re-auth task: {e}")))?;
    if was_running || cfg.enabled {
        // Started again whatever the outcome: a failed re-auth leaves the bot as it was.
        shared.start_bot(cfg, std::time::Duration::ZERO);
    }
    to_value(&report?)
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Other(e.to_string()))
}

/// Client side: sends `req` to a running runner. `Ok(None)` when no runner
/// listens (no socket, or nobody accepting).
pub fn request(dir: &Path, req: &Value) -> Result<Option<Value>> {
    use std::io::{BufRead, Write};
    let p = path(dir);
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(&p) else {
        return Ok(None);
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .map_err(|e| Error::io("control socket", e))?;
    writeln!(s, "{req}").map_err(|e| Error::io("writing to the control socket", e))?;
    let mut line = String::new();
    std::io::BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| Error::io("reading from the control socket", e))?;
    let resp: Value = serde_json::from_str(&line)
        .map_err(|e| Error::Other(format!("bad answer from the running wavault: {e}")))?;
    if resp["ok"].as_bool() == Some(true) {
        return Ok(Some(resp["data"].clone()));
    }
    let msg = resp["error"].as_str().unwrap_or("unknown error").to_owned();
    Err(match resp["code"].as_u64() {
        Some(6) => Error::NotFound(msg),
        Some(2) => Error::Usage(msg),
        Some(5) => Error::damaged(msg),
        Some(7) => Error::Unavailable(msg),
        _ => Error::Other(msg),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::crypto::KdfParams;
    use crate::vault::Vault;
    use proptest::prelude::*;
    use std::time::Instant;
    use tokio::io::AsyncReadExt;

    fn runner(dir: &Path) -> super::super::Runner {
        let v = Vault::create(&dir.join("v"), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
        let mut cfg = super::super::RunConfig::new(super::super::net::Net::production());
        cfg.console = false;
        cfg.control_socket = false;
        super::super::Runner::start(v, cfg).unwrap()
    }

    /// A client that connects and sends nothing (or half a line) is answered
    /// an error and disconnected after the read timeout; others are served meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_and_half_sent_clients_are_dropped_others_served() {
        let d = tempfile::tempdir().unwrap();
        let r = runner(d.path());
        let dir = r.shared.vault.dir().to_owned();
        let listener = bind(&dir).unwrap();
        let timeout = Duration::from_millis(300);
        tokio::spawn(serve_with(r.shared.clone(), listener, timeout));
        let started = Instant::now();
        let mut silent = UnixStream::connect(path(&dir)).await.unwrap();
        let mut half = UnixStream::connect(path(&dir)).await.unwrap();
        half.write_all(b"{\"op\":\"sta").await.unwrap();
        // Served while those two hang.
        let d2 = dir.clone();
        let bots = tokio::task::spawn_blocking(move || request(&d2, &json!({"op": "bots"})))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bots, Some(json!([])));
        for s in [&mut silent, &mut half] {
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
                .await
                .expect("the server closes the connection within the deadline")
                .unwrap();
            let v: Value = serde_json::from_slice(&got).unwrap();
            assert_eq!(v["ok"], false, "{v}");
            assert_eq!(v["code"], 2, "{v}");
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .contains("no complete control request"),
                "{v}"
            );
        }
        assert!(started.elapsed() >= timeout);
        r.shutdown().await.unwrap();
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,12}".prop_map(Value::from),
            "[a-z0-9-]{1,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const OPS: &[&str] = &[
        "status",
        "bots",
        "stats",
        "bot_add",
        "queue",
        "bot_config",
        "bot_set",
        "sweep",
        "token_show",
        "reauth",
        "send",
        "bot_show",
        "nope",
        "",
    ];
    const FIELDS: &[&str] = &[
        "bot",
        "bots",
        "since",
        "now",
        "config",
        "queue_op",
        "older_than_secs",
        "dry_run",
        "to",
        "text",
    ];

    fn request_value() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(OPS),
            prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..5),
        )
            .prop_map(|(op, fields)| {
                let mut m = serde_json::Map::new();
                m.insert("op".into(), Value::from(op));
                for (k, v) in fields {
                    m.insert(k.into(), v);
                }
                Value::Object(m)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random bytes: a usage error naming the problem, never a panic.
        #[test]
        fn parse_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            match parse_request(&bytes) {
                Ok(v) => prop_assert!(v["op"].is_string()),
                Err(e) => {
                    prop_assert_eq!(e.exit_code(), 2);
                    prop_assert!(e.to_string().contains("bad control request"), "{}", e);
                }
            }
            let line = answer(parse_request(&bytes).map(|_| Value::Null));
            prop_assert!(serde_json::from_str::<Value>(&line).is_ok());
        }

        /// Random JSON (any shape): parsed or refused with a clear error.
        #[test]
        fn parse_random_json(v in json_value()) {
            let line = format!("{v}\n");
            let r = parse_request(line.as_bytes());
            let object_with_op = v.is_object() && v["op"].is_string();
            prop_assert_eq!(r.is_ok(), object_with_op);
            if let Err(e) = r {
                prop_assert!(e.to_string().contains("bad control request"), "{}", e);
            }
        }
    }

    /// Random requests through the server's dispatch: an answer every time
    /// (data or an error with an exit code), never a panic.
    #[test]
    fn dispatch_random_requests_answers_without_panicking() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let d = tempfile::tempdir().unwrap();
        let r = rt.block_on(async { runner(d.path()) });
        let shared = r.shared.clone();
        let mut cases = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(128));
        cases
            .run(&request_value(), |req| {
                // Reauth and send ask for a bot by id; nothing is running.
                let line = format!("{req}\n");
                let parsed = parse_request(line.as_bytes()).unwrap();
                let out = rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(30), respond(&shared, &parsed)).await
                });
                let out = out.expect("answered in time");
                if let Err(e) = &out {
                    prop_assert!(!e.to_string().contains("panicked"), "{}", e);
                    prop_assert!(matches!(e.exit_code(), 1..=7), "{}", e);
                }
                prop_assert!(serde_json::from_str::<Value>(&answer(out)).is_ok());
                Ok(())
            })
            .unwrap();
        rt.block_on(r.shutdown()).unwrap();
    }
}
