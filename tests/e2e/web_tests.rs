//! The web surface of a running runner: token, JSON API, metrics (parsed
//! with a Prometheus parser and compared with `status` at the same moment),
//! health checks, QR images for bots waiting for a scan.

use std::collections::HashMap;
use std::time::Duration;

use wavault::runner::{Runner, RunnerEvent};
use wavault::sessions::Status;
use wavault::status::StatusRow;

use crate::peer::{Peer, LOGIN_DEADLINE};
use crate::runner_tests::{bot, config, new_vault, next_event, synth_paired};

/// A runner serving the web surface with two paired bots: `conn`
/// connected, and `late`, whose logins the peer never answers (it stays
/// connecting). Phones `phone` and `phone + 1`: tests running at once must
/// not share a phone number. `prepare` runs on the vault before the start.
struct ConnAndLate {
    vault: wavault::Vault,
    peer: Peer,
    /// `late`'s phone.
    late: String,
    runner: Runner,
    addr: std::net::SocketAddr,
    token: String,
}

async fn conn_and_late(
    dir: &std::path::Path,
    phone: u64,
    prepare: impl FnOnce(&wavault::Vault),
) -> ConnAndLate {
    let vault = new_vault(dir, &["conn", "late"]);
    synth_paired(&vault, "conn", phone).await;
    let late = synth_paired(&vault, "late", phone + 1).await;
    prepare(&vault);
    let peer = Peer::new();
    peer.stall_logins(&late, true);
    let runner = Runner::start(vault.clone(), config(&peer)).unwrap();
    let addr = crate::runner_tests::web(&runner, Duration::ZERO).await;
    runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            rows.iter()
                .any(|r| r.bot == "conn" && r.status == Status::Connected)
        })
        .await
        .expect("conn connected");
    let token = wavault::web::token::load(&vault)
        .unwrap()
        .unwrap()
        .to_string();
    ConnAndLate {
        vault,
        peer,
        late,
        runner,
        addr,
        token,
    }
}

