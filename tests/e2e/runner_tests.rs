//! `wavault run` end to end: the runner over a real vault and its backend,
//! against the in-process peer.
//!
//! Why it exists: these pin the product's promise (pair once, then every
//! restart logs in with no QR) and the bookkeeping around it (bot_sessions
//! metadata, attempts, alerts, the control socket).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use wavault::runner::net::Net;
use wavault::runner::{RunConfig, Runner, RunnerEvent, StartCase};
use wavault::sessions::Status;
use wavault::status::StatusRow;
use wavault::vault::crypto::KdfParams;
use wavault::vault::BotConfig;
use wavault::{BotId, Vault};

use crate::peer::{Peer, LOGIN_DEADLINE, PAIRING_LOGIN_DEADLINE, PINNED_VERSION};

pub const PASS: &[u8] = b"runner test passphrase";

pub fn new_vault(dir: &std::path::Path, bots: &[&str]) -> Vault {
    // Cheap Argon2 on purpose: tests only.
    let v = Vault::create(dir, PASS, KdfParams::INSECURE_FOR_TESTS).expect("vault");
    for b in bots {
        v.add_bot(&BotConfig::new(bot(b))).expect("add bot");
    }
    v
}

/// Starts the web surface of `runner` on a free loopback port; its address.
pub async fn web(runner: &Runner, ready_grace: Duration) -> std::net::SocketAddr {
    let addr = "127.0.0.1:0".parse().unwrap();
    wavault::web::start(runner.service(), addr, ready_grace)
        .await
        .expect("web surface starts")
        .addr()
}

/// [`web`], and what a client needs to call it: the base URL and the
/// access token.
pub async fn web_with_token(
    runner: &Runner,
    vault: &Vault,
    ready_grace: Duration,
) -> (String, String) {
    let base = format!("http://{}", web(runner, ready_grace).await);
    let token = wavault::web::token::load(vault)
        .unwrap()
        .expect("made when the web surface starts")
        .to_string();
    (base, token)
}

pub fn bot(id: &str) -> BotId {
    BotId::parse(id).expect("bot id")
}

pub fn config(peer: &Peer) -> RunConfig {
    let mut cfg = RunConfig::new(Net {
        transport: Arc::new(peer.transport_factory()),
        http: Arc::new(peer.http_client()),
        version: Some(PINNED_VERSION),
    });
    cfg.console = false;
    cfg.stagger = Duration::ZERO;
    cfg.shutdown_grace = Duration::from_secs(5);
    cfg.push_name = "wavault-test".into();
    cfg
}

/// Waits for the first event matching `f`, with a deadline.
pub async fn next_event<T>(
    rx: &mut broadcast::Receiver<RunnerEvent>,
    deadline: Duration,
    what: &str,
    mut f: impl FnMut(&RunnerEvent) -> Option<T>,
) -> T {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Err(_) => panic!("timed out after {deadline:?} waiting for {what}"),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("runner events closed while waiting for {what}: {e}"),
            Ok(Ok(e)) => {
                if std::env::var_os("WAVAULT_E2E_TRACE").is_some() {
                    eprintln!("runner event: {e:?}");
                }
                if let Some(t) = f(&e) {
                    return t;
                }
            }
        }
    }
}

/// The start case the runner reports for its (first) bot.
async fn start_case(rx: &mut broadcast::Receiver<RunnerEvent>) -> StartCase {
    next_event(rx, LOGIN_DEADLINE, "start case", |e| match e {
        RunnerEvent::Started { case, .. } => Some(*case),
        _ => None,
    })
    .await
}

/// Waits until `id`'s status row says connected (login deadline).
async fn wait_connected(runner: &Runner, id: &str, what: &str) {
    runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            row(rows, id).status == Status::Connected
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

fn row<'a>(rows: &'a [StatusRow], id: &str) -> &'a StatusRow {
    rows.iter().find(|r| r.bot == id).expect("row for bot")
}

