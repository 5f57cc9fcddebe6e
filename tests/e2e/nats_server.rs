//! A real `nats-server -js` for the fleet tests, and a JetStream client that
//! reads the events stream and publishes sends as an operator's application
//! would.
//!
//! Why it exists: the fleet (issue 15) is only as good as its behaviour
//! against the real server: its dedupe window, its key-value compare-and-set
//! and TTL, and what a host does when the server goes away and comes back.
//! Each test starts its own server (Debian package `nats-server`, installed
//! by `.ci/run`) with its own store directory on a random loopback port
//! (`-p -1`; the port is read from the server's log, since nats-server cannot
//! be handed a listener), stops it and starts it again on the same port and
//! store, and kills it when dropped.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use whatsapp_rust::anyhow;

/// Deadline of every wait here (reached only on failure).
const DEADLINE: Duration = Duration::from_secs(60);
/// What nats-server logs once it accepts clients.
const LISTENING: &str = "Listening for client connections on 127.0.0.1:";
/// What it logs once JetStream is up and it serves.
const READY: &str = "Server is ready";

/// A running (or stopped) `nats-server -js` on `127.0.0.1:port`.
pub struct NatsServer {
    /// The store directory (`-sd`), kept across restarts.
    store: tempfile::TempDir,
    port: u16,
    child: Option<tokio::process::Child>,
    /// Every line it logged, all runs together.
    log: Arc<Mutex<Vec<String>>>,
}

impl NatsServer {
    /// Starts a server on a random free loopback port (`-p -1`).
    pub async fn start() -> NatsServer {
        let mut s = NatsServer {
            store: tempfile::tempdir().expect("nats store dir"),
            port: 0,
            child: None,
            log: Arc::default(),
        };
        s.run(None).await;
        s
    }

    /// A port for a server that is not running yet ("NATS unreachable at
    /// start"): a server is started on a random port and stopped at once;
    /// [`NatsServer::restart`] starts it again on that port. Between the
    /// two another process could take the port (a tiny race: the kernel
    /// hands out random ports, it rarely reuses one within seconds); the
    /// restart then fails loudly, it never connects to a stranger.
    pub async fn reserve() -> NatsServer {
        let mut s = NatsServer::start().await;
        s.stop().await;
        s
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Everything it logged so far (for failure messages).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Starts the server on `port` (random with `None`) and the store dir;
    /// returns once it logged that it serves.
    async fn run(&mut self, port: Option<u16>) {
        assert!(self.child.is_none(), "nats-server already running");
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let mut child = tokio::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server on PATH (Debian package nats-server; .ci/run installs it)");
        let stderr = child.stderr.take().unwrap();
        // (the port it listens on, whether it is ready, whether it ended)
        let (tx, mut rx) = watch::channel((None::<u16>, false, false));
        let log = self.log.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(p) = l.split(LISTENING).nth(1) {
                    let p = p.trim().parse().ok();
                    tx.send_modify(|s| s.0 = p);
                }
                if l.contains(READY) {
                    tx.send_modify(|s| s.1 = true);
                }
                log.lock().unwrap().push(l);
            }
            tx.send_modify(|s| s.2 = true);
        });
        let seen = tokio::time::timeout(DEADLINE, rx.wait_for(|s| (s.0.is_some() && s.1) || s.2))
            .await
            .map(|s| *s.unwrap());
        let Ok((Some(p), true, false)) = seen else {
            panic!(
                "nats-server did not start on port {port_arg} within {DEADLINE:?}: {:?}",
                self.log()
            );
        };
        if let Some(want) = port {
            assert_eq!(p, want, "nats-server listens on the port asked for");
        }
        self.port = p;
        self.child = Some(child);
    }

    /// Stops the server (SIGTERM, SIGKILL if it lingers) and waits for it.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(DEADLINE, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port and store directory.
    pub async fn restart(&mut self) {
        let port = self.port;
        self.run(Some(port)).await;
    }
}

/// One message of the events stream, as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Event {
    pub subject: String,
    /// The `Nats-Msg-Id` header.
    pub msg_id: Option<String>,
    pub body: serde_json::Value,
}

