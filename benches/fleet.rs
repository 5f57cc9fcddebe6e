//! The fleet (issue 15): events from 100 bots through NATS JetStream on
//! loopback against the webhook path, and what JetStream adds per event.
//!
//! One vault of 100 paired bots (no QR: the device record a finished pairing
//! leaves), each with a contact of its own on the in-process peer, and a real
//! `nats-server -js` on a random loopback port with its own store directory.
//! The same bots are run twice, one runner after the other:
//!
//! - **webhook**: every bot's hook is a webhook on loopback that records
//!   what it receives and answers nothing (no actions);
//! - **NATS**: `RunConfig::fleet` set and no hook, so every message event is
//!   published to the `<prefix>-events` stream (after it is durable in the
//!   bot's queue, removed from it after JetStream's acknowledgement); an
//!   ordered ephemeral consumer on that stream receives them.
//!
//! Each path is measured in two phases:
//! - latency at a light load: every contact sends one message, waits until
//!   the receiver has it, pauses (`WAVAULT_BENCH_PAUSE_MS`, default 1000),
//!   `WAVAULT_BENCH_ROUNDS` times (default 10): about 100 events/s offered;
//!   the latency is from the contact's send (before it encrypts) to the
//!   receiver, so it holds the same upstream part on both paths (contact
//!   encrypts → peer → bot decrypts → durable enqueue) and the difference of
//!   the two is what the path adds;
//! - throughput: every contact sends `WAVAULT_BENCH_BURST` messages (default
//!   20) back to back; events/s from the first send to the last receipt.
//!
//! References in the same run: JetStream publish + acknowledgement from one
//! client (one at a time, and 100 tasks at once) on the same server and
//! stream configuration, and the webhook POST alone (`hook::call`).
//!
//! Run: `cargo bench --bench fleet` (about 1-2 minutes after the release
//! build). Needs `nats-server` (2.9 or later) on PATH. Not run in CI.

#[allow(dead_code)]
#[path = "../tests/support/bench_runner.rs"]
mod bench_runner;
use bench_runner::{env_num, pct};
#[path = "../tests/support/paired.rs"]
mod paired;
#[allow(dead_code, unused_imports)]
#[path = "../tests/e2e/peer/mod.rs"]
mod peer;

use std::collections::HashMap;
use std::io::BufRead as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt as _;
use tokio::sync::{oneshot, watch};
use wavault::fleet::FleetConfig;
use wavault::messaging::hook::{self, Target};
use wavault::runner::Runner;
use wavault::sessions::Status;
use wavault::vault::crypto::KdfParams;
use wavault::vault::BotConfig;
use wavault::{BotId, Vault};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Bots are 49192000000i, their contacts 49192000100i (the range this
/// benchmark may use on a peer).
const PHONE: u64 = 491_920_000_000;
const CONTACT: u64 = 491_920_001_000;
const BOTS: u64 = 100;
const DEADLINE: Duration = Duration::from_secs(120);
/// The fleet's prefix (its stream `fleetbench-events`).
const PREFIX: &str = "fleetbench";

fn bot_id(i: u64) -> BotId {
    BotId::parse(&format!("bot-{i:03}")).unwrap()
}

/// The nats-server's process id (its CPU time is read around each burst).
static NATS_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// CPU time (user + system) of process `pid` ("self" for this one), from
/// /proc (clock ticks of 10 ms, as Linux reports them to user space).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

/// A `nats-server -js` on a random loopback port, killed when dropped.
struct NatsServer {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nats-server on PATH (Debian package nats-server)");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log until the port line, then drains it (a full pipe
        // would stall the server).
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line
                    .split("Listening for client connections on 127.0.0.1:")
                    .nth(1)
                {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().parse::<u16>().unwrap());
                    }
                }
            }
        });
        NATS_PID.store(child.id(), Ordering::Relaxed);
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("nats-server said which port it listens on");
        NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// When a contact started sending a text, and who waits for it.
type Sent = HashMap<String, (Instant, Option<oneshot::Sender<()>>)>;

