//! The retention sweep with injected time: what is dead and old goes (after
//! an automatic backup), what is alive stays however idle.

use crate::common::*;
use std::sync::Arc;
use std::time::Duration;
use wacore::store::traits::Backend;
use wavault::backup::{archive, auto};
use wavault::sessions::{Sessions, Status};
use wavault::sweep::{sweep, SweepOptions};
use wavault::vault::{BotDump, Kind};
use wavault::Vault;

use crate::signal_state;
use crate::sweep_state::{creds, setup_at, DAY};

const NOW: i64 = 1_800_000_000;

/// Four bots with credentials: `old-dead` logged out 31 days ago,
/// `young-dead` logged out 29 days ago, `idle` connected a year ago and
/// quiet since, `fine` connected now.
fn setup(dir: &std::path::Path) -> Vault {
    setup_at(dir, NOW)
}

#[test]
fn dry_run_reports_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let v = setup(tmp.path());
    let before = dumps(&v);
    let mut backups = 0;
    let mut take = |_: &[wavault::BotId]| {
        backups += 1;
        Ok(tmp.path().join("never"))
    };
    let r = sweep(
        &v,
        SweepOptions {
            retention: Duration::from_secs(30 * DAY as u64),
            dry_run: true,
            now: NOW,
            backup: Some(&mut take),
        },
    )
    .unwrap();
    assert!(r.dry_run);
    let dead: Vec<_> = r
        .bots
        .iter()
        .filter(|b| b.credential_records > 0)
        .map(|b| b.bot.as_str())
        .collect();
    assert_eq!(dead, ["old-dead"]);
    assert!(
        r.bots.iter().all(|b| b.history_entries >= 1),
        "old history everywhere: {r:?}"
    );
    assert_eq!(backups, 0, "a dry run takes no backup");
    assert_eq!(dumps(&v), before, "nothing changed");
}

#[test]
fn sweep_purges_only_the_long_dead_and_the_backup_brings_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let v = setup(tmp.path());
    let before_old = v.dump_bot(&bot("old-dead")).unwrap();
    let young_creds = creds(&v, "young-dead");
    let idle_creds = creds(&v, "idle");
    let dry = sweep(
        &v,
        SweepOptions {
            retention: Duration::from_secs(30 * DAY as u64),
            dry_run: true,
            now: NOW,
            backup: None,
        },
    )
    .unwrap();
    let mut take = |bots: &[wavault::BotId]| auto::take(&v, bots, PASS, "sweep");
    let r = sweep(
        &v,
        SweepOptions {
            retention: Duration::from_secs(30 * DAY as u64),
            dry_run: false,
            now: NOW,
            backup: Some(&mut take),
        },
    )
    .unwrap();
    // The dry run predicted exactly this.
    assert_eq!(dry.bots, r.bots);
    assert_eq!(creds(&v, "old-dead"), 0, "31 days dead: credentials gone");
    assert_eq!(creds(&v, "young-dead"), young_creds, "29 days dead: kept");
    assert_eq!(
        creds(&v, "idle"),
        idle_creds,
        "a paired bot idle for a year: kept"
    );
    assert!(creds(&v, "fine") > 0);
    // Config, metadata and recent history of the purged bot stay.
    let s = Sessions::new(v.view(&bot("old-dead")));
    assert_eq!(s.load(NOW).unwrap().status, Status::LoggedOut);
    assert!(v.bot_config(&bot("old-dead")).is_ok());
    // Old history went, except the newest entry before the cutoff, which
    // says what the status was then (the logout 31 days ago).
    let kept = s.history().unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        (kept[0].to, kept[0].at),
        (Status::LoggedOut, NOW - 31 * DAY)
    );
    let old_dead = r.bots.iter().find(|b| b.bot == "old-dead").unwrap();
    assert!(old_dead.credential_bytes > 50_000, "{old_dead:?}");
    assert!(v.validate().unwrap().is_sound());

    // The automatic backup restores what was swept.
    let file = r.auto_backup.clone().expect("automatic backup taken");
    let (_, backup) = archive::read_file(&file, PASS, &mut |_, _| {}).unwrap();
    assert_eq!(backup.bots, vec![before_old.clone()]);
    archive::restore(&v, &backup, &[], true, &mut |_| Ok(None), &mut |_, _| {}).unwrap();
    assert_eq!(v.dump_bot(&bot("old-dead")).unwrap(), before_old);

    // A second sweep right after finds only what the restore brought back.
    let again = sweep(
        &v,
        SweepOptions {
            retention: Duration::from_secs(30 * DAY as u64),
            dry_run: true,
            now: NOW,
            backup: None,
        },
    )
    .unwrap();
    let names: Vec<_> = again.bots.iter().map(|b| b.bot.as_str()).collect();
    assert_eq!(names, ["old-dead"]);
}