/// GET with an optional bearer token: (status, body).
pub(crate) async fn get(url: String, token: Option<String>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut req = agent.get(&url);
        if let Some(t) = token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().expect("request");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_api_metrics_health_and_qr() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["conn", "fresh"]);
    synth_paired(&vault, "conn", 4_915_100_000_555).await;
    // Two hours of history: connected 3,400 s of the 7,200 s before now.
    let s = wavault::sessions::Sessions::new(vault.view(&bot("conn")));
    let now = wavault::vault::now();
    s.set_status(now - 7200, Status::Connecting, Some("start"))
        .unwrap();
    s.set_status(now - 7000, Status::Connected, Some("paired"))
        .unwrap();
    s.set_status(now - 3600, Status::Disconnected, Some("shutdown"))
        .unwrap();
    let peer = Peer::new();
    let cfg = config(&peer);
    let runner = Runner::start(vault.clone(), cfg).unwrap();
    let mut rx = runner.subscribe();
    let base = format!(
        "http://{}",
        crate::runner_tests::web(&runner, wavault::web::START_GRACE).await
    );
    // Wait until `conn` is connected and `fresh` shows a QR code.
    let (mut connected, mut qr) = (false, false);
    while !(connected && qr) {
        next_event(&mut rx, LOGIN_DEADLINE, "connected and QR", |e| {
            match e {
                RunnerEvent::Status {
                    bot,
                    status: Status::Connected,
                    ..
                } if bot.as_str() == "conn" => connected = true,
                RunnerEvent::Qr { bot, .. } if bot.as_str() == "fresh" => qr = true,
                _ => {}
            }
            Some(())
        })
        .await;
    }
    let token = wavault::web::token::load(&vault)
        .unwrap()
        .expect("created at start")
        .to_string();

    // No token, wrong token: 401 and the prompt (a JSON error on the API),
    // no data; `/healthz` needs none.
    for t in [None, Some("nope".to_string()), Some(format!("{token}x"))] {
        for path in ["/", "/api/bots", "/metrics"] {
            let (code, body) = get(format!("{base}{path}"), t.clone()).await;
            assert_eq!(code, 401, "{path} with {t:?}");
            let refusal = if path.starts_with("/api/") {
                "\"unauthorized\""
            } else {
                "auth-prompt"
            };
            assert!(
                body.contains(refusal) && !body.contains("conn"),
                "{path}: {body}"
            );
        }
        let (code, body) = get(format!("{base}/healthz"), t.clone()).await;
        assert_eq!((code, body.as_str()), (200, "ok\n"), "{t:?}");
    }
    let auth = Some(token.clone());
    let (code, body) = get(format!("{base}/healthz"), auth.clone()).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, page) = get(format!("{base}/"), auth.clone()).await;
    assert_eq!(code, 200);
    assert!(page.contains("<table id=\"bots\""));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external assets"
    );

    // The API is `status --json` (masked).
    let (code, body) = get(format!("{base}/api/bots"), auth.clone()).await;
    assert_eq!(code, 200);
    let api: Vec<StatusRow> = serde_json::from_str(&body).unwrap();
    let status = wavault::status::masked(wavault::status::collect(&vault).unwrap());
    assert_eq!(api, status);
    let (code, body) = get(format!("{base}/api/bots/conn"), auth.clone()).await;
    assert_eq!(code, 200);
    let one: StatusRow = serde_json::from_str(&body).unwrap();
    assert_eq!(one.status, Status::Connected);
    assert_eq!(
        get(format!("{base}/api/bots/ghost"), auth.clone()).await.0,
        404
    );

    // Dashboard data and the QR image of the bot waiting for a scan.
    let (_, body) = get(format!("{base}/api/dashboard"), auth.clone()).await;
    let dash: serde_json::Value = serde_json::from_str(&body).unwrap();
    let fresh = dash
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["bot"] == "fresh")
        .unwrap();
    assert!(fresh["qr_version"].is_string(), "{fresh}");
    let conn = dash
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["bot"] == "conn")
        .unwrap();
    assert!(conn["qr_version"].is_null());
    let avail = conn["availability_24h"].as_f64().unwrap();
    assert!(
        (45.0..=50.0).contains(&avail),
        "3,400 s of about 7,200 s: {avail}"
    );
    let (code, svg) = get(format!("{base}/api/bots/fresh/qr.svg"), auth.clone()).await;
    assert_eq!(code, 200);
    assert!(svg.contains("<svg"), "{svg}");

    // Metrics parse as Prometheus text and agree with status.
    let (code, text) = get(format!("{base}/metrics"), auth.clone()).await;
    assert_eq!(code, 200);
    let rows: HashMap<String, StatusRow> = wavault::status::collect(&vault)
        .unwrap()
        .into_iter()
        .map(|r| (r.bot.clone(), r))
        .collect();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
        match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("unexpected {other:?}"),
        }
    };
    for (id, r) in &rows {
        assert_eq!(
            value("wavault_bot_up", &[("bot", id)]),
            f64::from(u8::from(r.status == Status::Connected))
        );
        assert_eq!(
            value("wavault_bot_connection_attempts_total", &[("bot", id)]),
            r.connection_attempts as f64
        );
        assert_eq!(
            value(
                "wavault_bot_status",
                &[("bot", id), ("status", r.status.as_str())]
            ),
            1.0
        );
    }
    assert_eq!(
        value(
            "wavault_bot_logins_total",
            &[("bot", "conn"), ("kind", "without_qr")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "wavault_bot_logins_total",
            &[("bot", "conn"), ("kind", "pairing")]
        ),
        1.0
    );
    assert!(value("wavault_vault_size_bytes", &[]) > 0.0);
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "wavault_durable_write_seconds"
            || s.metric.starts_with("wavault_durable_write_seconds")));

    // Ready: the paired enabled bot is connected.
    assert_eq!(get(format!("{base}/readyz"), auth.clone()).await.0, 200);

    // Rotating the token stops the old one at once.
    let new = wavault::web::token::rotate(&vault).unwrap().to_string();
    assert_ne!(new, token);
    assert_eq!(get(format!("{base}/api/bots"), auth.clone()).await.0, 401);
    assert_eq!(get(format!("{base}/api/bots"), Some(new)).await.0, 200);
    runner.shutdown().await.unwrap();
}

