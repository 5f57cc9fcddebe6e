//! The commands that rewrite the vault run
//! on the power-cut simulator (`tests/support/powerfs.rs`), and the power
//! goes out at the n-th request that changes something (n random over the
//! command's whole run, or just after it), with torn unsynced tails. After
//! each cut the vault must open and validate, hold every record it held,
//! and hold everything a command reported done (exit 0) before the cut.
//!
//! Seeds are printed (`WAVAULT_POWERCUT_SEED` replays one);
//! `WAVAULT_POWERCUTS=N` sets the number of cuts per campaign (the long
//! run, see docs/DESIGN.md "Durability").

use crate::common::*;
use crate::powerfs::{self, PowerFs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use wavault::backup::archive;
use wavault::Vault;

const BACKUP_PASS: &str = "a backup passphrase for power cuts";
const OTHER_PASS: &[u8] = b"the other passphrase";
/// A command that does not finish within this after its cut hangs.
const EXIT_DEADLINE: Duration = Duration::from_secs(60);

/// The simulator's negative control: a writer that acknowledges before
/// syncing loses acknowledged records at a cut; one that syncs first
/// (fdatasync after each record, the file and its folder synced once
/// created) never does, with torn tails.
#[test]
fn simulator_catches_acknowledging_before_sync() {
    let seed = powerfs::seed("simulator");
    let mut lost_unsynced = 0;
    for i in 0..20 {
        assert_eq!(
            powerfs::selftest::lost_after_cut(true, seed + i),
            0,
            "a writer that syncs first lost records (seed {})",
            seed + i
        );
        lost_unsynced += powerfs::selftest::lost_after_cut(false, seed + i);
    }
    assert!(
        lost_unsynced > 0,
        "a writer that never syncs lost nothing in 20 cuts: the simulator keeps too much"
    );
}

/// A rename survives a cut only once its folder was synced.
#[test]
fn simulator_needs_a_folder_sync_for_a_rename() {
    let (without, with) = powerfs::selftest::rename_needs_folder_sync();
    assert_eq!(
        without, "old",
        "a rename without a folder sync survived the cut"
    );
    assert_eq!(with, "new", "a rename with a folder sync was lost");
}

/// A campaign: the simulator, its random schedule, and what a whole
/// (uncut) run of the command costs in changing requests.
struct Campaign {
    name: &'static str,
    fs: PowerFs,
    rng: powerfs::Rng,
    seed: u64,
    /// Changing requests of the last uncut run (0: none measured yet).
    cost: u64,
    cuts: usize,
    /// Cuts that landed inside a command (not after it).
    inside: usize,
    /// The negative control: the commands skip the vault's power-cut sync.
    unsafe_sync: bool,
}

/// How a cut run ended.
struct Ran {
    /// The command's exit code, when it exited (it may die by the kill).
    code: Option<i32>,
    stderr: String,
}

impl Ran {
    /// The command reported success before the power went out.
    fn done(&self) -> bool {
        self.code == Some(0)
    }
}

impl Campaign {
    fn new(name: &'static str) -> Campaign {
        let seed = powerfs::seed(name);
        Campaign {
            name,
            fs: PowerFs::mount(),
            rng: powerfs::Rng::new(seed),
            seed,
            cost: 0,
            cuts: 0,
            inside: 0,
            unsafe_sync: false,
        }
    }

    fn root(&self) -> PathBuf {
        self.fs.path().to_path_buf()
    }

    fn ctx(&self) -> String {
        format!("{} cut {} (seed {})", self.name, self.cuts, self.seed)
    }

    /// Runs `cmd` with the power going out at a random changing request
    /// (the first run is uncut and measures the command); then the power
    /// comes back with only what was durable.
    fn run(&mut self, cmd: &mut Command) -> Ran {
        let measuring = self.cost == 0;
        if self.unsafe_sync {
            cmd.env(wavault::vault::SKIP_POWER_SYNC_ENV, "1");
        }
        let before = self.fs.ops();
        if !measuring {
            // Mostly inside the command, sometimes just after it.
            let n = 1 + self.rng.below(self.cost + self.cost / 8 + 1);
            self.fs.arm(n);
        }
        // Another test of this binary may be spawning a child right when
        // this one checks the vault: between its fork and its exec the
        // child holds a copy of our lock. The command then refuses with
        // "in use" (exit 4) before touching anything: run it again.
        let mut attempts = 0;
        let (status, stderr) = loop {
            attempts += 1;
            assert!(attempts < 200, "{}: the vault stays in use", self.ctx());
            let (status, stderr) = spawn_and_wait(cmd);
            let refused_in_use = status.and_then(|s| s.code()) == Some(4)
                && stderr.contains("in use by another wavault process");
            if !refused_in_use || self.fs.is_cut() {
                break (status, stderr);
            }
        };
        let cut_inside = self.fs.is_cut();
        let code = status.and_then(|s| s.code());
        assert!(
            status.is_some(),
            "{}: the command did not exit within {EXIT_DEADLINE:?} (cut inside: {cut_inside}): {stderr}",
            self.ctx()
        );
        if measuring {
            assert_eq!(code, Some(0), "{}: uncut run failed: {stderr}", self.ctx());
            self.cost = self.fs.ops() - before;
            assert!(self.cost > 0, "{}: the command changed nothing", self.ctx());
        }
        if !cut_inside {
            assert_eq!(
                code,
                Some(0),
                "{}: failed with no cut: {stderr}",
                self.ctx()
            );
            // Later runs may cost less than the first (folders exist): the
            // schedule follows the latest whole run.
            self.cost = self.fs.ops() - before;
        } else {
            self.inside += 1;
        }
        self.fs.cut();
        self.fs.power_on(Some(&mut self.rng));
        self.cuts += 1;
        Ran { code, stderr }
    }

    /// Prints what the campaign did and checks that cuts landed inside.
    fn finish(self) {
        eprintln!(
            "{}: {} power cuts, {} inside the command (a whole run: {} changing requests), seed {}",
            self.name, self.cuts, self.inside, self.cost, self.seed
        );
        assert!(
            self.inside * 3 >= self.cuts,
            "{}: only {} of {} cuts landed inside the command",
            self.name,
            self.inside,
            self.cuts
        );
    }
}

/// Runs `cmd` to its end (killed after [`EXIT_DEADLINE`]): its status
/// (`None`: it hung) and its stderr.
fn spawn_and_wait(cmd: &mut Command) -> (Option<std::process::ExitStatus>, String) {
    let (out, in_time) = run_with_deadline(cmd, EXIT_DEADLINE);
    (in_time.then_some(out.status), stderr(&out))
}

/// Opens the vault with `pass` (it must open) and checks it is sound.
fn open_sound(dir: &Path, pass: &[u8], ctx: &str) -> Vault {
    let v =
        Vault::open(dir, pass).unwrap_or_else(|e| panic!("{ctx}: the vault does not open: {e}"));
    let report = v.validate().expect("validate");
    assert!(
        report.is_sound(),
        "{ctx}: {} problems, the first: {:?}",
        report.problems.len(),
        &report.problems[..report.problems.len().min(3)]
    );
    v
}

/// Every automatic backup under the vault is whole and opens.
fn backups_whole(dir: &Path, pass: &[u8], ctx: &str) {
    let Ok(entries) = std::fs::read_dir(dir.join("backups")) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "wvb") {
            archive::read_file(&p, pass, &mut |_, _| {}).unwrap_or_else(|e| {
                panic!(
                    "{ctx}: automatic backup {} does not verify: {e}",
                    p.display()
                )
            });
        }
    }
}

