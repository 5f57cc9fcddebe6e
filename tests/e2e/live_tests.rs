//! Live operations with running bots (issue 13): the real `wavault` CLI
//! against a runner that holds the vault and runs paired bots on the
//! in-process peer.
//!
//! Why it exists: an operator backs up, restores, rotates and moves bots
//! while `run` keeps the others online. Each test checks both halves of
//! that promise: the command did its work on the bots it is about (a
//! restored bot runs on its restored state, a moved bot reads on at its new
//! home with no QR), and every other bot never noticed (no status change in
//! its history, no new login at the server).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use wavault::messaging::hook::Target;
use wavault::passphrase::Passphrase;
use wavault::runner::{Runner, RunnerEvent, StartCase};
use wavault::sessions::{Sessions, Status};
use wavault::vault::BotConfig;
use wavault::Vault;

use crate::hook_server::{HookServer, Mode};
use crate::messaging_tests::{assert_clean_signal, cfg, row, wait_connected, wait_prekeys};
use crate::peer::{Peer, LOGIN_DEADLINE};
use crate::runner_tests::{bot, new_vault, next_event, synth_paired, PASS};

const DEADLINE: Duration = Duration::from_secs(60);
const BACKUP_PASS: &str = "backup passphrase of the live tests";
const NEW_PASS: &str = "the vault's next passphrase";
/// Cheap Argon2 flags for the commands that take them (tests only).
pub(crate) const CHEAP: [&str; 6] = [
    "--kdf-memory-mib",
    "1",
    "--kdf-iterations",
    "1",
    "--kdf-parallelism",
    "1",
];

/// Runs the real CLI on `dir` with the vault passphrase `pass`.
async fn cli_as(dir: &Path, pass: &str, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_wavault"));
    c.arg("--vault").arg(dir).args(args);
    c.env("WAVAULT_PASSPHRASE", pass)
        .env("WAVAULT_BACKUP_PASSPHRASE", BACKUP_PASS)
        .env("WAVAULT_NEW_PASSPHRASE", NEW_PASS)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null());
    tokio::task::spawn_blocking(move || c.output().expect("spawn wavault"))
        .await
        .unwrap()
}

/// Runs the real `wavault` CLI on `dir` (it finds the runner's control
/// socket there: the vault is held, so any answer came through it).
pub(crate) async fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    cli_as(dir, std::str::from_utf8(PASS).unwrap(), args).await
}

/// The standard output of a command that must have exited 0.
pub(crate) fn ok(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn history(v: &Vault, id: &str) -> Vec<(u64, Status, Status)> {
    Sessions::new(v.view(&bot(id)))
        .history()
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.from, e.to))
        .collect()
}

/// A runner on `vault` against a new peer, every bot's hook echoing
/// (`echo: TEXT`), automatic backups sealed with the vault passphrase.
async fn echo_runner(vault: &Vault) -> (HookServer, Peer, Runner) {
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    c.backup_passphrase = Some(Arc::new(Passphrase::new(PASS)));
    let runner = Runner::start(vault.clone(), c).unwrap();
    (hook, peer, runner)
}

/// A contact writing `texts` to the bot, one every `every`.
fn writer(
    peer: &Peer,
    contact: &str,
    bot_phone: &str,
    texts: &[String],
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let c = peer.contact(contact);
    let phone = bot_phone.to_owned();
    let texts = texts.to_vec();
    tokio::spawn(async move {
        for t in &texts {
            c.send_text(&phone, t).await.unwrap();
            // Pacing the contact, not waiting for anything.
            tokio::time::sleep(every).await;
        }
    })
}

