//! Hot export: a bot exported while it runs and a contact keeps writing to
//! it is a consistent snapshot of the bot.
//!
//! Why it exists: a backup whose Signal session comes from one moment and
//! whose other records from another would make the restored bot send with
//! keys its contact already saw. The vault journals every write the live
//! bot makes (`Vault::set_write_journal`); each export, restored into a
//! fresh vault, must equal the bot's records after some prefix of those
//! writes, i.e. what the live bot really had at one instant
//! (docs/DESIGN.md, "Consistent snapshots while bots write").

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wavault::backup::archive;
use wavault::messaging::hook::Target;
use wavault::runner::Runner;
use wavault::vault::crypto::KdfParams;
use wavault::vault::{Kind, TreeId};
use wavault::Vault;

use crate::hook_server::{HookServer, Mode};
use crate::messaging_tests::{cfg, wait_connected, wait_prekeys};
use crate::peer::Peer;
use crate::runner_tests::{bot, new_vault, synth_paired};

/// Exports taken while the contact writes.
const EXPORTS: usize = 20;
/// The contact's pace.
const SEND_EVERY: Duration = Duration::from_millis(5);
/// Deadline for the bot to take in one more message.
const DEADLINE: Duration = Duration::from_secs(60);
/// Pause after each record an export reads (debug builds): widens the
/// window in which a write would land inside an unprotected scan.
const STEP_DELAY: Duration = Duration::from_micros(100);

const BACKUP_PASS: &[u8] = b"hot export";

/// A record as the comparison sees it: kind, name, data, write time.
type Rec = (u8, Vec<u8>, Vec<u8>, i64);

/// The bot's writes from the journal, opened with the live vault: for
/// each write (one sled call), its keys and new records (`None` deleted).
fn bot_writes(vault: &Vault, tag: &[u8]) -> Vec<Vec<(Vec<u8>, Option<Rec>)>> {
    vault
        .write_journal()
        .into_iter()
        .map(|w| {
            w.ops
                .into_iter()
                .filter(|(k, _)| k.starts_with(tag))
                .map(|(k, v)| {
                    let rec = v.map(|v| {
                        let b = vault
                            .open_value(TreeId::Records, &k, &v)
                            .expect("a journalled value opens");
                        (k[tag.len()], b.name, b.data, b.written_at)
                    });
                    (k, rec)
                })
                .collect::<Vec<_>>()
        })
        .filter(|ops| !ops.is_empty())
        .collect()
}