/// Starts a runner and pairs `id` through its QR code; returns once connected.
pub async fn run_and_pair(
    peer: &Peer,
    vault: &Vault,
    id: &str,
    cfg: RunConfig,
) -> (Runner, String) {
    let runner = Runner::start(vault.clone(), cfg).expect("runner starts");
    let mut rx = runner.subscribe();
    let case = next_event(&mut rx, LOGIN_DEADLINE, "start case", |e| match e {
        RunnerEvent::Started { bot, case, .. } if bot.as_str() == id => Some(*case),
        _ => None,
    })
    .await;
    assert_eq!(case, StartCase::NeedsPairing);
    let code = next_event(&mut rx, LOGIN_DEADLINE, "QR code", |e| match e {
        RunnerEvent::Qr { bot, code, .. } if bot.as_str() == id => Some(code.clone()),
        _ => None,
    })
    .await;
    let pairing = peer.phone_scan(&code).await.expect("phone scans the QR");
    runner
        .wait_until(PAIRING_LOGIN_DEADLINE, |rows| {
            row(rows, id).status == Status::Connected
        })
        .await
        .expect("connected after pairing");
    (runner, pairing.phone)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_pairs_and_a_restart_reuses_the_session_without_qr() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["ventas"]);
    let peer = Peer::new();
    let (runner, phone) = run_and_pair(&peer, &vault, "ventas", config(&peer)).await;
    let rows = runner.status().unwrap();
    let r = row(&rows, "ventas");
    assert!(
        r.authenticated_at.is_some(),
        "authenticated_at set after pairing"
    );
    assert_eq!(r.phone.as_deref(), Some(phone.as_str()));
    assert_eq!(r.credentials.map(|c| c.as_str()), Some("paired"));
    runner.shutdown().await.unwrap();
    let rows = wavault::status::collect(&vault).unwrap();
    assert_eq!(row(&rows, "ventas").status, Status::Disconnected);

    let registrations = peer.seen().registrations().count();
    let logins = peer.seen().logins(&phone).count();
    let runner = Runner::start(vault.clone(), config(&peer)).expect("restart");
    let mut rx = runner.subscribe();
    let case = start_case(&mut rx).await;
    assert_eq!(
        case,
        StartCase::Reusing,
        "the log says the previous session is reused"
    );
    wait_connected(&runner, "ventas", "connected again").await;
    let seen = peer.seen();
    assert_eq!(
        seen.registrations().count(),
        registrations,
        "no new registration"
    );
    assert_eq!(
        seen.logins(&phone).count(),
        logins + 1,
        "one more login with the paired phone"
    );
    let history = wavault::sessions::Sessions::new(vault.view(&bot("ventas")))
        .history()
        .unwrap();
    assert!(history
        .iter()
        .any(|h| h.reason.as_deref() == Some("shutdown")));
    // Statistics tell pairings from logins without QR by these reasons.
    let connected: Vec<_> = history
        .iter()
        .filter(|h| h.to == Status::Connected)
        .map(|h| h.reason.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(connected, ["paired", "logged in"], "{history:?}");
    runner.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_goes_reconnecting_then_connected() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["soporte"]);
    let peer = Peer::new();
    let (runner, _) = run_and_pair(&peer, &vault, "soporte", config(&peer)).await;
    let before = row(&runner.status().unwrap(), "soporte").connection_attempts;
    let mut rx = runner.subscribe();
    assert!(peer.drop_connections() > 0);
    next_event(&mut rx, LOGIN_DEADLINE, "reconnecting", |e| match e {
        RunnerEvent::Status {
            status: Status::Reconnecting,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    let rows = runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            row(rows, "soporte").status == Status::Connected
        })
        .await
        .expect("connected again");
    assert!(
        row(&rows, "soporte").connection_attempts > before,
        "the reconnect is counted"
    );
    runner.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_sets_logged_out_runs_the_alert_command_and_stops_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["alertas", "witness"]);
    // A second bot whose reconnects mark time for the check below.
    let witness = synth_paired(&vault, "witness", 4_915_100_000_901).await;
    let peer = Peer::new();
    let alert_file = dir.path().join("alert.json");
    let mut cfg = config(&peer);
    cfg.alert_command = Some(format!("cat > '{}'", alert_file.display()));
    let (runner, phone) = run_and_pair(&peer, &vault, "alertas", cfg).await;
    wait_connected(&runner, "witness", "the witness logs in").await;
    let mut rx = runner.subscribe();
    let logins = peer.seen().logins(&phone).count();
    assert!(peer.log_out(&phone) > 0);
    let alert = next_event(&mut rx, LOGIN_DEADLINE, "alert", |e| match e {
        RunnerEvent::Alert(a) => Some(a.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (alert.bot.as_str(), alert.kind.as_str()),
        ("alertas", "logged_out")
    );
    // No reconnect after the logout. A reconnect would come after
    // whatsapp-rust's reconnect backoff (Fibonacci from 1 s, ±10 % jitter:
    // at most 1.1 s for the first attempt after a logout). The witness is
    // dropped twice from now on; each time it reconnects after that same
    // backoff (1 s, then 1 s again: no stable 30 s in between), so its second
    // login comes at least 1.8 s after the logout, past the point where a
    // reconnect of `alertas` would have reached the peer.
    for n in [2, 3] {
        assert_eq!(peer.drop_connections_of(&witness), 1);
        peer.wait_for("the witness logs in again", LOGIN_DEADLINE, |log| {
            log.logins(&witness).filter(|c| c.accepted).count() >= n
        })
        .await
        .unwrap();
    }
    let log = peer.seen();
    assert_eq!(
        log.logins(&phone).count(),
        logins,
        "no connection attempt as `alertas` after the logout: {:?}",
        log.logins(&phone).collect::<Vec<_>>()
    );
    // The supervisor ends: no retry loop is left behind.
    next_event(&mut rx, LOGIN_DEADLINE, "supervisor stop", |e| match e {
        RunnerEvent::Stopped { bot } if bot.as_str() == "alertas" => Some(()),
        _ => None,
    })
    .await;
    let rows = runner.status().unwrap();
    assert_eq!(row(&rows, "alertas").status, Status::LoggedOut);
    wait_connected(&runner, "witness", "the witness stays in service").await;
    let delivered: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&alert_file).expect("alert command ran"))
            .unwrap();
    assert_eq!(delivered["bot"], "alertas");
    assert_eq!(delivered["kind"], "logged_out");
    assert!(delivered["time"].as_i64().unwrap() > 0);
    runner.shutdown().await.unwrap();
    assert_eq!(
        peer.seen().logins(&phone).count(),
        logins,
        "none at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_bot_counts_attempts_while_others_stay_connected() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["online"]);
    let peer = Peer::new();
    let (runner, _) = run_and_pair(&peer, &vault, "online", config(&peer)).await;
    peer.refuse_connections(true);
    // Added while running, through the same path `wavault bot add` uses.
    let req = wavault::ops::Request::BotAdd {
        config: BotConfig::new(bot("offline")),
    };
    let out = wavault::ops::client::call(vault.dir(), &req, &[])
        .expect("control request")
        .expect("runner answers on the control socket");
    assert!(
        matches!(&out.0, wavault::ops::Response::Added { bot, started: true } if bot == "offline"),
        "{out:?}"
    );
    let rows = runner
        .wait_until(Duration::from_secs(20), |rows| {
            rows.iter().any(|r| {
                r.bot == "offline"
                    && r.connection_attempts >= 2
                    && r.last_connection_error.is_some()
            })
        })
        .await
        .expect("attempts and the last error are recorded");
    assert_eq!(
        row(&rows, "online").status,
        Status::Connected,
        "the other bot is unaffected"
    );
    assert!(row(&rows, "offline")
        .last_connection_error
        .as_deref()
        .unwrap()
        .contains("connect failed"));
    peer.refuse_connections(false);
    runner.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_bot_list_work_from_a_second_process() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["panel"]);
    let peer = Peer::new();
    let (runner, phone) = run_and_pair(&peer, &vault, "panel", config(&peer)).await;
    let vault_dir = dir.path().to_path_buf();
    let run = move |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wavault"))
            .arg("--vault")
            .arg(&vault_dir)
            .args(args)
            .env_remove("WAVAULT_PASSPHRASE")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("spawn wavault")
    };
    let out = tokio::task::spawn_blocking(move || run(&["status", "--json"]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<StatusRow> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, Status::Connected);
    let masked = rows[0].phone.clone().unwrap();
    assert_ne!(masked, phone, "phone is masked by default");
    assert!(masked.contains('*') || phone.len() <= 6);
    runner.shutdown().await.unwrap();
}

