//! Backups: export on one vault, restore into another; every damaged file
//! rejected with the vault untouched; SIGKILL during restore; exit codes.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wacore::store::traits::{Backend, DeviceStore, SignalStore};
use wavault::backup::archive;
use wavault::backup::stream::{FULL_CHUNK_FRAME, HEADER_LEN};
use wavault::vault::{BotDump, Kind};
use wavault::Vault;

use crate::signal_state;

const BACKUP_PASS: &[u8] = b"a different backup passphrase";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// A vault with `n` bots carrying realistic Signal state, session metadata
/// and history.
fn vault_with_state(dir: &Path, n: u64) -> Vault {
    let v = new_vault(dir);
    rt().block_on(async {
        for i in 0..n {
            let id = add_bot(&v, &format!("bot-{i}"));
            let backend: Arc<dyn Backend> = v.bot_backend(&id).unwrap();
            signal_state::fill(&backend, i).await;
            let s = wavault::sessions::Sessions::new(v.view(&id));
            s.set_status(
                1_700_000_000,
                wavault::sessions::Status::Connected,
                Some("test"),
            )
            .unwrap();
            s.record_attempt(1_700_000_001, Some("refused")).unwrap();
        }
    });
    v.flush().unwrap();
    v
}

fn export_all(v: &Vault, file: &Path) -> archive::ExportReport {
    archive::export(v, &[], file, BACKUP_PASS, CHEAP, &mut |_, _| {}).unwrap()
}

fn restore_file(v: &Vault, file: &Path, force: bool) -> wavault::Result<archive::RestoreReport> {
    let (_, b) = archive::read_file(file, BACKUP_PASS, &mut |_, _| {})?;
    archive::restore(v, &b, &[], force, &mut |_| Ok(None), &mut |_, _| {})
}