/// Records a bot should hold: (bot, name, data).
type Records = Vec<(wavault::BotId, Vec<u8>, Vec<u8>)>;

fn wv(dir: &Path) -> Command {
    let mut c = wavault(dir);
    c.env("WAVAULT_BACKUP_PASSPHRASE", BACKUP_PASS);
    c
}

/// `rotate key` cut anywhere: the vault opens, validates and reads every
/// record; a rotation reported done left one active term.
#[test]
fn rotate_key_survives_power_cuts() {
    rotate_key_campaign(powerfs::cuts(200), false);
}

/// The campaign is sound: with the vault's power-cut sync skipped in the
/// command (sled's own flush only, as before), it fails: the key file
/// retires the old term while the re-sealed records were not durable.
/// (A `restore --force` campaign cannot tell the same way: a cut in the
/// middle may leave the old state, and sled syncs its file when the
/// command exits cleanly; the backend and queue campaigns in
/// `tests/store` have their own negative control.)
///
/// The window is narrow (between the key file's last write and the
/// command's exit, where sled syncs its file anyway): the campaign stops at
/// its first failure, within 400 cuts (about 20 are needed on average).
#[test]
fn power_cut_campaign_catches_a_flush_that_is_not_durable() {
    let caught = std::panic::catch_unwind(|| rotate_key_campaign(400, true)).is_err();
    assert!(
        caught,
        "400 power cuts of `rotate key` with sled's flush alone found nothing: the campaign cannot tell"
    );
}