/// Starts this test binary again running only `test` (with `envs`), and
/// waits until it prints a line containing `marker`; returns the child and
/// what follows the marker on that line. On timeout the child is killed and
/// the test fails.
pub async fn spawn_child(
    test: &str,
    envs: &[(&str, &std::ffi::OsStr)],
    marker: &str,
    deadline: Duration,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .stdout(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn child test process");
    let stdout = child.stdout.take().unwrap();
    // A plain thread (not spawn_blocking): if the child never answers, the
    // test fails at the deadline instead of the runtime waiting on the read.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let marker_owned = marker.to_owned();
    std::thread::spawn(move || {
        let found = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split(&marker_owned).nth(1).map(|p| p.trim().to_owned()));
        let _ = tx.send(found);
    });
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(Some(rest))) => (child, rest),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child {test} did not print {marker:?} in time: {other:?}");
        }
    }
}

/// Child half of the SIGKILL test: pairs a bot, prints CONNECTED, then waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_runner_for_sigkill() {
    let Some(dir) = std::env::var_os("WAVAULT_E2E_CHILD_DIR") else {
        return; // only meaningful when started by the parent test
    };
    let vault = Vault::open(std::path::Path::new(&dir), PASS).expect("child opens vault");
    let peer = Peer::new();
    let (_runner, phone) = run_and_pair(&peer, &vault, "killme", config(&peer)).await;
    let pairing = peer.seen().pairings[0].clone();
    let key: String = pairing
        .noise_key
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // libtest has printed "test <name> ... " without a newline: start a fresh line.
    println!("\nCONNECTED {phone} {} {key}", pairing.device);
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_connected_then_restart_logs_in_without_qr() {
    let dir = tempfile::tempdir().unwrap();
    drop(new_vault(dir.path(), &["killme"]));
    let (mut child, line) = spawn_child(
        "runner_tests::child_runner_for_sigkill",
        &[("WAVAULT_E2E_CHILD_DIR", dir.path().as_os_str())],
        "CONNECTED ",
        PAIRING_LOGIN_DEADLINE + LOGIN_DEADLINE,
    )
    .await;
    // The child's peer saw the device pair with this Noise key.
    let fields: Vec<&str> = line.split(' ').collect();
    let [phone, device, key] = fields[..] else {
        panic!("child printed {line:?}")
    };
    let phone = phone.to_string();
    let key: Vec<u8> = (0..key.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&key[i..i + 2], 16).unwrap())
        .collect();
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let vault = Vault::open(dir.path(), PASS).expect("vault reopens after SIGKILL");
    // A new server that knows the device as paired: the same phone logs in
    // only if the vault kept the Noise key it paired with.
    let peer = Peer::new();
    peer.register_device(&phone, device.parse().unwrap(), key.try_into().unwrap());
    let runner = Runner::start(vault.clone(), config(&peer)).unwrap();
    let mut rx = runner.subscribe();
    let case = start_case(&mut rx).await;
    assert_eq!(case, StartCase::Reusing);
    // The status rows may still show the killed child's last `connected`
    // until the new run writes `connecting`: the login is waited for at
    // the peer, not read from the rows.
    let seen = peer
        .wait_for("the paired phone's login", LOGIN_DEADLINE, |l| {
            l.logins(&phone).any(|c| c.accepted)
        })
        .await
        .expect("the paired phone logged in");
    wait_connected(&runner, "killme", "logs in after SIGKILL").await;
    assert_eq!(
        seen.registrations().count(),
        0,
        "no registration after the restart"
    );
    runner.shutdown().await.unwrap();
}

