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

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use wacore::store::traits::*;
use whatsapp_rust::bytes::Bytes;

const DIR_ENV: &str = "WAVAULT_STORE_CRASH_DIR";
const START_ENV: &str = "WAVAULT_STORE_CRASH_START";
const KILLS: usize = 24;
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
    let rt = runtime();
    rt.block_on(async {
        let v = open(std::path::Path::new(&dir));
        let b = backend(&v, "crash");
        let mut out = std::io::stdout().lock();
        // Announces a line; a closed pipe (parent gone) ends the child.
        let mut say = |line: String| writeln!(out, "{line}").and_then(|()| out.flush()).is_ok();
        for i in start.. {
            macro_rules! step {
                ($tag:literal, $id:expr, $write:expr) => {
                    if !say(format!("DO {} {}", $tag, $id)) {
                        return;
                    }
                    $write.await.expect($tag);
                    if !say(format!("ACK {} {}", $tag, $id)) {
                        return;
                    }
                };
            }
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

async fn check(dir: &std::path::Path, exp: &Expected, upto: u64, round: usize) {
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
    assert!(checked > 0 || upto == 0);
    let report = v.validate().expect("validate");
    assert!(report.is_sound(), "{:?}", report.problems);
}

/// A child process that is killed and reaped however the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the child's lines on a thread so every wait can have a deadline.
fn line_reader(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
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
    for round in 0..KILLS {
        let mut child = Reaped(
            Command::new(&exe)
                .args([
                    "crash::crash_child",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(DIR_ENV, dir.path())
                .env(START_ENV, start.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn child"),
        );
        let lines = line_reader(child.0.stdout.take().expect("piped stdout"));
        // Kill after a random number of protocol lines (DO or ACK), so the
        // child dies anywhere: before a write, inside it, or inside its fsync.
        let kill_after = 1 + next(60);
        let mut seen = 0;
        let mut killed = false;
        let mut open_ops: BTreeSet<(String, u64)> = BTreeSet::new();
        let mut highest = start;
        loop {
            if !killed && seen >= kill_after {
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
                _ => continue, // the test harness's own lines
            };
            seen += 1;
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
        rt.block_on(check(dir.path(), &exp, start, round));
    }
    eprintln!(
        "{KILLS} kills, {total_acks} acknowledged writes checked, {} left uncertain",
        exp.uncertain.len()
    );
    assert!(total_acks >= KILLS, "the children acknowledged too little");
}