/// One raw HTTP/1.1 exchange (`Connection: close`): (status, lower-cased
/// headers, body). Lets a test send any `Host`.
async fn raw(addr: std::net::SocketAddr, request: String) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("answered and closed in time")
        .unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn assert_security_headers(what: &str, headers: &[(String, String)]) {
    let csp = header(headers, "content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP {headers:?}"));
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{what}: {csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(header(headers, "x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        header(headers, "x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
}

/// DNS rebinding, security headers, the server-set cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_check_security_headers_and_httponly_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["web-bot"]);
    let peer = Peer::new();
    let cfg = config(&peer);
    let runner = Runner::start(vault.clone(), cfg).unwrap();
    let addr = crate::runner_tests::web(&runner, wavault::web::START_GRACE).await;
    let port = addr.port();
    let token = wavault::web::token::load(&vault)
        .unwrap()
        .unwrap()
        .to_string();
    let get = |path: &str, host: Option<&str>, extra: &str| {
        let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        format!("GET {path} HTTP/1.1\r\n{host}{extra}Connection: close\r\n\r\n")
    };
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let me = format!("127.0.0.1:{port}");

    // A name that is not the listen address: refused even with the token.
    for host in [
        format!("rebind.evil.example:{port}"),
        "rebind.evil.example".to_string(),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        format!("localhost.evil.example:{port}"),
    ] {
        let (code, headers, body) = raw(addr, get("/api/bots", Some(&host), &bearer)).await;
        assert_eq!(code, 421, "{host}: {body}");
        assert!(!body.contains("web-bot"), "{host}: {body}");
        assert_security_headers(&host, &headers);
    }
    // No Host at all (HTTP/1.0): 400.
    let (code, _, body) = raw(addr, format!("GET /api/bots HTTP/1.0\r\n{bearer}\r\n")).await;
    assert_eq!(code, 400, "{body}");
    // The listen address and `localhost` are served.
    for host in [me.clone(), format!("localhost:{port}")] {
        let (code, _, body) = raw(addr, get("/api/bots", Some(&host), &bearer)).await;
        assert_eq!(code, 200, "{host}: {body}");
        assert!(body.contains("web-bot"), "{body}");
    }

    // Security headers on pages, API, metrics, the prompt and assets.
    for (path, auth, want) in [
        ("/", true, 200),
        ("/api/bots", true, 200),
        ("/metrics", true, 200),
        ("/", false, 401),
        ("/assets/dashboard.js", false, 200),
    ] {
        let (code, headers, _) =
            raw(addr, get(path, Some(&me), if auth { &bearer } else { "" })).await;
        assert_eq!(code, want, "{path}");
        assert_security_headers(path, &headers);
    }
    // No inline code for the CSP to allow.
    let (_, _, page) = raw(addr, get("/", Some(&me), &bearer)).await;
    let (_, _, prompt) = raw(addr, get("/", Some(&me), "")).await;
    let (code, headers, bot_page) = raw(addr, get("/bots/web-bot", Some(&me), &bearer)).await;
    assert_eq!(code, 200, "{bot_page}");
    assert_security_headers("/bots/web-bot", &headers);
    assert!(bot_page.contains("id=\"timeline\""), "{bot_page}");
    assert!(bot_page.contains("src=\"/assets/bot.js\""), "{bot_page}");
    for html in [&page, &prompt, &bot_page] {
        assert!(
            !html.contains("<script>") && !html.contains("<style"),
            "{html}"
        );
        assert!(
            !html.contains(" onclick=") && !html.contains(" style="),
            "{html}"
        );
    }
    assert!(page.contains("src=\"/assets/dashboard.js\""), "{page}");
    // The prompt never writes the cookie from script.
    assert!(!prompt.contains("document.cookie"), "{prompt}");

    // Login: the server sets an HttpOnly cookie named with the port.
    let post = |body: String, extra: &str| {
        format!(
            "POST /login HTTP/1.1\r\nHost: {me}\r\n{extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (code, headers, body) = raw(addr, post("token=wrong".into(), "")).await;
    assert_eq!(code, 401, "{body}");
    assert!(header(&headers, "set-cookie").is_none(), "{headers:?}");
    assert!(body.contains("not the current token"), "{body}");
    let (code, headers, _) = raw(addr, post(format!("token={token}"), "")).await;
    assert_eq!(code, 303);
    assert_eq!(header(&headers, "location"), Some("/"));
    let cookie = header(&headers, "set-cookie")
        .expect("a cookie")
        .to_string();
    let name = format!("wavault_token_{port}");
    assert!(cookie.starts_with(&format!("{name}=")), "{cookie}");
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    for a in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&a), "{a} in {cookie}");
    }
    assert!(!attrs.contains(&"Secure"), "plain HTTP: {cookie}");
    // Behind a TLS proxy that says so: Secure.
    let (code, headers, _) = raw(
        addr,
        post(format!("token={token}"), "X-Forwarded-Proto: https\r\n"),
    )
    .await;
    assert_eq!(code, 303);
    let secure = header(&headers, "set-cookie").unwrap();
    assert!(secure.split(';').any(|a| a.trim() == "Secure"), "{secure}");
    // The cookie opens the API; the same value under another name does not.
    let value = attrs[0].split_once('=').unwrap().1;
    let (code, _, body) = raw(
        addr,
        get(
            "/api/bots",
            Some(&me),
            &format!("Cookie: {name}={value}\r\n"),
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    for other in [
        "wavault_token".to_string(),
        format!("wavault_token_{}", port.wrapping_add(1)),
    ] {
        let (code, _, _) = raw(
            addr,
            get(
                "/api/bots",
                Some(&me),
                &format!("Cookie: {other}={value}\r\n"),
            ),
        )
        .await;
        assert_eq!(code, 401, "{other}");
    }
    runner.shutdown().await.unwrap();
}

/// Error paths of the web surface: every route but the login, the assets,
/// the health checks refuses a request without the token (401, nothing done); the QR image of
/// an unknown bot, or of one not waiting for a scan, is 404; `/readyz` is 503
/// naming a paired bot still connecting after its grace, 200 once it is in;
/// the send endpoint answers 400 to empty text, broken JSON and any content
/// type but JSON (what a cross-site form can send) and sends nothing; phones
/// are masked as the docs show them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_paths_refuse_and_send_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ConnAndLate {
        vault: _vault,
        peer,
        late,
        runner,
        addr,
        token,
    } = conn_and_late(dir.path(), 4_915_100_000_545, |vault| {
        // The phone the status shows (set at pairing; the synthetic pairing skips it).
        wavault::sessions::Sessions::new(vault.view(&bot("conn")))
            .update(wavault::vault::now(), None, |m| {
                m.phone = Some("4915100000545".into())
            })
            .unwrap();
    })
    .await;
    let me = addr.to_string();
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let request = |method: &str, path: &str, extra: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {me}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let send_body = r#"{"to":"4915112345678","text":"hello"}"#;
    let json = "Content-Type: application/json\r\n";

    // Every route of src/web/mod.rs's router except /login and /assets/*.
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/api/bots"),
        ("GET", "/api/bots/conn"),
        ("POST", "/api/bots/conn/messages"),
        ("GET", "/api/dashboard"),
        ("GET", "/api/bots/conn/qr.svg"),
        ("GET", "/metrics"),
        ("GET", "/readyz"),
    ] {
        for auth in ["", "Authorization: Bearer wrong\r\n"] {
            if path == "/readyz" && auth.is_empty() {
                continue; // the token-free variant
            }
            let (code, headers, body) = raw(
                addr,
                request(method, path, &format!("{auth}{json}"), send_body),
            )
            .await;
            assert_eq!(code, 401, "{method} {path} {auth:?}: {body}");
            assert_eq!(header(&headers, "www-authenticate"), Some("Bearer"));
            let refusal = if path.starts_with("/api/") {
                "\"unauthorized\""
            } else {
                "auth-prompt"
            };
            assert!(body.contains(refusal), "{method} {path}: {body}");
            assert!(!body.contains("conn") && !body.contains("0545"), "{body}");
        }
    }

    // QR images: unknown bot, and a bot with no QR waiting.
    for path in ["/api/bots/ghost/qr.svg", "/api/bots/conn/qr.svg"] {
        let (code, _, body) = raw(addr, request("GET", path, &bearer, "")).await;
        assert_eq!(code, 404, "{path}: {body}");
        assert!(!body.contains("<svg"), "{body}");
    }

    // The send endpoint refuses what is not a JSON message.
    let messages = "/api/bots/conn/messages";
    for (what, extra, body, says) in [
        (
            "empty text",
            json,
            r#"{"to":"4915112345678","text":""}"#,
            "text is empty",
        ),
        (
            "bad JSON",
            json,
            r#"{"to":"4915112345678","text":"#,
            "must be JSON",
        ),
        ("no content type", "", send_body, "must be JSON"),
        (
            "text/plain",
            "Content-Type: text/plain\r\n",
            send_body,
            "must be JSON",
        ),
        (
            "a form",
            "Content-Type: application/x-www-form-urlencoded\r\n",
            send_body,
            "must be JSON",
        ),
    ] {
        let (code, _, answer) = raw(
            addr,
            request("POST", messages, &format!("{bearer}{extra}"), body),
        )
        .await;
        assert_eq!(code, 400, "{what}: {answer}");
        assert!(answer.contains(says), "{what}: {answer}");
    }
    assert_eq!(
        peer.seen().received_tagged("message").count(),
        0,
        "nothing was sent"
    );

    // Masking, against the literal the docs show (first 2, last 4 digits).
    let (code, _, body) = raw(addr, request("GET", "/api/bots/conn", &bearer, "")).await;
    assert_eq!(code, 200, "{body}");
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["phone"], "49*******0545", "{body}");
    for path in ["/api/bots", "/api/dashboard", "/metrics", "/"] {
        let (code, _, body) = raw(addr, request("GET", path, &bearer, "")).await;
        assert_eq!(code, 200, "{path}");
        assert!(!body.contains("4915100000545"), "{path}: {body}");
    }

    // Readiness: 503 naming the connecting bot (only it), then 200 once in.
    let deadline = tokio::time::Instant::now() + LOGIN_DEADLINE;
    let body = loop {
        let (code, _, body) = raw(addr, request("GET", "/readyz", &bearer, "")).await;
        if code == 503 {
            break body;
        }
        assert_eq!(code, 200, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never said 503 while `late` was connecting"
        );
        // Polling an endpoint under a deadline (the bot's start is not an event here).
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body, "not ready: late\n");
    let rows = runner.status().unwrap();
    assert_ne!(
        rows.iter().find(|r| r.bot == "late").unwrap().status,
        Status::Connected
    );
    peer.stall_logins(&late, false);
    peer.drop_connections_of(&late);
    runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            rows.iter().all(|r| r.status == Status::Connected)
        })
        .await
        .expect("late connects once answered");
    let (code, _, body) = raw(addr, request("GET", "/readyz", &bearer, "")).await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    runner.shutdown().await.unwrap();
}