/// Writes a device record as a finished pairing leaves it (fresh keys, phone
/// JID, LID), so the runner takes its no-QR path without a 10 s pairing.
/// It also seeds the peer's account database with the device's Noise key
/// (`tests/support/paired.rs`): the peer refuses any other. Returns the phone.
pub async fn synth_paired(vault: &Vault, id: &str, phone: u64) -> String {
    crate::paired::write_paired_device(vault, &bot(id), phone, "wavault-test").await;
    phone.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_sweep_and_rotate_the_key_while_the_bot_stays_connected() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["timed"]);
    let phone = synth_paired(&vault, "timed", 4_915_100_000_777).await;
    // Two transitions older than the 30-day retention: the sweep removes
    // the older and keeps the newer (it gives the status at the cutoff).
    let sessions = wavault::sessions::Sessions::new(vault.view(&bot("timed")));
    let now = wavault::vault::now();
    sessions
        .set_status(now - 50 * 86_400, Status::Connected, Some("ancient"))
        .unwrap();
    sessions
        .set_status(now - 40 * 86_400, Status::Reconnecting, Some("at cutoff"))
        .unwrap();
    let peer = Peer::new();
    let mut cfg = config(&peer);
    cfg.sweep_every = Duration::from_millis(300);
    cfg.rotate_key_every = Some(Duration::from_millis(400));
    let runner = Runner::start(vault.clone(), cfg).unwrap();
    let mut rx = runner.subscribe();
    assert_eq!(start_case(&mut rx).await, StartCase::Reusing);
    next_event(&mut rx, LOGIN_DEADLINE, "connected", |e| match e {
        RunnerEvent::Status {
            status: Status::Connected,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    let logins = peer.seen().logins(&phone).count();

    // Both jobs run (each at least once) while the bot is up; no status
    // change other than `connected` is reported meanwhile.
    let (mut swept, mut rotated) = (None, None);
    while swept.is_none() || rotated.is_none() {
        next_event(&mut rx, LOGIN_DEADLINE, "sweep and rotate_key jobs", |e| {
            match e {
                RunnerEvent::Job { name, ok, detail } => {
                    assert!(ok, "{name} failed: {detail}");
                    match *name {
                        "sweep" => swept = swept.take().or(Some(detail.clone())),
                        "rotate_key" => rotated = rotated.take().or(Some(detail.clone())),
                        other => panic!("unexpected job {other}"),
                    }
                }
                RunnerEvent::Status { status, .. } => {
                    assert_eq!(*status, Status::Connected, "the bot was disturbed: {e:?}")
                }
                _ => {}
            }
            Some(())
        })
        .await;
    }
    let swept = swept.unwrap();
    assert!(
        swept.contains(" 1 history entries"),
        "first sweep removes the old entry: {swept}"
    );
    assert!(rotated.unwrap().starts_with("term "));
    let rows = runner.status().unwrap();
    assert_eq!(row(&rows, "timed").status, Status::Connected);
    assert_eq!(peer.seen().logins(&phone).count(), logins, "no reconnect");
    let history = sessions.history().unwrap();
    assert!(history
        .iter()
        .all(|h| h.reason.as_deref() != Some("ancient")));
    assert!(history
        .iter()
        .any(|h| h.reason.as_deref() == Some("at cutoff")));
    assert!(!history.is_empty(), "recent history kept");
    runner.shutdown().await.unwrap();

    // Everything the rotations re-sealed still opens: the restart logs in.
    let runner = Runner::start(vault.clone(), config(&peer)).unwrap();
    let mut rx = runner.subscribe();
    assert_eq!(start_case(&mut rx).await, StartCase::Reusing);
    wait_connected(&runner, "timed", "logs in after key rotations").await;
    assert_eq!(peer.seen().registrations().count(), 0);
    runner.shutdown().await.unwrap();
}

/// `wavault bot reauth` while the runner holds the vault: over the control
/// socket the runner drops that bot, an automatic backup is taken, the
/// credentials go, and the bot comes back asking for a QR scan. Config and
/// history survive. Then offline: the next run shows a QR too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth_through_the_runner_shows_a_qr_and_keeps_history_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["again"]);
    let mut cfg_bot = vault.bot_config(&bot("again")).unwrap();
    cfg_bot.webhook = Some("http://127.0.0.1:9/hook".into());
    vault.set_bot(&cfg_bot).unwrap();
    synth_paired(&vault, "again", 4_915_100_000_888).await;
    let peer = Peer::new();
    let mut cfg = config(&peer);
    cfg.backup_passphrase = Some(Arc::new(wavault::passphrase::Passphrase::new(PASS)));
    let runner = Runner::start(vault.clone(), cfg).unwrap();
    let mut rx = runner.subscribe();
    next_event(&mut rx, LOGIN_DEADLINE, "connected", |e| match e {
        RunnerEvent::Status {
            status: Status::Connected,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    let history_before = wavault::sessions::Sessions::new(vault.view(&bot("again")))
        .history()
        .unwrap();

    let d = dir.path().to_path_buf();
    let answer = tokio::task::spawn_blocking(move || {
        let req = wavault::ops::Request::Reauth { bot: bot("again") };
        wavault::ops::client::call(&d, &req, &[])
    })
    .await
    .unwrap()
    .expect("reauth over the control socket")
    .expect("the runner answered");
    let wavault::ops::Response::Reauth { report, restarted } = answer.0 else {
        panic!("{answer:?}");
    };
    assert!(restarted);
    assert!(report.removed > 0, "{report:?}");
    let backup = report.auto_backup.clone();
    assert!(backup.exists());

    let case = next_event(
        &mut rx,
        LOGIN_DEADLINE,
        "restart after reauth",
        |e| match e {
            RunnerEvent::Started { case, .. } => Some(*case),
            _ => None,
        },
    )
    .await;
    assert_eq!(case, StartCase::NeedsPairing);
    next_event(
        &mut rx,
        LOGIN_DEADLINE,
        "QR code after reauth",
        |e| match e {
            RunnerEvent::Qr { .. } => Some(()),
            _ => None,
        },
    )
    .await;
    peer.wait_for("a registration", LOGIN_DEADLINE, |log| {
        log.registrations().count() == 1
    })
    .await
    .expect("the bot registers anew");
    runner.shutdown().await.unwrap();

    // Config and history survived; the history only grew.
    assert_eq!(vault.bot_config(&bot("again")).unwrap(), cfg_bot);
    let history = wavault::sessions::Sessions::new(vault.view(&bot("again")))
        .history()
        .unwrap();
    assert!(history.starts_with(&history_before), "{history:?}");
    // The re-registering client stored fresh keys, not yet paired.
    assert_eq!(
        wavault::store::credentials_state(&vault.view(&bot("again"))).map(|c| c.as_str()),
        Some("incomplete")
    );
    // The automatic backup holds the paired state.
    let (_, b) =
        wavault::backup::archive::read_file(&backup, PASS, &mut |_, _| {}).expect("backup reads");
    assert_eq!(
        wavault::store::dump_credentials_state(&b.bots[0]).as_str(),
        "paired"
    );
}

/// A paired bot away and quiet for 20 days is flagged idle by `status` and
/// raises one `idle` alert from the runner's timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_paired_bot_is_flagged_and_alerted() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["sleepy"]);
    synth_paired(&vault, "sleepy", 4_915_100_000_999).await;
    let mut c = vault.bot_config(&bot("sleepy")).unwrap();
    c.enabled = false; // not started: only the timer looks at it
    vault.set_bot(&c).unwrap();
    let s = wavault::sessions::Sessions::new(vault.view(&bot("sleepy")));
    let long_ago = wavault::vault::now() - 20 * 86_400;
    s.set_status(long_ago, Status::Connected, Some("logged in"))
        .unwrap();
    s.set_status(long_ago, Status::Disconnected, Some("shutdown"))
        .unwrap();
    let rows = wavault::status::collect(&vault).unwrap();
    assert!(row(&rows, "sleepy").idle, "{rows:?}");
    assert!(wavault::status::table(&rows).contains("IDLE"));

    let peer = Peer::new();
    let mut cfg = config(&peer);
    cfg.idle_check_every = Duration::from_millis(100);
    let runner = Runner::start(vault.clone(), cfg).unwrap();
    let mut rx = runner.subscribe();
    let alert = next_event(&mut rx, LOGIN_DEADLINE, "idle alert", |e| match e {
        RunnerEvent::Alert(a) => Some(a.clone()),
        _ => None,
    })
    .await;
    assert_eq!(alert.kind, "idle");
    assert_eq!(alert.bot, "sleepy");
    assert!(alert.reason.contains("20 days"), "{}", alert.reason);
    runner.shutdown().await.unwrap();
}

/// A runner shut down lets go of the vault: nothing it started keeps a
/// handle (a bot's client and its bookkeeping must not hold each other), so
/// this same process opens the vault again, which needs its lock back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_runner_lets_go_of_the_vault() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["solo"]);
    synth_paired(&vault, "solo", 4_915_100_000_778).await;
    let peer = Peer::new();
    let runner = Runner::start(vault, config(&peer)).unwrap();
    runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            rows.iter()
                .any(|r| r.bot == "solo" && r.status == Status::Connected)
        })
        .await
        .expect("solo connected");
    runner.shutdown().await.unwrap();
    // The vault's own retry for a lock this process seems to hold (2 s)
    // covers background threads still letting go.
    match Vault::open(dir.path(), PASS) {
        Ok(v) => drop(v),
        Err(e) => panic!("the vault is still held after the runner's shutdown: {e}"),
    }
}
