//! Export while bots run (issue 13): what a hot export costs the export and
//! the bots.
//!
//! A vault of N bots (default 1,000, `WAVAULT_BENCH_BOTS`): the first
//! `WAVAULT_BENCH_RUNNING` (default 100) are paired and run in a Runner
//! against the in-process peer, each with a contact that writes to it in a
//! loop (send, wait for the webhook's echo, pause `WAVAULT_BENCH_PAUSE_MS`,
//! default 200); the others are disabled and hold realistic Signal state
//! (tests/support/signal_state.rs). Measured:
//! - export of every bot while the bots run and talk, against the export of
//!   the same vault once the runner has stopped (target: within 1.5x);
//! - the contacts' round trip (contact → bot → queue → webhook → reply →
//!   contact) p99 while the export runs, against before it (target: 2x).
//!
//! Run: `cargo bench --bench hot_export` (a few minutes after the release
//! build). Not run in CI.

#[path = "../tests/support/bench_runner.rs"]
mod bench_runner;
use bench_runner::{env_num, pct};
#[path = "../tests/support/paired.rs"]
mod paired;
#[allow(dead_code, unused_imports)]
#[path = "../tests/e2e/peer/mod.rs"]
mod peer;
#[path = "../tests/support/signal_state.rs"]
mod signal_state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wacore::store::traits::Backend;
use wavault::backup::archive;

use wavault::runner::Runner;
use wavault::sessions::Status;
use wavault::vault::crypto::KdfParams;
use wavault::vault::BotConfig;
use wavault::{BotId, Vault};

const MB: f64 = 1_000_000.0;

fn bot_id(i: u64) -> BotId {
    BotId::parse(&format!("bot-{i:04}")).unwrap()
}

const PHONE: u64 = 4_915_100_000_000;

fn contact_phone(i: u64) -> String {
    format!("49176{:08}", i)
}

/// What one export of every bot gave.
struct Exported {
    records: u64,
    bytes: u64,
    secs: f64,
}

/// `wavault export` of every bot into memory (`archive::export_bytes`: one
/// snapshot per bot, the stream sealed, the whole file read back and
/// verified); the file write is left out (the same either way).
fn export_all(vault: &Vault) -> Exported {
    let t = Instant::now();
    let e = archive::export_bytes(
        vault,
        &[],
        b"backup",
        KdfParams::INSECURE_FOR_TESTS,
        &|_| {},
        &mut |_, _| {},
    )
    .unwrap();
    Exported {
        records: e.records,
        bytes: e.bytes.len() as u64,
        secs: t.elapsed().as_secs_f64(),
    }
}

/// Round trips as (start, latency), from every contact.
type Trips = Arc<Mutex<Vec<(Instant, Duration)>>>;