#[test]
fn round_trip_between_vaults_with_different_passphrases() {
    let tmp = tempfile::tempdir().unwrap();
    let a = vault_with_state(&tmp.path().join("a"), 3);
    let file = tmp.path().join("all.wvb");
    let report = export_all(&a, &file);
    assert_eq!(report.bots, ["bot-0", "bot-1", "bot-2"]);
    assert!(
        report.bytes > 3 * 60_000,
        "realistic state: {} bytes",
        report.bytes
    );
    let mode = std::fs::metadata(&file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let b = Vault::create(&tmp.path().join("b"), b"another vault passphrase", CHEAP).unwrap();
    assert_ne!(a.id(), b.id());
    let r = restore_file(&b, &file, false).unwrap();
    assert_eq!(r.restored.len(), 3);
    assert!(r.replaced.is_empty());
    // Every record equal, including write times.
    assert_eq!(dumps(&a), dumps(&b));
    // And through the backend API, as whatsapp-rust reads it.
    rt().block_on(async {
        for i in 0..3 {
            let id = bot(&format!("bot-{i}"));
            let (x, y) = (a.bot_backend(&id).unwrap(), b.bot_backend(&id).unwrap());
            let (dx, dy) = (
                x.load().await.unwrap().unwrap(),
                y.load().await.unwrap().unwrap(),
            );
            assert_eq!(dx.pn, dy.pn);
            assert_eq!(dx.identity_key.public_key, dy.identity_key.public_key);
            assert_eq!(
                dx.noise_key.private_key.serialize(),
                dy.noise_key.private_key.serialize()
            );
            let addr = format!("{}.0:0", 4_917_000_000_007u64);
            assert_eq!(
                x.get_session(&addr).await.unwrap(),
                y.get_session(&addr).await.unwrap()
            );
            assert!(y.get_session(&addr).await.unwrap().is_some());
            assert_eq!(
                x.load_identity(&addr).await.unwrap(),
                y.load_identity(&addr).await.unwrap()
            );
            assert_eq!(
                x.load_prekey(42).await.unwrap(),
                y.load_prekey(42).await.unwrap()
            );
            assert_eq!(
                x.get_max_prekey_id().await.unwrap(),
                y.get_max_prekey_id().await.unwrap()
            );
        }
    });
    let sa = wavault::sessions::Sessions::new(b.view(&bot("bot-1")));
    assert_eq!(sa.history().unwrap().len(), 1, "history travelled");
    assert_eq!(
        sa.load(0).unwrap().connection_attempts,
        1,
        "metadata travelled"
    );
    assert!(a.validate().unwrap().is_sound());
    assert!(b.validate().unwrap().is_sound());

    // A second restore without --force refuses and changes nothing.
    let before = dumps(&b);
    let err = restore_file(&b, &file, false).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(dumps(&b), before);
}

#[test]
fn force_replaces_wholly_and_takes_an_automatic_backup_first() {
    let tmp = tempfile::tempdir().unwrap();
    let v = vault_with_state(&tmp.path().join("v"), 2);
    let file = tmp.path().join("b.wvb");
    export_all(&v, &file);
    let exported = dumps(&v);
    // Change bot-0 after the export: an extra record the backup lacks.
    v.view(&bot("bot-0"))
        .put(Kind::TEST, b"later", b"x")
        .unwrap();
    let changed = v.dump_bot(&bot("bot-0")).unwrap();
    let (_, backup) = archive::read_file(&file, BACKUP_PASS, &mut |_, _| {}).unwrap();
    let mut autos = Vec::new();
    let report = archive::restore(
        &v,
        &backup,
        &[bot("bot-0")],
        true,
        &mut |bots| {
            let p = wavault::backup::auto::take(&v, bots, PASS, "restore")?;
            autos.push(p.clone());
            Ok(Some(p))
        },
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(report.replaced, ["bot-0"]);
    assert_eq!(
        dumps(&v),
        exported,
        "wholly the backed-up state, extra record gone"
    );
    // The automatic backup holds the state just replaced, under the vault passphrase.
    let (_, auto) = archive::read_file(&autos[0], PASS, &mut |_, _| {}).unwrap();
    assert_eq!(auto.bots, vec![changed]);
    assert!(autos[0].starts_with(tmp.path().join("v/backups")));
}

#[test]
fn selected_bots_only_and_unknown_bot_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let a = vault_with_state(&tmp.path().join("a"), 3);
    let file = tmp.path().join("b.wvb");
    archive::export(
        &a,
        &[bot("bot-2"), bot("bot-0")],
        &file,
        BACKUP_PASS,
        CHEAP,
        &mut |_, _| {},
    )
    .unwrap();
    let b = new_vault(&tmp.path().join("b"));
    let (_, backup) = archive::read_file(&file, BACKUP_PASS, &mut |_, _| {}).unwrap();
    let ids: Vec<_> = backup
        .manifest
        .bots
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(ids, ["bot-0", "bot-2"]);
    let err = archive::restore(
        &b,
        &backup,
        &[bot("bot-1")],
        false,
        &mut |_| Ok(None),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 6, "{err}");
    assert!(b.list_bots().unwrap().is_empty(), "nothing changed");
    archive::restore(
        &b,
        &backup,
        &[bot("bot-2")],
        false,
        &mut |_| Ok(None),
        &mut |_, _| {},
    )
    .unwrap();
    let listed: Vec<_> = b
        .list_bots()
        .unwrap()
        .into_iter()
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(listed, ["bot-2"]);
}

/// Every damaged variant of a multi-chunk file is refused by restore, with
/// the target vault unchanged.
#[test]
fn damaged_files_are_rejected_and_the_vault_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let src = vault_with_state(&tmp.path().join("src"), 3);
    let file = tmp.path().join("good.wvb");
    export_all(&src, &file);
    let good = std::fs::read(&file).unwrap();
    // The target already holds one bot that a bad restore must not touch.
    let target = vault_with_state(&tmp.path().join("t"), 1);
    let before = dumps(&target);
    // Layout (FORMAT.md): header, then full chunks of FULL_CHUNK_FRAME bytes, then the last one.
    let (header, chunk) = (HEADER_LEN, FULL_CHUNK_FRAME);
    assert!(
        good.len() > header + 3 * chunk,
        "file spans several chunks: {}",
        good.len()
    );

    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut rng = Rng(seed());
    // Truncations: at every chunk boundary (and the header's end), plus random cuts.
    let mut cut = header;
    while cut < good.len() {
        cases.push((
            format!("truncated at chunk boundary {cut}"),
            good[..cut].to_vec(),
        ));
        cut += chunk;
    }
    for _ in 0..12 {
        let at = rng.below(good.len() as u64) as usize;
        cases.push((format!("truncated at random {at}"), good[..at].to_vec()));
    }
    cases.push((
        "truncated by one byte".into(),
        good[..good.len() - 1].to_vec(),
    ));
    // Flipped bytes: header region and payload.
    for _ in 0..16 {
        let at = rng.below(good.len() as u64) as usize;
        let mut bad = good.clone();
        bad[at] ^= 1 << rng.below(8);
        cases.push((format!("bit flip at {at}"), bad));
    }
    for at in 0..header {
        let mut bad = good.clone();
        bad[at] ^= 0x80;
        cases.push((format!("header flip at {at}"), bad));
    }
    // Trailing bytes.
    let mut longer = good.clone();
    longer.extend_from_slice(b"x");
    cases.push(("one trailing byte".into(), longer));
    let mut longer = good.clone();
    longer.extend_from_slice(&good[good.len() - chunk.min(good.len() / 2)..]);
    cases.push(("a repeated tail".into(), longer));
    // Swapped, dropped and duplicated full chunks.
    let (c0, c1, c2) = (header, header + chunk, header + 2 * chunk);
    let mut swapped = good.clone();
    swapped[c0..c1].copy_from_slice(&good[c1..c2]);
    swapped[c1..c2].copy_from_slice(&good[c0..c1]);
    cases.push(("chunks 0 and 1 swapped".into(), swapped));
    cases.push((
        "chunk 1 dropped".into(),
        [&good[..c1], &good[c2..]].concat(),
    ));
    cases.push((
        "chunk 0 duplicated".into(),
        [&good[..c1], &good[c0..]].concat(),
    ));

    // The exit code each damage must give (README, exit codes; FORMAT.md,
    // reading order): 5 for everything, except a changed header byte that
    // feeds the key-wrap check (salt, nonces, wrapped key: 3, it reads as a
    // wrong passphrase) or the Argon2id parameters (3 when still under the
    // cap, 5 above it).
    let expected_codes = |good: &[u8], bad: &[u8]| -> &'static [u8] {
        let first_diff = good.iter().zip(bad).position(|(a, b)| a != b);
        match first_diff {
            Some(at) if bad.len() == good.len() && (9..21).contains(&at) => &[3, 5],
            Some(at) if bad.len() == good.len() && (21..125).contains(&at) => &[3],
            _ => &[5],
        }
    };
    let bad_path = tmp.path().join("bad.wvb");
    for (what, bytes) in &cases {
        std::fs::write(&bad_path, bytes).unwrap();
        match restore_file(&target, &bad_path, true) {
            Ok(r) => panic!("{what}: accepted ({r:?})"),
            Err(e) => {
                let want = expected_codes(&good, bytes);
                assert!(
                    want.contains(&e.exit_code()),
                    "{what}: exit {} instead of {want:?}: {e}",
                    e.exit_code()
                )
            }
        }
    }
    // A wrong passphrase on an intact file stays 3.
    let e = archive::read_file(&file, b"not the passphrase", &mut |_, _| {}).unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert_eq!(dumps(&target), before, "the vault is unchanged");
    assert!(target.validate().unwrap().is_sound());
    eprintln!("{} damaged variants rejected", cases.len());
}

