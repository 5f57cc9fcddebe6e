//! The web surface of `wavault run --listen ADDR:PORT`: a dashboard page,
//! the JSON API, Prometheus metrics and health checks. It reads the same
//! session metadata and history as `wavault status`; the one thing it does
//! is `POST /api/bots/{id}/messages` (`{"to": "...", "text": "..."}`, or a
//! file as JSON base64 or multipart: [`upload`]), which sends like `wavault send`.
//!
//! Every request needs the bearer token (`Authorization: Bearer TOKEN`, or
//! the `wavault_token_<port>` cookie that `POST /login` sets: `HttpOnly`,
//! `SameSite=Strict`, `Path=/`, `Secure` when the request came with
//! `X-Forwarded-Proto: https`). Without it the answer is 401 and the prompt
//! page, nothing else; `/login`, the static `/assets/*`, `/healthz` (`ok`)
//! and `/readyz` without credentials (`ready` / `not ready`, no names) are
//! the only exceptions. Errors on `/api/` paths, or to a client that asked
//! for `application/json`, are JSON `{"error", "code"}` ([`json_errors`]).
//! Loopback addresses only unless `--listen-any`.
//!
//! Every request's `Host` must name the listen address (DNS rebinding):
//! else 421 (400 without one). Every response carries a strict
//! `Content-Security-Policy` (no inline script or style, nothing external),
//! `X-Frame-Options: DENY` and `X-Content-Type-Options: nosniff`.
//! Connections are capped ([`Limits`]); one that does not send its request
//! headers within the header-read timeout, or its body within the body-read
//! timeout, is closed.

pub mod bot_page;
pub mod metrics;
pub mod upload;
pub use crate::token;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRef, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::ops::{self, Service};
use crate::sessions::Status;
use crate::status::{self, StatusRow};

/// How long after its start a bot may take to connect before `/readyz`
/// counts it as not ready.
pub const START_GRACE: Duration = Duration::from_secs(60);

const DASHBOARD: &str = include_str!("dashboard.html");
const PROMPT: &str = include_str!("prompt.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
const BOT_JS: &str = include_str!("assets/bot.js");
const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");
const PROMPT_CSS: &str = include_str!("assets/prompt.css");
const OPENAPI: &str = include_str!("openapi.json");

/// The OpenAPI 3.1 document of the HTTP API and the webhooks, with this
/// binary's version (`/api/openapi.json`, `wavault openapi`).
pub fn openapi() -> String {
    OPENAPI.replacen(
        "\"version\": \"VERSION\"",
        &format!("\"version\": \"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    )
}

/// The policy on every response: the pages load only their own scripts and
/// styles (no inline code, nothing from elsewhere) and cannot be framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Connection limits of the web surface.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection that has not sent a whole request head this long after
    /// it opened (or after its previous response) is closed.
    pub header_read_timeout: Duration,
    /// A request whose body has not arrived this long after its head: 408.
    pub body_read_timeout: Duration,
    /// Largest request body (413 beyond).
    pub max_body: usize,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
            max_connections: 64,
        }
    }
}

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

/// The name of the token cookie for a surface listening on `port`: cookies
/// are shared by every port of a host, so each runner has its own.
pub fn cookie_name(port: u16) -> String {
    format!("wavault_token_{port}")
}

/// Whether a request's `Host` (or absolute-form authority) names the
/// listen address `listen`: its IP literal with its port (no port means
/// 80), or `localhost` when it listens on a loopback address. Listening on
/// an unspecified address (`0.0.0.0`, `::`, with `--listen-any`), any IP
/// literal with the port is accepted: DNS rebinding needs a name.
pub fn host_allowed(listen: SocketAddr, host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((name, after)) = rest.split_once(']') else {
            return false;
        };
        match after {
            "" => (name, None),
            p => match p.strip_prefix(':') {
                Some(p) => (name, Some(p)),
                None => return false,
            },
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u16>() {
                Ok(p) => p,
                Err(_) => return false,
            }
        }
        Some(_) => return false,
    };
    if port != listen.port() {
        return false;
    }
    let ip = listen.ip();
    if name.eq_ignore_ascii_case("localhost") {
        return ip.is_loopback() || ip.is_unspecified();
    }
    // IPv6 only in brackets; IPv4 only without.
    let bracketed = host.starts_with('[');
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) if !bracketed => false,
        Ok(IpAddr::V4(_)) if bracketed => false,
        Ok(named) => ip.is_unspecified() || named == ip,
        Err(_) => false,
    }
}

