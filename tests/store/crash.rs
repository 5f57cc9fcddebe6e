//! Crash test in the spirit of whatsapp-rust's `signal_durability_sqlite.rs`:
//! a child process (this test binary again, running only `crash_child`)
//! writes sessions, pre-keys, sender keys and pending inbound messages
//! through the backend and prints each write before it starts (`DO`) and once
//! it returned `Ok` (`ACK`). The parent SIGKILLs it once it has read a random
//! number of lines, reads what the child printed before dying (up to EOF),
//! reopens the vault and checks that every acknowledged write is there (and
//! every acknowledged delete is not). The one write that was started but not
//! acknowledged may land or not. Synchronisation is by the child's stdout
//! lines only, each wait with a deadline.
//!
//! The same campaign runs as power cuts (`acknowledged_writes_survive_power_cuts`):
//! the vault lives on the power-cut simulator (`tests/support/powerfs.rs`),
//! the power goes out after a random number of lines (from then on the
//! child's I/O fails), the child is killed, and only what was synced
//! survives, with torn unsynced tails. A SIGKILL leaves the kernel's page
//! cache to be written out, so only the power-cut campaign proves
//! durability against a power cut.
//!
//! Signal message keys: the child also runs a sender's chain counter (step
//! `N`): it reads the counter, "derives" that message key, stores the next
//! counter through the backend and only after `Ok` prints (publishes) the
//! key's index. After any cut no published index may be derived again.

use crate::common::*;
use crate::powerfs::{self, PowerFs};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use wacore::store::traits::*;
use whatsapp_rust::bytes::Bytes;

const DIR_ENV: &str = "WAVAULT_STORE_CRASH_DIR";
const START_ENV: &str = "WAVAULT_STORE_CRASH_START";
/// Set in a child for the negative control: the vault skips the sync that
/// makes a flush survive a power cut.
const UNSAFE_ENV: &str = "WAVAULT_STORE_CRASH_SKIP_POWER_SYNC";
const KILLS: usize = 24;
/// Power cuts in `cargo test`; `WAVAULT_POWERCUTS=N` for the long run.
const POWER_CUTS: usize = 200;
/// The sender's chain: the counter's session address.
const CHAIN: &str = "chain@s.whatsapp.net.0";
const LINE_DEADLINE: Duration = Duration::from_secs(60);

fn session_addr(i: u64) -> String {
    format!("1555{i:06}@s.whatsapp.net.0")
}

fn payload(tag: &str, i: u64) -> Vec<u8> {
    format!("{tag}-{i}-{}", "x".repeat((i % 97) as usize)).into_bytes()
}

/// The child: writes forever from `START_ENV` on, announcing each write.
/// A no-op unless the parent set `DIR_ENV`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV)
        .expect("start index")
        .parse()
        .expect("numeric start index");
    if std::env::var_os(UNSAFE_ENV).is_some() {
        wavault::vault::skip_power_sync_for_tests(true);
    }
    let rt = runtime();
    rt.block_on(async {
        let v = open(std::path::Path::new(&dir));
        let b = backend(&v, "crash");
        let mut out = std::io::stdout().lock();
        // Announces a line; a closed pipe (parent gone) ends the child.
        let mut say = |line: String| writeln!(out, "{line}").and_then(|()| out.flush()).is_ok();
        for i in start.. {
            // A failed write (the power is out) ends the child: said, not panicked.
            macro_rules! step {
                ($tag:literal, $id:expr, $write:expr) => {
                    if !say(format!("DO {} {}", $tag, $id)) {
                        return;
                    }
                    if let Err(e) = $write.await {
                        let _ = say(format!("ERR {} {} {e}", $tag, $id));
                        return;
                    }
                    if !say(format!("ACK {} {}", $tag, $id)) {
                        return;
                    }
                };
            }
            // The sender's chain: derive the key at the stored counter,
            // store the next counter, publish the key only after Ok.
            let key = match b.get_session(CHAIN).await {
                Ok(c) => c.map_or(0, |c| {
                    u64::from_le_bytes(c[..8].try_into().expect("8 bytes"))
                }),
                Err(e) => {
                    let _ = say(format!("ERR N 0 {e}"));
                    return;
                }
            };
            step!("N", key, b.put_session(CHAIN, &(key + 1).to_le_bytes()));
            step!(
                "S",
                i,
                b.put_session(&session_addr(i), &payload("session", i))
            );
            let keys: Vec<(u32, Bytes)> = (0..4)
                .map(|k| (4 * i as u32 + k, Bytes::from(payload("prekey", i))))
                .collect();
            step!("P", i, b.store_prekeys_batch(&keys, false));
            if i % 3 == 0 {
                step!("R", i, b.remove_prekey(4 * i as u32));
            }
            if i % 5 == 4 {
                step!("D", i, b.delete_session(&session_addr(i)));
            }
            step!(
                "K",
                i,
                b.put_sender_keys_batch(&[(
                    format!("g{i}@g.us::{}", session_addr(i)).into(),
                    Bytes::from(payload("sk", i))
                )])
            );
            step!(
                "I",
                i,
                b.store_pending_inbound("c@g.us", "s@lid", &format!("M{i}"), &payload("in", i))
            );
        }
    });
}

