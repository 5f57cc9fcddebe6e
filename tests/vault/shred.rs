//! Deleted data stops being readable from the vault's files once the data
//! key has rotated: `bot remove` marks the vault "rotation due" and the next
//! sweep rotates (issue 17, item 7).
//!
//! The scan reads the raw sled files, finds every place a sealed record
//! (docs/FORMAT.md, "Sealed record") of a known term starts, and tries to
//! open it as the value of each target key with the term keys that the key
//! file and the passphrase give ([`DiskKeys`], unlocked the way the vault
//! does). The deleted values' keys and sizes are known to the test: an
//! attacker would derive the keys from the master key and try the sizes.

use crate::common::*;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;
use wavault::messaging::queue::{NewMessage, Queue};
use wavault::vault::crypto::TAG_LEN;
use wavault::vault::record::{RecordBody, RECORD_PREFIX, RECORD_VERSION};
use wavault::vault::{BotConfig, DiskKeys, Kind, TreeId};
use wavault::Vault;

/// A stored value the scan looks for.
struct Target {
    label: &'static str,
    tree: TreeId,
    key: Vec<u8>,
    /// Possible lengths of the sealed value (`written_at` is a varint).
    sealed_len: RangeInclusive<usize>,
    /// Bytes its data holds.
    needle: Vec<u8>,
}

impl Target {
    fn new(label: &'static str, tree: TreeId, key: Vec<u8>, name: &[u8], data: &[u8]) -> Self {
        let body = RecordBody {
            name: name.to_vec(),
            data: data.to_vec(),
            written_at: 0,
        };
        let min = RECORD_PREFIX + wavault::codec::encode(&body).len() + TAG_LEN;
        Target {
            label,
            tree,
            key,
            sealed_len: min..=min + 9,
            needle: data.to_vec(),
        }
    }
}

