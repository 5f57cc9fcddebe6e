//! What the messaging layer adds per message, measured piece by piece:
//!
//! 1. queueing one inbound message durably (what happens before WhatsApp
//!    gets its acknowledgement): latency p50/p99 and messages/s, with one
//!    bot and with 16 bots writing at once (sled's group commit);
//! 2. reading a 10,000-message backlog (the worker does it at start);
//! 3. the cost of one hook call: a webhook on loopback, and a command.
//!
//! 4. end to end against the in-process peer: a contact writes, the bot
//!    queues it, a webhook on loopback answers with a reply, the contact
//!    decrypts the reply. Round trips one at a time (latency), then a burst
//!    of messages (throughput through the durable queue and the hook).
//!
//! Run: `cargo bench --bench messaging` (about a minute).

#[allow(dead_code)]
#[path = "../tests/support/bench_runner.rs"]
mod bench_runner;
use bench_runner::pct;
#[path = "../tests/support/paired.rs"]
mod paired;
#[allow(dead_code, unused_imports)]
#[path = "../tests/e2e/peer/mod.rs"]
mod peer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use wavault::messaging::hook::{self, Target};
use wavault::messaging::queue::{NewMessage, Queue};
use wavault::runner::Runner;
use wavault::vault::crypto::KdfParams;
use wavault::vault::BotConfig;
use wavault::{BotId, Vault};

fn msg(i: usize) -> NewMessage {
    NewMessage {
        chat: format!("49151{:08}@s.whatsapp.net", i % 50),
        sender: format!("49151{:08}@s.whatsapp.net", i % 50),
        id: format!("3EB0{i:016X}"),
        summary: format!(
            "{{\"bot\":\"b\",\"id\":\"3EB0{i:016X}\",\"text\":\"{}\"}}",
            "x".repeat(120)
        ),
    }
}

