//! SIGKILL during `wavault rotate key`: every reopen succeeds, every record reads,
//! and running the rotation again finishes the job.
//!
//! Two kinds of kill: at a named pause point (`wavault::testpoint`) after the
//! n-th record is re-sealed, which must leave the key file holding both the
//! retiring and the new term with records still to re-seal; and at random
//! moments, where each child must die by the SIGKILL or finish on its own
//! (an error exit, e.g. on the vault lock, fails the test).

use crate::common::*;
use std::time::{Duration, Instant};
use wavault::Vault;

/// Random-moment kills.
const KILLS: usize = 18;
/// Records `fill` writes (20 bots x 200); bot entries and the like come on top.
const RECORDS: u64 = 4000;
/// Pause-point hits to kill at: the first, a middle and a late re-sealed record.
const PAUSE_HITS: [u64; 3] = [1, RECORDS / 2, RECORDS - 1];

fn assert_finished(v: &Vault, ctx: &str) {
    let terms = v.terms();
    assert!(
        terms.len() == 1 && !terms[0].1,
        "{ctx}: a finished rotation leaves one active term, got {terms:?}"
    );
}

#[test]
fn rotate_key_survives_sigkill_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let v = new_vault(dir.path());
        fill(&v, 20, 200)
    };
    assert_eq!(expected.len() as u64, RECORDS);

    // Killed exactly mid-rotation: the half-finished state is on disk.
    for hit in PAUSE_HITS {
        kill_at(
            wavault(dir.path()).args(["rotate", "key"]),
            "rotate-key-resealed-one",
            hit,
        );
        let v = Vault::open(dir.path(), PASS)
            .unwrap_or_else(|e| panic!("reopen after the kill at record {hit}: {e}"));
        let terms = v.terms();
        assert!(
            terms.len() == 2 && terms[0].1 && !terms[1].1,
            "killed at record {hit}: the key file should hold the retiring and the new term, got {terms:?}"
        );
        check(&v, &expected);
        let r = v.rotate_key(&mut |_, _| {}).unwrap();
        assert!(r.resumed, "killed at record {hit}: {r:?}");
        // Records past the kill point were never reached: still on the old term.
        assert!(
            r.resealed >= RECORDS - hit,
            "killed at record {hit}: only {} left to re-seal",
            r.resealed
        );
        assert_finished(&v, &format!("resumed after the kill at record {hit}"));
        check(&v, &expected);
    }

    // Calibrate: how long does one uninterrupted rotation take here?
    let t = Instant::now();
    let out = run(wavault(dir.path()).args(["rotate", "key"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let full = t.elapsed();
    let seed = seed();
    eprintln!(
        "kill schedule seed {seed} (set WAVAULT_TEST_SEED to replay); full rotation {full:?}"
    );
    let mut rng = Rng(seed);
    let (mut killed, mut finished) = (0, 0);
    for i in 0..KILLS {
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
        let ended = kill_after(
            wavault(dir.path()).args(["rotate", "key"]),
            delay,
            &format!("kill {i} ({delay:?})"),
        );
        let v = Vault::open(dir.path(), PASS)
            .unwrap_or_else(|e| panic!("reopen after kill {i} ({delay:?}): {e}"));
        match ended {
            Ended::Killed => killed += 1,
            Ended::Finished => {
                finished += 1;
                assert_finished(&v, &format!("kill {i} ({delay:?}) came after the exit"));
            }
        }
        check(&v, &expected);
    }
    eprintln!(
        "of {KILLS} random kills: {killed} by SIGKILL, {finished} after the rotation had finished"
    );
    let out = run(wavault(dir.path()).args(["rotate", "key"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = Vault::open(dir.path(), PASS).unwrap();
    assert_finished(&v, "the last rotation");
    check(&v, &expected);
    assert!(v.validate().unwrap().is_sound());
}
