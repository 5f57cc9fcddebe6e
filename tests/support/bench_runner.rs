//! What the runner benchmarks share (included with `#[path]` next to the
//! in-process peer as `crate::peer`): a webhook that echoes every message
//! and a runner configuration on the peer with that hook; environment
//! knobs and percentiles.

use std::sync::Arc;
use std::time::Duration;

use wavault::messaging::hook::Target;
use wavault::runner::net::Net;
use wavault::runner::RunConfig;

/// A loopback webhook answering every message with `echo: TEXT`; its URL.
pub async fn echo_hook() -> String {
    use axum::routing::post;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        post(|axum::Json(v): axum::Json<serde_json::Value>| async move {
            axum::Json(serde_json::json!({ "reply": format!("echo: {}", v["text"].as_str().unwrap_or("")) }))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A quiet runner (no console, no control socket) on `peer`, with `hook`
/// as every bot's webhook.
pub fn config(peer: &crate::peer::Peer, hook: String) -> RunConfig {
    let mut cfg = RunConfig::new(Net {
        transport: Arc::new(peer.transport_factory()),
        http: Arc::new(peer.http_client()),
        version: Some(crate::peer::PINNED_VERSION),
    });
    cfg.console = false;
    cfg.control_socket = false;
    cfg.push_name = "wavault-bench".into();
    cfg.hooks.target = Some(Target::Webhook(hook));
    cfg
}

/// The environment knob `name` as a number, else `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0..=1) of `v` (sorted in place); zero when empty.
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