async fn enqueue_bench(vault: &Vault, bots: usize, per_bot: usize) -> (f64, Duration, Duration) {
    let mut handles = Vec::new();
    let t = Instant::now();
    for b in 0..bots {
        let id = BotId::parse(&format!("q{b}")).unwrap();
        let _ = vault.add_bot(&BotConfig::new(id.clone()));
        let q = Arc::new(Queue::new(vault.view(&id)));
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_bot);
            for i in 0..per_bot {
                let s = Instant::now();
                q.enqueue(&[msg(b * 1_000_000 + i)], usize::MAX, 0)
                    .await
                    .unwrap()
                    .unwrap();
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let rate = all.len() as f64 / t.elapsed().as_secs_f64();
    (rate, pct(&mut all, 0.5), pct(&mut all, 0.99))
}

async fn hook_bench() -> (Duration, Duration) {
    use axum::routing::post;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", post(|| async { "{\"reply\":\"ok\"}" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body = msg(1).summary;
    let t = Target::Webhook(url);
    // Signed like a delivery: a signature computed per call.
    let secret = wavault::messaging::signing::generate();
    let stamp = |signed: bool| hook::Stamp {
        id: "evt_bench".into(),
        timestamp: 1_800_000_000,
        signature: signed.then(|| {
            wavault::messaging::signing::sign(&secret, "evt_bench", 1_800_000_000, body.as_bytes())
                .unwrap()
        }),
    };
    let n = 300;
    let mut lat = Vec::new();
    for _ in 0..n {
        let s = Instant::now();
        hook::call(&t, &body, Duration::from_secs(5), "b", &stamp(true))
            .await
            .unwrap();
        lat.push(s.elapsed());
    }
    let web = pct(&mut lat, 0.5);
    let c = Target::Command("cat >/dev/null; echo '{\"reply\":\"ok\"}'".into());
    let mut lat = Vec::new();
    for _ in 0..100 {
        let s = Instant::now();
        hook::call(&c, &body, Duration::from_secs(5), "b", &stamp(false))
            .await
            .unwrap();
        lat.push(s.elapsed());
    }
    (web, pct(&mut lat, 0.5))
}

/// A vault with one bot whose device record is as a finished pairing leaves it.
async fn paired_vault(dir: &std::path::Path, phone: u64) -> Vault {
    let vault = Vault::create(dir, b"bench", KdfParams::INSECURE_FOR_TESTS).unwrap();
    let id = BotId::parse("echo").unwrap();
    vault.add_bot(&BotConfig::new(id.clone())).unwrap();
    paired::write_paired_device(&vault, &id, phone, "wavault-bench").await;
    vault
}

async fn e2e() {
    let dir = tempfile::tempdir().unwrap();
    let phone = 4_915_100_009_001u64;
    let vault = paired_vault(&dir.path().join("v"), phone).await;
    let url = bench_runner::echo_hook().await;
    let peer = peer::Peer::new();
    let cfg = bench_runner::config(&peer, url);
    let runner = Runner::start(vault.clone(), cfg).unwrap();
    runner
        .wait_until(Duration::from_secs(30), |rows| {
            rows.iter()
                .all(|r| r.status == wavault::sessions::Status::Connected)
        })
        .await
        .unwrap();
    let phone = phone.to_string();
    let contact = peer.contact("4917600009999");
    let p = phone.clone();
    peer.wait_for("pre-keys", Duration::from_secs(30), |log| {
        log.has_prekey_bundle(&p)
    })
    .await
    .unwrap();
    let mut lat = Vec::new();
    let n = 200;
    for i in 0..n {
        let text = format!("ping {i}");
        let want = format!("echo: {text}");
        let s = Instant::now();
        contact.send_text(&phone, &text).await.unwrap();
        contact
            .wait_received("echo", Duration::from_secs(30), |r| {
                r.iter().any(|m| m.text.as_deref() == Some(want.as_str()))
            })
            .await
            .unwrap();
        lat.push(s.elapsed());
    }
    println!(
        "round trip contact → bot → queue → webhook → reply → contact, one at a time: p50 {:?}, p99 {:?} ({n} messages)",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    let burst = 1000;
    let before = contact.received().len();
    let s = Instant::now();
    for i in 0..burst {
        contact
            .send_text(&phone, &format!("burst {i}"))
            .await
            .unwrap();
    }
    contact
        .wait_received("all burst echoes", Duration::from_secs(300), |r| {
            r.len() >= before + burst
        })
        .await
        .unwrap();
    let secs = s.elapsed().as_secs_f64();
    println!(
        "burst of {burst} messages: all replies back after {secs:.2} s ({:.0} msg/s in and out)",
        burst as f64 / secs
    );
    runner.shutdown().await.unwrap();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::create(
            &dir.path().join("v"),
            b"bench",
            KdfParams::INSECURE_FOR_TESTS,
        )
        .unwrap();

        let (rate, p50, p99) = enqueue_bench(&vault, 1, 2000).await;
        println!("enqueue durable, 1 bot: {rate:.0} msg/s, p50 {p50:?}, p99 {p99:?}");
        let (rate, p50, p99) = enqueue_bench(&vault, 16, 500).await;
        println!("enqueue durable, 16 bots at once: {rate:.0} msg/s, p50 {p50:?}, p99 {p99:?}");

        let id = BotId::parse("backlog").unwrap();
        vault.add_bot(&BotConfig::new(id.clone())).unwrap();
        let q = Queue::new(vault.view(&id));
        let batch: Vec<NewMessage> = (0..10_000).map(msg).collect();
        for c in batch.chunks(500) {
            q.enqueue(c, usize::MAX, 0).await.unwrap().unwrap();
        }
        let t = Instant::now();
        let p = q.pending().unwrap();
        println!(
            "read a backlog of {} queued messages: {:?} ({:.1} µs each)",
            p.len(),
            t.elapsed(),
            t.elapsed().as_secs_f64() * 1e6 / p.len() as f64
        );
        let t = Instant::now();
        for m in p.iter().take(2000) {
            q.remove(m, 0, 0).await.unwrap();
        }
        println!(
            "remove a delivered message (durable each, one at a time): {:.1} µs each",
            t.elapsed().as_secs_f64() * 1e6 / 2000.0
        );

        let (web, cmd) = hook_bench().await;
        println!("hook call p50: webhook on loopback {web:?}, command (sh -c) {cmd:?}");
        e2e().await;
    });
}