fn rotate_key_campaign(cuts: usize, unsafe_sync: bool) {
    let mut c = Campaign::new("rotate-key");
    c.unsafe_sync = unsafe_sync;
    let dir = c.root().join("vault");
    let expected = {
        let v = new_vault(&dir);
        fill(&v, 4, 40)
    };
    for _ in 0..cuts {
        let ran = c.run(wv(&dir).args(["rotate", "key"]));
        let ctx = c.ctx();
        let v = open_sound(&dir, PASS, &ctx);
        check(&v, &expected);
        let terms = v.terms();
        if ran.done() {
            assert!(
                terms.len() == 1 && !terms[0].1,
                "{ctx}: rotation reported done, terms {terms:?}"
            );
        }
    }
    c.finish();
}

/// `rotate passphrase` cut anywhere: the vault opens with the old or the
/// new passphrase (the new one once the command said so), with every record.
#[test]
fn rotate_passphrase_survives_power_cuts() {
    let mut c = Campaign::new("rotate-passphrase");
    let dir = c.root().join("vault");
    let expected = {
        let v = new_vault(&dir);
        fill(&v, 2, 20)
    };
    let mut current: &[u8] = PASS;
    for _ in 0..powerfs::cuts(200) {
        let next: &[u8] = if current == PASS { OTHER_PASS } else { PASS };
        let ran = c.run(
            wv(&dir)
                .env("WAVAULT_PASSPHRASE", std::str::from_utf8(current).unwrap())
                .env("WAVAULT_NEW_PASSPHRASE", std::str::from_utf8(next).unwrap())
                .args(["rotate", "passphrase"]),
        );
        let ctx = c.ctx();
        let opened_new = Vault::open(&dir, next).is_ok();
        if ran.done() {
            assert!(
                opened_new,
                "{ctx}: the new passphrase was reported set but does not open"
            );
        }
        if opened_new {
            current = next;
        }
        let v = open_sound(&dir, current, &ctx);
        check(&v, &expected);
    }
    c.finish();
}

/// Two backups of bots `a` and `b` in different states; `restore --force`
/// alternates between them and is cut anywhere: each bot is wholly one
/// state or the other, `c` is untouched, and every automatic backup of
/// the replaced bots is whole.
#[test]
fn restore_force_survives_power_cuts() {
    restore_force_campaign(powerfs::cuts(200));
}

fn restore_force_campaign(cuts: usize) {
    let mut c = Campaign::new("restore-force");
    let dir = c.root().join("vault");
    let files = tempfile::tempdir().unwrap();
    let states: Vec<Records>;
    {
        let v = new_vault(&dir);
        let mut first = fill(&v, 3, 30);
        let others: Vec<_> = first.split_off(60);
        archive::export(
            &v,
            &[bot("bot-0"), bot("bot-1")],
            &files.path().join("one.wvb"),
            BACKUP_PASS.as_bytes(),
            CHEAP,
            &mut |_, _| {},
        )
        .unwrap();
        let second: Vec<_> = first
            .iter()
            .map(|(id, name, data)| {
                let mut d = data.clone();
                d.extend_from_slice(b" (second state)");
                v.view(id)
                    .put(wavault::vault::Kind::TEST, name, &d)
                    .unwrap();
                (id.clone(), name.clone(), d)
            })
            .collect();
        archive::export(
            &v,
            &[bot("bot-0"), bot("bot-1")],
            &files.path().join("two.wvb"),
            BACKUP_PASS.as_bytes(),
            CHEAP,
            &mut |_, _| {},
        )
        .unwrap();
        v.flush().unwrap();
        states = vec![first, second, others];
    }
    for round in 0..cuts {
        let (file, target) = if round % 2 == 0 {
            ("one.wvb", 0)
        } else {
            ("two.wvb", 1)
        };
        let ran = c.run(
            wv(&dir)
                .args(["restore", "--force"])
                .arg(files.path().join(file)),
        );
        let ctx = c.ctx();
        let v = open_sound(&dir, PASS, &ctx);
        check(&v, &states[2]);
        for b in ["bot-0", "bot-1"] {
            let id = bot(b);
            let wholly = |s: &Records| {
                s.iter()
                    .filter(|(i, _, _)| *i == id)
                    .all(|(i, name, data)| {
                        v.view(i)
                            .get(wavault::vault::Kind::TEST, name)
                            .ok()
                            .flatten()
                            .as_deref()
                            == Some(data.as_slice())
                    })
            };
            let which: Vec<usize> = (0..2).filter(|s| wholly(&states[*s])).collect();
            assert!(
                !which.is_empty(),
                "{ctx}: {b} is neither wholly the first nor the second state (exit {:?}: {})",
                ran.code,
                ran.stderr
            );
            if ran.done() {
                assert!(
                    which.contains(&target),
                    "{ctx}: {b} is not the restored state"
                );
            }
        }
        drop(v);
        backups_whole(&dir, PASS, &ctx);
    }
    c.finish();
}

