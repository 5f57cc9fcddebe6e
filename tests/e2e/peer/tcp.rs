//! The peer over loopback TCP, for clients in another process.
//!
//! Why it exists: a SIGKILL test must kill the process that runs the bots
//! while the server (and the contacts it plays, with their Signal sessions
//! and the messages it still has to deliver) lives on, exactly like the real
//! WhatsApp servers do when a host dies. [`Peer::listen_tcp`] serves this
//! peer on a loopback port; [`TcpTransportFactory`] is the client side the
//! child process gives its runner. Each TCP connection is one peer
//! connection (`connection::open`): bytes are relayed unchanged both ways,
//! and a closed socket on either side closes the other.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use whatsapp_rust::anyhow::{self, anyhow};
use whatsapp_rust::async_channel;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore::net::{DisconnectReason, Transport, TransportEvent, TransportFactory};

use super::Peer;

impl Peer {
    /// Serves this peer on `127.0.0.1` (a free port) until the runtime ends.
    pub async fn listen_tcp(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok((transport, events)) = super::connection::open(&shared) else {
                    continue; // refused: dropping the stream closes it
                };
                let (mut rd, mut wr) = stream.into_split();
                let transport = Arc::new(transport);
                let up = transport.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if up.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    up.disconnect().await;
                });
                tokio::spawn(async move {
                    while let Ok(ev) = events.recv().await {
                        match ev {
                            TransportEvent::Connected => {}
                            TransportEvent::DataReceived(b) => {
                                if wr.write_all(&b).await.is_err() {
                                    break;
                                }
                            }
                            TransportEvent::Disconnected(_) => break,
                        }
                    }
                    let _ = wr.shutdown().await;
                    drop(transport);
                });
            }
        });
        addr
    }
}

/// Opens connections to a peer served by [`Peer::listen_tcp`].
#[derive(Clone)]
pub struct TcpTransportFactory {
    pub addr: SocketAddr,
}

struct TcpTransport {
    wr: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
}

#[whatsapp_rust::async_trait]
impl Transport for TcpTransport {
    async fn send(&self, data: Bytes) -> anyhow::Result<()> {
        let mut g = self.wr.lock().await;
        let wr = g
            .as_mut()
            .ok_or_else(|| anyhow!("transport already disconnected"))?;
        wr.write_all(&data)
            .await
            .map_err(|e| anyhow!("peer socket: {e}"))
    }

    async fn disconnect(&self) {
        if let Some(mut wr) = self.wr.lock().await.take() {
            let _ = wr.shutdown().await;
        }
    }
}

#[whatsapp_rust::async_trait]
impl TransportFactory for TcpTransportFactory {
    async fn create_transport(
        &self,
    ) -> anyhow::Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>)> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (mut rd, wr) = stream.into_split();
        let (tx, rx) = async_channel::unbounded();
        let _ = tx.try_send(TransportEvent::Connected);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            // The server's frames, one per event, as the in-process
            // transport (and a WebSocket message) hands them over: TCP may
            // deliver two in one read, and whatsapp-rust 0.7 reads the IK
            // server hello with a frame decoder it then drops
            // (`run_ik_handshake`), so a `<success>` that came in the same
            // read would be lost and every later frame fail to decrypt.
            // A frame is a 3-byte big-endian length and the payload.
            let mut pending = whatsapp_rust::bytes::BytesMut::new();
            let reason = loop {
                match rd.read(&mut buf).await {
                    Ok(0) => break DisconnectReason::StreamEnded,
                    Err(e) => break DisconnectReason::ReadError(e.to_string()),
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        while pending.len() >= 3 {
                            let len = usize::from(pending[0]) << 16
                                | usize::from(pending[1]) << 8
                                | usize::from(pending[2]);
                            if pending.len() < 3 + len {
                                break;
                            }
                            let frame = pending.split_to(3 + len).freeze();
                            if tx.send(TransportEvent::DataReceived(frame)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            };
            let _ = tx.send(TransportEvent::Disconnected(reason)).await;
        });
        Ok((
            Arc::new(TcpTransport {
                wr: tokio::sync::Mutex::new(Some(wr)),
            }),
            rx,
        ))
    }
}
