//! The web surface of `wavault run --listen ADDR:PORT`: a dashboard page,
//! the JSON API, Prometheus metrics and health checks. It reads the same
//! session metadata and history as `wavault status`; the one thing it does
//! is `POST /api/bots/{id}/messages` (`{"to": "...", "text": "..."}`, JSON
//! only), which sends like `wavault send`.
//!
//! Every request needs the bearer token (`Authorization: Bearer TOKEN`, or
//! the `wavault_token` cookie the dashboard's prompt sets). Without it the
//! answer is 401 and the prompt page, nothing else. Loopback addresses only
//! unless `--listen-any`.

pub mod metrics;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::runner::status::{self, StatusRow};
use crate::runner::Shared;
use crate::sessions::Status;

/// How long after its start a bot may take to connect before `/readyz`
/// counts it as not ready.
pub const START_GRACE: Duration = Duration::from_secs(60);

const DASHBOARD: &str = include_str!("dashboard.html");
const PROMPT: &str = include_str!("prompt.html");

/// Refuses a non-loopback address unless `any` (`--listen-any`) is set.
pub fn check_addr(addr: SocketAddr, any: bool) -> Result<()> {
    if addr.ip().is_loopback() || any {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "--listen {addr} is not a loopback address: the dashboard would be reachable from the network. \
         Use 127.0.0.1 or ::1, or add --listen-any to mean it (every request still needs the token)"
    )))
}

/// Binds `addr` now (so a busy port is an error at start-up).
pub fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
    l.set_nonblocking(true)
        .map_err(|e| Error::io("listening socket", e))?;
    tokio::net::TcpListener::from_std(l).map_err(|e| Error::io("listening socket", e))
}

/// The router over the runner's shared state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/bots", get(bots))
        .route("/api/bots/{id}", get(one_bot))
        .route("/api/bots/{id}/messages", axum::routing::post(send_message))
        .route("/api/dashboard", get(dashboard_data))
        .route("/api/bots/{id}/qr.svg", get(qr_svg))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}

/// Serves until the runner stops.
pub(crate) async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let mut stop = shared.stop.subscribe();
    let app = router(shared);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!("web surface stopped: {e}");
    }
}

fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix("wavault_token=").map(str::to_owned))
}

async fn auth(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let v = shared.vault.clone();
    // Read on every request: `wavault token rotate` takes effect at once.
    let expected = tokio::task::spawn_blocking(move || token::load(&v)).await;
    let ok = match (presented(req.headers()), expected) {
        (Some(p), Ok(Ok(Some(t)))) => token::matches(&p, &t),
        _ => false,
    };
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, "Bearer"),
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            PROMPT,
        )
            .into_response();
    }
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-store".parse().expect("static header"),
    );
    resp
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(error_response(&e)),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()),
    }
}

fn error_response(e: &Error) -> Response {
    let code = match e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Usage(_) => StatusCode::BAD_REQUEST,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

/// Body of `POST /api/bots/{id}/messages`.
#[derive(Debug, serde::Deserialize)]
struct SendBody {
    to: String,
    text: String,
}

async fn send_message(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: std::result::Result<Json<SendBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error_response(&Error::Usage(
            "the body must be JSON (content-type: application/json): {\"to\": \"4915112345678\", \"text\": \"...\"}".into(),
        ));
    };
    let id = match crate::BotId::parse(&id) {
        Ok(id) => id,
        Err(_) => return error_response(&Error::NotFound(format!("bot {id}"))),
    };
    match crate::runner::deliver::send(&shared, &id, &body.to, &body.text).await {
        Ok(mid) => Json(serde_json::json!({ "bot": id, "id": mid })).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

fn rows(shared: &Shared) -> Result<Vec<StatusRow>> {
    Ok(status::masked(status::collect(&shared.vault)?))
}

async fn bots(State(shared): State<Arc<Shared>>) -> Response {
    match blocking(move || rows(&shared)).await {
        Ok(r) => Json(r).into_response(),
        Err(resp) => resp,
    }
}

async fn one_bot(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let found = blocking(move || {
        rows(&shared)?
            .into_iter()
            .find(|r| r.bot == id)
            .ok_or_else(|| Error::NotFound(format!("bot {id}")))
    })
    .await;
    match found {
        Ok(r) => Json(r).into_response(),
        Err(resp) => resp,
    }
}

/// One dashboard row: the status row plus what only the runner knows.
#[derive(Debug, Serialize)]
pub struct DashboardRow {
    #[serde(flatten)]
    pub row: StatusRow,
    /// Percentage of the last 24 h connected (of the time known).
    pub availability_24h: Option<f64>,
    /// A QR code is waiting to be scanned; its version changes with the code.
    pub qr_version: Option<String>,
}

async fn dashboard_data(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.clone();
    let r = blocking(move || {
        let now = crate::vault::now();
        let qr = s.live.lock().unwrap_or_else(|e| e.into_inner()).qr.clone();
        rows(&s)?
            .into_iter()
            .map(|row| {
                let id = crate::BotId::parse(&row.bot)?;
                let history = crate::sessions::Sessions::new(s.vault.view(&id)).history()?;
                let availability_24h =
                    crate::stats::compute(&row.bot, &history, now - 86_400, now, row.status)
                        .availability_pct;
                let qr_version = qr.get(&row.bot).map(|c| {
                    use sha2::Digest;
                    crate::vault::hex(&sha2::Sha256::digest(c.as_bytes())[..8])
                });
                Ok(DashboardRow {
                    row,
                    availability_24h,
                    qr_version,
                })
            })
            .collect::<Result<Vec<_>>>()
    })
    .await;
    match r {
        Ok(rows) => Json(rows).into_response(),
        Err(resp) => resp,
    }
}

async fn qr_svg(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let code = shared
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .qr
        .get(&id)
        .cloned();
    let Some(code) = code else {
        return (StatusCode::NOT_FOUND, "no QR code waiting for this bot\n").into_response();
    };
    match qrcode::QrCode::new(code.as_bytes()) {
        Ok(qr) => {
            let svg = qr
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(256, 256)
                .build();
            ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    match blocking(move || metrics::render(&shared)).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(resp) => resp,
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.clone();
    let r = blocking(move || {
        let started = s
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .started
            .clone();
        let waiting: Vec<String> = status::collect(&s.vault)?
            .into_iter()
            .filter(|r| r.enabled && r.credentials.as_deref() == Some("paired"))
            .filter(|r| r.status != Status::Connected)
            .filter(|r| {
                // Not started yet (staggered) or still within its grace: not late.
                started
                    .get(&r.bot)
                    .is_some_and(|t| t.elapsed() > START_GRACE)
            })
            .map(|r| r.bot)
            .collect();
        Ok(waiting)
    })
    .await;
    match r {
        Ok(w) if w.is_empty() => (StatusCode::OK, "ready\n").into_response(),
        Ok(w) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", w.join(", ")),
        )
            .into_response(),
        Err(resp) => resp,
    }
}