/// What the middlewares know about this surface.
#[derive(Debug)]
struct Site {
    listen: SocketAddr,
    cookie: String,
    limits: Limits,
    /// How long after its start a paired bot may still be connecting before
    /// `/readyz` names it late.
    ready_grace: Duration,
}

/// The running `run` the surface shows.
type Svc = Arc<dyn Service>;

/// The router's state.
#[derive(Clone)]
struct App {
    shared: Svc,
    site: Arc<Site>,
}

impl FromRef<App> for Svc {
    fn from_ref(app: &App) -> Self {
        app.shared.clone()
    }
}

/// The router over a running `run`, for a surface listening on `listen`
/// (the bound address: its port names the cookie, its address is what
/// `Host` must say).
fn router(shared: Svc, listen: SocketAddr, limits: Limits, ready_grace: Duration) -> Router {
    let app = App {
        shared,
        site: Arc::new(Site {
            listen,
            cookie: cookie_name(listen.port()),
            limits,
            ready_grace,
        }),
    };
    Router::new()
        .route("/", get(dashboard))
        .route("/login", post(login))
        .route("/assets/{name}", get(asset))
        .route("/bots/{id}", get(bot_page_html))
        .route("/api/bots", get(bots))
        .route("/api/bots/{id}", get(one_bot))
        .route("/api/bots/{id}/messages", post(send_message))
        .route("/api/bots/{id}/media/{message_id}", get(media_file))
        .route("/api/dashboard", get(dashboard_data))
        .route("/api/bots/{id}/qr.svg", get(qr_svg))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/api/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], openapi()) }),
        )
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(app.clone(), read_body))
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .layer(middleware::from_fn_with_state(app.clone(), check_host))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

/// The web surface of a running `run`.
#[derive(Debug)]
pub struct WebServer {
    addr: SocketAddr,
}

impl WebServer {
    /// Where it listens (the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts the dashboard, API and metrics of `svc` on `addr` (checked by
/// the caller: [`check_addr`]); they serve until the runner stops. A
/// paired bot still connecting `ready_grace` after its start makes
/// `/readyz` fail ([`START_GRACE`] in production).
pub async fn start(svc: Svc, addr: SocketAddr, ready_grace: Duration) -> Result<WebServer> {
    start_on(svc, bind(addr)?, ready_grace).await
}

/// [`start`] on a socket already bound ([`bind`]: `run` binds before it
/// starts any bot, so a port in use stops it before anything happened).
pub async fn start_on(
    svc: Svc,
    listener: tokio::net::TcpListener,
    ready_grace: Duration,
) -> Result<WebServer> {
    let listen = listener
        .local_addr()
        .map_err(|e| Error::io("listening socket", e))?;
    let v = svc.vault().clone();
    tokio::task::spawn_blocking(move || token::load_or_create(&v).map(drop))
        .await
        .map_err(|e| Error::Other(format!("token task: {e}")))??;
    tracing::info!("dashboard, API and metrics on http://{listen}/ (token: `wavault token show`)");
    let mut stop = svc.stopping();
    let limits = Limits::default();
    let app = router(svc, listen, limits, ready_grace);
    tokio::spawn(serve_router(listener, app, limits, async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    Ok(WebServer { addr: listen })
}

/// The answer to a connection beyond [`Limits::max_connections`].
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 47\r\n\
retry-after: 1\r\n\
x-frame-options: DENY\r\n\
x-content-type-options: nosniff\r\n\
connection: close\r\n\r\n\
too many connections to wavault; try again soon";

/// Serves `app` on `listener` (HTTP/1.1) until `shutdown` completes, with
/// the header-read timeout and the connection cap of `limits`. At shutdown,
/// idle connections close at once; the others get 2 s to finish.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!("web surface: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Best effort, never waiting: the socket is closed right after.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut close = close_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = close.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    let _ = close_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn check_host(State(app): State<App>, req: Request, next: Next) -> Response {
    let listen = app.site.listen;
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    let authority_ok = req
        .uri()
        .authority()
        .is_none_or(|a| host_allowed(listen, a.as_str()));
    match host {
        None => (
            StatusCode::BAD_REQUEST,
            "a Host header is required\n".to_owned(),
        )
            .into_response(),
        Some(h) if host_allowed(listen, &h) && authority_ok => next.run(req).await,
        Some(_) => (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server answers only to http://{listen}/ (the Host header is checked against DNS rebinding); \
                 behind a proxy, forward the request with Host: {listen}\n"
            ),
        )
            .into_response(),
    }
}

/// Buffers the request body within the body-read timeout and the size
/// limit, so a half-sent body cannot hold a handler.
async fn read_body(State(app): State<App>, req: Request, next: Next) -> Response {
    let mut limits = app.site.limits;
    if req.method() == axum::http::Method::POST && is_send_path(req.uri().path()) {
        // A send may carry a file (after the token was checked).
        limits.max_body = limits.max_body.max(upload::MAX_BODY);
        limits.body_read_timeout = limits.body_read_timeout.max(Duration::from_secs(300));
    }
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(
        limits.body_read_timeout,
        axum::body::to_bytes(body, limits.max_body),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is unreadable or larger than {} bytes\n",
                    limits.max_body
                ),
            )
                .into_response()
        }
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                "the request body did not arrive in time\n",
            )
                .into_response()
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// `/api/bots/{id}/messages`.
fn is_send_path(p: &str) -> bool {
    p.strip_prefix("/api/bots/")
        .and_then(|r| r.strip_suffix("/messages"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

fn presented(headers: &HeaderMap, cookie: &str) -> Option<Zeroizing<String>> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v
            .strip_prefix("Bearer ")
            .map(|t| Zeroizing::new(t.trim().to_owned()));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == cookie).then(|| Zeroizing::new(v.to_owned()))
        })
}

