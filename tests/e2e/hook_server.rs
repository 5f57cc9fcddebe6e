//! A webhook for the messaging tests: records what wavault POSTs and answers
//! as the test says (reply, refuse with 503, or hang).
//!
//! Why it exists: the tests must see exactly what the operator's hook sees,
//! switch it down and up, and make it hang, all without the network.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

/// How the hook answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// 200 with `{"reply": "<prefix><text>"}` (no reply when the prefix is empty).
    Reply(String),
    /// 200 with this exact JSON answer.
    Answer(Value),
    /// 503, nothing recorded as accepted.
    Down,
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Messages the hook accepted (200), in arrival order.
    pub accepted: Vec<Value>,
    /// Every call, refused and hanging ones included.
    pub calls: usize,
    /// The `chat` of every call, in arrival order.
    pub chats: Vec<String>,
    /// Calls being answered now (a hanging call ends when its client gives up).
    pub in_flight: usize,
    /// The most calls ever in flight at once.
    pub max_in_flight: usize,
    /// Every call's headers and body as sent (to verify signatures).
    pub raw: Vec<(HeaderMap, Bytes)>,
}

/// Counts a call in flight until dropped (answered, or cancelled because
/// the client closed the connection).
struct InFlight(Arc<Inner>);

impl InFlight {
    fn new(inner: &Arc<Inner>) -> InFlight {
        inner.seen.send_modify(|s| {
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
        });
        InFlight(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.seen.send_modify(|s| s.in_flight -= 1);
    }
}

struct Inner {
    mode: Mutex<Mode>,
    seen: watch::Sender<Seen>,
}

/// A running hook server. Dropping it does not stop the server task (the
/// test's runtime ends it).
#[derive(Clone)]
pub struct HookServer {
    pub url: String,
    inner: Arc<Inner>,
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, raw: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let mode = inner.mode.lock().unwrap().clone();
    inner.seen.send_modify(|s| {
        s.calls += 1;
        s.raw.push((headers, raw));
        s.chats
            .push(body["chat"].as_str().unwrap_or_default().to_owned());
    });
    let _in_flight = InFlight::new(&inner);
    match mode {
        Mode::Down => (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        Mode::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Mode::Reply(prefix) => {
            let text = body["text"].as_str().unwrap_or_default().to_owned();
            inner.seen.send_modify(|s| s.accepted.push(body));
            if prefix.is_empty() {
                (StatusCode::OK, "").into_response()
            } else {
                Json(json!({ "reply": format!("{prefix}{text}") })).into_response()
            }
        }
        Mode::Answer(a) => {
            inner.seen.send_modify(|s| s.accepted.push(body));
            Json(a).into_response()
        }
    }
}

impl HookServer {
    pub async fn start(mode: Mode) -> HookServer {
        let inner = Arc::new(Inner {
            mode: Mutex::new(mode),
            seen: watch::Sender::new(Seen::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hook", post(handle))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HookServer { url, inner }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap() = mode;
    }

    pub fn seen(&self) -> Seen {
        self.inner.seen.borrow().clone()
    }

    /// Waits (on change, with a deadline) until `pred` holds.
    pub async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Seen) -> bool,
    ) -> Seen {
        let mut rx = self.inner.seen.subscribe();
        let found = tokio::time::timeout(timeout, rx.wait_for(|s| pred(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match found {
            Ok(Ok(s)) => s,
            _ => panic!(
                "timed out after {timeout:?} waiting for the hook to see {what}; it saw {:?}",
                self.seen()
            ),
        }
    }

    /// Texts of the accepted messages from `sender_phone`, in order.
    pub fn texts_from(&self, sender_phone: &str) -> Vec<String> {
        self.seen()
            .accepted
            .iter()
            .filter(|v| {
                v["sender"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("{sender_phone}@")))
            })
            .map(|v| v["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}
