//! Power cuts under the inbound queue: a child queues messages through
//! `messaging::queue::Queue` as the runner does (whatsapp-rust's inbound
//! durability hook: the message is acknowledged to WhatsApp only after
//! `enqueue` returned `Ok`, printed here as `ACK id`), and a delivery loop
//! hands the oldest entry to the "hook" (`HOOK id`, printed before the
//! removal starts) and removes it (`GONE id` once durable). The power goes
//! out after a random number of lines (the simulator,
//! `tests/support/powerfs.rs`). After each cut every acknowledged message
//! is still queued or was handed to the hook, and no acknowledged removal
//! came back.

use crate::common::*;
use crate::crash::{line_reader, Reaped};
use crate::powerfs::{self, PowerFs};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use wavault::messaging::queue::{NewMessage, Queue};

const DIR_ENV: &str = "WAVAULT_QUEUE_CUT_DIR";
const START_ENV: &str = "WAVAULT_QUEUE_CUT_START";
const LINE_DEADLINE: Duration = Duration::from_secs(60);

fn message(i: u64) -> NewMessage {
    NewMessage {
        chat: format!("chat{}@s.whatsapp.net", i % 3),
        sender: format!("chat{}@s.whatsapp.net", i % 3),
        id: format!("M{i}"),
        summary: format!("{{\"text\":\"message {i}\"}}"),
    }
}

/// The child: queues message after message, delivering every other turn.
#[test]
fn queue_cut_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let v = open(std::path::Path::new(&dir));
        let q = Queue::new(v.view(&bot("queue")));
        let mut out = std::io::stdout().lock();
        let mut say = |line: String| writeln!(out, "{line}").and_then(|()| out.flush()).is_ok();
        for i in start.. {
            match q.enqueue(&[message(i)], 1_000_000, i as i64).await {
                Ok(Ok(_)) => {
                    if !say(format!("ACK M{i}")) {
                        return;
                    }
                }
                other => {
                    let _ = say(format!("ERR {other:?}"));
                    return;
                }
            }
            if i % 2 == 1 {
                let Ok(pending) = q.pending() else { return };
                let Some(first) = pending.first() else {
                    continue;
                };
                if !say(format!("HOOK {}", first.id)) {
                    return;
                }
                if let Err(e) = q.remove(first, i as i64, 1).await {
                    let _ = say(format!("ERR {e}"));
                    return;
                }
                if !say(format!("GONE {}", first.id)) {
                    return;
                }
            }
        }
    });
}

#[test]
fn queued_messages_survive_power_cuts() {
    if std::env::var(DIR_ENV).is_ok() {
        return;
    }
    let mut fs = PowerFs::mount();
    let dir = fs.path().join("vault");
    drop(new_vault(&dir, &["queue"]));
    let seed = powerfs::seed("inbound-queue");
    let mut rng = powerfs::Rng::new(seed);
    let exe = std::env::current_exe().unwrap();
    let (mut acked, mut hooked, mut gone) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut start = 0u64;
    let rounds = powerfs::cuts(200);
    for round in 0..rounds {
        let mut child = Reaped(
            Command::new(&exe)
                .args([
                    "queue_cut::queue_cut_child",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(DIR_ENV, &dir)
                .env(START_ENV, start.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let lines = line_reader(child.0.stdout.take().unwrap());
        let cut_after = 1 + rng.below(40);
        let (mut seen, mut cut) = (0, false);
        loop {
            if !cut && seen >= cut_after {
                fs.cut();
                child.0.kill().unwrap();
                child.0.wait().unwrap();
                cut = true;
            }
            let line = match lines.recv_timeout(LINE_DEADLINE) {
                Ok(l) => l,
                Err(mpsc::RecvTimeoutError::Disconnected) if cut => break,
                Err(e) => panic!("round {round}: no line from the child: {e}"),
            };
            match line.split_once(' ') {
                Some(("ACK", id)) => {
                    acked.insert(id.to_string());
                    let i: u64 = id[1..].parse().unwrap();
                    start = start.max(i + 1);
                }
                Some(("HOOK", id)) => {
                    hooked.insert(id.to_string());
                }
                Some(("GONE", id)) => {
                    gone.insert(id.to_string());
                }
                Some(("ERR", _)) => assert!(cut, "round {round}: failed with no cut: {line}"),
                _ => continue,
            }
            seen += 1;
        }
        // An enqueue that was cut may have landed: its id is used once only.
        start += 1;
        fs.power_on(Some(&mut rng));
        let v = open(&dir);
        let queued: BTreeSet<String> = Queue::new(v.view(&bot("queue")))
            .pending()
            .unwrap()
            .into_iter()
            .map(|q| q.id)
            .collect();
        let lost: Vec<&String> = acked
            .iter()
            .filter(|id| !queued.contains(*id) && !hooked.contains(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "seed {seed}, round {round}: acknowledged to WhatsApp, never handed to the hook, \
             and no longer queued: {lost:?}"
        );
        let back: Vec<&String> = gone.intersection(&queued).collect();
        assert!(
            back.is_empty(),
            "seed {seed}, round {round}: removed entries came back: {back:?}"
        );
        let report = v.validate().unwrap();
        assert!(report.is_sound(), "round {round}: {:?}", report.problems);
    }
    eprintln!(
        "{rounds} power cuts: {} messages acknowledged, {} handed to the hook, {} removed",
        acked.len(),
        hooked.len(),
        gone.len()
    );
    assert!(
        acked.len() >= rounds / 2,
        "the children acknowledged too little"
    );
}