/// `export --move` disables the exported bots only once the file is verified.
#[test]
fn export_move_disables_at_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    drop(vault_with_state(&dir, 2));
    let file = tmp.path().join("moved.wvb");
    let pass_file = tmp.path().join("backup-pass");
    std::fs::write(&pass_file, BACKUP_PASS).unwrap();
    let out = run(wavault(&dir)
        .args(["export", "--bot", "bot-1", "--move", "-o"])
        .arg(&file)
        .arg("--backup-passphrase-file")
        .arg(&pass_file)
        .args(CHEAP_KDF_ARGS));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = Vault::open(&dir, PASS).unwrap();
    assert!(
        !v.bot_config(&bot("bot-1")).unwrap().enabled,
        "moved bot disabled"
    );
    assert!(
        v.bot_config(&bot("bot-0")).unwrap().enabled,
        "others untouched"
    );
    let (_, b) = archive::read_file(&file, BACKUP_PASS, &mut |_, _| {}).unwrap();
    assert!(
        b.bots[0].config.enabled,
        "the file carries it enabled for the new host"
    );
    drop(v);
    // Exporting onto an existing file is refused and leaves it alone.
    let before = std::fs::read(&file).unwrap();
    let out = run(wavault(&dir)
        .args(["export", "-o"])
        .arg(&file)
        .arg("--backup-passphrase-file")
        .arg(&pass_file)
        .args(CHEAP_KDF_ARGS));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