/// Every `p` such that the bot's records after its first `p` writes are
/// exactly `target` (keyed as the live vault keys them).
fn matching_prefixes(
    writes: &[Vec<(Vec<u8>, Option<Rec>)>],
    target: &HashMap<Vec<u8>, Rec>,
) -> (Vec<usize>, usize) {
    let mut state: HashMap<Vec<u8>, Rec> = HashMap::new();
    // Keys where state and target differ; starts as every target key.
    let mut differ = target.len();
    let mut fewest = differ;
    let mut out = Vec::new();
    if differ == 0 {
        out.push(0);
    }
    for (p, w) in writes.iter().enumerate() {
        for (k, v) in w {
            let before = state.get(k) == target.get(k);
            match v {
                Some(r) => state.insert(k.clone(), r.clone()),
                None => state.remove(k),
            };
            let after = state.get(k) == target.get(k);
            match (before, after) {
                (true, false) => differ += 1,
                (false, true) => differ -= 1,
                _ => {}
            }
        }
        fewest = fewest.min(differ);
        if differ == 0 {
            out.push(p + 1);
        }
    }
    (out, fewest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_export_while_a_contact_writes_is_the_bot_at_one_instant() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = new_vault(&tmp.path().join("live"), &[]);
    // Journal from the first write, so replaying it from nothing gives the
    // bot's records at every instant.
    vault.set_write_journal(true);
    vault.set_snapshot_step_delay(STEP_DELAY);
    let id = bot("hot");
    vault
        .add_bot(&wavault::vault::BotConfig::new(id.clone()))
        .unwrap();
    let phone = synth_paired(&vault, "hot", 4_915_100_007_001).await;
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    let runner = Runner::start(vault.clone(), c).unwrap();
    wait_connected(&runner, "hot").await;
    wait_prekeys(&peer, &phone).await;

    // The contact writes every few ms; the hook answers each message, so
    // the bot both decrypts and encrypts (both write Signal state).
    let stop = Arc::new(AtomicBool::new(false));
    let contact = peer.contact("4917600007001");
    let sender = {
        let (stop, contact, phone) = (stop.clone(), contact.clone(), phone.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SEND_EVERY);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                contact.send_text(&phone, &format!("m{n}")).await.unwrap();
                n += 1;
            }
            n
        })
    };

    let mut files = Vec::new();
    for i in 0..EXPORTS {
        // At least one more message taken in since the last export: every
        // export runs while the conversation goes on.
        hook.wait("one more message", DEADLINE, |s| s.accepted.len() > i)
            .await;
        let file = tmp.path().join(format!("hot-{i}.wvb"));
        let (v, b, f) = (vault.clone(), id.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            archive::export(
                &v,
                &[b],
                &f,
                BACKUP_PASS,
                KdfParams::INSECURE_FOR_TESTS,
                &mut |_, _| {},
            )
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("export {i}: {e}"));
        files.push(file);
    }
    stop.store(true, Ordering::SeqCst);
    let sent = sender.await.unwrap();
    runner.shutdown().await.unwrap();
    vault.set_write_journal(false);

    let tag = vault.bot_tag(&id);
    let writes = bot_writes(&vault, &tag);
    let view = vault.view(&id);
    let mut previous = 0;
    let mut points = Vec::new();
    for (i, file) in files.iter().enumerate() {
        // Restored into a fresh vault, the file validates and gives back
        // the bot's records.
        let (_, backup) = archive::read_file(file, BACKUP_PASS, &mut |_, _| {})
            .unwrap_or_else(|e| panic!("export {i} reads back: {e}"));
        let fresh = new_vault(&tmp.path().join(format!("restored-{i}")), &[]);
        archive::restore(
            &fresh,
            &backup,
            &[],
            false,
            &mut |_| Ok(None),
            &mut |_, _| {},
        )
        .unwrap_or_else(|e| panic!("export {i} restores: {e}"));
        let report = fresh.validate().unwrap();
        assert!(report.is_sound(), "export {i}: {:?}", report.problems);
        let restored = fresh.dump_bot(&id).unwrap();
        assert_eq!(
            restored.records.len() as u64,
            backup.manifest.bots[0].records,
            "export {i}: the manifest counts the bot's records"
        );
        let target: HashMap<Vec<u8>, Rec> = restored
            .records
            .into_iter()
            .map(|r| {
                (
                    view.key(Kind(r.kind), &r.name),
                    (r.kind, r.name, r.data, r.written_at),
                )
            })
            .collect();
        let (at, fewest) = matching_prefixes(&writes, &target);
        // Exports run one after another: each is at or after the previous.
        let point = at.iter().copied().find(|p| *p >= previous);
        let Some(point) = point else {
            panic!(
                "export {i}: the bot's {} records are not its state at any instant \
                 (after any prefix of its {} writes at or after {previous}); at best \
                 {fewest} records differ (matching prefixes: {at:?})",
                target.len(),
                writes.len(),
            );
        };
        previous = point;
        points.push(point);
        drop(fresh);
    }
    assert!(
        points.last() > points.first(),
        "the exports were taken while the bot wrote: {points:?} of {} writes ({sent} messages sent)",
        writes.len()
    );
    eprintln!(
        "hot export: {EXPORTS} exports at writes {points:?} of {}; {sent} messages sent",
        writes.len()
    );
}