/// No QR code was shown for `id` among the events received so far.
fn no_qr(rx: &mut broadcast::Receiver<RunnerEvent>, id: &str) {
    loop {
        match rx.try_recv() {
            Ok(RunnerEvent::Qr { bot, .. }) if bot.as_str() == id => {
                panic!("{id} showed a QR code")
            }
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

/// Waits until the server saw `n` logins of `phone` (on failure, the
/// runner's rows say where the bots are).
async fn wait_logins(peer: &Peer, runner: &Runner, phone: &str, n: usize) {
    let p = phone.to_owned();
    let seen = peer
        .wait_for(&format!("{n} logins of {phone}"), DEADLINE, move |log| {
            log.logins(&p).count() >= n
        })
        .await;
    if let Err(e) = seen {
        panic!("{e}; runner rows: {:#?}", runner.status());
    }
}

/// The contact writes `text` and waits for the hook's echo.
async fn echo(peer: &Peer, contact: &str, bot_phone: &str, text: &str) {
    let c = peer.contact(contact);
    c.send_text(bot_phone, text).await.unwrap();
    let want = format!("echo: {text}");
    c.wait_received(&format!("the echo of {text:?}"), DEADLINE, |r| {
        r.iter().any(|m| m.text.as_deref() == Some(want.as_str()))
    })
    .await
    .unwrap();
}

/// `restore --force` of one connected bot through the running `run`: that
/// bot restarts on the restored state (a new login, no QR, it reads on);
/// `bot disable` stops it, `bot enable` starts it at once, `bot remove`
/// stops and removes it. The other bot's history never changes and the
/// server never sees it log in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_force_enable_disable_remove_touch_only_their_bot() {
    if std::env::var_os("WAVAULT_DEBUG_LIVE").is_some() {
        wavault::logs::init();
    }
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["alfa", "beta"]);
    let alfa = synth_paired(&vault, "alfa", 4_915_100_013_001).await;
    let beta = synth_paired(&vault, "beta", 4_915_100_013_002).await;
    let (_hook, peer, runner) = echo_runner(&vault).await;
    let mut events = runner.subscribe();
    wait_connected(&runner, "alfa").await;
    wait_connected(&runner, "beta").await;
    wait_prekeys(&peer, &alfa).await;
    wait_prekeys(&peer, &beta).await;
    echo(&peer, "4917600013001", &alfa, "before the export").await;
    echo(&peer, "4917600013002", &beta, "beta before").await;
    let beta_history = history(&vault, "beta");
    let beta_logins = peer.seen().logins(&beta).count();
    let alfa_logins = peer.seen().logins(&alfa).count();

    let file = scratch.path().join("alfa.wvb");
    let f = file.to_str().unwrap();
    let mut args = vec!["export", "--bot", "alfa", "-o", f];
    args.extend(CHEAP);
    ok(&cli(dir.path(), &args).await);
    let out = ok(&cli(dir.path(), &["restore", "--force", f]).await);
    assert!(
        out.contains("replaced: alfa") && out.contains("the running wavault started: alfa"),
        "{out}"
    );
    wait_logins(&peer, &runner, &alfa, alfa_logins + 1).await;
    wait_connected(&runner, "alfa").await;
    echo(&peer, "4917600013001", &alfa, "after the restore").await;

    let out = ok(&cli(dir.path(), &["bot", "disable", "alfa"]).await);
    assert!(out.contains("the running wavault stopped it"), "{out}");
    let rows = runner.status().unwrap();
    assert_eq!(row(&rows, "alfa").status, Status::Disconnected);
    assert!(!vault.bot_config(&bot("alfa")).unwrap().enabled);
    let out = ok(&cli(dir.path(), &["bot", "enable", "alfa"]).await);
    assert!(out.contains("the running wavault starts it now"), "{out}");
    wait_logins(&peer, &runner, &alfa, alfa_logins + 2).await;
    wait_connected(&runner, "alfa").await;
    echo(&peer, "4917600013001", &alfa, "after enable").await;
    let out = ok(&cli(dir.path(), &["bot", "remove", "alfa", "--yes"]).await);
    assert!(
        out.contains("stopped in the running wavault first"),
        "{out}"
    );
    assert!(runner.status().unwrap().iter().all(|r| r.bot != "alfa"));

    no_qr(&mut events, "alfa");
    echo(&peer, "4917600013002", &beta, "beta after").await;
    assert_eq!(
        history(&vault, "beta"),
        beta_history,
        "beta's history never changed"
    );
    assert_eq!(
        peer.seen().logins(&beta).count(),
        beta_logins,
        "beta never logged in again"
    );
    assert_eq!(
        row(&runner.status().unwrap(), "beta").status,
        Status::Connected
    );
    assert_clean_signal(&peer);
    runner.shutdown().await.unwrap();
}

/// `rotate key` and `rotate passphrase` through the running `run` while a
/// contact writes: the bot never disconnects, every message is answered,
/// the runner's automatic backups are sealed with the new passphrase, and
/// the vault opens with the new passphrase only and validates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_through_the_runner_while_messages_flow() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["flow"]);
    let mut spare = BotConfig::new(bot("spare"));
    spare.enabled = false;
    vault.add_bot(&spare).unwrap();
    let phone = synth_paired(&vault, "flow", 4_915_100_013_101).await;
    let (hook, peer, runner) = echo_runner(&vault).await;
    wait_connected(&runner, "flow").await;
    wait_prekeys(&peer, &phone).await;
    let spare_file = scratch.path().join("spare.wvb");
    let sf = spare_file.to_str().unwrap();
    let mut args = vec!["export", "--bot", "spare", "-o", sf];
    args.extend(CHEAP);
    ok(&cli(dir.path(), &args).await);
    let before = history(&vault, "flow");
    let logins = peer.seen().logins(&phone).count();

    let contact = "4917600013101";
    let texts: Vec<String> = (0..40).map(|i| format!("during rotation {i}")).collect();
    let sender = writer(&peer, contact, &phone, &texts, Duration::from_millis(25));
    let out = ok(&cli(dir.path(), &["rotate", "key"]).await);
    assert!(out.contains("data key rotated"), "{out}");
    let mut args = vec!["rotate", "passphrase"];
    args.extend(CHEAP);
    let out = ok(&cli(dir.path(), &args).await);
    assert!(
        out.contains("the running wavault seals its automatic backups with the new one"),
        "{out}"
    );
    sender.await.unwrap();
    let c = peer.contact(contact);
    c.wait_received("every echo", DEADLINE, |r| {
        texts.iter().all(|t| {
            let want = format!("echo: {t}");
            r.iter().any(|m| m.text.as_deref() == Some(want.as_str()))
        })
    })
    .await
    .unwrap();
    assert_eq!(
        hook.texts_from(contact),
        texts,
        "each message once, in order"
    );
    assert_eq!(
        history(&vault, "flow"),
        before,
        "no status change while rotating"
    );
    assert_eq!(peer.seen().logins(&phone).count(), logins, "no new login");

    // The next automatic backup (before replacing `spare`) uses the new passphrase.
    let out = cli_as(dir.path(), NEW_PASS, &["restore", "--force", "--json", sf]).await;
    let r: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let auto = std::path::PathBuf::from(r["auto_backup"].as_str().unwrap());
    assert!(
        wavault::backup::archive::read_file(&auto, NEW_PASS.as_bytes(), &mut |_, _| {}).is_ok()
    );
    let old = wavault::backup::archive::read_file(&auto, PASS, &mut |_, _| {}).unwrap_err();
    assert_eq!(old.exit_code(), 3, "{old}");
    assert_clean_signal(&peer);
    runner.shutdown().await.unwrap();
    drop(vault);
    assert_eq!(Vault::open(dir.path(), PASS).unwrap_err().exit_code(), 3);
    let v = Vault::open(dir.path(), NEW_PASS.as_bytes()).unwrap();
    assert!(v.validate().unwrap().is_sound());
}