/// `export` cut anywhere: a backup file that exists afterwards is whole
/// and verifies; one reported written exists.
#[test]
fn export_survives_power_cuts() {
    let mut c = Campaign::new("export");
    let dir = c.root().join("vault");
    {
        let v = new_vault(&dir);
        fill(&v, 3, 30);
    }
    for round in 0..powerfs::cuts(200) {
        let out = c.root().join(format!("export-{round}.wvb"));
        let ran = c.run(wv(&dir).arg("export").arg("-o").arg(&out));
        let ctx = c.ctx();
        if out.exists() {
            let (_, b) = archive::read_file(&out, BACKUP_PASS.as_bytes(), &mut |_, _| {})
                .unwrap_or_else(|e| {
                    panic!("{ctx}: a backup file that exists does not verify: {e}")
                });
            assert_eq!(b.bots.len(), 3, "{ctx}");
        } else {
            assert!(
                !ran.done(),
                "{ctx}: export reported done but the file is gone"
            );
        }
        // Nothing half-written next to it.
        for e in std::fs::read_dir(c.root()).unwrap() {
            let p = e.unwrap().path();
            assert!(
                p.is_dir() || p.extension().is_some_and(|x| x == "wvb"),
                "{ctx}: a leftover {}",
                p.display()
            );
        }
        drop(open_sound(&dir, PASS, &ctx));
    }
    c.finish();
}

/// `init` cut anywhere: there is no vault (and `init` works again), or
/// a vault that opens; one reported created opens. The key file's
/// creation is the point where a vault starts to exist.
#[test]
fn init_survives_power_cuts() {
    let mut c = Campaign::new("init");
    for round in 0..powerfs::cuts(200) {
        let dir = c.root().join(format!("vault-{round}"));
        let ran = c.run(wv(&dir).args(cheap_init_args()));
        let ctx = c.ctx();
        if Vault::exists(&dir) {
            drop(open_sound(&dir, PASS, &ctx));
        } else {
            assert!(
                !ran.done(),
                "{ctx}: init reported done but there is no vault"
            );
            let again = run(wv(&dir).args(cheap_init_args()));
            assert_eq!(
                code(&again),
                0,
                "{ctx}: init after the cut: {}",
                stderr(&again)
            );
            drop(open_sound(&dir, PASS, &ctx));
        }
    }
    c.finish();
}

/// `sweep` cut anywhere, each round on a fresh vault of four bots (one
/// logged out 31 days ago, whose credentials the sweep purges after an
/// automatic backup): the purged bot's credentials are all there or all
/// gone, the other bots' are all there, and a sweep reported done purged
/// them with a whole backup beside them.
#[test]
fn sweep_survives_power_cuts() {
    use crate::sweep_state::{creds, setup_at};
    let mut c = Campaign::new("sweep");
    let dir = c.root().join("vault");
    let before: Vec<(&str, usize)> = {
        let v = setup_at(&dir, wavault::vault::now());
        ["old-dead", "young-dead", "idle", "fine"]
            .into_iter()
            .map(|b| (b, creds(&v, b)))
            .collect()
    };
    c.fs.cycle(None);
    let fresh = c.fs.save();
    for round in 0..powerfs::cuts(200) {
        c.fs.load(&fresh);
        let ran = c.run(wv(&dir).args(["sweep", "--older-than", "30d", "--yes"]));
        let ctx = format!("{} round {round}", c.ctx());
        let v = open_sound(&dir, PASS, &ctx);
        for (b, n) in &before {
            let now_n = creds(&v, b);
            if *b == "old-dead" {
                assert!(
                    now_n == *n || now_n == 0,
                    "{ctx}: {b} has {now_n} of its {n} credential records"
                );
                if ran.done() {
                    assert_eq!(now_n, 0, "{ctx}: sweep reported done, {b} not purged");
                }
            } else {
                assert_eq!(now_n, *n, "{ctx}: {b} lost credential records");
            }
        }
        drop(v);
        backups_whole(&dir, PASS, &ctx);
    }
    c.finish();
}