/// Whether `presented` is the current token (read from the file on every
/// request: `wavault token rotate` takes effect at once).
async fn token_ok(shared: &Svc, presented: Option<&str>) -> bool {
    let Some(p) = presented else { return false };
    let v = shared.vault().clone();
    match tokio::task::spawn_blocking(move || token::load(&v)).await {
        Ok(Ok(Some(t))) => token::matches(p, &t),
        _ => false,
    }
}

fn prompt(error: Option<&str>) -> Response {
    let page = match error {
        Some(e) => PROMPT.replace(
            "<!--error-->",
            &format!("<p class=\"error\" role=\"alert\">{e}</p>"),
        ),
        None => PROMPT.to_owned(),
    };
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer"),
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// Marks a request that came with the right token (`/readyz` then names
/// the late bots).
#[derive(Debug, Clone, Copy)]
struct Authenticated;

async fn auth(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let public = path == "/login"
        || path.starts_with("/assets/")
        || path == "/healthz"
        || path == "/api/openapi.json";
    if !public {
        let p = presented(req.headers(), &app.site.cookie);
        // `/readyz` without any credentials: the token-free answer.
        let anonymous_probe = path == "/readyz" && p.is_none();
        if token_ok(&app.shared, p.as_deref().map(String::as_str)).await {
            req.extensions_mut().insert(Authenticated);
        } else if !anonymous_probe {
            return prompt(None);
        }
    }
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One field of an `application/x-www-form-urlencoded` body, decoded.
fn form_field(body: &[u8], name: &str) -> Option<Zeroizing<String>> {
    body.split(|&b| b == b'&').find_map(|kv| {
        let (k, v) = match kv.iter().position(|&b| b == b'=') {
            Some(i) => (&kv[..i], &kv[i + 1..]),
            None => (kv, &[][..]),
        };
        if k != name.as_bytes() {
            return None;
        }
        let mut out = Zeroizing::new(Vec::with_capacity(v.len()));
        let mut i = 0;
        while i < v.len() {
            match v[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < v.len() => {
                    let hex = std::str::from_utf8(&v[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        let s = std::str::from_utf8(&out).ok()?;
        Some(Zeroizing::new(s.to_owned()))
    })
}

/// `POST /login` (form field `token`, as the prompt sends it): the right
/// token sets the HttpOnly cookie and goes to the dashboard.
async fn login(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let t = form_field(&body, "token");
    let t = t.as_deref().map(|t| t.trim());
    if !token_ok(&app.shared, t).await {
        return prompt(Some(
            "That is not the current token (see `wavault token show`).",
        ));
    }
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let cookie = Zeroizing::new(format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict{}",
        app.site.cookie,
        t.unwrap_or_default(),
        if https { "; Secure" } else { "" }
    ));
    let Ok(cookie) = HeaderValue::from_str(&cookie) else {
        return prompt(Some("That token cannot be stored in a cookie."));
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, HeaderValue::from_static("/")),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "dashboard.js" => (DASHBOARD_JS, "text/javascript; charset=utf-8"),
        "bot.js" => (BOT_JS, "text/javascript; charset=utf-8"),
        "dashboard.css" => (DASHBOARD_CSS, "text/css; charset=utf-8"),
        "prompt.css" => (PROMPT_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
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
    if let Error::Busy { msg, retry_after } = e {
        let body = serde_json::json!({
            "error": msg,
            "code": error_code(StatusCode::TOO_MANY_REQUESTS),
            "retry_after": retry_after,
        });
        let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        return resp;
    }
    let status = match e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Usage(_) => StatusCode::BAD_REQUEST,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::AlreadyExists(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(status, &e.to_string())
}

/// The machine-readable `code` of an error answer with `status`.
fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::MISDIRECTED_REQUEST => "misdirected_request",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// An API error: `{"error": MESSAGE, "code": CODE}` with `status`.
fn json_error(status: StatusCode, msg: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": msg.trim(), "code": error_code(status) })),
    )
        .into_response()
}

/// Whether the client wants JSON: an `/api/` path, or `application/json`
/// among the media types of its `Accept`.
fn wants_json(req: &Request) -> bool {
    req.uri().path().starts_with("/api/")
        || req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|m| {
                m.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            })
}

/// Turns every error answer (4xx, 5xx) to a client that wants JSON
/// ([`wants_json`]) into `{"error", "code"}`, keeping its status and
/// headers: the sign-in page, the host check, body limits, unknown paths
/// and methods alike.
async fn json_errors(req: Request, next: Next) -> Response {
    let json = wants_json(&req);
    let resp = next.run(req).await;
    let status = resp.status();
    if !json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/plain"));
    let msg = match status {
        StatusCode::UNAUTHORIZED => {
            "this needs the access token (`wavault token show`): Authorization: Bearer TOKEN"
                .to_owned()
        }
        _ if text => match axum::body::to_bytes(body, 64 * 1024).await {
            Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
            Err(_) => String::new(),
        },
        _ => String::new(),
    };
    let msg = if msg.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        msg
    };
    let new = json_error(status, &msg);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, new.into_body())
}

/// No route: 404 (JSON for an `/api/` path or a client that asked for it,
/// through [`json_errors`]).
async fn no_route() -> Response {
    (StatusCode::NOT_FOUND, "no such page\n").into_response()
}

/// The `Idempotency-Key` header of a send: absent, or a key
/// (`messaging::outbox::check_key`).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v.to_str().map_err(|_| {
        Error::Usage(format!(
            "invalid Idempotency-Key header: give {}",
            crate::messaging::outbox::KEY_FORM
        ))
    })?;
    crate::messaging::outbox::check_key(k).map_err(Error::Usage)?;
    Ok(Some(k.to_owned()))
}

async fn send_message(
    State(shared): State<Svc>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // JSON or multipart, a file apart (upload.rs).
    let (mut message, file) = match upload::parse(&headers, &body) {
        Ok(m) => m,
        Err(upload::Refused(status, msg)) => return json_error(status, &msg),
    };
    drop(body);
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(e) => return error_response(&e),
    };
    let id = match crate::BotId::parse(&id) {
        Ok(id) => id,
        Err(_) => return error_response(&Error::NotFound(format!("bot {id}"))),
    };
    if key.is_some() {
        // The header wins over a body's `idempotency_key`.
        message.idempotency_key = key;
    }
    let req = ops::Request::Send {
        bot: id.clone(),
        message,
    };
    match blocking(move || ops::execute(&*shared, req, file)).await {
        Ok((ops::Response::Sent { id: mid }, _)) => {
            Json(serde_json::json!({ "bot": id, "id": mid })).into_response()
        }
        Ok(_) => error_response(&Error::Other("unexpected answer to send".into())),
        Err(resp) => resp,
    }
}

