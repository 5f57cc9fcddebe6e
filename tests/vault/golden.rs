//! A vault of format v1, committed under tests/data/golden-v1, must keep opening.
//!
//! Regenerate (only when the format version changes, as a new folder):
//! `WAVAULT_WRITE_GOLDEN=1 cargo test --test vault golden::write -- --ignored`

use crate::common::*;
use std::path::PathBuf;
use wavault::vault::Kind;
use wavault::Vault;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden-v1")
}

const BOTS: [&str; 2] = ["golden-a", "golden-b"];

fn record(b: &str, i: usize) -> (Vec<u8>, Vec<u8>) {
    (
        format!("name-{i}").into_bytes(),
        format!("{b} value {i}").into_bytes(),
    )
}

#[test]
#[ignore = "writes the golden vault; run by hand when a new format version is introduced"]
fn write() {
    if std::env::var_os("WAVAULT_WRITE_GOLDEN").is_none() {
        return;
    }
    let dir = golden_dir();
    assert!(!dir.exists(), "golden vault exists; never overwrite one");
    let v = new_vault(&dir);
    for b in BOTS {
        let view = v.view(&add_bot(&v, b));
        for i in 0..10 {
            let (n, d) = record(b, i);
            view.put(Kind::TEST, &n, &d).unwrap();
        }
    }
    v.flush().unwrap();
    drop(v);
    std::fs::remove_file(dir.join("wavault.lock")).unwrap();
}

#[test]
fn golden_v1_vault_opens_and_reads() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&golden_dir(), tmp.path());
    let v = Vault::open(tmp.path(), PASS).expect("golden v1 vault opens");
    let ids: Vec<String> = v
        .list_bots()
        .unwrap()
        .into_iter()
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(ids, BOTS);
    for b in BOTS {
        let view = v.view(&bot(b));
        for i in 0..10 {
            let (n, d) = record(b, i);
            assert_eq!(view.get(Kind::TEST, &n).unwrap(), Some(d));
        }
    }
    assert!(v.validate().unwrap().is_sound());
}