/// Exit codes and messages of `restore` and `backup inspect` on bad input.
#[test]
fn cli_errors_name_the_problem_with_their_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    drop(vault_with_state(&src, 2));
    let dst = tmp.path().join("dst");
    drop(new_vault(&dst));
    let file = tmp.path().join("b.wvb");
    let out = run(wavault(&src)
        .args(["export", "-o"])
        .arg(&file)
        .env("WAVAULT_BACKUP_PASSPHRASE", "backup pw")
        .args(CHEAP_KDF_ARGS));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let good = std::fs::read(&file).unwrap();

    let inspect = |f: &Path, pw: &str| {
        run(wavault(&dst)
            .args(["backup", "inspect", "--json"])
            .arg(f)
            .env("WAVAULT_BACKUP_PASSPHRASE", pw))
    };
    let out = inspect(&file, "backup pw");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["bots"].as_array().unwrap().len(), 2);
    assert_eq!(v["bots"][0]["credentials"], "paired");
    assert_eq!(v["format_version"], 1);

    let restore = |f: &Path, pw: &str| {
        run(wavault(&dst)
            .arg("restore")
            .arg(f)
            .env("WAVAULT_BACKUP_PASSPHRASE", pw))
    };
    let out = restore(&file, "wrong");
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("wrong passphrase for this backup"),
        "{}",
        stderr(&out)
    );

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() - 100].to_vec(), "truncated"),
        (
            "trailing",
            [good.as_slice(), b"zz"].concat(),
            "after its last chunk",
        ),
        (
            "not a backup",
            b"hello, this is not a backup file at all".to_vec(),
            "not a wavault backup",
        ),
        (
            "future version",
            {
                let mut b = good.clone();
                b[8] = 99;
                b
            },
            "newer",
        ),
        (
            "flipped payload",
            {
                let mut b = good.clone();
                let at = good.len() - 50;
                b[at] ^= 4;
                b
            },
            "chunk",
        ),
    ];
    let bad = tmp.path().join("bad.wvb");
    for (what, bytes, needle) in cases {
        std::fs::write(&bad, bytes).unwrap();
        let out = restore(&bad, "backup pw");
        assert_eq!(code(&out), 5, "{what}: {}", stderr(&out));
        assert!(
            stderr(&out).to_lowercase().contains(needle),
            "{what}: message should mention {needle:?}: {}",
            stderr(&out)
        );
    }
    let out = restore(&tmp.path().join("missing.wvb"), "backup pw");
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    // Nothing reached the target vault through all of that.
    let out = run(wavault(&dst).args(["bot", "list", "--json"]));
    assert_eq!(stdout(&out).trim(), "[]");
    // The good file restores; a second time needs --force.
    assert_eq!(code(&restore(&file, "backup pw")), 0);
    let out = restore(&file, "backup pw");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"));
    let out = run(wavault(&dst)
        .args(["restore", "--force"])
        .arg(&file)
        .env("WAVAULT_BACKUP_PASSPHRASE", "backup pw"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("automatic backup"),
        "{}",
        stdout(&out)
    );
    let out = run(wavault(&dst).args(["backup", "list"]));
    assert!(stdout(&out).contains("auto-"), "{}", stdout(&out));
}