/// What the receiver (webhook or stream consumer) saw, against what the
/// contacts sent.
#[derive(Default)]
struct Track {
    /// text → when its contact started sending it, and who waits for it.
    sent: Mutex<Sent>,
    lat: Mutex<Vec<Duration>>,
    last: Mutex<Option<Instant>>,
    /// Received events that were not (or no longer) expected: duplicates,
    /// or events of other kinds.
    other: AtomicU64,
    count: watch::Sender<u64>,
}

impl Track {
    fn expect(&self, text: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.sent
            .lock()
            .unwrap()
            .insert(text.to_owned(), (Instant::now(), Some(tx)));
        rx
    }

    fn expect_no_wait(&self, text: &str) {
        self.sent
            .lock()
            .unwrap()
            .insert(text.to_owned(), (Instant::now(), None));
    }

    fn received(&self, text: Option<&str>) {
        let now = Instant::now();
        let hit = text.and_then(|t| self.sent.lock().unwrap().remove(t));
        let Some((at, waiter)) = hit else {
            self.other.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.lat.lock().unwrap().push(now - at);
        *self.last.lock().unwrap() = Some(now);
        self.count.send_modify(|c| *c += 1);
        if let Some(w) = waiter {
            let _ = w.send(());
        }
    }

    /// Forgets what was measured so far (between phases).
    fn reset(&self) -> Vec<Duration> {
        assert!(
            self.sent.lock().unwrap().is_empty(),
            "messages still outstanding"
        );
        *self.last.lock().unwrap() = None;
        std::mem::take(&mut *self.lat.lock().unwrap())
    }
}

/// A loopback webhook that records each message's text and answers nothing.
async fn recording_hook(track: Arc<Track>) -> String {
    use axum::routing::post;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let track = track.clone();
            async move {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                track.received(v["text"].as_str());
                ""
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// What one path gave.
struct PathResult {
    light_p50: Duration,
    light_p99: Duration,
    light_n: usize,
    burst_n: u64,
    burst_secs: f64,
    burst_sent_secs: f64,
    burst_p50: Duration,
    burst_p99: Duration,
    /// CPU time per burst event: this process (peer, runner, receiver),
    /// and nats-server.
    burst_cpu_self: Duration,
    burst_cpu_nats: Duration,
    other: u64,
}

/// Starts a runner of `cfg` on `vault`, waits for every bot, drives the
/// contacts through the two phases, stops the runner.
async fn drive(
    vault: &Vault,
    peer: &peer::Peer,
    cfg: wavault::runner::RunConfig,
    track: &Arc<Track>,
    before_traffic: impl std::future::Future<Output = ()>,
) -> PathResult {
    let rounds = env_num("WAVAULT_BENCH_ROUNDS", 10);
    let pause = Duration::from_millis(env_num("WAVAULT_BENCH_PAUSE_MS", 1000));
    let burst = env_num("WAVAULT_BENCH_BURST", 20);
    let t = Instant::now();
    let runner = Runner::start(vault.clone(), cfg).unwrap();
    runner
        .wait_until(DEADLINE, |rows| {
            rows.iter()
                .filter(|r| r.status == Status::Connected)
                .count() as u64
                == BOTS
        })
        .await
        .unwrap();
    for i in 0..BOTS {
        let p = (PHONE + i).to_string();
        peer.wait_for("pre-keys", DEADLINE, |log| log.has_prekey_bundle(&p))
            .await
            .unwrap();
    }
    eprintln!("  {BOTS} bots connected in {:.1?}", t.elapsed());
    before_traffic.await;

    let contacts: Vec<_> = (0..BOTS)
        .map(|i| peer.contact(&(CONTACT + i).to_string()))
        .collect();
    // One message each first (Signal sessions, connections), not measured.
    let mut warm = Vec::new();
    for (i, c) in contacts.iter().enumerate() {
        let (c, track) = (c.clone(), track.clone());
        warm.push(tokio::spawn(async move {
            let text = format!("warm b{i}");
            let rx = track.expect(&text);
            c.send_text(&(PHONE + i as u64).to_string(), &text)
                .await
                .unwrap();
            tokio::time::timeout(DEADLINE, rx).await.unwrap().unwrap();
        }));
    }
    for w in warm {
        w.await.unwrap();
    }
    track.reset();

    // Light load: one message in flight per contact, then a pause.
    let mut talkers = Vec::new();
    for (i, c) in contacts.iter().enumerate() {
        let (c, track) = (c.clone(), track.clone());
        talkers.push(tokio::spawn(async move {
            // Spread the contacts over the pause.
            tokio::time::sleep(pause * i as u32 / BOTS as u32).await;
            for k in 0..rounds {
                let text = format!("light b{i} m{k}");
                let rx = track.expect(&text);
                c.send_text(&(PHONE + i as u64).to_string(), &text)
                    .await
                    .unwrap();
                tokio::time::timeout(DEADLINE, rx).await.unwrap().unwrap();
                tokio::time::sleep(pause).await;
            }
        }));
    }
    for t in talkers {
        t.await.unwrap();
    }
    let mut light = track.reset();

    // Burst: every contact sends its messages back to back.
    let mut counted = track.count.subscribe();
    let base = *counted.borrow_and_update();
    let target = base + burst * BOTS;
    let nats_pid = NATS_PID.load(Ordering::Relaxed).to_string();
    let cpu = (cpu_secs("self"), cpu_secs(&nats_pid));
    let start = Instant::now();
    let mut senders = Vec::new();
    for (i, c) in contacts.iter().enumerate() {
        let (c, track) = (c.clone(), track.clone());
        senders.push(tokio::spawn(async move {
            for k in 0..burst {
                let text = format!("burst b{i} m{k}");
                track.expect_no_wait(&text);
                c.send_text(&(PHONE + i as u64).to_string(), &text)
                    .await
                    .unwrap();
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let sent_secs = start.elapsed().as_secs_f64();
    tokio::time::timeout(DEADLINE, counted.wait_for(|c| *c >= target))
        .await
        .expect("every burst message received")
        .unwrap();
    let last = track.last.lock().unwrap().unwrap();
    let per_event = |before: f64, now: f64| {
        Duration::from_secs_f64((now - before).max(0.0) / (burst * BOTS) as f64)
    };
    let burst_cpu_self = per_event(cpu.0, cpu_secs("self"));
    let burst_cpu_nats = per_event(cpu.1, cpu_secs(&nats_pid));
    let burst_secs = (last - start).as_secs_f64();
    let mut burst_lat = track.reset();
    runner.shutdown().await.unwrap();
    PathResult {
        light_p50: pct(&mut light, 0.5),
        light_p99: pct(&mut light, 0.99),
        light_n: light.len(),
        burst_n: burst * BOTS,
        burst_secs,
        burst_sent_secs: sent_secs,
        burst_p50: pct(&mut burst_lat, 0.5),
        burst_p99: pct(&mut burst_lat, 0.99),
        burst_cpu_self,
        burst_cpu_nats,
        other: track.other.load(Ordering::Relaxed),
    }
}

/// Raw JetStream: publish + acknowledgement on a stream configured like
/// the events stream, `n` one at a time from one client, then `n` from
/// `tasks` tasks at once on the same client. Returns ((rate, p50, p99) one
/// at a time, (rate, p50, p99) concurrent).
async fn raw_jetstream(
    url: &str,
    body: bytes::Bytes,
    n: usize,
    tasks: usize,
) -> ((f64, Duration, Duration), (f64, Duration, Duration)) {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: "rawbench".into(),
        subjects: vec!["rawbench.>".into()],
        retention: jetstream::stream::RetentionPolicy::Limits,
        storage: jetstream::stream::StorageType::File,
        max_age: Duration::from_secs(86_400),
        duplicate_window: wavault::fleet::DEDUPE_WINDOW,
        ..Default::default()
    })
    .await
    .unwrap();
    let publish = |js: jetstream::Context, body: bytes::Bytes, id: String| async move {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        let s = Instant::now();
        js.publish_with_headers("rawbench.events.b.message", headers, body)
            .await
            .unwrap()
            .await
            .unwrap();
        s.elapsed()
    };
    let mut lat = Vec::with_capacity(n);
    let t = Instant::now();
    for k in 0..n {
        lat.push(publish(js.clone(), body.clone(), format!("seq-{k}")).await);
    }
    let one = (
        n as f64 / t.elapsed().as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
    );
    let t = Instant::now();
    let mut hs = Vec::new();
    for w in 0..tasks {
        let (js, body) = (js.clone(), body.clone());
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for k in 0..n / tasks {
                lat.push(publish(js.clone(), body.clone(), format!("par-{w}-{k}")).await);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(h.await.unwrap());
    }
    let par = (
        lat.len() as f64 / t.elapsed().as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
    );
    (one, par)
}

/// The webhook POST alone (`hook::call`, as the worker makes it), `n` one
/// at a time, then `n` from `tasks` tasks at once.
async fn raw_webhook(
    body: String,
    n: usize,
    tasks: usize,
) -> ((f64, Duration, Duration), (f64, Duration, Duration)) {
    let track = Arc::new(Track::default());
    let url = recording_hook(track).await;
    let target = Target::Webhook(url);
    let stamp = hook::Stamp {
        id: "evt_bench".into(),
        timestamp: 1_800_000_000,
        signature: None,
    };
    let call = |target: Target, body: String, stamp: hook::Stamp| async move {
        let s = Instant::now();
        hook::call(&target, &body, Duration::from_secs(5), "b", &stamp)
            .await
            .unwrap();
        s.elapsed()
    };
    let mut lat = Vec::new();
    let t = Instant::now();
    for _ in 0..n {
        lat.push(call(target.clone(), body.clone(), stamp.clone()).await);
    }
    let one = (
        n as f64 / t.elapsed().as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
    );
    let t = Instant::now();
    let mut hs = Vec::new();
    for _ in 0..tasks {
        let (target, body, stamp) = (target.clone(), body.clone(), stamp.clone());
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for _ in 0..n / tasks {
                lat.push(call(target.clone(), body.clone(), stamp.clone()).await);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(h.await.unwrap());
    }
    let par = (
        lat.len() as f64 / t.elapsed().as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
    );
    (one, par)
}

/// (a) Every bot's hook is a recording webhook on loopback.
async fn web_path(vault: &Vault, peer: &peer::Peer) -> PathResult {
    let track = Arc::new(Track::default());
    let url = recording_hook(track.clone()).await;
    let mut cfg = bench_runner::config(peer, url);
    cfg.stagger = Duration::from_millis(20);
    drive(vault, peer, cfg, &track, async {}).await
}

/// (b) No hook, the fleet on `url`: events go to the events stream, where
/// an ordered consumer (made once the runner made the stream) receives
/// them. The last event body received is left in `sample`.
async fn nats_path(
    vault: &Vault,
    peer: &peer::Peer,
    url: &str,
    sample: &Arc<Mutex<Option<bytes::Bytes>>>,
) -> PathResult {
    let mut fleet = FleetConfig::new(url, "bench");
    fleet.prefix = PREFIX.into();
    let stream_name = fleet.events_stream();
    let mut cfg = bench_runner::config(peer, String::new());
    cfg.hooks.target = None;
    cfg.stagger = Duration::from_millis(20);
    cfg.fleet = Some(fleet);
    let track = Arc::new(Track::default());
    let (url, t, sample) = (url.to_owned(), track.clone(), sample.clone());
    let (tx, stop) = oneshot::channel::<()>();
    let consume = async move {
        let client = async_nats::connect(&url).await.unwrap();
        let js = jetstream::new(client);
        let stream = js.get_stream(&stream_name).await.unwrap();
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: format!("{PREFIX}.events.>"),
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut msgs = consumer.messages().await.unwrap();
        tokio::spawn(async move {
            let mut stop = stop;
            loop {
                let m = tokio::select! {
                    m = msgs.next() => m,
                    _ = &mut stop => break,
                };
                let m = match m {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        eprintln!("  consumer: {e}");
                        continue;
                    }
                    None => break,
                };
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                t.received(v["text"].as_str());
                sample.lock().unwrap().replace(m.payload.clone());
            }
        });
    };
    let r = drive(vault, peer, cfg, &track, consume).await;
    let _ = tx.send(());
    r
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let all = Instant::now();
        let nats = NatsServer::start();
        eprintln!("nats-server at {}", nats.url);
        let tmp = tempfile::tempdir().unwrap();
        let vault = Vault::create(
            &tmp.path().join("v"),
            b"bench",
            KdfParams::INSECURE_FOR_TESTS,
        )
        .unwrap();
        for i in 0..BOTS {
            let id = bot_id(i);
            vault.add_bot(&BotConfig::new(id.clone())).unwrap();
            paired::write_paired_device(&vault, &id, PHONE + i, "wavault-bench").await;
        }
        vault.flush().unwrap();
        let peer = peer::Peer::new();

        // (a) the webhook path and (b) the NATS path, alternately (the
        // first runs after the bots' first login, with its background work).
        let sample: Arc<Mutex<Option<bytes::Bytes>>> = Arc::default();
        let runs = env_num("WAVAULT_BENCH_RUNS", 2);
        let mut results = Vec::new();
        for run in 1..=runs {
            eprintln!("webhook path, run {run}");
            results.push((format!("webhook (loopback), run {run}"), web_path(&vault, &peer).await));
            eprintln!("NATS path, run {run}");
            results.push((
                format!("NATS JetStream (loopback), run {run}"),
                nats_path(&vault, &peer, &nats.url, &sample).await,
            ));
        }

        // (c) references on the same server and loopback.
        eprintln!("references");
        let body = sample.lock().unwrap().clone().expect("an event was received");
        let n = 3000;
        let (js_one, js_par) = raw_jetstream(&nats.url, body.clone(), n, BOTS as usize).await;
        let text = String::from_utf8(body.to_vec()).unwrap();
        let (wh_one, wh_par) = raw_webhook(text, 1000, BOTS as usize).await;
        drop(nats);

        println!(
            "fleet bench: {BOTS} bots, one contact each, in-process peer; nats-server -js on loopback; {:.0} s in all",
            all.elapsed().as_secs_f64()
        );
        println!(
            "event body: {} bytes (a text message event)",
            body.len()
        );
        println!();
        println!(
            "| path | light load: contact send → received, p50 / p99 | burst of {} events: events/s (sent in) | burst latency p50 / p99 | burst CPU per event: wavault process / nats-server | not expected |",
            results[0].1.burst_n
        );
        println!("|---|---|---|---|---|---|");
        for (name, r) in &results {
            println!(
                "| {name} | {:.2} / {:.2} ms ({} events) | {:.0} ({:.2} s; contacts done sending after {:.2} s) | {:.0} / {:.0} ms | {:.0} / {:.0} µs | {} |",
                ms(r.light_p50),
                ms(r.light_p99),
                r.light_n,
                r.burst_n as f64 / r.burst_secs,
                r.burst_secs,
                r.burst_sent_secs,
                ms(r.burst_p50),
                ms(r.burst_p99),
                r.burst_cpu_self.as_secs_f64() * 1e6,
                r.burst_cpu_nats.as_secs_f64() * 1e6,
                r.other
            );
        }
        for pair in results.chunks(2).filter(|p| p.len() == 2) {
            let (web, jet) = (&pair[0].1, &pair[1].1);
            println!(
                "NATS instead of the webhook ({} vs {}): light load p50 {:+.2} ms, p99 {:+.2} ms; burst throughput {:+.0}%",
                pair[1].0,
                pair[0].0,
                ms(jet.light_p50) - ms(web.light_p50),
                ms(jet.light_p99) - ms(web.light_p99),
                100.0 * (web.burst_secs / jet.burst_secs - 1.0)
            );
        }
        println!();
        println!("| reference | one at a time: per s, p50 / p99 | {BOTS} at once: per s, p50 / p99 |");
        println!("|---|---|---|");
        for (name, one, par) in [
            ("JetStream publish + ack, one client, same server", js_one, js_par),
            ("webhook POST alone (hook::call, loopback)", wh_one, wh_par),
        ] {
            println!(
                "| {name} | {:.0}, {:.3} / {:.3} ms | {:.0}, {:.3} / {:.3} ms |",
                one.0,
                ms(one.1),
                ms(one.2),
                par.0,
                ms(par.1),
                ms(par.2)
            );
        }
    });
}