/// (target label, term) of every copy of a target value that the raw
/// database files hold and the key file on disk still opens.
fn recoverable(dir: &Path, targets: &[Target]) -> Vec<(&'static str, u32)> {
    let keys = DiskKeys::read(dir, PASS).expect("key file opens with the passphrase");
    let terms = keys.terms();
    let mut found = Vec::new();
    for f in files(&dir.join("db")) {
        let hay = std::fs::read(&f).unwrap();
        for i in 0..hay.len().saturating_sub(RECORD_PREFIX) {
            if hay[i] != RECORD_VERSION {
                continue;
            }
            let term = u32::from_be_bytes(hay[i + 1..i + 5].try_into().unwrap());
            if !terms.contains(&term) {
                continue;
            }
            for t in targets {
                for len in t.sealed_len.clone() {
                    let Some(v) = hay.get(i..i + len) else { break };
                    if let Some((term, body)) = keys.open(t.tree, &t.key, v) {
                        assert_eq!(body.data, t.needle, "{} opened to other data", t.label);
                        found.push((t.label, term));
                    }
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn sweep_json(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let o = run(wavault(dir).args(["sweep", "--json", "--yes"]).args(extra));
    assert_eq!(code(&o), 0, "sweep failed: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).expect("sweep --json prints JSON")
}

fn terms_on_disk(dir: &Path) -> Vec<u32> {
    DiskKeys::read(dir, PASS).unwrap().terms()
}

const CREDENTIAL: &[u8] = b"noise-private-key:4f1c9a7e5b3d2c0e8a6f4b2d9c7e5a3f";
const MESSAGE: &[u8] = b"customer wrote: my card number is 4111 1111 1111 1111";
const PHONE: &str = "5215599887766";

/// Builds the vault: bot `gone` (config with a phone, a credential, a
/// message-like record) and bot `kept` (one record). Returns the targets.
fn build(dir: &Path) -> (Vec<Target>, Target) {
    let v: Vault = new_vault(dir);
    let gone = bot("gone");
    let mut cfg = BotConfig::new(gone.clone());
    cfg.phone = Some(PHONE.into());
    v.add_bot(&cfg).unwrap();
    let view = v.view(&gone);
    view.put(Kind(0x10), b"device", CREDENTIAL).unwrap();
    view.put(Kind::TEST, b"message", MESSAGE).unwrap();
    let kept = v.view(&add_bot(&v, "kept"));
    kept.put(Kind::TEST, b"k", b"kept value").unwrap();
    v.flush().unwrap();
    let cfg_data = wavault::codec::encode(&cfg);
    let targets = vec![
        Target::new(
            "gone config",
            TreeId::Bots,
            v.bot_tag(&gone).to_vec(),
            gone.as_str().as_bytes(),
            &cfg_data,
        ),
        Target::new(
            "gone credential",
            TreeId::Records,
            view.key(Kind(0x10), b"device"),
            b"device",
            CREDENTIAL,
        ),
        Target::new(
            "gone message",
            TreeId::Records,
            view.key(Kind::TEST, b"message"),
            b"message",
            MESSAGE,
        ),
    ];
    let kept = Target::new(
        "kept record",
        TreeId::Records,
        kept.key(Kind::TEST, b"k"),
        b"k",
        b"kept value",
    );
    (targets, kept)
}

#[test]
fn removed_bot_is_unreadable_from_the_files_after_the_next_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut targets, kept) = build(dir);
    let gone_labels: Vec<&str> = targets.iter().map(|t| t.label).collect();
    targets.push(kept);

    let o = run(wavault(dir).args(["bot", "remove", "gone", "--yes"]));
    assert_eq!(code(&o), 0, "bot remove: {}", stderr(&o));

    // Positive control: removed, yet every value still opens from the raw
    // files with the key file as it is now (term 1), so the scan works.
    let before = recoverable(dir, &targets);
    for l in &gone_labels {
        assert!(
            before.contains(&(l, 1)),
            "{l} not found after removal: {before:?}"
        );
    }
    assert_eq!(terms_on_disk(dir), vec![1]);

    // A dry run reports the rotation and does not rotate.
    let dry = sweep_json(dir, &["--dry-run"]);
    assert_eq!(dry["rotation_due"], true, "{dry}");
    assert!(dry["rotated_to_term"].is_null(), "{dry}");
    assert_eq!(terms_on_disk(dir), vec![1]);

    // The sweep rotates the data key: term 1 leaves the key file, and no
    // copy of the removed bot's values opens with what remains.
    let swept = sweep_json(dir, &[]);
    assert_eq!(swept["rotated_to_term"], 2, "{swept}");
    assert_eq!(
        terms_on_disk(dir),
        vec![2],
        "retired term still in the key file"
    );
    let after = recoverable(dir, &targets);
    assert_eq!(
        after,
        vec![("kept record", 2)],
        "only the kept bot's record opens (positive control after rotation)"
    );

    // Nothing deleted since: the next sweep does not rotate.
    let again = sweep_json(dir, &[]);
    assert!(again["rotated_to_term"].is_null(), "{again}");
    assert_eq!(again["rotation_due"], false, "{again}");
    assert_eq!(terms_on_disk(dir), vec![2]);
}

#[test]
fn sweep_with_nothing_deleted_does_not_rotate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir);
    let swept = sweep_json(dir, &[]);
    assert!(swept["rotated_to_term"].is_null(), "{swept}");
    assert_eq!(terms_on_disk(dir), vec![1]);
}

#[test]
fn reauth_and_queue_drop_mark_rotation_due() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path());
    let id = add_bot(&v, "b");
    v.view(&id).put(Kind(0x10), b"device", CREDENTIAL).unwrap();
    wavault::sweep::reauth(&v, &id, PASS, wavault::vault::now()).unwrap();
    assert!(v.rotation_due().unwrap(), "reauth did not mark");
    v.rotate_key(&mut |_, _| {}).unwrap();
    assert!(
        !v.rotation_due().unwrap(),
        "rotation did not clear the mark"
    );

    let q = Queue::new(v.view(&id));
    let now = wavault::vault::now();
    let msg = NewMessage {
        chat: "4915112345678@s.whatsapp.net".into(),
        sender: "4915112345678@s.whatsapp.net".into(),
        id: "OLD".into(),
        summary: String::from_utf8(MESSAGE.to_vec()).unwrap(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(q.enqueue(&[msg], 100, now - 10 * 86_400))
        .unwrap()
        .unwrap();
    let held = rt
        .block_on(q.expire(Duration::from_secs(86_400), now))
        .unwrap();
    assert_eq!(held.len(), 1);
    assert!(
        !v.rotation_due().unwrap(),
        "holding a message deletes nothing"
    );
    assert_eq!(rt.block_on(q.drop_held()).unwrap().len(), 1);
    assert!(v.rotation_due().unwrap(), "queue drop did not mark");
}
