//! Shared helpers: cheap KDF parameters (explicitly), vault setup, the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use wavault::vault::crypto::KdfParams;
use wavault::vault::{BotConfig, Kind};
use wavault::{BotId, Vault};

pub const PASS: &[u8] = b"correct horse battery staple";
/// Deliberately cheap Argon2 parameters: tests only, never a default.
pub const CHEAP: KdfParams = KdfParams::INSECURE_FOR_TESTS;

pub fn bot(id: &str) -> BotId {
    BotId::parse(id).expect("valid test bot id")
}

pub fn new_vault(dir: &Path) -> Vault {
    Vault::create(dir, PASS, CHEAP).expect("create vault")
}

/// A closed vault in `dir` holding one disabled bot `id` (`run` starts
/// nothing).
pub fn vault_with_disabled_bot(dir: &Path, id: &str) {
    let v = new_vault(dir);
    let mut cfg = BotConfig::new(bot(id));
    cfg.enabled = false;
    v.add_bot(&cfg).unwrap();
}

pub fn add_bot(v: &Vault, id: &str) -> BotId {
    let b = bot(id);
    v.add_bot(&BotConfig::new(b.clone())).expect("add bot");
    b
}

/// Fills `bots` bots with `per_bot` records each; returns the expected contents.
pub fn fill(v: &Vault, bots: usize, per_bot: usize) -> Vec<(BotId, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for b in 0..bots {
        let id = add_bot(v, &format!("bot-{b}"));
        let view = v.view(&id);
        for r in 0..per_bot {
            let name = format!("rec-{r}").into_bytes();
            let data = format!("value {b}/{r} {}", "x".repeat(r % 50)).into_bytes();
            view.put(Kind::TEST, &name, &data).expect("put");
            out.push((id.clone(), name, data));
        }
    }
    v.flush().expect("flush");
    out
}

/// Asserts every expected record reads back.
pub fn check(v: &Vault, expected: &[(BotId, Vec<u8>, Vec<u8>)]) {
    for (id, name, data) in expected {
        let got = v.view(id).get(Kind::TEST, name).expect("read record");
        assert_eq!(
            got.as_deref(),
            Some(data.as_slice()),
            "record {id}/{}",
            String::from_utf8_lossy(name)
        );
    }
}

/// The wavault binary with cheap KDF flags available and a passphrase in the environment.
pub fn wavault(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wavault"));
    c.arg("--vault").arg(dir);
    c.env(
        "WAVAULT_PASSPHRASE",
        std::str::from_utf8(PASS).expect("utf8"),
    );
    c.env_remove("CREDENTIALS_DIRECTORY");
    c.env("RUST_LOG", "warn");
    c
}

/// Cheap Argon2 flags for commands that take them (tests only).
pub const CHEAP_KDF_ARGS: [&str; 6] = [
    "--kdf-memory-mib",
    "1",
    "--kdf-iterations",
    "1",
    "--kdf-parallelism",
    "1",
];

pub fn cheap_init_args() -> Vec<&'static str> {
    std::iter::once("init").chain(CHEAP_KDF_ARGS).collect()
}

pub fn run(c: &mut Command) -> Output {
    c.output().expect("spawn wavault")
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every regular file under `root`.
pub fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).expect("read dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Copies a folder tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let p = e.expect("entry").path();
        let dest = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

/// A tiny deterministic PRNG for test schedules (seed printed by callers).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn seed() -> u64 {
    std::env::var("WAVAULT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9e37_79b9)
        })
}

/// Every bot's whole state, in id order (for before/after comparisons).
pub fn dumps(v: &Vault) -> Vec<wavault::vault::BotDump> {
    v.list_bots()
        .unwrap()
        .iter()
        .map(|c| v.dump_bot(&c.id).unwrap())
        .collect()
}

/// How a child SIGKILLed at a random moment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Died by the SIGKILL (possibly before it did anything).
    Killed,
    /// Exited 0 on its own before the signal arrived.
    Finished,
}

/// Spawns `c`, sleeps `delay` (the kill point is the random variable, not a
/// synchronisation), SIGKILLs it and classifies its end. Any other end (an
/// error exit such as a lock failure, another signal) fails the test with
/// the child's stderr.
pub fn kill_after(c: &mut Command, delay: std::time::Duration, what: &str) -> Ended {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wavault");
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL
    let status = child.wait().expect("wait");
    let mut err = String::new();
    let _ = child.stderr.take().expect("piped").read_to_string(&mut err);
    match (status.signal(), status.code()) {
        (Some(9), _) => Ended::Killed,
        (None, Some(0)) => Ended::Finished,
        _ => panic!("{what}: child ended by {status}, neither SIGKILL nor success; stderr:\n{err}"),
    }
}

/// Runs `c` with `WAVAULT_TEST_PAUSE_AT=point:hit` (see `wavault::testpoint`),
/// waits (60 s at most) until it reports being paused there, SIGKILLs it and
/// asserts it died by that signal. The test fails if the child exits or
/// never reaches the point.
pub fn kill_at(c: &mut Command, point: &str, hit: u64) {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let target = format!("{point}:{hit}");
    let mut child = c
        .env(wavault::testpoint::ENV, &target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wavault");
    let err = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let paused = format!("wavault: paused at {target}");
    let mut seen = Vec::new();
    let reached = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == paused => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false, // the child closed stderr (exited) or the deadline passed
        }
    };
    let _ = child.kill();
    let status = child.wait().expect("wait");
    drop(rx);
    if !reached {
        let _ = reader.join();
        panic!(
            "the child never paused at {target} ({status}); stderr:\n{}",
            seen.join("\n")
        );
    }
    assert_eq!(
        status.signal(),
        Some(9),
        "paused at {target}, then {status} instead of SIGKILL"
    );
}

/// Runs `c` (stdin empty, output captured) to its end, or SIGKILLs it once
/// `limit` passed; returns its output and whether it ended in time.
pub fn run_with_deadline(c: &mut Command, limit: std::time::Duration) -> (Output, bool) {
    let child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wavault");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => (out.expect("wait for wavault"), true),
        Err(_) => {
            // Where it hangs, for the failure message (when gdb is here).
            let stacks = thread_stacks(pid);
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            let mut out = rx.recv().expect("killed child").expect("wait");
            out.stderr.extend_from_slice(stacks.as_bytes());
            (out, false)
        }
    }
}

/// The threads' stacks of process `pid` (`gdb -batch`, given 30 s), or
/// why there are none.
fn thread_stacks(pid: u32) -> String {
    let pid = pid.to_string();
    match Command::new("timeout")
        .args([
            "30",
            "gdb",
            "-p",
            &pid,
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) => format!(
            "\n--- stacks of the hung process ---\n{}",
            String::from_utf8_lossy(&o.stdout)
        ),
        Err(e) => format!("\n(no stacks of the hung process: gdb: {e})"),
    }
}
