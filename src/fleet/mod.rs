//! The fleet (`run --nats`): several wavault hosts, each with its own
//! vault, behind one NATS JetStream.
//!
//! Why it exists: past one host, applications should not care where a bot
//! runs, and a bot must never run on two hosts at once (two hosts on one
//! WhatsApp session break its Signal state). NATS JetStream, which operators
//! already run, gives what that needs: durable streams for events out and
//! sends in (with server-side dedupe on `Nats-Msg-Id`), and a key-value
//! bucket with compare-and-set and a TTL for ownership.
//!
//! - [`FleetConfig`]: the flags, and the names they make on NATS.
//! - [`Fleet`]: the connection, kept by a task that retries with backoff
//!   while NATS is unreachable; bots wait for it (ownership cannot be known
//!   without it).
//! - [`owners`]: the ownership protocol (take, renew, release, list).
//! - [`bus`]: publishing events and results, pulling sends.
//!
//! Nothing here knows the runner: `runner::fleet` drives it.

pub mod bus;
pub mod owners;
#[cfg(test)]
pub(crate) mod testserver;

use crate::error::{Error, Result};
use async_nats::jetstream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub use owners::{Claim, Lease, Owner};

/// Default subject prefix, stream and bucket name stem (`--nats-prefix`).
pub const DEFAULT_PREFIX: &str = "wavault";
/// Default time a key outlives its last renewal (`--nats-owner-ttl`).
pub const DEFAULT_OWNER_TTL: Duration = Duration::from_secs(30);
/// Shortest owner TTL accepted: a heartbeat of a second.
pub const MIN_OWNER_TTL: Duration = Duration::from_secs(3);
/// Longest owner TTL accepted: a day.
pub const MAX_OWNER_TTL: Duration = Duration::from_secs(86_400);
/// Default age limit of the events stream (`--nats-max-age`).
pub const DEFAULT_EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
/// Duplicate window of the events stream: a republished event id within
/// it is dropped by the server.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(120);
/// Longest prefix accepted.
const MAX_PREFIX: usize = 32;
/// Longest host id accepted.
const MAX_HOST_ID: usize = 128;

/// How a host joins the fleet (`run --nats ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Server URL(s), comma-separated: `nats://host:4222`, `tls://...`.
    pub url: String,
    /// A NATS credentials file (`--nats-creds`: JWT and NKey seed).
    pub creds: Option<PathBuf>,
    /// Root certificates to trust for TLS (`--nats-tls-ca`, PEM).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS (`--nats-tls-cert`, `--nats-tls-key`).
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Subject prefix and name stem of the streams and the bucket.
    pub prefix: String,
    /// This host's name in the owners bucket (`--host-id`).
    pub host_id: String,
    /// A key outlives its last renewal by this long (the bucket's max age).
    /// The heartbeat is a third of it; a host that could not renew for two
    /// thirds of it stops the bot (the last third is the margin).
    pub owner_ttl: Duration,
    /// Replicas of the streams and the bucket (`--nats-replicas`).
    pub replicas: usize,
    /// Age limit of the events stream (`--nats-max-age`).
    pub events_max_age: Duration,
    /// A send for a bot that is not connected comes back after this long.
    pub send_retry: Duration,
    /// Longest wait between two connection attempts while NATS is down.
    pub connect_backoff_max: Duration,
}

impl FleetConfig {
    /// Defaults for `url`, as host `host_id`.
    pub fn new(url: impl Into<String>, host_id: impl Into<String>) -> Self {
        FleetConfig {
            url: url.into(),
            creds: None,
            tls_ca: None,
            tls_client: None,
            prefix: DEFAULT_PREFIX.into(),
            host_id: host_id.into(),
            owner_ttl: DEFAULT_OWNER_TTL,
            replicas: 1,
            events_max_age: DEFAULT_EVENTS_MAX_AGE,
            send_retry: Duration::from_secs(5),
            connect_backoff_max: Duration::from_secs(30),
        }
    }

    /// How often a held key is renewed: a third of the TTL.
    pub fn heartbeat(&self) -> Duration {
        self.owner_ttl / 3
    }

    /// What is left of the TTL when a host that could not renew stops its
    /// bot: a third of it, the time the stop itself may take.
    pub fn margin(&self) -> Duration {
        self.owner_ttl / 3
    }

    /// How long a bot keeps running without a successful renewal.
    pub fn keep_for(&self) -> Duration {
        self.owner_ttl - self.margin()
    }

