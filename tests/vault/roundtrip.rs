//! Round trips through close and reopen; wrong passphrase; KDF caps; rotation.

use crate::common::*;
use wavault::error::Error;
use wavault::vault::header::Header;
use wavault::vault::{BatchOp, Kind, KEY_FILE};
use wavault::Vault;

#[test]
fn records_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let v = new_vault(dir.path());
        fill(&v, 3, 20)
    };
    let v = Vault::open(dir.path(), PASS).expect("reopen");
    check(&v, &expected);
    assert_eq!(v.list_bots().unwrap().len(), 3);
}

#[test]
fn wrong_passphrase_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    drop(new_vault(dir.path()));
    let before: Vec<_> = files(dir.path())
        .into_iter()
        .filter(|p| !p.ends_with("wavault.lock"))
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    match Vault::open(dir.path(), b"not the passphrase") {
        Err(Error::WrongPassphrase(_)) => {}
        other => panic!("expected WrongPassphrase, got {other:?}"),
    }
    for (p, bytes) in before {
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "{} changed", p.display());
    }
}

#[test]
fn crafted_kdf_params_above_cap_are_refused_before_work() {
    let dir = tempfile::tempdir().unwrap();
    drop(new_vault(dir.path()));
    let path = dir.path().join(KEY_FILE);
    let mut h = Header::parse(&std::fs::read(&path).unwrap()).unwrap();
    h.slots[0].params.memory_kib = 64 * 1024 * 1024; // 64 GiB
    std::fs::write(&path, h.to_bytes()).unwrap();
    let start = std::time::Instant::now();
    match Vault::open(dir.path(), PASS) {
        Err(e @ Error::Damaged { .. }) => assert!(e.to_string().contains("above the cap"), "{e}"),
        other => panic!("expected a cap error, got {other:?}"),
    }
    // Not a timing assertion of speed: 64 GiB of Argon2 would not even allocate.
    let _ = start;
}

#[test]
fn passphrase_rotation_swaps_the_only_valid_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let v = new_vault(dir.path());
        let e = fill(&v, 1, 5);
        v.rotate_passphrase(b"new passphrase", None).unwrap();
        e
    };
    assert!(matches!(
        Vault::open(dir.path(), PASS),
        Err(Error::WrongPassphrase(_))
    ));
    let v = Vault::open(dir.path(), b"new passphrase").unwrap();
    check(&v, &expected);
}

#[test]
fn key_rotation_reseals_everything_and_retires_the_old_term() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let expected = fill(&v, 2, 50);
    assert_eq!(v.active_term(), 1);
    let r = v.rotate_key(&mut |_, _| {}).unwrap();
    assert_eq!(
        (r.new_term, r.retired.clone(), r.resumed),
        (2, vec![1], false)
    );
    assert_eq!(r.resealed, 102, "100 records + 2 bot entries");
    drop(v);
    let v = Vault::open(dir.path(), PASS).unwrap();
    assert_eq!(v.terms(), vec![(2, false)]);
    check(&v, &expected);
    assert!(v.validate().unwrap().is_sound());
}

#[test]
fn batches_take_and_update_behave() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let b = add_bot(&v, "a");
    let view = v.view(&b);
    view.apply(&[
        BatchOp::Put {
            kind: Kind::TEST,
            name: b"x".to_vec(),
            data: b"1".to_vec(),
        },
        BatchOp::Put {
            kind: Kind::TEST,
            name: b"y".to_vec(),
            data: b"2".to_vec(),
        },
    ])
    .unwrap();
    assert_eq!(view.count(Kind::TEST).unwrap(), 2);
    assert_eq!(
        view.take(Kind::TEST, b"x").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(view.take(Kind::TEST, b"x").unwrap(), None);
    let new = view
        .update(Kind::TEST, b"y", |old| {
            Some([old.unwrap_or_default(), b"3"].concat())
        })
        .unwrap();
    assert_eq!(new.as_deref(), Some(&b"23"[..]));
    let mut names: Vec<_> = view
        .scan(Kind::TEST)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    assert_eq!(names, vec![b"y".to_vec()]);
}

#[test]
fn remove_bot_leaves_no_orphans_and_other_bots_intact() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let expected = fill(&v, 2, 10);
    let r = v.remove_bot(&bot("bot-0")).unwrap();
    assert_eq!(r.records, 10);
    let report = v.validate().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
    assert_eq!(
        (report.records, report.orphans, report.bots.len()),
        (10, 0, 1)
    );
    check(&v, &expected[10..]);
    assert!(matches!(v.bot(&bot("bot-0")), Err(Error::NotFound(_))));
}

#[test]
fn second_open_reports_vault_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _v = new_vault(dir.path());
    match Vault::open(dir.path(), PASS) {
        Err(Error::VaultInUse { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
        other => panic!("expected VaultInUse, got {other:?}"),
    }
}

/// DESIGN (Durability): 64 concurrent durable writes use "far fewer than 64
/// fsyncs". All 64 writes are made before any caller asks for durability (a
/// barrier), so the callers really are concurrent; a group commit then needs
/// a handful of flushes (each covers every ticket taken while the previous
/// one ran). Without group commit it would be 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_durable_calls_share_fsyncs() {
    const CALLERS: usize = 64;
    /// "Far fewer": at most a quarter, with room for a loaded machine.
    const MAX_FSYNCS: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let b = add_bot(&v, "a");
    let before = v.flush_count();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CALLERS));
    let mut tasks = Vec::new();
    for i in 0..CALLERS as u32 {
        let view = v.view(&b);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            view.put(Kind::TEST, &i.to_be_bytes(), b"v").unwrap();
            barrier.wait().await;
            view.durable().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let used = v.flush_count() - before;
    assert!(
        (1..=MAX_FSYNCS).contains(&used),
        "{CALLERS} concurrent durable writes used {used} fsyncs, not far fewer than {CALLERS} (at most {MAX_FSYNCS})"
    );
}
