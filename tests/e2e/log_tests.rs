//! The log at the default filter (`RUST_LOG` unset) carries no contact
//! number, JID, LID or message text, while a contact writes to a bot and
//! the hook answers.
//!
//! Why a child process: the log set-up is process-wide (one global
//! subscriber), so the runner runs in a child test process that installs
//! wavault's own set-up (`wavault::logs::init`, as `main` does) and talks to
//! the parent's peer over loopback TCP; the parent captures the child's
//! stdout and stderr whole.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wavault::messaging::hook::Target;
use wavault::runner::Runner;
use wavault::sessions::Status;
use wavault::Vault;

use crate::hook_server::{HookServer, Mode};
use crate::peer::{Peer, LOGIN_DEADLINE};
use crate::runner_tests::{config, new_vault, synth_paired, PASS};

const DEADLINE: Duration = Duration::from_secs(20);
const CHILD: &str = "log_tests::child_runner_at_the_default_log_filter";

/// Child half: wavault's log set-up with `RUST_LOG` unset, the bot `logs`
/// against the parent's peer; prints CONNECTED, shuts down cleanly when its
/// stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_runner_at_the_default_log_filter() {
    let Some(dir) = std::env::var_os("WAVAULT_E2E_LOG_CHILD_DIR") else {
        return; // only meaningful when started by the parent test
    };
    assert!(std::env::var_os("RUST_LOG").is_none(), "RUST_LOG is unset");
    wavault::logs::init();
    let addr: std::net::SocketAddr = std::env::var("WAVAULT_E2E_LOG_PEER")
        .unwrap()
        .parse()
        .unwrap();
    let hook = std::env::var("WAVAULT_E2E_LOG_HOOK").unwrap();
    let vault = Vault::open(std::path::Path::new(&dir), PASS).expect("child opens vault");
    let mut c = config(&Peer::new());
    c.net = crate::messaging_tests::tcp_net(addr);
    c.hooks.target = Some(Target::Webhook(hook));
    let runner = Runner::start(vault, c).unwrap();
    runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            rows.iter()
                .any(|r| r.bot == "logs" && r.status == Status::Connected)
        })
        .await
        .expect("the bot connects");
    // libtest has printed "test <name> ... " without a newline: start a fresh line.
    println!("\nCONNECTED");
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line); // EOF: the parent is done
    })
    .await
    .unwrap();
    runner.shutdown().await.unwrap();
}

/// Reads `from` line by line into `into`; sends () on `tx` at the line
/// holding `marker`, if any.
fn drain(
    from: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<String>>,
    marker: Option<(&'static str, std::sync::mpsc::Sender<()>)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if let Some((m, tx)) = &marker {
                if l.contains(m) {
                    let _ = tx.send(());
                }
            }
            let mut s = into.lock().unwrap();
            s.push_str(&l);
            s.push('\n');
        }
    })
}

/// Kills the child if the test fails half-way.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_log_filter_keeps_numbers_jids_and_text_out_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["logs"]);
    let bot_phone_n = 4_915_100_001_017u64;
    let phone = synth_paired(&vault, "logs", bot_phone_n).await;
    // The LID tests/support/paired.rs gives the bot.
    let bot_lid = (bot_phone_n + 100_000_000_000_000).to_string();
    drop(vault);
    let peer = Peer::new();
    let addr = peer.listen_tcp().await.to_string();
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;

    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", CHILD, "--nocapture", "--test-threads", "1"])
        .env("WAVAULT_E2E_LOG_CHILD_DIR", dir.path())
        .env("WAVAULT_E2E_LOG_PEER", &addr)
        .env("WAVAULT_E2E_LOG_HOOK", &hook.url)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = KillOnDrop(Some(cmd.spawn().expect("spawn the child test")));
    let c = child.0.as_mut().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let readers = [
        drain(
            c.stdout.take().unwrap(),
            log.clone(),
            Some(("CONNECTED", tx)),
        ),
        drain(c.stderr.take().unwrap(), log.clone(), None),
    ];
    let stdin = c.stdin.take().unwrap();
    let connected = tokio::task::spawn_blocking(move || rx.recv_timeout(LOGIN_DEADLINE * 2))
        .await
        .unwrap();
    assert!(
        connected.is_ok(),
        "the child did not connect in time; its output:\n{}",
        log.lock().unwrap()
    );
    peer.wait_for("the bot's pre-key upload", LOGIN_DEADLINE, |l| {
        l.has_prekey_bundle(&phone)
    })
    .await
    .expect("pre-keys uploaded");

    let contact = "4917600000017";
    let text = "meet me at the xylophone museum at 7";
    let alice = peer.contact(contact);
    alice.send_text(&phone, text).await.unwrap();
    let echo = format!("echo: {text}");
    alice
        .wait_received("the hook's reply", DEADLINE, |r| {
            r.iter().any(|m| m.text.as_deref() == Some(echo.as_str()))
        })
        .await
        .unwrap();
    assert_eq!(
        hook.texts_from(contact),
        [text],
        "the message was delivered"
    );

    // Closing stdin stops the child cleanly: everything it logs is in.
    drop(stdin);
    let mut c = child.0.take().unwrap();
    let status = tokio::time::timeout(DEADLINE, tokio::task::spawn_blocking(move || c.wait()))
        .await
        .expect("the child exits after its stdin closes")
        .unwrap()
        .unwrap();
    for r in readers {
        r.join().unwrap();
    }
    let log = log.lock().unwrap().clone();
    assert!(status.success(), "the child test failed:\n{log}");
    let _ = std::io::stderr().write_all(format!("--- child log ---\n{log}---\n").as_bytes());

    // Positive control: wavault's own info lines are there.
    assert!(
        log.lines().any(|l| l.contains("INFO")
            && l.contains("bot=logs")
            && l.contains("-> connected")),
        "no wavault info line about the bot connecting: the log is not at the default filter?\n{log}"
    );
    for (what, needle) in [
        ("the contact's number", contact),
        ("the bot's number", phone.as_str()),
        ("the bot's LID", bot_lid.as_str()),
        ("a phone-number JID", "@s.whatsapp.net"),
        ("a LID JID", "@lid"),
        ("the message text", "xylophone"),
    ] {
        let hits: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
        assert!(
            hits.is_empty(),
            "{what} ({needle}) is in the log at the default filter:\n{}",
            hits.join("\n")
        );
    }
}
