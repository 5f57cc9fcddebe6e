//! The dashboard as a person sees it, in headless Chromium driven over
//! WebDriver (Debian's `chromium` and `chromium-driver`, installed by
//! `.ci/run`): the token prompt first, then one row per bot with the right
//! status, and a QR image for the bot waiting for a scan; a click on a row
//! opens the bot's page (a known week of history as the expected timeline
//! segments, the `stats` figures, recent errors, the message chart), and the
//! page of the bot waiting for a scan shows its QR code large; a bot whose
//! connection attempts keep failing reads `reconnecting (attempt N, next in
//! S s)`. Screenshots are saved to `target/tmp/browser/`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wavault::runner::{Runner, RunnerEvent};
use wavault::sessions::Status;

use crate::peer::{Peer, LOGIN_DEADLINE};
use crate::runner_tests::{config, new_vault, next_event, synth_paired};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Driver {
    fn start() -> Driver {
        // Port 0: chromedriver binds a free port itself and names it on stdout
        // ("ChromeDriver was started successfully on port N."), so no port is
        // picked here and released for someone else to take.
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let out = child.stdout.take().expect("chromedriver stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|p| p.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
            }
        });
        let mut d = Driver {
            child,
            base: String::new(),
        };
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromedriver names its port within 30 s");
        d.base = format!("http://127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = agent()
                .get(&format!("{}/status", d.base))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return d;
            }
            assert!(Instant::now() < until, "chromedriver not ready within 30 s");
            std::thread::sleep(Duration::from_millis(100)); // polling a readiness endpoint under a deadline
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let a = agent();
        let mut resp = match (method, body) {
            ("GET", _) => a.get(&url).call(),
            ("DELETE", _) => a.delete(&url).call(),
            (_, b) => a
                .post(&url)
                .header("content-type", "application/json")
                .send(b.unwrap_or(json!({})).to_string()),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// One WebDriver session of headless Chromium.
struct Browser<'a> {
    d: &'a Driver,
    session: String,
}

