//! The control socket's server: while `run` holds the vault, other
//! `wavault` processes of the same user have their operations done here
//! ([`crate::ops`]), so every command works the same with or without `run`.
//!
//! `<vault>/control.sock`, mode 0600 in a 0700 folder; connections from
//! another uid are refused (peer credentials). The protocol is
//! [`crate::ops::proto`]: one request line (and the bytes it announces),
//! one answer line (and the bytes it announces). A client that has not sent
//! its whole request within [`READ_TIMEOUT`] (or stalls that long inside its
//! payload) gets an error answer and is disconnected.

use super::Shared;
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::messaging::queue::Queue;
use crate::ops::proto::{self, Response, MAX_REQUEST};
use crate::ops::{self, Host};
use crate::passphrase::Passphrase;
use crate::vault::{BotConfig, Vault};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::ops::client::socket_path as path;
pub use crate::ops::client::SOCKET;

/// Binds the socket (a leftover from a crashed runner is replaced: we hold the vault lock).
pub fn bind(dir: &Path) -> Result<UnixListener> {
    let p = path(dir);
    let _ = std::fs::remove_file(&p);
    let l = UnixListener::bind(&p).map_err(|e| Error::io(format!("binding {}", p.display()), e))?;
    crate::fsutil::set_mode(&p, 0o600)?;
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

/// How long the server waits for a client's request line (and for each
/// piece of its payload, and for its answer to be taken): a client that
/// connects and sends nothing, or half a line, is dropped after this.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Reads `n` payload bytes; each read must make progress within `timeout`.
async fn read_payload<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    n: u64,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n.min(64 << 20) as usize);
    let mut buf = vec![0u8; 64 * 1024];
    while (out.len() as u64) < n {
        let want = buf.len().min((n - out.len() as u64) as usize);
        let got = match tokio::time::timeout(timeout, r.read(&mut buf[..want])).await {
            Err(_) => {
                return Err(Error::Usage(format!(
                    "the request's data stalled for {timeout:?} after {} of {n} bytes",
                    out.len()
                )))
            }
            Ok(Err(e)) => return Err(Error::io("reading the request's data", e)),
            Ok(Ok(0)) => {
                return Err(Error::Usage(format!(
                    "the request announced {n} bytes of data but sent {}",
                    out.len()
                )))
            }
            Ok(Ok(g)) => g,
        };
        out.extend_from_slice(&buf[..got]);
    }
    Ok(out)
}

