//! `wavault run` at scale: N paired bots in one runner against the
//! in-process peer (tests/e2e/peer), as issue 5 asks for 1,000 bots.
//!
//! Measured:
//! - time from `Runner::start` to every bot `Connected` (counted from the
//!   runner's own status events), against the stagger budget
//!   `stagger * (N - 1)`; the target is budget + 10 s;
//! - resident memory (VmRSS) before the runner starts (vault open, peer up)
//!   and once all are connected; the difference divided by N is the cost of
//!   one bot. It is an upper bound: the in-process server's per-connection
//!   state (its Noise session, buffers and tasks) is in the same process and
//!   counted too. Target: under 1.5 MiB per bot.
//!
//! The bots are "paired" by writing a device record the way a finished
//! pairing leaves it (fresh keys, phone JID, LID, push name) through the
//! vault backend, so the runner takes its no-QR path for each of them; the
//! record also tells the peer the device's Noise key (`seed_device`), which
//! its logins must present. Pairing 1,000 bots through QR codes
//! would take hours (about 10 s each) and measures the peer, not the runner.
//!
//! Run: `cargo bench --bench runner` (1,000 bots, the default 200 ms
//! stagger: about 4 minutes). Environment knobs: `WAVAULT_BENCH_BOTS=N`,
//! `WAVAULT_BENCH_STAGGER_MS=MS`.

#[path = "../tests/support/paired.rs"]
mod paired;
#[allow(dead_code, unused_imports)]
#[path = "../tests/e2e/peer/mod.rs"]
mod peer;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use wavault::runner::net::Net;
use wavault::runner::{RunConfig, Runner, RunnerEvent, StartCase};
use wavault::sessions::Status;
use wavault::vault::crypto::KdfParams;
use wavault::vault::BotConfig;
use wavault::{BotId, Vault};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS line")
        * 1024
}

const MIB: f64 = 1024.0 * 1024.0;

/// Adds `n` bots, each with a device record as a completed pairing leaves it.
async fn paired_vault(dir: &std::path::Path, n: u64) -> Vault {
    let vault = Vault::create(dir, b"bench", KdfParams::INSECURE_FOR_TESTS).expect("vault");
    for i in 0..n {
        let id = BotId::parse(&format!("bot-{i:04}")).unwrap();
        vault.add_bot(&BotConfig::new(id.clone())).unwrap();
        paired::write_paired_device(&vault, &id, 4_915_100_000_000u64 + i, "wavault-bench").await;
    }
    vault.flush().unwrap();
    vault
}

fn runner_rows(v: &Vault) -> Vec<wavault::status::StatusRow> {
    wavault::status::collect(v).unwrap()
}

fn main() {
    let n = env_num("WAVAULT_BENCH_BOTS", 1000);
    let stagger = Duration::from_millis(env_num("WAVAULT_BENCH_STAGGER_MS", 200));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let vault = paired_vault(dir.path(), n).await;
        eprintln!("setup: {n} paired bots written in {:.1?}", t.elapsed());

        let peer = peer::Peer::new();
        let mut cfg = RunConfig::new(Net {
            transport: Arc::new(peer.transport_factory()),
            http: Arc::new(peer.http_client()),
            version: Some(peer::PINNED_VERSION),
        });
        cfg.console = false;
        cfg.stagger = stagger;
        cfg.push_name = "wavault-bench".into();
        let budget = stagger * (n.saturating_sub(1)) as u32;
        let deadline = budget + Duration::from_secs(120);

        let rss_before = rss();
        let start = Instant::now();
        let runner = Runner::start(vault.clone(), cfg).expect("runner starts");
        let mut rx = runner.subscribe();
        let mut connected = HashSet::new();
        let mut reusing = 0u64;
        let mut lagged = false;
        let mut last_report = Instant::now();
        while (connected.len() as u64) < n {
            let left = deadline.saturating_sub(start.elapsed());
            match tokio::time::timeout(left, rx.recv()).await {
                Err(_) => panic!(
                    "only {} of {n} bots connected within {deadline:?}",
                    connected.len()
                ),
                Ok(Err(RecvError::Lagged(_))) => {
                    // Missed events: count from the vault's session metadata.
                    lagged = true;
                    for row in runner.status().unwrap() {
                        if row.status == Status::Connected {
                            connected.insert(row.bot.clone());
                        }
                    }
                }
                Ok(Err(RecvError::Closed)) => panic!("runner stopped"),
                Ok(Ok(RunnerEvent::Started { case, .. })) => {
                    reusing += u64::from(case == StartCase::Reusing)
                }
                Ok(Ok(RunnerEvent::Status {
                    bot,
                    status: Status::Connected,
                    ..
                })) => {
                    connected.insert(bot.as_str().to_owned());
                }
                Ok(Ok(_)) => {}
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "  {:>6.1?}: {} connected",
                    start.elapsed(),
                    connected.len()
                );
                last_report = Instant::now();
            }
        }
        let all_connected = start.elapsed();
        // Let the start-up traffic settle, then read memory.
        let rows = runner.status().unwrap();
        let still = rows
            .iter()
            .filter(|r| r.status == Status::Connected)
            .count();
        let rss_after = rss();
        let per_bot = (rss_after.saturating_sub(rss_before)) as f64 / n as f64 / MIB;
        let seen = peer.seen();
        let t = Instant::now();
        runner.shutdown().await.unwrap();
        let shutdown = t.elapsed();
        let down = runner_rows(&vault)
            .iter()
            .filter(|r| r.status == Status::Disconnected)
            .count();

        println!("runner bench: {n} bots, stagger {stagger:?}");
        println!("  started reusing the stored session (no QR): {reusing} of {n}");
        println!(
            "  all connected after {:.2} s (stagger budget {:.1} s; target budget + 10 s = {:.1} s): {}",
            all_connected.as_secs_f64(),
            budget.as_secs_f64(),
            (budget + Duration::from_secs(10)).as_secs_f64(),
            if all_connected <= budget + Duration::from_secs(10) {
                "met"
            } else {
                "MISSED"
            }
        );
        println!(
            "  connected per the vault's session metadata: {still} of {n}; peer logins: {}, registrations: {}",
            seen.logins_total(),
            seen.registrations().count()
        );
        println!(
            "  RSS before {:.1} MiB, after {:.1} MiB: {:.3} MiB per bot (target < 1.5): {}",
            rss_before as f64 / MIB,
            rss_after as f64 / MIB,
            per_bot,
            if per_bot < 1.5 { "met" } else { "MISSED" }
        );
        println!(
            "  shutdown of all bots: {:.2} s; marked disconnected: {down} of {n}",
            shutdown.as_secs_f64()
        );
        if lagged {
            println!("  (event stream lagged; counted from session metadata)");
        }
    });
}