fn main() {
    let n = env_num("WAVAULT_BENCH_BOTS", 1000);
    let running = env_num("WAVAULT_BENCH_RUNNING", 100).min(n);
    let pause = Duration::from_millis(env_num("WAVAULT_BENCH_PAUSE_MS", 200));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tmp = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let vault = Vault::create(
            &tmp.path().join("v"),
            b"bench",
            KdfParams::INSECURE_FOR_TESTS,
        )
        .unwrap();
        for i in 0..n {
            let id = bot_id(i);
            let mut cfg = BotConfig::new(id.clone());
            cfg.enabled = i < running;
            vault.add_bot(&cfg).unwrap();
            if i < running {
                paired::write_paired_device(&vault, &id, PHONE + i, "wavault-bench").await;
            } else {
                let backend: Arc<dyn Backend> = vault.bot_backend(&id).unwrap();
                signal_state::fill(&backend, i).await;
            }
        }
        vault.flush().unwrap();
        eprintln!("setup: {n} bots ({running} paired) in {:.1?}", t.elapsed());

        let url = bench_runner::echo_hook().await;
        let peer = peer::Peer::new();
        let mut cfg = bench_runner::config(&peer, url);
        cfg.stagger = Duration::from_millis(20);
        let t = Instant::now();
        let runner = Runner::start(vault.clone(), cfg).unwrap();
        runner
            .wait_until(Duration::from_secs(600), |rows| {
                rows.iter()
                    .filter(|r| r.status == Status::Connected)
                    .count() as u64
                    == running
            })
            .await
            .unwrap();
        for i in 0..running {
            let p = (PHONE + i).to_string();
            peer.wait_for("pre-keys", Duration::from_secs(600), |log| {
                log.has_prekey_bundle(&p)
            })
            .await
            .unwrap();
        }
        eprintln!("{running} bots connected with pre-keys in {:.1?}", t.elapsed());

        // Every contact talks to its bot in a loop; a first round trip
        // each starts the Signal sessions before anything is measured.
        let trips: Trips = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let warm = Arc::new(tokio::sync::Barrier::new(running as usize + 1));
        let mut talkers = Vec::new();
        for i in 0..running {
            let contact = peer.contact(&contact_phone(i));
            let (trips, stop, warm) = (trips.clone(), stop.clone(), warm.clone());
            let phone = (PHONE + i).to_string();
            talkers.push(tokio::spawn(async move {
                let mut k = 0u64;
                let trip = |k: u64| {
                    let (contact, phone) = (contact.clone(), phone.clone());
                    async move {
                        let text = format!("m{k}");
                        let want = format!("echo: {text}");
                        let s = Instant::now();
                        contact.send_text(&phone, &text).await.unwrap();
                        contact
                            .wait_received("echo", Duration::from_secs(120), |r| {
                                r.iter().any(|m| m.text.as_deref() == Some(want.as_str()))
                            })
                            .await
                            .unwrap();
                        (s, s.elapsed())
                    }
                };
                trip(k).await;
                warm.wait().await;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let r = trip(k).await;
                    trips.lock().unwrap().push(r);
                    tokio::time::sleep(pause).await;
                }
            }));
        }
        warm.wait().await;
        let base_from = Instant::now();
        tokio::time::sleep(Duration::from_secs(15)).await;

        let hot_from = Instant::now();
        let v = vault.clone();
        let hot = tokio::task::spawn_blocking(move || export_all(&v))
            .await
            .unwrap();
        let hot_to = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        for t in talkers {
            t.await.unwrap();
        }
        runner.shutdown().await.unwrap();

        let v = vault.clone();
        let offline = tokio::task::spawn_blocking(move || export_all(&v))
            .await
            .unwrap();
        let v = vault.clone();
        let offline2 = tokio::task::spawn_blocking(move || export_all(&v))
            .await
            .unwrap();

        let trips = trips.lock().unwrap().clone();
        let mut base: Vec<Duration> = trips
            .iter()
            .filter(|(s, _)| *s >= base_from && *s < hot_from)
            .map(|(_, d)| *d)
            .collect();
        // Round trips that overlapped the export at all.
        let mut during: Vec<Duration> = trips
            .iter()
            .filter(|(s, d)| *s < hot_to && *s + *d > hot_from)
            .map(|(_, d)| *d)
            .collect();
        let offline_s = offline.secs.min(offline2.secs);
        let ratio = hot.secs / offline_s;
        let (bp50, bp99) = (pct(&mut base, 0.5), pct(&mut base, 0.99));
        let (dp50, dp99) = (pct(&mut during, 0.5), pct(&mut during, 0.99));
        let p99_ratio = dp99.as_secs_f64() / bp99.as_secs_f64();
        println!(
            "hot export bench: {n} bots, {running} running, each contact pausing {pause:?} between round trips"
        );
        println!(
            "  export while running: {:.2} s ({} records, {:.1} MB); offline: {:.2} s / {:.2} s ({} records, {:.1} MB): {ratio:.2}x (target <= 1.5x): {}",
            hot.secs,
            hot.records,
            hot.bytes as f64 / MB,
            offline.secs,
            offline2.secs,
            offline.records,
            offline.bytes as f64 / MB,
            if ratio <= 1.5 { "met" } else { "MISSED" }
        );
        println!(
            "  round trip before the export: p50 {bp50:?}, p99 {bp99:?} ({} trips); during it: p50 {dp50:?}, p99 {dp99:?} ({} trips): {p99_ratio:.2}x (target <= 2x): {}",
            base.len(),
            during.len(),
            if p99_ratio <= 2.0 { "met" } else { "MISSED" }
        );
    });
}
