//! Tampering with stored records is detected and named; the rest still reads.

use crate::common::*;
use wavault::vault::{hex, Kind};
use wavault::Vault;

/// Edits the raw sled tree `records` of a closed vault.
fn edit_records(dir: &std::path::Path, f: impl FnOnce(&sled::Tree)) {
    let db = sled::open(dir.join("db")).expect("open sled directly");
    let t = db.open_tree("records").expect("records tree");
    f(&t);
    db.flush().expect("flush");
}

#[test]
fn flipped_byte_is_named_by_validate_and_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let (victim, expected) = {
        let v = new_vault(dir.path());
        let e = fill(&v, 2, 5);
        (v.view(&e[0].0).key(Kind::TEST, &e[0].1), e)
    };
    edit_records(dir.path(), |t| {
        let mut val = t.get(&victim).unwrap().expect("victim exists").to_vec();
        let last = val.len() - 1;
        val[last] ^= 0x01;
        t.insert(&victim, val).unwrap();
    });
    let v = Vault::open(dir.path(), PASS).unwrap();
    let report = v.validate().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].key, hex(&victim));
    assert_eq!(report.problems[0].bot.as_deref(), Some("bot-0"));
    check(&v, &expected[1..]);
    assert!(v
        .view(&expected[0].0)
        .get(Kind::TEST, &expected[0].1)
        .is_err());
    drop(v);
    let out = run(wavault(dir.path()).arg("validate"));
    assert_eq!(code(&out), 5, "{}", stdout(&out));
    assert!(stdout(&out).contains(&hex(&victim)), "{}", stdout(&out));
}

#[test]
fn value_moved_to_another_key_or_bot_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (a0, a1, b0) = {
        let v = new_vault(dir.path());
        let e = fill(&v, 2, 2);
        let key = |i: usize| v.view(&e[i].0).key(Kind::TEST, &e[i].1);
        (key(0), key(1), key(2))
    };
    edit_records(dir.path(), |t| {
        let val = t.get(&a0).unwrap().unwrap();
        t.insert(&a1, val.clone()).unwrap(); // same bot, other key
        t.insert(&b0, val).unwrap(); // other bot
    });
    let v = Vault::open(dir.path(), PASS).unwrap();
    let report = v.validate().unwrap();
    let mut bad: Vec<_> = report.problems.iter().map(|p| p.key.clone()).collect();
    bad.sort();
    let mut want = vec![hex(&a1), hex(&b0)];
    want.sort();
    assert_eq!(bad, want);
}

#[test]
fn value_from_another_vault_is_detected() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    // Same bot id and record name in two vaults: the blind keys differ, so
    // copy under the target vault's key to isolate the vault-id binding.
    let (stolen, target_key) = {
        let v1 = new_vault(d1.path());
        let e1 = fill(&v1, 1, 1);
        let k1 = v1.view(&e1[0].0).key(Kind::TEST, &e1[0].1);
        drop(v1);
        let db = sled::open(d1.path().join("db")).unwrap();
        let val = db
            .open_tree("records")
            .unwrap()
            .get(&k1)
            .unwrap()
            .unwrap()
            .to_vec();
        drop(db);
        let v2 = new_vault(d2.path());
        let e2 = fill(&v2, 1, 1);
        (val, v2.view(&e2[0].0).key(Kind::TEST, &e2[0].1))
    };
    edit_records(d2.path(), |t| {
        t.insert(&target_key, stolen).unwrap();
    });
    let v2 = Vault::open(d2.path(), PASS).unwrap();
    let report = v2.validate().unwrap();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].key, hex(&target_key));
}

#[test]
fn corrupt_database_files_give_exit_5_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    drop(new_vault(dir.path()));
    for f in files(&dir.path().join("db")) {
        let len = std::fs::metadata(&f).unwrap().len() as usize;
        std::fs::write(&f, vec![0xA5; len.max(64)]).unwrap();
    }
    let out = run(wavault(dir.path()).arg("validate"));
    assert_eq!(
        code(&out),
        5,
        "stdout {} stderr {}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("restore"),
        "the message names the way out: {err}"
    );
}

#[test]
fn tampered_key_file_is_reported_as_damaged() {
    let dir = tempfile::tempdir().unwrap();
    drop(new_vault(dir.path()));
    let p = dir.path().join(wavault::vault::KEY_FILE);
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 40] ^= 0x10; // inside the term list, covered by the header MAC
    std::fs::write(&p, b).unwrap();
    let out = run(wavault(dir.path()).arg("validate"));
    assert_eq!(code(&out), 5, "{}", stderr(&out));
}