impl Browser<'_> {
    fn open<'d>(d: &'d Driver, profile: &std::path::Path) -> Browser<'d> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1400,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let v = d.call("POST", "/session", Some(caps));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Browser { d, session }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.d
            .call(method, &format!("/session/{}{path}", self.session), body)["value"]
            .clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }

    /// Runs `js` until `done` accepts its value, at most `deadline`.
    fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        js: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let v = self.script(js);
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; last: {v}"
            );
            std::thread::sleep(Duration::from_millis(200)); // the page refreshes itself every 2 s
        }
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self
            .d
            .call("DELETE", &format!("/session/{}", self.session), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var_os("WAVAULT_REQUIRE_BROWSER").is_none(),
            "WAVAULT_REQUIRE_BROWSER is set but {CHROMEDRIVER} is missing"
        );
        eprintln!("skipped: {CHROMEDRIVER} missing (apt-get install chromium chromium-driver)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(
        dir.path(),
        &["alpha-connected", "beta-gone", "gamma-new", "delta-flaky"],
    );
    let alpha = synth_paired(&vault, "alpha-connected", 4_915_100_000_101).await;
    let gone = synth_paired(&vault, "beta-gone", 4_915_100_000_102).await;
    let flaky = synth_paired(&vault, "delta-flaky", 4_915_100_000_104).await;
    // A bot that stays off, with a known week of history (its page's timeline):
    // down since before the window (so every second of it is known and the
    // figures do not depend on when the page is rendered), then connected,
    // reconnecting for 2 h, connected, logged out, down.
    let mut off = wavault::vault::BotConfig::new(crate::runner_tests::bot("epsilon-history"));
    off.enabled = false;
    vault.add_bot(&off).unwrap();
    let history =
        wavault::sessions::Sessions::new(vault.view(&crate::runner_tests::bot("epsilon-history")));
    let (now, day) = (wavault::vault::now(), 86_400);
    for (at, st, why) in [
        (now - 8 * day, Status::Error, "client outdated"),
        (now - 6 * day, Status::Connected, "paired"),
        (now - 4 * day, Status::Reconnecting, "stream error 503"),
        (now - 4 * day + 7_200, Status::Connected, "login"),
        (now - 2 * day, Status::LoggedOut, "logged out by server"),
        (now - day, Status::Disconnected, "shutdown"),
    ] {
        history.set_status(at, st, Some(why)).unwrap();
    }
    let peer = Peer::new();
    let cfg = config(&peer);
    let runner = Runner::start(vault.clone(), cfg).unwrap();
    let mut rx = runner.subscribe();
    runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            rows.iter()
                .filter(|r| r.status == Status::Connected)
                .count()
                == 3
        })
        .await
        .expect("three paired bots connected");
    // The states the peer can produce: logged out, and reconnecting (the
    // server drops this bot's connection and leaves its next logins
    // unanswered).
    assert_eq!(peer.log_out(&gone), 1);
    peer.stall_logins(&flaky, true);
    assert_eq!(peer.drop_connections_of(&flaky), 1);
    runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            let st = |b: &str| rows.iter().find(|r| r.bot == b).map(|r| r.status);
            st("beta-gone") == Some(Status::LoggedOut)
                && st("delta-flaky") == Some(Status::Reconnecting)
        })
        .await
        .expect("logged out and reconnecting");
    next_event(
        &mut rx,
        LOGIN_DEADLINE,
        "the new bot's QR code",
        |e| match e {
            RunnerEvent::Qr { .. } => Some(()),
            _ => None,
        },
    )
    .await;
    let base = format!(
        "http://{}/",
        crate::runner_tests::web(&runner, wavault::web::START_GRACE).await
    );
    let token = wavault::web::token::load(&vault)
        .unwrap()
        .unwrap()
        .to_string();
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let server = peer.clone();

    let rows = tokio::task::spawn_blocking(move || {
        let driver = Driver::start();
        let b = Browser::open(&driver, profile.path());
        // Without a token: the prompt, and no bot data.
        b.go(&base);
        let prompt = b.script(
            "return [!!document.getElementById('auth-prompt'), !!document.getElementById('bots'), document.body.innerText]",
        );
        assert_eq!(prompt[0], true, "{prompt}");
        assert_eq!(prompt[1], false, "{prompt}");
        assert!(!prompt[2].as_str().unwrap().contains("alpha-connected"));
        let shot = b.cmd("GET", "/screenshot", None);
        save_png(&shots.join("prompt.png"), &shot);
        // A person types the token and submits.
        b.script(&format!(
            "document.getElementById('token').value = {}; document.querySelector('#auth-prompt button').click(); return true",
            json!(token)
        ));
        let rows = b.wait_for(
            "five rows and a QR image",
            Duration::from_secs(20),
            "var rows = Array.from(document.querySelectorAll('#bots tbody tr')); \
             return rows.map(function (tr) { return [tr.dataset.bot, tr.querySelector('.status').textContent, \
             !!tr.querySelector('td.qr svg'), getComputedStyle(tr.querySelector('.status')).backgroundColor, \
             tr.querySelector('td.messages').textContent, tr.querySelector('td.queued').textContent]; });",
            |v| {
                v.as_array().is_some_and(|rows| {
                    rows.len() == 5 && rows.iter().any(|r| r[0] == "gamma-new" && r[2] == true)
                })
            },
        );
        let shot = b.cmd("GET", "/screenshot", None);
        save_png(&shots.join("dashboard.png"), &shot);

        // A click on a bot's row opens its page: the week as a timeline bar.
        b.script(
            "document.querySelector('#bot-epsilon-history td.status-cell').click(); return true",
        );
        let page = b.wait_for(
            "the bot's page",
            Duration::from_secs(20),
            "if (document.body.id !== 'bot-page') return null; \
             var segs = Array.from(document.querySelectorAll('#timeline rect.seg')).map(function (r) { \
               return [r.dataset.state, r.getBoundingClientRect().width, getComputedStyle(r).fill]; }); \
             return {path: location.pathname, segs: segs, \
               availability: document.getElementById('availability').textContent, \
               disconnects: document.getElementById('disconnects').textContent, \
               errors: document.getElementById('errors').innerText, \
               chart: document.querySelectorAll('#chart rect.bar').length, \
               qr: !!document.querySelector('#qr svg'), \
               external: Array.from(document.querySelectorAll('[src],[href]')).some(function (e) { \
                 return /^https?:/.test(e.getAttribute('src') || e.getAttribute('href')); })};",
            |v| !v.is_null(),
        );
        let shot = b.cmd("GET", "/screenshot", None);
        save_png(&shots.join("bot-page.png"), &shot);

        // The page of the bot waiting for a scan: its QR code, large.
        b.go(&format!("{base}bots/gamma-new"));
        let qr_width = b.wait_for(
            "a large QR code",
            Duration::from_secs(20),
            "var s = document.querySelector('#qr svg'); return s ? s.getBoundingClientRect().width : 0;",
            |v| v.as_f64().is_some_and(|w| w > 0.0),
        );
        let shot = b.cmd("GET", "/screenshot", None);
        save_png(&shots.join("bot-page-qr.png"), &shot);

        // A bot whose connection attempts keep failing (the server drops it
        // and refuses new connections): its row says when it tries again.
        b.go(&base);
        server.refuse_connections(true);
        assert_eq!(server.drop_connections_of(&alpha), 1);
        let retrying = b.wait_for(
            "a row saying reconnecting with the attempt",
            Duration::from_secs(30),
            "var s = document.querySelector('#bot-alpha-connected .status'); return s ? s.textContent : '';",
            |v| v.as_str().is_some_and(|t| t.starts_with("reconnecting (attempt ")),
        );
        server.refuse_connections(false);
        (rows, page, qr_width, retrying)
    })
    .await
    .unwrap();
    let (rows, page, qr_width, retrying) = rows;
    let retrying = retrying.as_str().unwrap();
    let (n, s) = retrying
        .strip_prefix("reconnecting (attempt ")
        .and_then(|t| t.strip_suffix(" s)"))
        .and_then(|t| t.split_once(", next in "))
        .unwrap_or_else(|| panic!("{retrying}"));
    assert!(n.parse::<u32>().unwrap() >= 1, "{retrying}");
    assert!(s.parse::<u32>().is_ok(), "{retrying}");

    // The bot's page: the known week, segment by segment, each visible and
    // coloured by state.
    assert_eq!(page["path"], "/bots/epsilon-history", "{page}");
    let segs = page["segs"].as_array().unwrap();
    let states: Vec<&str> = segs.iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(
        states,
        [
            "down",
            "connected",
            "reconnecting",
            "connected",
            "logged_out",
            "down"
        ],
        "{page}"
    );
    for s in segs {
        assert!(s[1].as_f64().unwrap() > 0.0, "visible: {s}");
    }
    let fill = |i: usize| segs[i][2].as_str().unwrap();
    assert_eq!(fill(1), fill(3), "both connected: {page}");
    assert_eq!(fill(0), fill(5), "both down: {page}");
    let fills: std::collections::HashSet<&str> = [0, 1, 2, 4].into_iter().map(fill).collect();
    assert_eq!(fills.len(), 4, "one colour per state: {page}");
    // The `stats` figures over the week: 94 h connected of 168 h.
    assert_eq!(page["availability"], "56.0 %", "{page}");
    assert_eq!(page["disconnects"], "2", "{page}");
    let errors = page["errors"].as_str().unwrap();
    assert!(
        errors.contains("logged out by server") && errors.contains("stream error 503"),
        "{errors}"
    );
    assert_eq!(
        page["chart"],
        2 * 48,
        "an in and an out bar per hour: {page}"
    );
    assert_eq!(page["qr"], false, "{page}");
    assert_eq!(page["external"], false, "no external assets: {page}");
    // Large enough to scan from a phone.
    assert!(qr_width.as_f64().unwrap() >= 300.0, "{qr_width}");

    let row = |bot: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == bot)
            .unwrap_or_else(|| panic!("no row for {bot}: {rows}"))
            .clone()
    };
    assert_eq!(row("alpha-connected")[1], "connected");
    assert_eq!(row("beta-gone")[1], "logged_out");
    assert_eq!(row("delta-flaky")[1], "reconnecting");
    assert_eq!(row("gamma-new")[1], "connecting");
    assert_eq!(
        row("gamma-new")[2],
        true,
        "QR image for the bot waiting for a scan"
    );
    assert_eq!(row("alpha-connected")[2], false);
    // Message counts and the queue, per bot.
    assert_eq!(row("alpha-connected")[4], "0 / 0");
    assert_eq!(row("alpha-connected")[5], "0");
    // Colours differ by status (green connected, red logged out).
    assert_ne!(row("alpha-connected")[3], row("beta-gone")[3]);
    peer.stall_logins(&flaky, false);
    runner.shutdown().await.unwrap();
}

fn save_png(path: &std::path::Path, shot: &Value) {
    use base64::Engine;
    let b64 = shot.as_str().expect("screenshot is base64");
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}
