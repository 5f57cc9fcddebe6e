//! The web surface of a running runner: token, JSON API, metrics (parsed
//! with a Prometheus parser and compared with `status` at the same moment),
//! health checks, QR images for bots waiting for a scan.

use std::collections::HashMap;
use std::time::Duration;

use wavault::runner::status::StatusRow;
use wavault::runner::{Runner, RunnerEvent};
use wavault::sessions::Status;

use crate::peer::{Peer, LOGIN_DEADLINE};
use crate::runner_tests::{bot, config, new_vault, next_event, synth_paired};

/// GET with an optional bearer token: (status, body).
async fn get(url: String, token: Option<String>) -> (u16, String) {
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
    let mut cfg = config(&peer);
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());
    let runner = Runner::start(vault.clone(), cfg).unwrap();
    let mut rx = runner.subscribe();
    let base = format!("http://{}", runner.web_addr().unwrap());
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
        .expect("created at start");

    // No token, wrong token: 401 and the prompt, no data.
    for t in [None, Some("nope".to_string()), Some(format!("{token}x"))] {
        for path in ["/", "/api/bots", "/metrics", "/healthz"] {
            let (code, body) = get(format!("{base}{path}"), t.clone()).await;
            assert_eq!(code, 401, "{path} with {t:?}");
            assert!(
                body.contains("auth-prompt") && !body.contains("conn"),
                "{path}: {body}"
            );
        }
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
    let status = wavault::runner::status::masked(wavault::runner::status::collect(&vault).unwrap());
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
    let rows: HashMap<String, StatusRow> = wavault::runner::status::collect(&vault)
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
    let new = wavault::web::token::rotate(&vault).unwrap();
    assert_ne!(new, token);
    assert_eq!(get(format!("{base}/api/bots"), auth.clone()).await.0, 401);
    assert_eq!(get(format!("{base}/api/bots"), Some(new)).await.0, 200);
    runner.shutdown().await.unwrap();
}