/// What a probe or a script meets without the token (issue 16): `/healthz`
/// answers `ok` whatever credentials come with it, and nothing else;
/// `/readyz` says only ready / not ready without them, and names the late
/// bot only to a caller with the token (a wrong token is 401); API errors
/// are JSON `{"error", "code"}` with the right status on `/api/` paths and
/// wherever the client asked for JSON, the HTML prompt only for a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_need_no_token_and_api_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let ConnAndLate {
        vault: _vault,
        peer,
        late,
        runner,
        addr,
        token,
    } = conn_and_late(dir.path(), 4_915_100_000_565, |_| {}).await;
    let me = addr.to_string();
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let wrong = "Authorization: Bearer wrong\r\n";
    let accept_json = "Accept: application/json\r\n";
    let request = |method: &str, path: &str, host: &str, extra: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let get = |path: &str, extra: &str| request("GET", path, &me, extra, "");

    // /healthz: `ok` with no token, a wrong one or the right one; nothing else.
    for extra in ["", wrong, bearer.as_str(), accept_json] {
        let (code, headers, body) = raw(addr, get("/healthz", extra)).await;
        assert_eq!((code, body.as_str()), (200, "ok\n"), "{extra:?}");
        assert_security_headers("/healthz", &headers);
    }

    // /readyz while `late` connects past its grace: token-free it reveals
    // only "not ready"; with the token it names the bot; a wrong token is 401.
    let deadline = tokio::time::Instant::now() + LOGIN_DEADLINE;
    loop {
        let (code, _, body) = raw(addr, get("/readyz", "")).await;
        if code == 503 {
            assert_eq!(body, "not ready\n");
            break;
        }
        assert_eq!((code, body.as_str()), (200, "ready\n"));
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never said 503 while `late` was connecting"
        );
        // Polling an endpoint under a deadline (the bot's start is not an event here).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, _, body) = raw(addr, get("/readyz", &bearer)).await;
    assert_eq!((code, body.as_str()), (503, "not ready: late\n"));
    let (code, _, body) = raw(addr, get("/readyz", wrong)).await;
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("late"), "{body}");

    // JSON errors: (request, status, code, words in the message).
    let json_error = |what: &str,
                      got: (u16, Vec<(String, String)>, String),
                      status: u16,
                      code: &str,
                      says: &str| {
        let (got_status, headers, body) = got;
        assert_eq!(got_status, status, "{what}: {body}");
        assert!(
            header(&headers, "content-type").is_some_and(|c| c.starts_with("application/json")),
            "{what}: {headers:?}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
        assert_eq!(v["code"], code, "{what}: {body}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {body}"));
        assert!(msg.contains(says), "{what}: {body}");
        assert!(!body.contains("auth-prompt"), "{what}: {body}");
        assert_security_headers(what, &headers);
    };
    for (path, extra) in [
        ("/api/bots", ""),
        ("/api/bots", wrong),
        ("/api/dashboard", ""),
        ("/api/bots/conn/qr.svg", wrong),
        ("/", accept_json),
        ("/metrics", "Accept: text/html, application/json;q=0.9\r\n"),
    ] {
        let what = format!("{path} {extra:?}");
        let got = raw(addr, get(path, extra)).await;
        assert_eq!(header(&got.1, "www-authenticate"), Some("Bearer"), "{what}");
        assert!(!got.2.contains("conn"), "{what}: {}", got.2);
        json_error(&what, got, 401, "unauthorized", "token");
    }
    let (code, _, body) = raw(
        addr,
        request("POST", "/api/bots/conn/messages", &me, "", "{}"),
    )
    .await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    // A browser asking for a page still gets the sign-in prompt.
    let (code, _, body) = raw(addr, get("/", "Accept: text/html\r\n")).await;
    assert_eq!(code, 401);
    assert!(body.contains("auth-prompt"), "{body}");

    // With the token: not found, bad request, wrong method, wrong host.
    for path in [
        "/api/bots/ghost",
        "/api/bots/ghost/qr.svg",
        "/api/bots/conn/qr.svg",
        "/api/nosuch",
    ] {
        json_error(
            path,
            raw(addr, get(path, &bearer)).await,
            404,
            "not_found",
            "",
        );
    }
    json_error(
        "bad body",
        raw(
            addr,
            request(
                "POST",
                "/api/bots/conn/messages",
                &me,
                &format!("{bearer}Content-Type: application/json\r\n"),
                r#"{"to":"#,
            ),
        )
        .await,
        400,
        "bad_request",
        "must be JSON",
    );
    json_error(
        "GET on the send endpoint",
        raw(addr, get("/api/bots/conn/messages", &bearer)).await,
        405,
        "method_not_allowed",
        "",
    );
    json_error(
        "another Host",
        raw(
            addr,
            request("GET", "/api/bots", "rebind.evil.example", &bearer, ""),
        )
        .await,
        421,
        "misdirected_request",
        "Host",
    );
    json_error(
        "page of an unknown bot, asked as JSON",
        raw(addr, get("/bots/ghost", &format!("{bearer}{accept_json}"))).await,
        404,
        "not_found",
        "ghost",
    );
    json_error(
        "page asked as JSON, unknown path",
        raw(addr, get("/nosuch", &format!("{bearer}{accept_json}"))).await,
        404,
        "not_found",
        "",
    );

    // Once `late` is in, the token-free answer is `ready`.
    peer.stall_logins(&late, false);
    peer.drop_connections_of(&late);
    runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            rows.iter().all(|r| r.status == Status::Connected)
        })
        .await
        .expect("late connects once answered");
    let (code, _, body) = raw(addr, get("/readyz", "")).await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    runner.shutdown().await.unwrap();
}

