//! One server task per client connection.
//!
//! Why it exists: each `create_transport` call is a separate "socket" with
//! its own Noise session, counters and lifetime, exactly like a reconnect to
//! the real edge. The task strips the connection header, runs the responder
//! handshake, classifies the client (registration or login), then loops:
//! decrypts and records client stanzas, answers them, and executes commands
//! from the [`super::Peer`] handle (send a stanza, complete a pairing, close).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use whatsapp_rust::anyhow::{self, anyhow, bail};
use whatsapp_rust::async_channel;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore::framing::{encode_frame, FrameDecoder};
use whatsapp_rust::wacore::net::{DisconnectReason, TransportEvent};
use whatsapp_rust::wacore_binary::consts::WA_CONN_HEADER;
use whatsapp_rust::wacore_binary::Node;

use super::contact::{self, Queued};
use super::noise::{HelloReply, NoiseSession, NoiseTransport};
use super::pairing::{verify_pair_device_sign, QrCode, SignedIdentity};
use super::stanza::{self, attr, child};
use super::transport::PeerTransport;
use super::{lock, ClientKind, ConnectionRecord, LiveConn, Pairing, Shared, Stanza};

/// How many QR refs a registering client gets (first lasts 60 s, then 20 s
/// each; far more than a test needs).
const QR_REFS: usize = 6;

/// Longest wait for the companion's `<ib><unified_session/>` before the
/// post-pairing 515 is sent anyway (recorded as an error).
const RESTART_FALLBACK: Duration = Duration::from_secs(5);

/// Orders from the [`super::Peer`] handle to one connection task.
pub(crate) enum Command {
    Send(Node),
    Pair(Box<PairRequest>),
    /// Push a contact message to an online bot connection.
    Deliver(Queued),
    /// Close from the server side: the client sees the stream end.
    Close,
}

/// The phone's pairing of the client behind this connection.
pub(crate) struct PairRequest {
    pub(crate) iq_id: String,
    pub(crate) qr: QrCode,
    pub(crate) signed: SignedIdentity,
    pub(crate) phone: String,
    pub(crate) device: u16,
    pub(crate) lid: String,
    pub(crate) reply: oneshot::Sender<anyhow::Result<Pairing>>,
}

/// Opens a connection: records the attempt, refuses it when asked to, or
/// starts its server task.
pub(crate) fn open(
    shared: &Arc<Shared>,
) -> anyhow::Result<(PeerTransport, async_channel::Receiver<TransportEvent>)> {
    let refusing = shared.refusing.load(std::sync::atomic::Ordering::SeqCst);
    shared.modify_log(|log| {
        log.attempts += 1;
        if refusing {
            log.refusals += 1;
        }
    });
    if refusing {
        bail!("peer refuses connections");
    }
    let id = shared
        .next_conn
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (to_server, inbound) = mpsc::unbounded_channel();
    let (events, events_rx) = async_channel::unbounded();
    let (commands_tx, commands) = mpsc::unbounded_channel();
    lock(&shared.live).insert(
        id,
        LiveConn {
            client: None,
            client_static: None,
            commands: commands_tx,
            online: false,
        },
    );
    // An unbounded channel only refuses when closed, and we hold both ends.
    let _ = events.try_send(TransportEvent::Connected);
    let conn = Connection {
        shared: shared.clone(),
        id,
        inbound,
        commands,
        events,
        preamble: Some(Vec::new()),
        decoder: FrameDecoder::new(),
    };
    tokio::spawn(conn.run());
    Ok((
        PeerTransport {
            to_server: Mutex::new(Some(to_server)),
        },
        events_rx,
    ))
}

enum Input {
    Data(Bytes),
    Command(Command),
    ClientClosed,
    /// The unified-session fallback deadline passed.
    RestartDue,
}

/// A logged-in or registering client, after the handshake.
struct Session {
    noise: NoiseTransport,
    /// The client's Noise static public key (proved by the handshake).
    client_static: [u8; 32],
    client: ClientKind,
    /// Identity key from the registration payload (`e_ident`).
    registration_identity: Option<Vec<u8>>,
    /// QR refs this connection handed out.
    refs: Vec<String>,
    pending_pair: Option<Box<PairRequest>>,
    /// Pairing confirmed; 515 goes out when the companion's unified-session
    /// `<ib>` arrives, or at this deadline.
    restart_due: Option<tokio::time::Instant>,
}