/// What the parent knows must be on disk.
#[derive(Default)]
struct Expected {
    /// Operations acknowledged: (tag, index).
    acked: BTreeSet<(String, u64)>,
    /// Operations started but never acknowledged: their targets are unknown.
    uncertain: BTreeSet<(String, u64)>,
}

impl Expected {
    fn known(&self, tag: &str, i: u64) -> bool {
        self.acked.contains(&(tag.to_string(), i))
    }

    fn unsure(&self, tag: &str, i: u64) -> bool {
        self.uncertain.contains(&(tag.to_string(), i))
    }
}

/// Everything acknowledged that is not as acknowledged (empty: all sound).
async fn check(dir: &std::path::Path, exp: &Expected, upto: u64, round: usize) -> Vec<String> {
    let mut problems = Vec::new();
    macro_rules! assert {
        ($cond:expr, $($msg:tt)+) => {
            if !$cond {
                problems.push(format!($($msg)+));
            }
        };
    }
    macro_rules! assert_eq {
        ($a:expr, $b:expr, $($msg:tt)+) => {
            if $a != $b {
                problems.push(format!($($msg)+));
            }
        };
    }
    let v = open(dir);
    let b = backend(&v, "crash");
    let mut checked = 0usize;
    for i in 0..upto {
        let ctx = format!("round {round}, index {i}");
        // Session: written by S, deleted by D.
        let session = b.get_session(&session_addr(i)).await.expect("get_session");
        if exp.known("D", i) {
            assert!(session.is_none(), "acknowledged delete came back: {ctx}");
            checked += 1;
        } else if exp.known("S", i) && !exp.unsure("D", i) {
            assert_eq!(
                session.as_deref(),
                Some(payload("session", i).as_slice()),
                "acknowledged session lost: {ctx}"
            );
            checked += 1;
        }
        // Pre-keys: written by P, the first removed by R.
        if exp.known("P", i) {
            let ids: Vec<u32> = (0..4).map(|k| 4 * i as u32 + k).collect();
            let got: BTreeMap<u32, Bytes> = b
                .load_prekeys_batch(&ids)
                .await
                .expect("load_prekeys_batch")
                .into_iter()
                .collect();
            for id in &ids[1..] {
                assert_eq!(
                    got.get(id).map(|r| r.to_vec()),
                    Some(payload("prekey", i)),
                    "acknowledged pre-key {id} lost: {ctx}"
                );
            }
            if exp.known("R", i) {
                assert!(!got.contains_key(&ids[0]), "removed pre-key is back: {ctx}");
            } else if !exp.unsure("R", i) {
                assert!(got.contains_key(&ids[0]), "pre-key {} lost: {ctx}", ids[0]);
            }
            checked += 1;
        }
        if exp.known("K", i) {
            let name = format!("g{i}@g.us::{}", session_addr(i));
            assert_eq!(
                b.get_sender_key(&name).await.expect("get_sender_key"),
                Some(payload("sk", i)),
                "acknowledged sender key lost: {ctx}"
            );
            checked += 1;
        }
        if exp.known("I", i) {
            assert_eq!(
                b.get_pending_inbound("c@g.us", "s@lid", &format!("M{i}"))
                    .await
                    .expect("get_pending_inbound"),
                Some(payload("in", i)),
                "acknowledged pending inbound message lost: {ctx}"
            );
            checked += 1;
        }
    }
    // Vacuous only when something was acknowledged (a cut after the first
    // protocol lines of round 0 leaves nothing acknowledged to check).
    assert!(
        checked > 0 || exp.acked.is_empty(),
        "round {round}: nothing checked"
    );
    let report = v.validate().expect("validate");
    assert!(report.is_sound(), "round {round}: {:?}", report.problems);
    problems
}