/// Random-moment kills of the restore.
const KILLS: usize = 20;
/// Pause-point kills: after the first, third and fifth of six bots.
const PAUSE_HITS: [usize; 3] = [1, 3, 5];
/// Bots per durable flush in the killed restores.
const GROUP: usize = 2;

/// SIGKILL `wavault restore --force` between two bots (at a pause point) and
/// at random moments: every reopen succeeds and every bot is wholly the old
/// state or wholly the new one; a kill right after a group's flush leaves
/// exactly the bots restored so far new; a kill after a bot's transaction,
/// before its group's flush, leaves at least the earlier groups new and no
/// bot after it; a child that finished first left every bot new; a child
/// that ended any other way fails the test.
#[test]
fn restore_survives_sigkill_at_random_points() {
    let tmp = tempfile::tempdir().unwrap();
    // New state: 6 bots as exported from elsewhere.
    let file = tmp.path().join("new.wvb");
    let new: Vec<BotDump> = {
        let src = vault_with_state(&tmp.path().join("src"), 6);
        export_all(&src, &file);
        dumps(&src)
    };
    // Old state: the same bot ids with different contents.
    let dir = tmp.path().join("v");
    let old: Vec<BotDump> = {
        let v = new_vault(&dir);
        for i in 0..6 {
            let id = add_bot(&v, &format!("bot-{i}"));
            for r in 0..40 {
                v.view(&id)
                    .put(Kind::TEST, format!("old-{r}").as_bytes(), &[i as u8; 300])
                    .unwrap();
            }
        }
        v.flush().unwrap();
        dumps(&v)
    };
    let restore = || {
        let mut c = wavault(&dir);
        c.args(["restore", "--force"])
            .arg(&file)
            .env(
                "WAVAULT_BACKUP_PASSPHRASE",
                std::str::from_utf8(BACKUP_PASS).unwrap(),
            )
            .env(archive::TEST_GROUP_ENV, GROUP.to_string());
        c
    };
    // Reopens, checks each bot is wholly old or new, puts the old state back
    // for the next run; returns how many bots were new.
    let inspect_and_reset = |ctx: &str| -> usize {
        let v = Vault::open(&dir, PASS).unwrap_or_else(|e| panic!("reopen after {ctx}: {e}"));
        let now = dumps(&v);
        assert_eq!(now.len(), 6, "{ctx}");
        let mut n_new = 0;
        for (j, d) in now.iter().enumerate() {
            if *d == new[j] {
                n_new += 1;
            } else {
                assert_eq!(
                    *d, old[j],
                    "{ctx}: bot-{j} is neither wholly old nor wholly new"
                );
            }
        }
        for d in &old {
            v.replace_bot(d).unwrap();
        }
        assert!(v.validate().unwrap().is_sound(), "{ctx}");
        n_new
    };
    for hit in PAUSE_HITS {
        kill_at(&mut restore(), "restore-bot-replaced", hit as u64);
        let n_new = inspect_and_reset(&format!("the kill after bot {hit} of 6"));
        let flushed = (hit - 1) / GROUP * GROUP;
        assert!(
            (flushed..=hit).contains(&n_new),
            "killed after bot {hit} of 6 was applied, {flushed} flushed: {n_new} are new"
        );
    }
    for group in 1..=2 {
        kill_at(&mut restore(), "restore-group-durable", group as u64);
        let n_new = inspect_and_reset(&format!("the kill after group {group}"));
        assert_eq!(
            n_new,
            group * GROUP,
            "killed after the flush of group {group}: {n_new} bots are new"
        );
    }
    // Calibrate: how long does one uninterrupted restore take?
    let full = {
        let t = Instant::now();
        let out = run(&mut restore());
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let elapsed = t.elapsed();
        assert_eq!(inspect_and_reset("a full restore"), 6);
        elapsed
    };
    let seed = seed();
    eprintln!("kill schedule seed {seed} (WAVAULT_TEST_SEED replays); full restore {full:?}");
    let mut rng = Rng(seed);
    let (mut mixed_runs, mut killed) = (0, 0);
    for i in 0..KILLS {
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
        let ctx = format!("kill {i} ({delay:?})");
        let ended = kill_after(&mut restore(), delay, &ctx);
        let n_new = inspect_and_reset(&ctx);
        match ended {
            Ended::Killed => killed += 1,
            Ended::Finished => assert_eq!(n_new, 6, "{ctx}: the restore exited 0"),
        }
        if n_new > 0 && n_new < 6 {
            mixed_runs += 1;
        }
    }
    eprintln!(
        "{killed} of {KILLS} random kills by SIGKILL (the rest after the exit); {mixed_runs} stopped between bots"
    );
}