/// A bot whose connection attempts keep failing (the server refuses them):
/// its status row carries the retry state (whatsapp-rust's attempt number
/// and when the next is due) and the overview says `reconnecting (attempt
/// N, next in S s)`, not `connecting`; once the server answers, the retry
/// state is gone and the bot shows its QR code as `connecting`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_keeps_failing_to_connect_shows_its_retries() {
    let dir = tempfile::tempdir().unwrap();
    // Unpaired: no phone number shared with other tests.
    let vault = new_vault(dir.path(), &["retrying"]);
    let peer = Peer::new();
    peer.refuse_connections(true);
    let runner = Runner::start(vault.clone(), config(&peer)).unwrap();
    let mut rx = runner.subscribe();
    // Backoff 1 s, 1 s, 2 s…: the second failure comes within ~2 s.
    let rows = runner
        .wait_until(Duration::from_secs(30), |rows| {
            rows.iter().any(|r| {
                r.bot == "retrying"
                    && r.retry_attempt.is_some_and(|n| n >= 2)
                    && r.next_retry_at.is_some_and(|t| t > wavault::vault::now())
            })
        })
        .await
        .expect("the retry state in the status row");
    let r = rows.iter().find(|r| r.bot == "retrying").unwrap();
    assert!(r.connection_attempts >= 2, "{r:?}");
    assert_eq!(r.status, Status::Connecting, "the recorded status stays");

    let (base, token) =
        crate::runner_tests::web_with_token(&runner, &vault, wavault::web::START_GRACE).await;
    let auth = Some(token);
    // The row through the operations layer (`status` over the socket too).
    let (code, body) = get(format!("{base}/api/bots/retrying"), auth.clone()).await;
    assert_eq!(code, 200, "{body}");
    let row: StatusRow = serde_json::from_str(&body).unwrap();
    assert!(row.retry_attempt.is_some_and(|n| n >= 2), "{body}");
    assert!(row.next_retry_at.is_some(), "{body}");
    // The overview's text.
    let (code, body) = get(format!("{base}/api/dashboard"), auth.clone()).await;
    assert_eq!(code, 200, "{body}");
    let dash: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let d = dash.iter().find(|d| d["bot"] == "retrying").expect(&body);
    let n = d["retry_attempt"].as_u64().expect(&body);
    assert!(n >= 2, "{body}");
    let text = d["status_text"].as_str().expect(&body);
    assert!(
        text.starts_with(&format!("reconnecting (attempt {n}, next in ")) && text.ends_with(" s)"),
        "{text}"
    );

    // The server answers again: the bot registers (a QR code) and is
    // `connecting` again, with no retry state.
    peer.refuse_connections(false);
    next_event(&mut rx, LOGIN_DEADLINE, "the QR code", |e| match e {
        RunnerEvent::Qr { .. } => Some(()),
        _ => None,
    })
    .await;
    let rows = runner
        .wait_until(Duration::from_secs(30), |rows| {
            rows.iter()
                .any(|r| r.bot == "retrying" && r.retry_attempt.is_none())
        })
        .await
        .expect("no retry state once an attempt succeeds");
    assert_eq!(rows[0].next_retry_at, None);
    let (_, body) = get(format!("{base}/api/dashboard"), auth).await;
    let dash: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(dash[0]["status_text"], "connecting", "{body}");
    runner.shutdown().await.unwrap();
}

