//! SIGKILL during `wavault rotate key`: every reopen succeeds, every record reads,
//! and running the rotation again finishes the job.

use crate::common::*;
use std::time::{Duration, Instant};
use wavault::Vault;

const KILLS: usize = 24;

#[test]
fn rotate_key_survives_sigkill_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let v = new_vault(dir.path());
        fill(&v, 20, 200)
    };
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
    let mut interrupted = 0;
    for i in 0..KILLS {
        let mut child = wavault(dir.path())
            .args(["rotate", "key"])
            .spawn()
            .expect("spawn");
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
        std::thread::sleep(delay); // the kill point itself is the random variable, not a synchronisation
        let _ = child.kill(); // SIGKILL on unix
        let status = child.wait().expect("wait");
        if !status.success() {
            interrupted += 1;
        }
        let v = Vault::open(dir.path(), PASS)
            .unwrap_or_else(|e| panic!("reopen after kill {i} ({delay:?}): {e}"));
        check(&v, &expected);
    }
    eprintln!("{interrupted} of {KILLS} runs were killed mid-way");
    let out = run(wavault(dir.path()).args(["rotate", "key"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = Vault::open(dir.path(), PASS).unwrap();
    assert!(
        v.terms().iter().all(|(_, retiring)| !retiring),
        "{:?}",
        v.terms()
    );
    check(&v, &expected);
    assert!(v.validate().unwrap().is_sound());
}