    /// Refuses what NATS would refuse later or what could let two hosts
    /// run one bot: a prefix that is not one subject token, an empty or
    /// overlong host id, a TTL too short for a heartbeat or too long to
    /// notice a dead host, absurd replica counts.
    pub fn check(&self) -> Result<()> {
        let usage = |m: String| Err(Error::Usage(m));
        if self.url.trim().is_empty() {
            return usage("--nats: give the server URL, e.g. nats://127.0.0.1:4222".into());
        }
        let ok_prefix = !self.prefix.is_empty()
            && self.prefix.len() <= MAX_PREFIX
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_prefix {
            return usage(format!(
                "--nats-prefix {:?}: use 1 to {MAX_PREFIX} characters from A-Z, a-z, 0-9, '-' and '_' \
                 (it names subjects, streams and a bucket)",
                self.prefix
            ));
        }
        let ok_host = !self.host_id.is_empty()
            && self.host_id.len() <= MAX_HOST_ID
            && !self
                .host_id
                .chars()
                .any(|c| c.is_control() || c.is_whitespace());
        if !ok_host {
            return usage(format!(
                "--host-id {:?}: use 1 to {MAX_HOST_ID} characters, no spaces or control characters",
                self.host_id
            ));
        }
        if self.owner_ttl < MIN_OWNER_TTL || self.owner_ttl > MAX_OWNER_TTL {
            return usage(format!(
                "--nats-owner-ttl {:?}: it must be between {}s and {}s",
                self.owner_ttl,
                MIN_OWNER_TTL.as_secs(),
                MAX_OWNER_TTL.as_secs()
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return usage(format!(
                "--nats-replicas {}: JetStream takes 1 to 5",
                self.replicas
            ));
        }
        if self.events_max_age < Duration::from_secs(60)
            || self.events_max_age > Duration::from_secs(3650 * 86_400)
        {
            return usage(format!(
                "--nats-max-age {:?}: it must be between 60s and 3650d",
                self.events_max_age
            ));
        }
        for (what, d) in [
            ("send retry", self.send_retry),
            ("connect backoff", self.connect_backoff_max),
        ] {
            if d.is_zero() || d > Duration::from_secs(3600) {
                return usage(format!(
                    "the fleet's {what} is {d:?}: it must be within (0, 1h]"
                ));
            }
        }
        Ok(())
    }

    /// The server URL(s) as shown in messages, logs and status: any user
    /// and password in them replaced by `***`.
    pub fn shown_url(&self) -> String {
        self.url
            .split(',')
            .map(|u| {
                let u = u.trim();
                let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
                let shown = match rest.split_once('@') {
                    Some((_, host)) => format!("***@{host}"),
                    None => rest.to_owned(),
                };
                if scheme.is_empty() {
                    shown
                } else {
                    format!("{scheme}://{shown}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The events stream: `<prefix>-events`.
    pub fn events_stream(&self) -> String {
        format!("{}-events", self.prefix)
    }

    /// The sends stream: `<prefix>-sends`.
    pub fn sends_stream(&self) -> String {
        format!("{}-sends", self.prefix)
    }

    /// The owners bucket: `<prefix>-owners`.
    pub fn owners_bucket(&self) -> String {
        format!("{}-owners", self.prefix)
    }

    /// Where a bot's event of `kind` is published.
    pub fn event_subject(&self, bot: &str, kind: &str) -> String {
        format!("{}.events.{bot}.{kind}", self.prefix)
    }

    /// Where sends for a bot are published by applications.
    pub fn send_subject(&self, bot: &str) -> String {
        format!("{}.send.{bot}", self.prefix)
    }

    /// Where the results of a bot's sends are published.
    pub fn sent_subject(&self, bot: &str) -> String {
        format!("{}.sent.{bot}", self.prefix)
    }
}

/// The machine's host name (the default `--host-id`).
pub fn default_host_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A working connection: the client, JetStream, the bucket and the streams.
pub struct Conn {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub owners: jetstream::kv::Store,
    pub sends: jetstream::stream::Stream,
}

/// Time limit of one request to NATS (a publish acknowledgement, a key
/// update): past it the attempt counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects once and makes sure the streams and the bucket exist (created
/// with the documented defaults when missing; existing ones are used as
/// they are, so an operator may tune them).
pub async fn connect(cfg: &FleetConfig) -> std::result::Result<Conn, String> {
    let client = client(cfg).await?;
    let js = jetstream::new(client.clone());
    let owners = bus::ensure_owners(cfg, &js).await?;
    bus::ensure_events(cfg, &js).await?;
    let sends = bus::ensure_sends(cfg, &js).await?;
    Ok(Conn {
        client,
        js,
        owners,
        sends,
    })
}

/// A client connected with the configured credentials and TLS.
async fn client(cfg: &FleetConfig) -> std::result::Result<async_nats::Client, String> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("wavault {}", cfg.host_id))
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        // Once connected, the client reconnects on its own, forever.
        .max_reconnects(None);
    if let Some(f) = &cfg.creds {
        opts = opts
            .credentials_file(f)
            .await
            .map_err(|e| format!("credentials file {}: {e}", f.display()))?;
    }
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &cfg.tls_client {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let urls: Vec<async_nats::ServerAddr> = cfg
        .url
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("--nats {:?}: {e}", cfg.shown_url()))?;
    opts.connect(urls)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", cfg.shown_url()))
}

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not connected yet; the last attempt's error, if one failed.
    Down(Option<String>),
    Up,
}

/// The fleet of one `run`: its configuration and a connection kept by a
/// task that retries with backoff until it has one.
pub struct Fleet {
    pub cfg: FleetConfig,
    conn: watch::Sender<Option<Arc<Conn>>>,
    link: watch::Sender<Link>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Fleet {
    /// Starts connecting (on the current tokio runtime).
    pub fn start(cfg: FleetConfig) -> Arc<Fleet> {
        let fleet = Arc::new(Fleet {
            cfg,
            conn: watch::Sender::new(None),
            link: watch::Sender::new(Link::Down(None)),
            task: Mutex::new(None),
        });
        let f = fleet.clone();
        let h = tokio::spawn(async move { f.connect_loop().await });
        *fleet.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
        fleet
    }

    async fn connect_loop(&self) {
        let mut wait = Duration::from_millis(250);
        loop {
            match connect(&self.cfg).await {
                Ok(c) => {
                    tracing::info!("connected to NATS as host {}", self.cfg.host_id);
                    self.conn.send_replace(Some(Arc::new(c)));
                    self.link.send_replace(Link::Up);
                    return;
                }
                Err(e) => {
                    tracing::warn!("NATS not usable, retrying in {wait:?}: {e}");
                    self.link.send_replace(Link::Down(Some(e)));
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.cfg.connect_backoff_max);
        }
    }

    /// The connection, once there is one.
    pub fn conn(&self) -> Option<Arc<Conn>> {
        self.conn.borrow().clone()
    }

    /// Waits for the connection.
    pub async fn ready(&self) -> Arc<Conn> {
        let mut rx = self.conn.subscribe();
        let c = rx
            .wait_for(|c| c.is_some())
            .await
            .ok()
            .and_then(|c| c.clone());
        match c {
            Some(c) => c,
            // The sender lives in `self`: it cannot be gone while we wait.
            None => std::future::pending().await,
        }
    }

    /// Where the connection stands, and its changes.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.link.subscribe()
    }

    /// Whether the client is connected to a server right now.
    pub fn connected(&self) -> bool {
        self.conn().is_some_and(|c| {
            c.client.connection_state() == async_nats::connection::State::Connected
        })
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(h) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
    }
}

/// Every bot in the owners bucket (`wavault fleet status`), sorted by bot.
/// Reads only: a bucket that does not exist (no host ever ran with this
/// prefix) is an empty fleet.
pub async fn owners(cfg: &FleetConfig) -> Result<Vec<Owner>> {
    let c = client(cfg).await.map_err(Error::Unavailable)?;
    let js = jetstream::new(c);
    // The bucket's stream: "stream not found" is the server's word for a
    // bucket no host created yet.
    if let Err(e) = js.get_stream(format!("KV_{}", cfg.owners_bucket())).await {
        let e = e.to_string();
        if e.contains("not found") {
            return Ok(Vec::new());
        }
        return Err(Error::Unavailable(format!("the owners bucket: {e}")));
    }
    let bucket = js
        .get_key_value(cfg.owners_bucket())
        .await
        .map_err(|e| Error::Unavailable(format!("the owners bucket: {e}")))?;
    owners::list(&bucket).await.map_err(Error::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_fleet_settings_are_usage_errors() {
        let ok = FleetConfig::new("nats://127.0.0.1:4222", "host-a");
        assert!(ok.check().is_ok());
        assert_eq!(ok.heartbeat(), Duration::from_secs(10));
        assert_eq!(ok.keep_for(), Duration::from_secs(20));
        let bad = |f: &dyn Fn(&mut FleetConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            let e = c.check().unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            e.to_string()
        };
        assert!(bad(&|c| c.prefix = "a.b".into()).contains("--nats-prefix"));
        assert!(bad(&|c| c.prefix = String::new()).contains("--nats-prefix"));
        assert!(bad(&|c| c.host_id = "two words".into()).contains("--host-id"));
        assert!(bad(&|c| c.host_id = String::new()).contains("--host-id"));
        assert!(bad(&|c| c.owner_ttl = Duration::from_secs(2)).contains("--nats-owner-ttl"));
        assert!(bad(&|c| c.owner_ttl = Duration::from_secs(200_000)).contains("--nats-owner-ttl"));
        assert!(bad(&|c| c.replicas = 0).contains("--nats-replicas"));
        assert!(bad(&|c| c.replicas = 7).contains("--nats-replicas"));
        assert!(bad(&|c| c.events_max_age = Duration::from_secs(1)).contains("--nats-max-age"));
        assert!(bad(&|c| c.url = " ".into()).contains("--nats"));
        assert_eq!(
            ok.event_subject("b1", "message"),
            "wavault.events.b1.message"
        );
        assert_eq!(ok.send_subject("b1"), "wavault.send.b1");
        assert_eq!(ok.owners_bucket(), "wavault-owners");
        let mut secret = ok.clone();
        secret.url = "nats://bob:s3cret@n1:4222, tls://tok@n2:4222,n3:4222".into();
        let shown = secret.shown_url();
        assert_eq!(shown, "nats://***@n1:4222,tls://***@n2:4222,n3:4222");
    }
}
