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

const FLAKY_CHILD: &str = "log_tests::child_runner_whose_connections_fail";

/// Child half of [`every_line_about_a_bot_names_it`]: wavault's log set-up
/// in the format `WAVAULT_E2E_LOG_FORMAT` names, the bot `flaky` against a
/// server that drops every connection; returns after its second attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_runner_whose_connections_fail() {
    let Some(dir) = std::env::var_os("WAVAULT_E2E_LOG_FLAKY_DIR") else {
        return; // only meaningful when started by the parent test
    };
    let format = match std::env::var("WAVAULT_E2E_LOG_FORMAT").unwrap().as_str() {
        "json" => wavault::logs::LogFormat::Json,
        _ => wavault::logs::LogFormat::Text,
    };
    wavault::logs::init_with(format);
    let addr: std::net::SocketAddr = std::env::var("WAVAULT_E2E_LOG_PEER")
        .unwrap()
        .parse()
        .unwrap();
    let vault = Vault::open(std::path::Path::new(&dir), PASS).expect("child opens vault");
    let mut c = config(&Peer::new());
    c.net = crate::messaging_tests::tcp_net(addr);
    let runner = Runner::start(vault, c).unwrap();
    runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            rows.iter()
                .any(|r| r.bot == "flaky" && r.connection_attempts >= 2)
        })
        .await
        .expect("the bot tries twice");
    runner.shutdown().await.unwrap();
}

/// Runs [`child_runner_whose_connections_fail`] in `format`; its stderr.
async fn flaky_child_log(format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    drop(new_vault(dir.path(), &["flaky"]));
    // Accepts every connection and drops it at once: each attempt fails.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", FLAKY_CHILD, "--nocapture", "--test-threads", "1"])
        .env("WAVAULT_E2E_LOG_FLAKY_DIR", dir.path())
        .env("WAVAULT_E2E_LOG_PEER", &addr)
        .env("WAVAULT_E2E_LOG_FORMAT", format)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = KillOnDrop(Some(cmd.spawn().expect("spawn the child test")));
    let (tx, rx) = std::sync::mpsc::channel();
    let out = std::thread::spawn(move || {
        let mut child = child;
        let out = child.0.take().unwrap().wait_with_output();
        let _ = tx.send(());
        out
    });
    let ended = tokio::task::spawn_blocking(move || rx.recv_timeout(LOGIN_DEADLINE * 2))
        .await
        .unwrap();
    assert!(ended.is_ok(), "the {format} child did not finish in time");
    let out = out.join().unwrap().unwrap();
    server.abort();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the {format} child test failed:\n{}\n{log}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ =
        std::io::stderr().write_all(format!("--- {format} child log ---\n{log}---\n").as_bytes());
    log
}

/// `run`'s log names the bot on every line about it, whatsapp-rust's lines
/// included (a span per bot); `--log-format json` writes one JSON object a
/// line; text events are one line each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_about_a_bot_names_it() {
    let log = flaky_child_log("json").await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {e}: {l:?}"))
        })
        .collect();
    let about_the_bot = |v: &&serde_json::Value| {
        let t = v["target"].as_str().unwrap_or_default();
        t.starts_with("whatsapp_rust")
            || t.starts_with("wacore")
            || t.starts_with("wavault::runner")
    };
    assert!(
        lines.iter().any(|v| v["target"]
            .as_str()
            .unwrap_or_default()
            .starts_with("whatsapp_rust")),
        "positive control: whatsapp-rust logs the failed connections:\n{log}"
    );
    for v in lines.iter().filter(about_the_bot) {
        assert_eq!(v["span"]["bot"], "flaky", "a line without its bot: {v}");
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
        // Every attempt failed and was retried: nothing at ERROR.
        assert_ne!(v["level"], "ERROR", "a retried failure at ERROR: {v}");
    }
    let warnings = lines
        .iter()
        .filter(|v| v["level"] == "WARN" && v["error"].is_string())
        .count();
    assert!(
        warnings >= 2,
        "one WARN with its cause per failed attempt (2 or more):\n{log}"
    );

    let log = flaky_child_log("text").await;
    assert!(
        log.lines().filter(|l| l.contains(" WARN ")).count() >= 2,
        "one WARN line per failed attempt:\n{log}"
    );
    assert!(
        !log.contains(" ERROR "),
        "retried failures are WARN:\n{log}"
    );
    for l in log.lines() {
        assert!(
            l.starts_with("20") && l.get(19..).is_some(),
            "every event on one line, starting with its time: {l:?}\n{log}"
        );
        if !l.contains("wavault::") && !l.contains(" running") {
            assert!(
                l.contains(" bot{bot=flaky}: "),
                "a line without its bot: {l:?}"
            );
        }
    }
}