/// A child process that is killed and reaped however the test ends.
pub(crate) struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the child's lines on a thread so every wait can have a deadline.
pub(crate) fn line_reader(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// How a round of the campaign ends.
enum Cut<'a> {
    /// SIGKILL: the kernel still writes its page cache out.
    Kill,
    /// The power goes out (the simulator), then the child is killed.
    Power(&'a mut PowerFs, &'a mut powerfs::Rng),
}

/// What a campaign saw.
struct Outcome {
    /// Acknowledged writes (and published keys) that a cut lost.
    problems: Vec<String>,
    acks: usize,
    uncertain: usize,
}

/// `rounds` rounds of: a child writes, dies after a random number of
/// protocol lines, and the parent checks what is on disk.
fn campaign(
    dir: &std::path::Path,
    rounds: usize,
    seed: u64,
    mut cut: Cut,
    unsafe_sync: bool,
) -> Outcome {
    let mut rng = seed | 1;
    let mut next = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    let exe = std::env::current_exe().expect("test binary path");
    let rt = runtime();
    let mut exp = Expected::default();
    let mut start = 0u64;
    let mut total_acks = 0usize;
    let mut problems = Vec::new();
    // Message keys published so far (the chain's indexes).
    let mut published: BTreeSet<u64> = BTreeSet::new();
    for round in 0..rounds {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "crash::crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .env(START_ENV, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        if unsafe_sync {
            cmd.env(UNSAFE_ENV, "1");
        }
        let mut child = Reaped(cmd.spawn().expect("spawn child"));
        let lines = line_reader(child.0.stdout.take().expect("piped stdout"));
        // Cut after a random number of protocol lines (DO or ACK), so the
        // child dies anywhere: before a write, inside it, or inside its fsync.
        let cut_after = 1 + next(60);
        let mut seen = 0;
        let mut killed = false;
        let mut open_ops: BTreeSet<(String, u64)> = BTreeSet::new();
        let mut highest = start;
        loop {
            if !killed && seen >= cut_after {
                if let Cut::Power(fs, _) = &cut {
                    fs.cut();
                }
                child.0.kill().expect("SIGKILL the child");
                child.0.wait().expect("reap the child");
                killed = true;
            }
            // After the kill, the lines the child printed before it died are
            // still in the pipe: read them all (up to EOF) so that every
            // acknowledged write is known, however far the child got.
            let line = match lines.recv_timeout(LINE_DEADLINE) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Disconnected) if killed => break,
                Err(e) => panic!("round {round}: no line from the child: {e}"),
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (kind, tag, i) = match parts.as_slice() {
                [kind @ ("DO" | "ACK"), tag, i] => {
                    (*kind, tag.to_string(), i.parse::<u64>().expect("index"))
                }
                ["ERR", ..] => {
                    // Only the power cut may fail a write.
                    assert!(
                        matches!(cut, Cut::Power(..)) && killed,
                        "round {round}: a write failed with no cut: {line}"
                    );
                    continue;
                }
                _ => continue, // the test harness's own lines
            };
            seen += 1;
            if tag == "N" {
                if kind == "ACK" && !published.insert(i) {
                    problems.push(format!(
                        "round {round}: message key {i} derived again after it was published"
                    ));
                }
                continue;
            }
            highest = highest.max(i + 1);
            if kind == "DO" {
                open_ops.insert((tag, i));
            } else {
                open_ops.remove(&(tag.clone(), i));
                exp.acked.insert((tag, i));
                total_acks += 1;
            }
        }
        assert!(open_ops.len() <= 1, "one write at a time: {open_ops:?}");
        exp.uncertain.extend(open_ops);
        start = highest;
        if let Cut::Power(fs, tear) = &mut cut {
            fs.power_on(Some(&mut **tear));
        }
        problems.extend(rt.block_on(check(dir, &exp, start, round)));
    }
    Outcome {
        problems,
        acks: total_acks + published.len(),
        uncertain: exp.uncertain.len(),
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_points() {
    if std::env::var(DIR_ENV).is_ok() {
        return; // inside a child
    }
    let dir = tempfile::tempdir().expect("tempdir");
    drop(new_vault(dir.path(), &["crash"]));
    let seed = std::env::var("WAVAULT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| wavault::vault::now() as u64);
    eprintln!("kill schedule seed {seed} (set WAVAULT_TEST_SEED to replay)");
    let out = campaign(dir.path(), KILLS, seed, Cut::Kill, false);
    assert!(out.problems.is_empty(), "{:#?}", out.problems);
    eprintln!(
        "{KILLS} kills, {} acknowledged writes checked, {} left uncertain",
        out.acks, out.uncertain
    );
    assert!(out.acks >= KILLS, "the children acknowledged too little");
}

/// Power cuts at random points (at least 200 in the long run; the CI
/// size is `POWER_CUTS`): every acknowledged write and delete is there
/// afterwards, and no published message key is derived again.
#[test]
fn acknowledged_writes_survive_power_cuts() {
    if std::env::var(DIR_ENV).is_ok() {
        return; // inside a child
    }
    let mut fs = PowerFs::mount();
    let dir = fs.path().join("vault");
    drop(new_vault(&dir, &["crash"]));
    let seed = powerfs::seed("backend");
    let mut tear = powerfs::Rng::new(seed);
    let rounds = powerfs::cuts(POWER_CUTS);
    let out = campaign(&dir, rounds, seed, Cut::Power(&mut fs, &mut tear), false);
    assert!(
        out.problems.is_empty(),
        "seed {seed}: {} problems after {rounds} power cuts: {:#?}",
        out.problems.len(),
        out.problems
    );
    eprintln!(
        "{rounds} power cuts, {} acknowledged writes and keys checked, {} left uncertain",
        out.acks, out.uncertain
    );
    assert!(out.acks >= rounds, "the children acknowledged too little");
}

/// The campaign is sound: with the vault's power-cut sync skipped (sled's
/// own flush only, as before), the same power cuts lose acknowledged
/// writes or reuse a published message key.
#[test]
fn power_cut_campaign_catches_a_flush_that_is_not_durable() {
    if std::env::var(DIR_ENV).is_ok() {
        return; // inside a child
    }
    let mut fs = PowerFs::mount();
    let dir = fs.path().join("vault");
    drop(new_vault(&dir, &["crash"]));
    let seed = powerfs::seed("backend-negative-control");
    let mut tear = powerfs::Rng::new(seed);
    let out = campaign(&dir, 30, seed, Cut::Power(&mut fs, &mut tear), true);
    assert!(
        !out.problems.is_empty(),
        "seed {seed}: 30 power cuts with sled's flush alone lost nothing: the campaign cannot tell"
    );
}