/// Exports while a contact writes to the bot (each file restores into a
/// fresh vault and validates), then `export --move`: the runner stops and
/// disables the bot; its backup, restored into another vault and run there,
/// logs in with no QR, delivers what it had queued, and reads the
/// contact's next message with no decrypt error and no retry receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_exports_then_move_and_the_restored_bot_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["hot"]);
    let phone = synth_paired(&vault, "hot", 4_915_100_013_201).await;
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    let runner = Runner::start(vault.clone(), c.clone()).unwrap();
    wait_connected(&runner, "hot").await;
    wait_prekeys(&peer, &phone).await;
    let contact = "4917600013201";
    let texts: Vec<String> = (0..30).map(|i| format!("hot {i}")).collect();
    let sender = writer(&peer, contact, &phone, &texts, Duration::from_millis(10));
    for i in 0..3 {
        let f = scratch.path().join(format!("hot-{i}.wvb"));
        let mut args = vec!["export", "-o", f.to_str().unwrap()];
        args.extend(CHEAP);
        ok(&cli(dir.path(), &args).await);
        let fresh = scratch.path().join(format!("fresh-{i}"));
        drop(new_vault(&fresh, &[]));
        ok(&cli(&fresh, &["restore", f.to_str().unwrap()]).await);
        ok(&cli(&fresh, &["validate"]).await);
    }
    sender.await.unwrap();
    // Half of the messages may still wait in the queue: they travel.
    hook.set_mode(Mode::Down);
    let moved = scratch.path().join("moved.wvb");
    let mut args = vec![
        "export",
        "--bot",
        "hot",
        "--move",
        "-o",
        moved.to_str().unwrap(),
    ];
    args.extend(CHEAP);
    let out = ok(&cli(dir.path(), &args).await);
    assert!(
        out.contains("moved: hot stopped and disabled here"),
        "{out}"
    );
    assert!(!vault.bot_config(&bot("hot")).unwrap().enabled);
    assert_eq!(
        row(&runner.status().unwrap(), "hot").status,
        Status::Disconnected
    );
    runner.shutdown().await.unwrap();

    let dir_b = tempfile::tempdir().unwrap();
    drop(new_vault(dir_b.path(), &[]));
    ok(&cli(dir_b.path(), &["restore", moved.to_str().unwrap()]).await);
    let vault_b = Vault::open(dir_b.path(), PASS).unwrap();
    assert!(
        vault_b.bot_config(&bot("hot")).unwrap().enabled,
        "the file carries it enabled"
    );
    hook.set_mode(Mode::Reply("echo: ".into()));
    let logins = peer.seen().logins(&phone).count();
    let runner_b = Runner::start(vault_b.clone(), c).unwrap();
    let mut rx = runner_b.subscribe();
    let case = next_event(
        &mut rx,
        LOGIN_DEADLINE,
        "the restored bot's start",
        |e| match e {
            RunnerEvent::Started { bot, case, .. } if bot.as_str() == "hot" => Some(*case),
            _ => None,
        },
    )
    .await;
    assert_eq!(case, StartCase::Reusing, "no QR needed");
    wait_connected(&runner_b, "hot").await;
    wait_logins(&peer, &runner_b, &phone, logins + 1).await;
    echo(&peer, contact, &phone, "after the move").await;
    let got = hook.texts_from(contact);
    for t in &texts {
        assert!(got.contains(t), "{t:?} reached a hook: {got:?}");
    }
    no_qr(&mut rx, "hot");
    assert_eq!(
        peer.contact(contact).sessions_started().await,
        1,
        "the contact kept its Signal session"
    );
    assert_clean_signal(&peer);
    runner_b.shutdown().await.unwrap();
}
