//! The control socket: while `run` holds the vault, other `wavault`
//! processes of the same user ask it for status, statistics and bot lists here.
//!
//! `<vault>/control.sock`, mode 0600 in a 0700 folder; connections from
//! another uid are refused (peer credentials). Protocol: one JSON request
//! line, one JSON response line: `{"op":"status"}` (or
//! `{"op":"stats","bots":[...],"since":T,"now":T}`) →
//! `{"ok":true,"data":...}` or `{"ok":false,"error":"...","code":N}`.

use super::Shared;
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

pub(crate) async fn serve(shared: Arc<Shared>, listener: UnixListener) {
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
            let _ = handle(shared, stream).await;
        });
    }
}

async fn handle(shared: Arc<Shared>, stream: UnixStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r)
        .take(64 * 1024)
        .read_line(&mut line)
        .await?;
    let resp = match serde_json::from_str::<Value>(&line) {
        Ok(req) => respond(&shared, &req).await,
        Err(e) => Err(Error::Usage(format!("bad control request: {e}"))),
    };
    let out = match resp {
        Ok(data) => json!({"ok": true, "data": data}),
        Err(e) => json!({"ok": false, "error": e.to_string(), "code": e.exit_code()}),
    };
    w.write_all(format!("{out}\n").as_bytes()).await?;
    w.shutdown().await
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
                let out = crate::cli::queue_op(
                    &inbox.queue,
                    req["queue_op"].as_str().unwrap_or_default(),
                    crate::vault::now(),
                )?;
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
            "token_show" => to_value(&crate::web::token::load_or_create(v)?),
            "token_rotate" => to_value(&crate::web::token::rotate(v)?),
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