#[test]
fn orphan_records_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path());
    let id = add_bot(&v, "ghost");
    v.view(&id).put(Kind::TEST, b"left", b"behind").unwrap();
    let keep = add_bot(&v, "keep");
    v.view(&keep).put(Kind::TEST, b"mine", b"x").unwrap();
    let dump = v.dump_bot(&keep).unwrap();
    // The bot entry vanishes but its record stays (as an interrupted older
    // tool could leave it).
    v.remove_bot_entry_only(&id).unwrap();
    let (orphans, f) = v.orphan_records().unwrap();
    assert_eq!(orphans.len(), 1);
    let r = sweep(
        &v,
        SweepOptions {
            retention: Duration::from_secs(30 * DAY as u64),
            dry_run: false,
            now: NOW,
            backup: None,
        },
    )
    .unwrap();
    assert_eq!(r.orphan_records, 1);
    assert_eq!(r.orphan_bytes, f.bytes);
    assert!(v.orphan_records().unwrap().0.is_empty());
    assert_eq!(v.dump_bot(&keep).unwrap(), dump);
}

#[test]
fn cli_sweep_dry_run_json_and_real_run() {
    let tmp = tempfile::tempdir().unwrap();
    let now = wavault::vault::now();
    drop(setup_at(tmp.path(), now));
    // A retention of 100 years: nothing is old enough.
    let out =
        run(wavault(tmp.path()).args(["sweep", "--dry-run", "--json", "--older-than", "36500d"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["bots"].as_array().unwrap().len(), 0);
    // Purging credentials needs a confirmation: with no terminal to ask
    // and no --yes, refused (exit 2) with nothing removed.
    let out = run(wavault(tmp.path()).arg("sweep"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--yes") && stderr(&out).contains("no terminal"),
        "{}",
        stderr(&out)
    );
    assert!(
        !tmp.path().join("backups").exists(),
        "a refused sweep took no backup"
    );
    // The default retention (30 days): only the bot dead for 31 days goes.
    let out = run(wavault(tmp.path()).args(["sweep", "--json", "--yes"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let purged: Vec<&str> = v["bots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["credential_records"].as_u64().unwrap() > 0)
        .map(|b| b["bot"].as_str().unwrap())
        .collect();
    assert_eq!(purged, ["old-dead"]);
    assert_eq!(v["dry_run"], false);
    assert!(v["auto_backup"].as_str().unwrap().contains("backups/auto-"));
}

#[test]
fn cli_reauth_offline_deletes_credentials_after_a_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let v = setup_at(tmp.path(), wavault::vault::now());
    let before = v.dump_bot(&bot("fine")).unwrap();
    drop(v);
    let out = run(wavault(tmp.path()).args(["bot", "reauth", "fine", "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(r["removed"].as_u64().unwrap() > 100);
    let v = Vault::open(tmp.path(), PASS).unwrap();
    assert_eq!(creds(&v, "fine"), 0);
    assert_eq!(
        v.bot_config(&bot("fine")).unwrap(),
        before.config,
        "config kept"
    );
    let s = Sessions::new(v.view(&bot("fine")));
    assert_eq!(s.history().unwrap().len(), 4, "history kept");
    assert_eq!(s.load(0).unwrap().authenticated_at, None);
    assert_eq!(
        wavault::store::credentials_state(&v.view(&bot("fine"))).map(|c| c.as_str()),
        Some("unpaired")
    );
    // The automatic backup brings the paired state back.
    let file = std::path::PathBuf::from(r["auto_backup"].as_str().unwrap());
    let (_, b) = archive::read_file(&file, PASS, &mut |_, _| {}).unwrap();
    assert_eq!(b.bots, vec![before]);
    drop((s, v));
    let out = run(wavault(tmp.path()).args(["bot", "reauth", "nobody"]));
    assert_eq!(code(&out), 6, "{}", stderr(&out));
}

/// SIGKILL `wavault sweep` between two bots' purges (at a pause point) and
/// at random moments: every reopen succeeds, the vault validates, and each
/// dead bot has all of its credentials or none; a kill after the n-th purge
/// leaves exactly n bots purged; a sweep that finished first purged all; a
/// child that ended any other way fails the test.
#[test]
fn sweep_survives_sigkill_at_random_points() {
    use std::time::{Duration as D, Instant};
    const KILLS: usize = 16;
    const PAUSE_HITS: [usize; 3] = [1, 3, 5];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let long_ago = wavault::vault::now() - 40 * DAY;
    let full_state: Vec<BotDump> = {
        let v = new_vault(&dir);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..6u64 {
            let id = add_bot(&v, &format!("dead-{i}"));
            let backend: Arc<dyn Backend> = v.bot_backend(&id).unwrap();
            rt.block_on(signal_state::fill(&backend, i));
            let s = Sessions::new(v.view(&id));
            s.set_status(long_ago - 10, Status::Connected, Some("logged in"))
                .unwrap();
            s.set_status(long_ago, Status::LoggedOut, Some("logged out by server"))
                .unwrap();
        }
        v.flush().unwrap();
        dumps(&v)
    };
    // Reopens, checks each bot has all its credentials or none, puts the
    // full state back; returns how many bots were purged.
    let inspect_and_reset = |ctx: &str| -> usize {
        let v = Vault::open(&dir, PASS).unwrap_or_else(|e| panic!("reopen after {ctx}: {e}"));
        assert!(v.validate().unwrap().is_sound(), "{ctx}");
        let mut purged = 0;
        for (j, d) in full_state.iter().enumerate() {
            let n = creds(&v, &format!("dead-{j}"));
            let had = wavault::store::kinds::all();
            let expected = d
                .records
                .iter()
                .filter(|r| had.contains(&Kind(r.kind)))
                .count();
            assert!(expected > 0, "dead-{j} starts with credentials");
            assert!(
                n == 0 || n == expected,
                "{ctx}: dead-{j} has {n} of {expected}"
            );
            purged += usize::from(n == 0);
        }
        for d in &full_state {
            v.replace_bot(d).unwrap();
        }
        purged
    };
    for hit in PAUSE_HITS {
        kill_at(
            wavault(&dir).args(["sweep", "--yes"]),
            "sweep-purged-bot",
            hit as u64,
        );
        let purged = inspect_and_reset(&format!("the kill after purge {hit} of 6"));
        assert_eq!(
            purged, hit,
            "killed after {hit} of 6 purges: {purged} bots have no credentials"
        );
    }
    let full = {
        let t = Instant::now();
        let out = run(wavault(&dir).args(["sweep", "--yes"]));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let e = t.elapsed();
        assert_eq!(inspect_and_reset("a full sweep"), 6);
        e
    };
    let seed = seed();
    eprintln!("kill schedule seed {seed}; full sweep {full:?}");
    let mut rng = Rng(seed);
    let (mut partial, mut all, mut killed) = (0, 0, 0);
    for i in 0..KILLS {
        // Half the kills anywhere, half in the last third (where the purges are).
        let us = full.as_micros() as u64;
        let delay = D::from_micros(if i % 2 == 0 {
            rng.below(us + 1)
        } else {
            us * 2 / 3 + rng.below(us / 3 + 1)
        });
        let ctx = format!("kill {i} ({delay:?})");
        let ended = kill_after(wavault(&dir).args(["sweep", "--yes"]), delay, &ctx);
        let purged = inspect_and_reset(&ctx);
        match ended {
            Ended::Killed => killed += 1,
            Ended::Finished => assert_eq!(purged, 6, "{ctx}: the sweep exited 0"),
        }
        if purged > 0 && purged < full_state.len() {
            partial += 1;
        }
        all += usize::from(purged == full_state.len());
    }
    eprintln!(
        "of {KILLS} random kills ({killed} by SIGKILL): {all} after every purge, {partial} between two bots' purges, the rest before any"
    );
}