/// A fleet host (`run --nats`) names itself in `/metrics`
/// (`wavault_host_info{host}`) and in the API's rows (`host`), and a bot
/// that may not run because NATS cannot be reached shows
/// `fleet_unreachable` there, with the reason, and never logs in. The
/// "NATS server" is a listener that drops every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_host_names_itself_and_its_waiting_bot_in_metrics_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["waits"]);
    synth_paired(&vault, "waits", 4_919_400_000_001).await;
    let refuse = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nats = format!("nats://{}", refuse.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((conn, _)) = refuse.accept().await {
            drop(conn);
        }
    });
    let peer = Peer::new();
    let mut cfg = config(&peer);
    let mut fleet = wavault::fleet::FleetConfig::new(nats, "web-host");
    fleet.connect_backoff_max = Duration::from_millis(500);
    cfg.fleet = Some(fleet);
    let runner = Runner::start(vault.clone(), cfg).unwrap();
    assert_eq!(runner.host_id(), Some("web-host"));
    let mut rx = runner.subscribe();
    next_event(&mut rx, LOGIN_DEADLINE, "waits: fleet_unreachable", |e| {
        matches!(e, RunnerEvent::Status { bot, status: Status::FleetUnreachable, .. }
            if bot.as_str() == "waits")
        .then_some(())
    })
    .await;
    let base = format!(
        "http://{}",
        crate::runner_tests::web(&runner, wavault::web::START_GRACE).await
    );
    let auth = wavault::web::token::load(&vault)
        .unwrap()
        .map(|t| t.to_string());
    let (code, text) = get(format!("{base}/metrics"), auth.clone()).await;
    assert_eq!(code, 200);
    assert!(
        text.lines()
            .any(|l| l == "wavault_host_info{host=\"web-host\"} 1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "wavault_bot_status{bot=\"waits\",status=\"fleet_unreachable\"} 1"),
        "{text}"
    );
    let (code, body) = get(format!("{base}/api/bots/waits"), auth).await;
    assert_eq!(code, 200);
    let row: StatusRow = serde_json::from_str(&body).unwrap();
    assert_eq!(row.status, Status::FleetUnreachable);
    assert_eq!(row.host.as_deref(), Some("web-host"));
    assert!(
        row.last_connection_error
            .as_deref()
            .is_some_and(|e| e.contains("NATS")),
        "{row:?}"
    );
    assert_eq!(peer.seen().logins_total(), 0, "no login without ownership");
    runner.shutdown().await.unwrap();
}