async fn handle(
    shared: Arc<Shared>,
    stream: UnixStream,
    read_timeout: Duration,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = zeroize::Zeroizing::new(Vec::new());
    let mut reader = BufReader::new(r);
    let mut limited = (&mut reader).take(MAX_REQUEST as u64 + 1);
    let read = limited.read_until(b'\n', &mut line);
    let out = match tokio::time::timeout(read_timeout, read).await {
        Ok(read) => {
            read?;
            match proto::parse_request(&line) {
                Ok(env) => {
                    drop(line);
                    match read_payload(&mut reader, env.payload, read_timeout).await {
                        Ok(payload) => respond(&shared, env.request, payload).await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        }
        Err(_) => Err(Error::Usage(format!(
            "no complete control request within {read_timeout:?}: send one JSON object and a newline"
        ))),
    };
    let (head, bytes) = match out {
        Ok((resp, bytes)) => (proto::answer(&Ok((resp, bytes.len() as u64))), bytes),
        Err(e) => (proto::answer(&Err(e)), Vec::new()),
    };
    // The answer line is small; a client that does not take it is dropped.
    // The payload (a backup) may be large: each write must make progress.
    let send_head = async {
        w.write_all(head.as_bytes()).await?;
        w.flush().await
    };
    match tokio::time::timeout(read_timeout, send_head).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    }
    for chunk in bytes.chunks(64 * 1024) {
        match tokio::time::timeout(read_timeout, w.write_all(chunk)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        }
    }
    match tokio::time::timeout(read_timeout, w.shutdown()).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// Does one operation for a client: [`ops::execute`] on a blocking thread,
/// with this runner as the host.
async fn respond(
    shared: &Arc<Shared>,
    req: ops::Request,
    payload: Vec<u8>,
) -> Result<(Response, Vec<u8>)> {
    let host = Served(shared.clone());
    let name = req.name();
    tokio::task::spawn_blocking(move || ops::execute(&host, req, payload))
        .await
        .map_err(|e| Error::Other(format!("control operation {name}: {e}")))?
}

/// The running `run` as the host of operations: it stops and starts the
/// bots an operation is about, and nothing else.
pub(crate) struct Served(pub Arc<Shared>);

impl crate::ops::Service for Served {
    fn live_state(&self) -> crate::ops::service::Live {
        self.0
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn qr(&self, bot: &str) -> Option<String> {
        self.0
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .qr
            .get(bot)
            .cloned()
    }

    fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.stop.subscribe()
    }
}

impl Host for Served {
    fn vault(&self) -> &Vault {
        &self.0.vault
    }

    fn live(&self) -> bool {
        true
    }

    fn retry_state(&self) -> std::collections::HashMap<String, crate::status::Retry> {
        self.0
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retry
            .clone()
    }

    fn stop_bot(&self, id: &BotId) -> bool {
        ops::block_on(self.0.stop_bot(id)).unwrap_or(false)
    }

    fn host_id(&self) -> Option<String> {
        self.0.cfg.fleet.as_ref().map(|f| f.host_id.clone())
    }

    fn start_bot(&self, cfg: &BotConfig) {
        self.0.start_bot(cfg.clone(), Duration::ZERO);
    }

    fn is_running(&self, id: &BotId) -> bool {
        self.0
            .bots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|t| !t.handle.is_finished())
    }

    fn bot_replaced(&self, id: &BotId) {
        self.0.forget(id);
    }

    fn settings_changed(&self, id: &BotId) {
        // The worker reads its settings again when woken.
        self.0.inbox(id).wake.notify_one();
    }

    fn with_queue(
        &self,
        id: &BotId,
        f: &mut dyn FnMut(&Queue) -> Result<Response>,
    ) -> Result<Response> {
        let inbox = self.0.inbox(id);
        let out = f(&inbox.queue);
        inbox.changed();
        out
    }

    fn backup_passphrase(&self) -> Option<Arc<Passphrase>> {
        self.0.backup_passphrase()
    }

    fn set_backup_passphrase(&self, p: Passphrase) {
        self.0.set_backup_passphrase(p);
    }

    fn send(&self, bot: &BotId, msg: &crate::messaging::outbox::Outgoing) -> Result<String> {
        ops::block_on(super::deliver::send(&self.0, bot, msg))?
    }

    fn groups(&self, bot: &BotId) -> Result<Vec<ops::proto::GroupRow>> {
        ops::block_on(super::groups::of_running(&self.0, bot))?
    }

    fn media(
        &self,
        bot: &BotId,
        message_id: &str,
    ) -> std::result::Result<crate::messaging::media::MediaFile, crate::messaging::media::MediaError>
    {
        ops::block_on(super::deliver::media(&self.0, bot, message_id))
            .map_err(|e| crate::messaging::media::MediaError::Vault(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::proto::{answer, parse_request};
    use crate::vault::crypto::KdfParams;
    use crate::vault::Vault;
    use proptest::prelude::*;
    use serde_json::Value;
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
        // A restore that announces more data than it sends stalls too.
        let mut short = UnixStream::connect(path(&dir)).await.unwrap();
        short
            .write_all(b"{\"op\":\"status\",\"payload\":100}\nabc")
            .await
            .unwrap();
        // Served while those hang.
        let d2 = dir.clone();
        let bots = tokio::task::spawn_blocking(move || {
            crate::ops::client::call(&d2, &ops::Request::Bots, &[])
        })
        .await
        .unwrap()
        .unwrap();
        assert!(
            matches!(&bots, Some((Response::Bots(b), _)) if b.is_empty()),
            "{bots:?}"
        );
        for (s, says) in [
            (&mut silent, "no complete control request"),
            (&mut half, "no complete control request"),
            (&mut short, "stalled"),
        ] {
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
                .await
                .expect("the server closes the connection within the deadline")
                .unwrap();
            let v: Value = serde_json::from_slice(&got).unwrap();
            assert_eq!(v["ok"], false, "{v}");
            assert_eq!(v["code"], 2, "{v}");
            assert!(v["error"].as_str().unwrap().contains(says), "{v}");
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
        "bot_remove",
        "bot_enable",
        "sweep",
        "token_show",
        "webhook_secret_show",
        "webhook_secret_rotate",
        "reauth",
        "send",
        "groups",
        "media_get",
        "bot_show",
        "validate",
        "rotate_key",
        "export",
        "restore",
        "nope",
        "",
    ];
    const FIELDS: &[&str] = &[
        "bot",
        "id",
        "bots",
        "since",
        "now",
        "config",
        "action",
        "older_than_secs",
        "dry_run",
        "to",
        "text",
        "message",
        "enabled",
        "show_phone",
        "kdf",
        "passphrase",
        "grace_secs",
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
            if let Err(e) = parse_request(&bytes) {
                prop_assert_eq!(e.exit_code(), 2);
                prop_assert!(e.to_string().contains("bad control request"), "{}", e);
            }
            let out = parse_request(&bytes).map(|_| (Response::RotatePassphrase, 0));
            prop_assert!(serde_json::from_str::<Value>(&answer(&out)).is_ok());
        }

        /// Random JSON (any shape, real and fake operations): parsed or
        /// refused with a clear usage error; a non-object never parses.
        #[test]
        fn parse_random_json(v in prop_oneof![json_value(), request_value()]) {
            let line = format!("{v}\n");
            match parse_request(line.as_bytes()) {
                Ok(env) => {
                    prop_assert!(v.is_object());
                    prop_assert_eq!(Some(env.request.name()), v["op"].as_str());
                }
                Err(e) => {
                    prop_assert_eq!(e.exit_code(), 2);
                    prop_assert!(e.to_string().contains("bad control request"), "{}", e);
                }
            }
        }
    }

    /// The requests the command line sends parse back to themselves.
    #[test]
    fn every_request_round_trips() {
        use crate::ops::proto::{Kdf, QueueAction};
        use crate::passphrase::Passphrase;
        let b = || crate::BotId::parse("ventas").unwrap();
        let kdf: Kdf = KdfParams::INSECURE_FOR_TESTS.into();
        let reqs = vec![
            ops::Request::Status,
            ops::Request::Queue {
                bot: b(),
                action: QueueAction::Retry,
            },
            ops::Request::BotEnable {
                bot: b(),
                enabled: false,
            },
            ops::Request::Export {
                bots: vec![b()],
                move_bots: true,
                passphrase: Passphrase::new(&b"p\xffw"[..]),
                kdf,
            },
            ops::Request::RotatePassphrase {
                current: Passphrase::new(&b"a"[..]),
                new: Passphrase::new(&b"b"[..]),
                kdf: None,
            },
        ];
        for r in reqs {
            let line = serde_json::to_string(&proto::Envelope {
                request: r,
                payload: 7,
            })
            .unwrap();
            let back = parse_request(line.as_bytes()).unwrap();
            assert_eq!(back.payload, 7);
            assert_eq!(serde_json::to_string(&back).unwrap(), line);
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
                let line = format!("{req}\n");
                let Ok(env) = parse_request(line.as_bytes()) else {
                    return Ok(());
                };
                let out = rt.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(30),
                        respond(&shared, env.request, Vec::new()),
                    )
                    .await
                });
                let out = out.expect("answered in time");
                if let Err(e) = &out {
                    prop_assert!(!e.to_string().contains("panicked"), "{}", e);
                    prop_assert!(matches!(e.exit_code(), 1..=7), "{}", e);
                }
                let out = out.map(|(r, b)| (r, b.len() as u64));
                prop_assert!(serde_json::from_str::<Value>(&answer(&out)).is_ok());
                Ok(())
            })
            .unwrap();
        rt.block_on(r.shutdown()).unwrap();
    }
}