struct Connection {
    shared: Arc<Shared>,
    id: u64,
    inbound: mpsc::UnboundedReceiver<Bytes>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: async_channel::Sender<TransportEvent>,
    /// Bytes before the first frame (`WA` header, maybe an edge-routing
    /// pre-intro); `None` once stripped.
    preamble: Option<Vec<u8>>,
    decoder: FrameDecoder,
}

/// Length of the connection header at the start of `buf`, `None` if more
/// bytes are needed.
fn header_len(buf: &[u8]) -> anyhow::Result<Option<usize>> {
    let mut start = 0;
    if buf.starts_with(b"ED\x00\x01") {
        if buf.len() < 7 {
            return Ok(None);
        }
        let routing_len =
            (usize::from(buf[4]) << 16) | (usize::from(buf[5]) << 8) | usize::from(buf[6]);
        start = 7 + routing_len;
    } else if buf.len() < 4 && b"ED\x00\x01".starts_with(buf) {
        return Ok(None);
    }
    if buf.len() < start + WA_CONN_HEADER.len() {
        return Ok(None);
    }
    if buf[start..start + WA_CONN_HEADER.len()] != WA_CONN_HEADER {
        bail!("connection does not start with the WA header");
    }
    Ok(Some(start + WA_CONN_HEADER.len()))
}

fn classify(session: &NoiseSession) -> anyhow::Result<(ClientKind, Option<Vec<u8>>)> {
    let payload = &session.payload;
    if let Some(reg) = payload.device_pairing_data.as_option() {
        return Ok((ClientKind::Registration, reg.e_ident.clone()));
    }
    let phone = payload
        .username
        .ok_or_else(|| anyhow!("ClientPayload has neither pairing data nor username"))?;
    let device = payload.device.unwrap_or(0);
    let device = u16::try_from(device).map_err(|_| anyhow!("device id {device} out of range"))?;
    Ok((
        ClientKind::Login {
            phone: phone.to_string(),
            device,
        },
        None,
    ))
}

impl Connection {
    async fn run(mut self) {
        let mut pending = None;
        let outcome = self.serve(&mut pending).await;
        lock(&self.shared.live).remove(&self.id);
        if let Some(req) = pending.take() {
            let _ = req
                .reply
                .send(Err(anyhow!("connection closed during pairing")));
        }
        let id = self.id;
        let client_gone = self.events.is_closed();
        self.shared.modify_log(|log| {
            if let Some(rec) = log.connections.iter_mut().find(|c| c.id == id) {
                rec.open = false;
                if rec.accepted {
                    let closed = super::LoginSpan::closed(rec);
                    log.login_spans.extend(closed);
                }
            }
            if let Err(e) = outcome {
                if !client_gone {
                    log.errors.push(format!("connection #{id}: {e:#}"));
                }
            }
        });
    }