/// Where the golden backup lives.
fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden-backup-v1.wvb")
}

/// The committed v1 backup restores, today and after any format change.
#[test]
fn golden_backup_v1_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path());
    let (_, b) = archive::read_file(&golden_path(), b"golden backup passphrase", &mut |_, _| {})
        .expect("golden backup reads");
    assert_eq!(b.header.version, 1);
    let ids: Vec<_> = b.manifest.bots.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(ids, ["golden-a", "golden-b"]);
    archive::restore(&v, &b, &[], false, &mut |_| Ok(None), &mut |_, _| {}).unwrap();
    let view = v.view(&bot("golden-a"));
    assert_eq!(
        view.get(Kind::TEST, b"greeting").unwrap().as_deref(),
        Some(&b"hello from v1"[..])
    );
    assert_eq!(
        wavault::store::credentials_state(&view).map(|c| c.as_str()),
        Some("paired")
    );
    assert!(!v.bot_config(&bot("golden-b")).unwrap().enabled);
    assert!(v.validate().unwrap().is_sound());
}

/// Writes tests/data/golden-backup-v1.wvb. Run by hand once per format version:
/// `WAVAULT_WRITE_GOLDEN=1 cargo test --test vault backup::write_golden -- --ignored`
#[test]
#[ignore = "writes the golden file; run by hand"]
fn write_golden() {
    if std::env::var_os("WAVAULT_WRITE_GOLDEN").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path());
    let a = add_bot(&v, "golden-a");
    rt().block_on(async {
        let backend: Arc<dyn Backend> = v.bot_backend(&a).unwrap();
        signal_state::fill(&backend, 7).await;
    });
    v.view(&a)
        .put(Kind::TEST, b"greeting", b"hello from v1")
        .unwrap();
    let b = add_bot(&v, "golden-b");
    let mut cfg = v.bot_config(&b).unwrap();
    cfg.enabled = false;
    v.set_bot(&cfg).unwrap();
    let _ = std::fs::remove_file(golden_path());
    archive::export(
        &v,
        &[],
        &golden_path(),
        b"golden backup passphrase",
        CHEAP,
        &mut |_, _| {},
    )
    .unwrap();
}

fn backup_env(c: &mut std::process::Command) -> &mut std::process::Command {
    c.env(
        "WAVAULT_BACKUP_PASSPHRASE",
        std::str::from_utf8(BACKUP_PASS).unwrap(),
    )
}