/// `GET /api/bots/{id}/media/{message_id}`: the verified file of a media
/// message the bot received, with its content type, as an attachment (a
/// sender-chosen type is never rendered in the dashboard's origin). The
/// whole file is downloaded and verified before the first byte is sent
/// (the blob's MAC covers all of it), so nothing unverified is ever served.
async fn media_file(
    State(shared): State<Svc>,
    Path((id, message_id)): Path<(String, String)>,
) -> Response {
    use crate::messaging::media::MediaError;
    let Ok(bot) = crate::BotId::parse(&id) else {
        return error_response(&Error::NotFound(format!("bot {id}")));
    };
    let got = tokio::task::spawn_blocking(move || shared.media(&bot, &message_id)).await;
    let e = match got {
        Ok(Ok(f)) => {
            let ct = HeaderValue::from_str(&f.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            return (
                [
                    (header::CONTENT_TYPE, ct),
                    (
                        header::CONTENT_DISPOSITION,
                        HeaderValue::from_static("attachment"),
                    ),
                ],
                f.bytes,
            )
                .into_response();
        }
        Ok(Err(e)) => e,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let (status, code) = match &e {
        MediaError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        MediaError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "media_too_large"),
        MediaError::HashMismatch { .. } => (StatusCode::BAD_GATEWAY, "hash_mismatch"),
        MediaError::Download { .. } => (StatusCode::BAD_GATEWAY, "download_failed"),
        MediaError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        MediaError::Vault(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    (
        status,
        Json(serde_json::json!({ "error": e.to_string(), "code": code })),
    )
        .into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

/// The status rows (phones masked), through the same operation as `wavault status`.
fn rows(shared: &dyn Service) -> Result<Vec<StatusRow>> {
    match ops::execute(shared, ops::Request::Status, Vec::new())?.0 {
        ops::Response::Status(rows) => Ok(status::masked(rows)),
        _ => Err(Error::Other("unexpected answer to status".into())),
    }
}

async fn bots(State(shared): State<Svc>) -> Response {
    match blocking(move || rows(&*shared)).await {
        Ok(r) => Json(r).into_response(),
        Err(resp) => resp,
    }
}

async fn one_bot(State(shared): State<Svc>, Path(id): Path<String>) -> Response {
    let found = blocking(move || {
        rows(&*shared)?
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
    /// The status as the overview shows it ([`status::status_text`]):
    /// `reconnecting (attempt N, next in S s)` while waiting to retry.
    pub status_text: String,
}

async fn dashboard_data(State(shared): State<Svc>) -> Response {
    let s = shared.clone();
    let r = blocking(move || {
        let now = crate::vault::now();
        let qr = s.live_state().qr;
        rows(&*s)?
            .into_iter()
            .map(|row| {
                let id = crate::BotId::parse(&row.bot)?;
                let history = crate::sessions::Sessions::new(s.vault().view(&id)).history()?;
                let availability_24h =
                    crate::stats::compute(&row.bot, &history, now - 86_400, now, row.status)
                        .availability_pct;
                let qr_version = qr.get(&row.bot).map(|c| qr_version(c));
                let status_text = status::status_text(&row, now);
                Ok(DashboardRow {
                    status_text,
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

/// The version of a QR code (changes with the code), as `/api/dashboard`
/// gives it.
fn qr_version(code: &str) -> String {
    use sha2::Digest;
    crate::vault::hex(&sha2::Sha256::digest(code.as_bytes())[..8])
}

/// The QR code as an SVG to put inside a page (no XML declaration, no
/// namespace: HTML gives it).
fn inline_qr(code: &str) -> Option<String> {
    let qr = qrcode::QrCode::new(code.as_bytes()).ok()?;
    let svg = qr
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .build();
    let start = svg.find("<svg")?;
    Some(
        svg[start..]
            .replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
            .replacen(
                "<svg ",
                "<svg role=\"img\" aria-label=\"QR code to pair\" ",
                1,
            ),
    )
}

/// `/bots/{id}`: the page of one bot ([`bot_page`]).
async fn bot_page_html(State(shared): State<Svc>, Path(id): Path<String>) -> Response {
    let page = blocking(move || {
        let not_found = || Error::NotFound(format!("bot {id}"));
        let bot = crate::BotId::parse(&id).map_err(|_| not_found())?;
        let row = rows(&*shared)?
            .into_iter()
            .find(|r| r.bot == id)
            .ok_or_else(not_found)?;
        let now = crate::vault::now();
        let vault = shared.vault();
        let history = crate::sessions::Sessions::new(vault.view(&bot)).history()?;
        let stats = crate::stats::collect(
            vault,
            std::slice::from_ref(&bot),
            now - bot_page::WINDOW_SECS,
            now,
        )?
        .pop()
        .ok_or_else(not_found)?;
        let traffic = crate::messaging::queue::Queue::new(vault.view(&bot)).traffic()?;
        // The version even when the code cannot be drawn: the page's
        // script compares it with `/api/dashboard` (else it would reload
        // for ever).
        let qr = shared.qr(&id).map(|c| {
            let svg =
                inline_qr(&c).unwrap_or_else(|| "<p>This QR code cannot be drawn.</p>".to_owned());
            (svg, qr_version(&c))
        });
        Ok(bot_page::render(&bot_page::BotPage {
            row: &row,
            stats: &stats,
            history: &history,
            hours: &traffic.hours,
            qr,
            now,
        }))
    })
    .await;
    match page {
        Ok(html) => Html(html).into_response(),
        Err(resp) => resp,
    }
}

async fn qr_svg(State(shared): State<Svc>, Path(id): Path<String>) -> Response {
    let code = shared.qr(&id);
    let Some(code) = code else {
        return json_error(StatusCode::NOT_FOUND, "no QR code waiting for this bot");
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

async fn metrics_text(State(shared): State<Svc>) -> Response {
    match blocking(move || metrics::render(&*shared)).await {
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

/// `/readyz`: 200 `ready` or 503 `not ready`; to a caller with the token
/// the 503 names the late bots.
async fn readyz(
    State(app): State<App>,
    authenticated: Option<axum::Extension<Authenticated>>,
) -> Response {
    let s = app.shared.clone();
    let grace = app.site.ready_grace;
    let r = blocking(move || {
        let started = s.live_state().started;
        let waiting: Vec<String> = rows(&*s)?
            .into_iter()
            .filter(|r| r.enabled && r.credentials == Some(crate::store::Credentials::Paired))
            .filter(|r| r.status != Status::Connected)
            .filter(|r| {
                // Not started yet (staggered) or still within its grace: not late.
                started.get(&r.bot).is_some_and(|t| t.elapsed() >= grace)
            })
            .map(|r| r.bot)
            .collect();
        Ok(waiting)
    })
    .await;
    match r {
        Ok(w) if w.is_empty() => (StatusCode::OK, "ready\n").into_response(),
        Ok(w) if authenticated.is_some() => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", w.join(", ")),
        )
            .into_response(),
        Ok(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
        Err(resp) => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document is JSON, carries this version, and every `$ref` names
    /// something in it (the e2e tests check real answers against it).
    #[test]
    fn openapi_document_is_whole() {
        fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(o) => {
                    if let Some(r) = o.get("$ref").and_then(|r| r.as_str()) {
                        out.push(r.to_owned());
                    }
                    o.values().for_each(|x| refs(x, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let doc: serde_json::Value = serde_json::from_str(&openapi()).unwrap();
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "{all:?}");
        for r in all {
            let ptr = r.strip_prefix('#').expect("local $ref");
            assert!(doc.pointer(ptr).is_some(), "{r} names nothing");
        }
    }
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[test]
    fn host_must_name_the_listen_address() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        for ok in ["127.0.0.1:8080", "localhost:8080", "LocalHost:8080"] {
            assert!(host_allowed(v4, ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1",
            "127.0.0.1:8081",
            "127.0.0.2:8080",
            "localhost.:8080",
            "localhost:8080.evil",
            "127.0.0.1:08080x",
            "127.0.0.1:",
            "[127.0.0.1]:8080",
            "[::1]:8080",
            "",
            ":8080",
            "127.0.0.1:99999",
        ] {
            assert!(!host_allowed(v4, bad), "{bad}");
        }
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        assert!(host_allowed(v6, "[::1]:9000"));
        assert!(host_allowed(v6, "localhost:9000"));
        assert!(!host_allowed(v6, "::1:9000"));
        assert!(!host_allowed(v6, "[::1"));
        assert!(!host_allowed(v6, "[::1]x9000"));
        assert!(!host_allowed(v6, "127.0.0.1:9000"));
        // Port 80: the port may be left out.
        let p80: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(host_allowed(p80, "127.0.0.1"));
        assert!(host_allowed(p80, "localhost"));
        // A public address: only itself, no `localhost`.
        let lan: SocketAddr = "192.0.2.7:8080".parse().unwrap();
        assert!(host_allowed(lan, "192.0.2.7:8080"));
        assert!(!host_allowed(lan, "localhost:8080"));
        assert!(!host_allowed(lan, "wavault.lan:8080"));
        // Unspecified (--listen-any 0.0.0.0): IP literals with the port, no names.
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(host_allowed(any, "192.0.2.7:8080"));
        assert!(host_allowed(any, "[2001:db8::1]:8080"));
        assert!(!host_allowed(any, "192.0.2.7:8081"));
        assert!(!host_allowed(any, "rebind.evil.example:8080"));
    }

    #[test]
    fn form_field_decodes() {
        assert_eq!(
            form_field(b"a=1&token=ab%20c+d&x", "token")
                .as_deref()
                .map(String::as_str),
            Some("ab c d")
        );
        assert_eq!(
            form_field(b"token", "token").as_deref().map(String::as_str),
            Some("")
        );
        assert_eq!(
            form_field(b"token=%zz%4", "token")
                .as_deref()
                .map(String::as_str),
            Some("%zz%4")
        );
        assert!(form_field(b"tok=1", "token").is_none());
        assert!(form_field(b"token=%ff", "token").is_none(), "not UTF-8");
    }

    fn hello() -> Router {
        Router::new().route("/", get(|| async { "hello\n" }))
    }

    async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_router(listener, hello(), limits, async move {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    /// Reads until the server closes; panics if that takes longer than `deadline`.
    async fn read_until_closed(s: &mut TcpStream, deadline: Duration) -> String {
        let mut got = Vec::new();
        match tokio::time::timeout(deadline, s.read_to_end(&mut got)).await {
            Ok(_) => String::from_utf8_lossy(&got).into_owned(),
            Err(_) => panic!("the server kept the connection open past {deadline:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_sent_request_is_disconnected_after_the_header_timeout() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let started = Instant::now();
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Meanwhile a whole request is served.
        let mut ok = TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let resp = read_until_closed(&mut ok, Duration::from_secs(10)).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        for s in [&mut half, &mut silent] {
            let resp = read_until_closed(s, Duration::from_secs(10)).await;
            assert!(!resp.contains("hello"), "{resp}");
        }
        assert!(started.elapsed() >= limits.header_read_timeout);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_beyond_the_cap_are_refused() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(60),
            max_connections: 2,
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        // Two connections hold the two slots (half a request each).
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            held.push(s);
        }
        // The third is answered 503 and closed at once.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let resp = read_until_closed(&mut third, Duration::from_secs(10)).await;
        assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
        assert!(resp.contains("too many connections"), "{resp}");
        // A slot freed: served again (the server notices the close on its own time).
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let resp = read_until_closed(&mut s, Duration::from_secs(10)).await;
            if resp.starts_with("HTTP/1.1 200") {
                break;
            }
            // Refused: the 503, or a reset when the request was still unread.
            assert!(
                resp.is_empty() || resp.starts_with("HTTP/1.1 503"),
                "{resp}"
            );
            assert!(Instant::now() < deadline, "the freed slot was never reused");
            tokio::task::yield_now().await;
        }
    }
}
