//! The network pieces a bot is built with, and the wrappers that count
//! connection attempts (whatsapp-rust emits no event for a failed attempt).
//!
//! Production uses whatsapp-rust's tokio WebSocket transport and ureq HTTP
//! client; tests inject an in-process peer through [`Net`].

use async_trait::async_trait;
use std::sync::Arc;
use wacore::net::{
    HttpClient, HttpRequest, HttpResponse, Transport, TransportEvent, TransportFactory,
};

/// Transport, HTTP client and optional pinned client version for every bot.
#[derive(Clone)]
pub struct Net {
    pub transport: Arc<dyn TransportFactory>,
    pub http: Arc<dyn HttpClient>,
    pub version: Option<(u32, u32, u32)>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Net {
    /// The real WhatsApp endpoints. In a build whose whatsapp-rust skips
    /// the server certificate check (see [`super::certcheck`]), every
    /// connection attempt fails with [`super::certcheck::REFUSAL`] instead.
    /// The HTTP client (app version fetch, media) is refused the same way, so
    /// such a binary (every binary `cargo test` builds) opens no connection
    /// to WhatsApp's servers at all.
    pub fn production() -> Net {
        if super::certcheck::server_cert_verification_active() {
            Net {
                transport: Arc::new(
                    whatsapp_rust::transport::TokioWebSocketTransportFactory::new(),
                ),
                http: Arc::new(whatsapp_rust::http::UreqHttpClient::new()),
                version: None,
            }
        } else {
            tracing::error!("{}", super::certcheck::REFUSAL);
            Net {
                transport: Arc::new(RefusingFactory),
                http: Arc::new(RefusingHttp),
                version: None,
            }
        }
    }
}

/// Refuses every HTTP request (a build that would accept any server).
struct RefusingHttp;

#[async_trait]
impl HttpClient for RefusingHttp {
    async fn execute(&self, _request: HttpRequest) -> whatsapp_rust::anyhow::Result<HttpResponse> {
        Err(whatsapp_rust::anyhow::anyhow!(super::certcheck::REFUSAL))
    }
}

/// Refuses every connection (a build that would accept any server).
struct RefusingFactory;

#[async_trait]
impl TransportFactory for RefusingFactory {
    async fn create_transport(
        &self,
    ) -> Result<
        (
            Arc<dyn Transport>,
            whatsapp_rust::async_channel::Receiver<TransportEvent>,
        ),
        whatsapp_rust::anyhow::Error,
    > {
        Err(whatsapp_rust::anyhow::anyhow!(super::certcheck::REFUSAL))
    }
}

/// Receives one call per connection attempt: `Ok` or the error text.
pub trait AttemptSink: Send + Sync {
    fn attempt(&self, outcome: Result<(), String>);
}

/// A transport factory that reports every attempt to an [`AttemptSink`].
pub struct CountingFactory {
    pub inner: Arc<dyn TransportFactory>,
    pub sink: Arc<dyn AttemptSink>,
}

#[async_trait]
impl TransportFactory for CountingFactory {
    async fn create_transport(
        &self,
    ) -> Result<
        (
            Arc<dyn Transport>,
            whatsapp_rust::async_channel::Receiver<TransportEvent>,
        ),
        whatsapp_rust::anyhow::Error,
    > {
        let r = self.inner.create_transport().await;
        self.sink.attempt(
            r.as_ref()
                .map(|_| ())
                .map_err(|e| format!("connect failed: {e}")),
        );
        r
    }
}

/// Shares one HTTP client among bots.
pub struct SharedHttp(pub Arc<dyn HttpClient>);

#[async_trait]
impl HttpClient for SharedHttp {
    async fn execute(&self, request: HttpRequest) -> whatsapp_rust::anyhow::Result<HttpResponse> {
        self.0.execute(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test builds have the danger feature: neither the WebSocket nor the
    /// HTTP side of the production network reaches out (no test dials
    /// WhatsApp's real servers, e.g. for the app version).
    #[tokio::test]
    async fn a_build_without_the_check_refuses_http_and_transport() {
        assert!(!super::super::certcheck::server_cert_verification_active());
        let net = Net::production();
        let Err(e) = net
            .http
            .execute(HttpRequest::get("https://web.whatsapp.com/sw.js"))
            .await
        else {
            panic!("an HTTP request went out");
        };
        assert!(e.to_string().contains("refusing to connect"), "{e}");
        let Err(e) = net.transport.create_transport().await else {
            panic!("a transport was created");
        };
        assert!(e.to_string().contains("refusing to connect"), "{e}");
    }
}