fn bot_json(dir: &Path, id: &str) -> serde_json::Value {
    let out = run(wavault(dir).args(["bot", "show", id, "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// A backup made elsewhere brings no hook command or webhook unless
/// `--keep-hooks`; `backup inspect` and `restore` show them either way.
#[test]
fn restore_drops_hooks_unless_keep_hooks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    crate::cli::init(&src);
    let marker = tmp.path().join("hook-ran");
    let cmd = format!("touch {}", marker.display());
    let url = "https://hooks.example/in";
    for args in [
        vec!["bot", "add", "hooked", "--disabled", "--on-message", &cmd],
        vec!["bot", "add", "web", "--disabled", "--webhook", url],
        vec!["bot", "add", "plain", "--disabled"],
    ] {
        let out = run(wavault(&src).args(&args));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let file = tmp.path().join("hooks.wvb");
    let out = run(backup_env(wavault(&src).args(["export", "-o"]).arg(&file)).args(CHEAP_KDF_ARGS));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let out = run(backup_env(
        wavault(&src)
            .args(["backup", "inspect", "--json"])
            .arg(&file),
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let by_id = |id: &str| {
        v["bots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("hooked")["on_message"], cmd.as_str());
    assert_eq!(by_id("web")["webhook"], url);
    assert_eq!(by_id("plain")["webhook"], serde_json::Value::Null);
    let out = run(backup_env(
        wavault(&src).args(["backup", "inspect"]).arg(&file),
    ));
    assert!(stdout(&out).contains(&cmd), "{}", stdout(&out));
    assert!(stdout(&out).contains(url), "{}", stdout(&out));

    // Without --keep-hooks: restored, hooks removed, and said so per bot.
    let plain_dst = tmp.path().join("dst");
    crate::cli::init(&plain_dst);
    let out = run(backup_env(wavault(&plain_dst).arg("restore").arg(&file)));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("bot hooked: hooks not restored")
            && text.contains("bot web: hooks not restored")
            && text.contains(&cmd)
            && text.contains("--keep-hooks"),
        "{text}"
    );
    for id in ["hooked", "web"] {
        let b = bot_json(&plain_dst, id);
        assert_eq!(b["on_message"], serde_json::Value::Null, "{id}: {b}");
        assert_eq!(b["webhook"], serde_json::Value::Null, "{id}: {b}");
    }
    let out = run(backup_env(
        wavault(&plain_dst)
            .args(["restore", "--force", "--json"])
            .arg(&file),
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let hooked = r["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["bot"] == "hooked")
        .cloned()
        .unwrap();
    assert_eq!(hooked["on_message"], cmd.as_str());
    assert_eq!(hooked["restored"], false);
    assert_eq!(
        bot_json(&plain_dst, "hooked")["on_message"],
        serde_json::Value::Null
    );

    // With --keep-hooks: written and printed.
    let keep_dst = tmp.path().join("keep");
    crate::cli::init(&keep_dst);
    let out = run(backup_env(
        wavault(&keep_dst)
            .args(["restore", "--keep-hooks"])
            .arg(&file),
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "bot hooked: hooks restored: on-message command `{cmd}`"
        )) && text.contains(&format!("bot web: hooks restored: webhook {url}")),
        "{text}"
    );
    assert_eq!(bot_json(&keep_dst, "hooked")["on_message"], cmd.as_str());
    assert_eq!(bot_json(&keep_dst, "web")["webhook"], url);
    assert!(!marker.exists(), "nothing ran the hook");
}

/// A backup whose configuration an operator could not have typed here
/// (forged through the library) is refused whole: exit 5, bot and field named.
#[test]
fn restore_refuses_configs_an_operator_could_not_type() {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("dst");
    crate::cli::init(&dst);
    type Forge = fn(&mut wavault::vault::BotConfig);
    let cases: [(&str, Forge, &str); 4] = [
        (
            "webhook",
            |c| c.webhook = Some("file:///etc/passwd".into()),
            "webhook",
        ),
        (
            "concurrency",
            |c| {
                c.extra.insert("hook_concurrency".into(), "1000000".into());
            },
            "hook_concurrency",
        ),
        (
            "timeout",
            |c| {
                c.extra.insert("hook_timeout_ms".into(), "0".into());
            },
            "hook_timeout_ms",
        ),
        ("phone", |c| c.phone = Some("1@evil".into()), "phone"),
    ];
    for (name, forge, field) in cases {
        let src = tmp.path().join(format!("src-{name}"));
        let v = new_vault(&src);
        add_bot(&v, "a-good-one");
        let mut cfg = wavault::vault::BotConfig::new(bot("forged"));
        forge(&mut cfg);
        v.add_bot(&cfg).unwrap();
        let file = tmp.path().join(format!("{name}.wvb"));
        export_all(&v, &file);
        drop(v);
        for keep in [false, true] {
            let mut c = wavault(&dst);
            c.arg("restore").arg(&file);
            if keep {
                c.arg("--keep-hooks");
            }
            let out = run(backup_env(&mut c));
            let err = stderr(&out);
            assert_eq!(code(&out), 5, "{name} (keep {keep}): {err}");
            assert!(
                err.contains("bot forged") && err.contains(&format!("{field}:")),
                "{name}: {err}"
            );
        }
    }
    let out = run(wavault(&dst).args(["bot", "list", "--json"]));
    assert_eq!(stdout(&out).trim(), "[]", "nothing of any bot was written");
}

/// The header's Argon2id memory is used before anything is authenticated:
/// above 1 GiB (unless `--max-kdf-memory-mib` allows it) restore and inspect
/// refuse at once, exit 5, naming what was asked, the limit and the flag.
/// The 2 GiB header is refused before the KDF runs: nothing is allocated.
#[test]
fn restore_refuses_kdf_memory_above_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    crate::cli::init(&src);
    assert_eq!(code(&run(wavault(&src).args(["bot", "add", "b"]))), 0);
    let file = tmp.path().join("2mib.wvb");
    let out = run(
        backup_env(wavault(&src).args(["export", "-o"]).arg(&file)).args([
            "--kdf-memory-mib",
            "2",
            "--kdf-iterations",
            "1",
            "--kdf-parallelism",
            "1",
        ]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let dst = tmp.path().join("dst");
    crate::cli::init(&dst);

    // A crafted header asking for 2 GiB (offset 9, KiB, little endian).
    let mut crafted = std::fs::read(&file).unwrap();
    let at = wavault::backup::stream::KDF_OFFSET;
    crafted[at..at + 4].copy_from_slice(&(2u32 * 1024 * 1024).to_le_bytes());
    let big = tmp.path().join("2gib.wvb");
    std::fs::write(&big, &crafted).unwrap();
    for cmd in [vec!["restore"], vec!["backup", "inspect"]] {
        let out = run(backup_env(wavault(&dst).args(&cmd).arg(&big)));
        let err = stderr(&out);
        assert_eq!(code(&out), 5, "{cmd:?}: {err}");
        for needle in ["2048 MiB", "1024 MiB", "--max-kdf-memory-mib 2048"] {
            assert!(err.contains(needle), "{cmd:?}: {needle:?} in {err}");
        }
    }

    // The flag sets the limit, both ways, within the format's cap.
    let out = run(backup_env(
        wavault(&dst)
            .args(["backup", "inspect", "--max-kdf-memory-mib", "1"])
            .arg(&file),
    ));
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("asks for 2 MiB"), "{}", stderr(&out));
    let out = run(backup_env(
        wavault(&dst)
            .args(["restore", "--max-kdf-memory-mib", "2"])
            .arg(&file),
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(backup_env(
        wavault(&dst)
            .args(["backup", "inspect", "--max-kdf-memory-mib", "4097"])
            .arg(&file),
    ));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}