    async fn next_input(&mut self, deadline: Option<tokio::time::Instant>) -> Input {
        let due = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            command = self.commands.recv() => Input::Command(command.unwrap_or(Command::Close)),
            data = self.inbound.recv() => data.map_or(Input::ClientClosed, Input::Data),
            () = due => Input::RestartDue,
        }
    }

    fn feed(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let Some(preamble) = self.preamble.as_mut() else {
            self.decoder.feed(data);
            return Ok(());
        };
        preamble.extend_from_slice(data);
        if let Some(len) = header_len(preamble)? {
            let rest = preamble.split_off(len);
            self.preamble = None;
            self.decoder.feed(&rest);
        }
        Ok(())
    }

    fn close_from_server(&self) {
        let _ = self
            .events
            .try_send(TransportEvent::Disconnected(DisconnectReason::StreamEnded));
    }

    /// Next handshake frame; `None` when the connection ended first.
    async fn handshake_frame(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            if self.preamble.is_none() {
                if let Some(frame) = self.decoder.decode_frame() {
                    return Ok(Some(frame.to_vec()));
                }
            }
            match self.next_input(None).await {
                Input::Data(data) => self.feed(&data)?,
                Input::Command(Command::Close) => {
                    self.close_from_server();
                    return Ok(None);
                }
                Input::Command(Command::Pair(req)) => {
                    let _ = req
                        .reply
                        .send(Err(anyhow!("connection is still handshaking")));
                }
                Input::Command(Command::Send(_) | Command::Deliver(_)) | Input::RestartDue => {}
                Input::ClientClosed => return Ok(None),
            }
        }
    }

    fn push_raw(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.events
            .try_send(TransportEvent::DataReceived(Bytes::from(bytes)))
            .map_err(|_| anyhow!("client stopped reading"))
    }

    async fn handshake(&mut self) -> anyhow::Result<Option<NoiseSession>> {
        let Some(hello) = self.handshake_frame().await? else {
            return Ok(None);
        };
        match self.shared.identity.respond_to_hello(&hello)? {
            HelloReply::Done {
                server_hello,
                session,
            } => {
                self.push_raw(encode_frame(&server_hello, None)?)?;
                Ok(Some(*session))
            }
            HelloReply::AwaitFinish {
                server_hello,
                pending,
            } => {
                self.push_raw(encode_frame(&server_hello, None)?)?;
                let Some(finish) = self.handshake_frame().await? else {
                    return Ok(None);
                };
                Ok(Some(pending.finish(&finish)?))
            }
        }
    }

    async fn serve(&mut self, pending: &mut Option<Box<PairRequest>>) -> anyhow::Result<()> {
        let Some(noise_session) = self.handshake().await? else {
            return Ok(());
        };
        let (client, registration_identity) = classify(&noise_session)?;
        if let Some(live) = lock(&self.shared.live).get_mut(&self.id) {
            live.client = Some(client.clone());
            live.client_static = Some(noise_session.client_static);
        }
        let record = ConnectionRecord {
            id: self.id,
            handshake: noise_session.kind,
            client: client.clone(),
            push_name: noise_session.payload.push_name.clone(),
            accepted: false,
            refused: false,
            refusal: None,
            open: true,
        };
        self.shared
            .modify_log(|log| log.connections.push(record.clone()));

        let mut session = Session {
            noise: noise_session.transport,
            client_static: noise_session.client_static,
            client,
            registration_identity,
            refs: Vec::new(),
            pending_pair: None,
            restart_due: None,
        };
        let result = self.session_loop(&mut session).await;
        *pending = session.pending_pair.take();
        result
    }

    async fn session_loop(&mut self, session: &mut Session) -> anyhow::Result<()> {
        self.greet(session)?;
        loop {
            while let Some(frame) = self.decoder.decode_frame() {
                let plaintext = session.noise.open(&frame)?;
                let node = stanza::decode(&plaintext)?;
                let id = self.id;
                self.shared.modify_log(|log| {
                    log.received.push(Stanza {
                        conn: id,
                        node: node.clone(),
                    })
                });
                self.on_node(session, &node).await?;
            }
            match self.next_input(session.restart_due).await {
                Input::Data(data) => self.feed(&data)?,
                Input::RestartDue => {
                    let id = self.id;
                    self.shared.modify_log(|log| {
                        log.errors.push(format!(
                            "connection #{id}: no unified_session after pairing; sent 515 anyway"
                        ))
                    });
                    self.restart_stream(session)?;
                }
                Input::Command(Command::Send(node)) => self.send(session, node)?,
                Input::Command(Command::Deliver(queued)) => {
                    self.deliver(session, &queued, false)?
                }
                Input::Command(Command::Pair(req)) => self.start_pair(session, req)?,
                Input::Command(Command::Close) => {
                    self.close_from_server();
                    return Ok(());
                }
                Input::ClientClosed => return Ok(()),
            }
        }
    }

    fn send(&self, session: &mut Session, node: Node) -> anyhow::Result<()> {
        let framed = session.noise.seal_framed(&stanza::encode(&node)?)?;
        self.push_raw(framed)?;
        let id = self.id;
        self.shared
            .modify_log(|log| log.sent.push(Stanza { conn: id, node }));
        Ok(())
    }

    fn set_record(&self, f: impl FnOnce(&mut ConnectionRecord)) {
        let id = self.id;
        self.shared.modify_log(|log| {
            if let Some(rec) = log.connections.iter_mut().find(|c| c.id == id) {
                f(rec);
            }
        });
    }

    /// First server stanza: QR refs for a registration, `<success>` or
    /// `<failure>` for a login.
    fn greet(&self, session: &mut Session) -> anyhow::Result<()> {
        match session.client.clone() {
            ClientKind::Registration => {
                let refs: Vec<String> = (0..QR_REFS)
                    .map(|_| format!("2@peer-ref-{:016x}", rand::random::<u64>()))
                    .collect();
                let id = self.shared.iq_id("pair-device");
                self.send(session, stanza::pair_device(&id, &refs))?;
                session.refs = refs;
                Ok(())
            }
            ClientKind::Login { phone, device } => {
                if self.shared.is_stalled(&phone) {
                    // No <success>, no <failure>: the client times out.
                } else if let Some(refusal) =
                    self.shared
                        .login_verdict(&phone, device, &session.client_static)
                {
                    self.send(session, stanza::failure_for(refusal))?;
                    self.set_record(|r| {
                        r.refused = true;
                        r.refusal = Some(refusal);
                    });
                } else {
                    let lid = format!("{}:{device}@lid", Shared::lid_for(&phone));
                    self.send(session, stanza::success(&lid))?;
                    self.shared.modify_log(|log| {
                        if let Some(r) = log.connections.iter_mut().find(|c| c.id == self.id) {
                            r.accepted = true;
                            log.login_spans.extend(super::LoginSpan::opened(r));
                        }
                    });
                }
                Ok(())
            }
        }
    }

    /// The post-pairing stream restart: the client reconnects at once and
    /// logs in with its new credentials.
    fn restart_stream(&self, session: &mut Session) -> anyhow::Result<()> {
        session.restart_due = None;
        self.send(session, stanza::stream_error_code(515))
    }

    async fn on_node(&self, session: &mut Session, node: &Node) -> anyhow::Result<()> {
        let shared = &*self.shared;
        match &*node.tag {
            "ib" if session.restart_due.is_some() && child(node, "unified_session").is_some() => {
                return self.restart_stream(session);
            }
            "message" => {
                let to_group = attr(node, "to").is_some_and(|to| to.ends_with("@g.us"));
                let replies = if to_group {
                    super::group::on_bot_message(shared, &session.client, node).await?
                } else {
                    contact::on_bot_message(shared, &session.client, node).await?
                };
                for reply in replies {
                    self.send(session, reply)?;
                }
                return Ok(());
            }
            "receipt" => {
                for reply in contact::on_receipt(shared, self.id, &session.client, node) {
                    self.send(session, reply)?;
                }
                return Ok(());
            }
            "ack" => {
                contact::on_client_ack(shared, &session.client, node);
                super::group::on_client_ack(shared, &session.client, node);
                return Ok(());
            }
            "iq" => {}
            _ => {
                if !super::login::known_tag(node) {
                    self.unsupported(node);
                }
                return Ok(());
            }
        }
        match attr(node, "type").as_deref() {
            Some("result") | Some("error") => self.on_answer(session, node),
            _ => {
                let group = super::group::answer_iq(shared, &session.client, node)
                    .or_else(|| super::media::answer_iq(node));
                let replies = match group {
                    Some(replies) => replies,
                    None => match contact::answer_iq(shared, &session.client, node).await {
                        Some(replies) => replies,
                        None => super::login::answer_iq(node).unwrap_or_else(|| {
                            self.unsupported(node);
                            vec![super::login::not_implemented(node)]
                        }),
                    },
                };
                for reply in replies {
                    self.send(session, reply)?;
                }
                if attr(node, "xmlns").as_deref() == Some("passive")
                    && child(node, "active").is_some()
                {
                    self.go_online(session)?;
                }
                Ok(())
            }
        }
    }

    /// Records a client stanza the peer does not implement.
    fn unsupported(&self, node: &Node) {
        let what = super::login::describe(node);
        if std::env::var_os("WAVAULT_E2E_TRACE").is_some() {
            eprintln!("peer: unsupported {what}");
        }
        self.shared.modify_log(|log| log.unsupported.push(what));
    }

    /// Leaving passive mode is when the server delivers the offline queue:
    /// every unacknowledged contact message of this phone, in order, then
    /// the end marker. Without the marker the client waits 60 s before
    /// sending anything.
    fn go_online(&self, session: &mut Session) -> anyhow::Result<()> {
        let backlog = self.shared.go_online(self.id, &session.client);
        for queued in &backlog {
            self.deliver(session, queued, true)?;
        }
        self.send(session, stanza::offline_done(backlog.len()))
    }

    fn deliver(&self, session: &mut Session, queued: &Queued, offline: bool) -> anyhow::Result<()> {
        self.send(session, queued.stanza(offline))?;
        if let ClientKind::Login { phone, .. } = &session.client {
            let entry = (phone.clone(), queued.id.clone());
            self.shared
                .modify_log(|log| log.inbound_delivered.push(entry));
        }
        Ok(())
    }

    fn start_pair(&self, session: &mut Session, req: Box<PairRequest>) -> anyhow::Result<()> {
        if session.client != ClientKind::Registration {
            let _ = req
                .reply
                .send(Err(anyhow!("connection is not registering")));
            return Ok(());
        }
        if session.pending_pair.is_some() {
            let _ = req
                .reply
                .send(Err(anyhow!("a pairing is already in flight")));
            return Ok(());
        }
        if !session.refs.contains(&req.qr.pairing_ref) {
            let _ = req
                .reply
                .send(Err(anyhow!("QR ref was not issued on this connection")));
            return Ok(());
        }
        if session.registration_identity.as_deref() != Some(req.qr.identity_pub.as_slice()) {
            let _ = req.reply.send(Err(anyhow!(
                "QR identity key differs from the registration payload"
            )));
            return Ok(());
        }
        let jid = format!("{}:{}@s.whatsapp.net", req.phone, req.device);
        let lid = format!("{}:{}@lid", req.lid, req.device);
        let node = stanza::pair_success(&req.iq_id, req.signed.container.clone(), &jid, &lid);
        session.pending_pair = Some(req);
        self.send(session, node)
    }

    /// A client answer to one of our IQs; only the pair-success answer
    /// matters (the pair-device ack needs nothing).
    fn on_answer(&self, session: &mut Session, node: &Node) -> anyhow::Result<()> {
        let id = attr(node, "id").unwrap_or_default();
        if session
            .pending_pair
            .as_ref()
            .is_none_or(|req| req.iq_id != id)
        {
            return Ok(());
        }
        let Some(req) = session.pending_pair.take() else {
            return Ok(());
        };
        let verdict = if attr(node, "type").as_deref() == Some("error") {
            let err = child(node, "error");
            Err(anyhow!(
                "companion rejected pair-success: {} {}",
                err.and_then(|e| attr(e, "code")).unwrap_or_default(),
                err.and_then(|e| attr(e, "text")).unwrap_or_default()
            ))
        } else {
            verify_pair_device_sign(node, &req.signed, &req.qr.identity_pub)
        };
        match verdict {
            Ok(()) => {
                let pairing = Pairing {
                    conn: self.id,
                    phone: req.phone.clone(),
                    device: req.device,
                    lid: req.lid.clone(),
                    noise_key: req.qr.noise_pub,
                };
                // The server now knows this device by the Noise key of the
                // connection that paired it (the QR's key, checked equal by
                // `Peer::phone_scan`): later logins must present it.
                if let Some(account) = lock(&self.shared.accounts).get_mut(&req.phone) {
                    account.noise_keys.insert(req.device, session.client_static);
                }
                self.shared
                    .modify_log(|log| log.pairings.push(pairing.clone()));
                let _ = req.reply.send(Ok(pairing));
                // The real server restarts the stream (515) right away; over
                // a network the companion has long finished its pair-success
                // handling by then. In memory the 515 could overtake it: the
                // client handles the IQ on a task that stores its "restart
                // expected" flag only after sending this answer, and a 515
                // processed before that flag makes it drop its next, logged-in
                // connection too. The `<ib><unified_session/>` the companion
                // spawns right before storing that flag is the wire signal
                // that it got there.
                session.restart_due = Some(tokio::time::Instant::now() + RESTART_FALLBACK);
                Ok(())
            }
            Err(e) => {
                let id = self.id;
                let text = format!("connection #{id}: pairing failed: {e:#}");
                self.shared.modify_log(|log| log.errors.push(text));
                let _ = req.reply.send(Err(e));
                Ok(())
            }
        }
    }
}