/// An application on the bus of prefix `prefix`: reads `<prefix>-events`,
/// publishes on `<prefix>.send.<bot>`.
#[derive(Clone)]
pub struct Bus {
    pub js: jetstream::Context,
    pub prefix: String,
    /// What an ordered consumer of the events stream, from its first
    /// message, received so far, in order.
    feed: watch::Receiver<Vec<Event>>,
}

impl Bus {
    /// Connects to `url` (retrying until the deadline: the server may be
    /// starting).
    pub async fn connect(url: &str, prefix: &str) -> Bus {
        let client = tokio::time::timeout(DEADLINE, async {
            loop {
                match async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .connect(url)
                    .await
                {
                    Ok(c) => break c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("connect to {url}"));
        let js = jetstream::new(client);
        let feed = consume(js.clone(), format!("{prefix}-events"));
        Bus {
            js,
            prefix: prefix.to_string(),
            feed,
        }
    }

    pub fn events_stream(&self) -> String {
        format!("{}-events", self.prefix)
    }

    /// Every message of the events stream, in stream order (what a
    /// consumer from the start receives). Err while the server does not
    /// answer or the stream does not exist yet.
    pub async fn try_events(&self) -> anyhow::Result<Vec<Event>> {
        let mut s = self.js.get_stream(self.events_stream()).await?;
        let state = s.info().await?.state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return Ok(out);
        }
        for seq in state.first_sequence..=state.last_sequence {
            let m = match s.get_raw_message(seq).await {
                Ok(m) => m,
                // Removed (limits): not there for a consumer either.
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            out.push(Event {
                subject: m.subject.to_string(),
                msg_id: m
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|v| v.to_string()),
                body: serde_json::from_slice(&m.payload)
                    .unwrap_or_else(|e| panic!("event {seq} on {} is not JSON: {e}", m.subject)),
            });
        }
        Ok(out)
    }

    /// Waits until `pred` holds for what the consumer received (or panics
    /// after `deadline`, with what it received).
    pub async fn wait_events(
        &self,
        what: &str,
        deadline: Duration,
        mut pred: impl FnMut(&[Event]) -> bool,
    ) -> Vec<Event> {
        let mut rx = self.feed.clone();
        let seen = tokio::time::timeout(deadline, rx.wait_for(|ev| pred(ev)))
            .await
            .map(|r| r.map(|ev| ev.clone()));
        match seen {
            Ok(Ok(ev)) => ev,
            _ => panic!(
                "timed out after {deadline:?} waiting for {what}; the consumer received {:#?}",
                self.feed.borrow()
            ),
        }
    }

    /// Publishes `body` on `<prefix>.send.<bot>` and waits for JetStream's
    /// acknowledgement (retrying while the sends stream does not exist yet).
    pub async fn send(&self, bot: &str, body: &serde_json::Value) {
        let subject = format!("{}.send.{bot}", self.prefix);
        let payload: bytes::Bytes = serde_json::to_vec(body).unwrap().into();
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let r = async {
                anyhow::Ok(
                    self.js
                        .publish(subject.clone(), payload.clone())
                        .await?
                        .await?,
                )
            }
            .await;
            match r {
                Ok(_) => return,
                Err(e) if tokio::time::Instant::now() >= until => {
                    panic!("publish on {subject}: {e:#}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Makes the events stream refuse every new message (`discard: new`
    /// at its current count), or accept them again: publishes fail while
    /// the key-value bucket keeps working.
    pub async fn refuse_events(&self, refuse: bool) {
        let mut s = self
            .js
            .get_stream(self.events_stream())
            .await
            .expect("the events stream exists");
        let info = s.info().await.unwrap().clone();
        let mut config = info.config.clone();
        if refuse {
            config.discard = stream::DiscardPolicy::New;
            config.max_messages = info.state.messages.max(1) as i64;
        } else {
            config.discard = stream::DiscardPolicy::Old;
            config.max_messages = -1;
        }
        self.js
            .update_stream(config)
            .await
            .expect("update the events stream");
    }
}

/// An ordered consumer of `stream` from its first message, in a task: every
/// message it receives is appended to the returned list. It waits for the
/// stream to exist (the first host creates it). Not relied on across a
/// restart of the server: make a new [`Bus`] after one.
fn consume(js: jetstream::Context, stream: String) -> watch::Receiver<Vec<Event>> {
    use futures_util::StreamExt as _;
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut msgs = loop {
            let opened = async {
                let s = js.get_stream(&stream).await?;
                let c = s
                    .create_consumer(jetstream::consumer::pull::OrderedConfig {
                        deliver_policy: jetstream::consumer::DeliverPolicy::All,
                        ..Default::default()
                    })
                    .await?;
                anyhow::Ok(c.messages().await?)
            }
            .await;
            match opened {
                Ok(m) => break m,
                Err(_) if tx.is_closed() => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        while let Some(m) = msgs.next().await {
            if tx.is_closed() {
                return;
            }
            let Ok(m) = m else {
                continue; // a transient error: the ordered consumer goes on
            };
            let e = Event {
                subject: m.subject.to_string(),
                msg_id: m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.to_string()),
                body: serde_json::from_slice(&m.payload)
                    .unwrap_or_else(|e| panic!("a message on {} is not JSON: {e}", m.subject)),
            };
            tx.send_modify(|v| v.push(e));
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_dedupes_keeps_its_store_and_restarts_on_its_port() {
    let mut nats = NatsServer::start().await;
    assert_ne!(nats.port(), 0);
    let bus = Bus::connect(&nats.url(), "tnats").await;
    assert!(bus.try_events().await.is_err(), "no stream yet");
    bus.js
        .create_stream(stream::Config {
            name: bus.events_stream(),
            subjects: vec!["tnats.events.>".into(), "tnats.sent.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    let publish = |js: &jetstream::Context, id: &'static str, n: u32| {
        let js = js.clone();
        async move {
            let mut h = async_nats::HeaderMap::new();
            h.insert(async_nats::header::NATS_MESSAGE_ID, id);
            js.publish_with_headers(
                "tnats.events.b1.message",
                h,
                serde_json::to_vec(&serde_json::json!({ "n": n }))
                    .unwrap()
                    .into(),
            )
            .await?
            .await
        }
    };
    publish(&bus.js, "evt_1", 1).await.unwrap();
    publish(&bus.js, "evt_1", 1).await.unwrap(); // a duplicate within the window
    publish(&bus.js, "evt_2", 2).await.unwrap();
    let ev = bus.try_events().await.unwrap();
    let ids: Vec<_> = ev.iter().map(|e| e.msg_id.clone().unwrap()).collect();
    assert_eq!(ids, ["evt_1", "evt_2"], "the server dropped the duplicate");
    assert_eq!(ev[1].body["n"], 2);
    assert_eq!(ev[1].subject, "tnats.events.b1.message");

    bus.refuse_events(true).await;
    assert!(publish(&bus.js, "evt_3", 3).await.is_err(), "refused");
    bus.refuse_events(false).await;
    publish(&bus.js, "evt_3", 3).await.unwrap();
    let ids =
        |ev: &[Event]| -> Vec<String> { ev.iter().map(|e| e.msg_id.clone().unwrap()).collect() };
    let got = bus
        .wait_events("the consumer to receive 3 events", DEADLINE, |e| {
            e.len() >= 3
        })
        .await;
    assert_eq!(ids(&got), ["evt_1", "evt_2", "evt_3"]);

    let port = nats.port();
    nats.stop().await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the server is down"
    );
    nats.restart().await;
    assert_eq!(nats.port(), port);
    // A new consumer reads the stored events (the feed of a consumer made
    // before the restart is not relied on: tests read after a restart with
    // a new `Bus`).
    let fresh = Bus::connect(&nats.url(), "tnats").await;
    // Still within the duplicate window after the restart.
    publish(&fresh.js, "evt_2", 2).await.unwrap();
    publish(&fresh.js, "evt_4", 4).await.unwrap();
    let got = fresh
        .wait_events("4 events after the restart", DEADLINE, |e| e.len() >= 4)
        .await;
    assert_eq!(ids(&got), ["evt_1", "evt_2", "evt_3", "evt_4"]);
    assert!(
        nats.log().iter().any(|l| l.contains("Server is ready")),
        "{:?}",
        nats.log()
    );

    let mut later = NatsServer::reserve().await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", later.port()))
            .await
            .is_err(),
        "nothing listens on a reserved port"
    );
    later.restart().await;
    Bus::connect(&later.url(), "tnats").await;
}
