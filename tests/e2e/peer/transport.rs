//! The three injection points that keep a whatsapp-rust client off the
//! network: a `TransportFactory` whose connections end in the peer, an
//! `HttpClient` stub, and a pinned app version.
//!
//! Why it exists: the client talks to the world only through these. Each
//! `create_transport` call is one "TCP connection": it gets its own server
//! task in the peer (see `connection.rs`) and a pair of in-memory pipes, so
//! reconnects, refusals and drops behave like separate sockets. The wavault
//! runner receives the same three pieces, so each is obtainable on its own
//! from [`super::Peer`].

use std::sync::{Arc, Mutex};

use whatsapp_rust::anyhow::{self, anyhow};
use whatsapp_rust::async_channel;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore::net::{
    HttpClient, HttpRequest, HttpResponse, Transport, TransportEvent, TransportFactory,
};

use super::Shared;

/// App version the client announces; pinned so it never fetches one over
/// HTTP (`BotBuilder::with_version`).
pub const PINNED_VERSION: (u32, u32, u32) = (2, 3000, 1_027_000_000);

/// Connects a client to the peer; cheap to clone, every clone reaches the
/// same peer.
#[derive(Clone)]
pub struct PeerTransportFactory {
    pub(crate) shared: Arc<Shared>,
}

#[whatsapp_rust::async_trait]
impl TransportFactory for PeerTransportFactory {
    async fn create_transport(
        &self,
    ) -> anyhow::Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>)> {
        let (transport, events) = super::connection::open(&self.shared)?;
        Ok((Arc::new(transport), events))
    }
}

/// Client side of one in-memory connection. Bytes written here are read by
/// the connection's server task; `disconnect` closes the pipe like a socket
/// close.
pub(crate) struct PeerTransport {
    pub(crate) to_server: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Bytes>>>,
}

#[whatsapp_rust::async_trait]
impl Transport for PeerTransport {
    async fn send(&self, data: Bytes) -> anyhow::Result<()> {
        let guard = self
            .to_server
            .lock()
            .map_err(|_| anyhow!("transport lock poisoned"))?;
        match guard.as_ref() {
            Some(tx) => tx
                .send(data)
                .map_err(|_| anyhow!("peer closed the connection")),
            None => Err(anyhow!("transport already disconnected")),
        }
    }

    async fn disconnect(&self) {
        if let Ok(mut guard) = self.to_server.lock() {
            guard.take();
        }
    }
}

/// HTTP stub: serves the peer's media host ([`super::MEDIA_HOST`], see
/// `media.rs`); records every other request and fails it, as if offline.
/// With the pinned version a plain login makes no HTTP request at all,
/// which the tests assert.
#[derive(Clone)]
pub struct PeerHttpClient {
    pub(crate) shared: Arc<Shared>,
}

#[whatsapp_rust::async_trait]
impl HttpClient for PeerHttpClient {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let body = request.body.clone();
        if let Some(answer) = super::media::serve(&self.shared, &request, body.as_deref()) {
            return Ok(answer);
        }
        let line = format!("{} {}", request.method, request.url);
        self.shared
            .modify_log(|log| log.http_requests.push(line.clone()));
        Err(anyhow!("no network in tests: {line}"))
    }

    /// A streamed upload (`Client::upload_stream`): the body is read whole
    /// and stored like a buffered one.
    fn execute_upload(
        &self,
        request: HttpRequest,
        mut body: whatsapp_rust::wacore::net::UploadBody,
        _content_length: u64,
    ) -> anyhow::Result<HttpResponse> {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut body, &mut bytes)?;
        if let Some(answer) = super::media::serve(&self.shared, &request, Some(&bytes)) {
            return Ok(answer);
        }
        let line = format!("{} {}", request.method, request.url);
        self.shared
            .modify_log(|log| log.http_requests.push(line.clone()));
        Err(anyhow!("no network in tests: {line}"))
    }
}
