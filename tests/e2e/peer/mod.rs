//! An in-process WhatsApp server (and primary phone) for end-to-end tests.
//!
//! Why it exists: the real whatsapp-rust 0.7 client must be exercised
//! without the internet: pair through a QR code, log in with stored
//! credentials, report `Connected`, reconnect after faults, and be logged
//! out or replaced. [`Peer`] is that counterpart. It speaks the Noise
//! handshake (XX, IK, XXfallback), answers the start-up stanzas a login
//! needs (see `/work/shared/docs/peer-notes.md`), plays the phone for
//! pairing, injects faults, and records what it saw so tests can assert on
//! it. It also plays contacts ([`Peer::contact`]): users with their own
//! Signal identity who exchange encrypted 1:1 messages with the bots, with
//! the server's offline queue in between (`contact.rs`). It is generic over
//! the storage backend: the bot under test is any `Arc<dyn Backend>`.
//!
//! ```ignore
//! let peer = Peer::new();
//! let backend: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
//! let bot = peer.start_bot(backend.clone(), BotOptions::default()).await?;
//! bot.events.wait_for("Connected", PAIRING_LOGIN_DEADLINE, is_connected).await?;
//! let phone = peer.seen().pairings[0].phone.clone();
//! peer.drop_connections();
//! peer.wait_for("second login", DEADLINE, |log| log.logins(&phone).count() >= 2).await?;
//! ```
//!
//! Pieces the wavault runner needs on their own: [`Peer::transport_factory`],
//! [`Peer::http_client`], [`PINNED_VERSION`] (or [`Peer::configure`] to
//! apply all three to a `BotBuilder`).

mod bot;
mod connection;
mod contact;
mod group;
mod login;
mod media;
mod noise;
mod overlap;
mod pairing;
mod signal;
mod stanza;
mod tcp;
mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use whatsapp_rust::anyhow::{self, anyhow, bail};
use whatsapp_rust::bot::{BotBuilder, Provided};
use whatsapp_rust::wacore::libsignal::protocol::KeyPair;
use whatsapp_rust::wacore_binary::Node;

pub use bot::{is_connected, is_logged_out, is_qr, is_stream_replaced};
pub use bot::{BotOptions, EventLog, RunningBot};
pub use contact::{Contact, ContactMessage, ReceiptRecord, NACK_UNKNOWN_RECIPIENT};
pub use group::GroupSend;
pub use media::{MediaDownload, MediaKind, MediaUpload, OutMedia, ReceivedMedia, MEDIA_HOST};
pub use noise::HandshakeKind;
pub use overlap::LoginSpan;
pub use pairing::QrCode;
pub use stanza::{attr, child};
pub use tcp::TcpTransportFactory;
pub use transport::{PeerHttpClient, PeerTransportFactory, PINNED_VERSION};

use connection::Command;
use noise::ServerIdentity;

/// What a client declared in its handshake payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKind {
    /// No credentials: the client will show QR codes.
    Registration,
    /// Stored credentials for this phone number (PN user) and device id.
    Login { phone: String, device: u16 },
}

/// One connection that completed its Noise handshake.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub id: u64,
    pub handshake: HandshakeKind,
    pub client: ClientKind,
    /// Push name from the registration payload, if the client set one.
    pub push_name: Option<String>,
    /// `<success>` was sent (a login the peer accepted).
    pub accepted: bool,
    /// `<failure>` was sent (login refused, e.g. after a logout).
    pub refused: bool,
    /// Why the login was refused (`<failure reason=…>` and a word), if it was.
    pub refusal: Option<Refusal>,
    pub open: bool,
}

/// Why the peer refused a login with `<failure reason=…/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401: the phone was logged out ([`Peer::log_out`]).
    LoggedOut,
    /// 401: no device with this phone and id was ever paired (or registered).
    UnknownDevice,
    /// 401: the Noise static key is not the one registered at pairing.
    WrongNoiseKey,
    /// 402 with a ban code and expiry ([`Peer::ban`]).
    Banned,
    /// 405 ([`Peer::client_outdated`]).
    ClientOutdated,
}

impl Refusal {
    /// The `reason` attribute of the `<failure>` stanza.
    pub fn code(self) -> u16 {
        match self {
            Refusal::LoggedOut | Refusal::UnknownDevice | Refusal::WrongNoiseKey => 401,
            Refusal::Banned => 402,
            Refusal::ClientOutdated => 405,
        }
    }
}

/// A stanza the peer received (or sent) on connection `conn`.
#[derive(Debug, Clone)]
pub struct Stanza {
    pub conn: u64,
    pub node: Node,
}

/// A completed QR pairing: the phone signed, the companion countersigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairing {
    pub conn: u64,
    pub phone: String,
    pub device: u16,
    /// The account's LID user.
    pub lid: String,
    /// The companion's Noise static public key, from its QR code: the key
    /// its later logins must present.
    pub noise_key: [u8; 32],
}

/// Everything the peer observed, in order. Cloned out by [`Peer::seen`].
#[derive(Debug, Clone, Default)]
pub struct PeerLog {
    /// `create_transport` calls, refused ones included.
    pub attempts: usize,
    /// Connection attempts refused while [`Peer::refuse_connections`] was on.
    pub refusals: usize,
    /// Connections that finished the handshake, in order.
    pub connections: Vec<ConnectionRecord>,
    /// Stanzas received from clients.
    pub received: Vec<Stanza>,
    /// Stanzas the peer sent.
    pub sent: Vec<Stanza>,
    pub pairings: Vec<Pairing>,
    /// `METHOD url` of every HTTP request made through [`Peer::http_client`].
    pub http_requests: Vec<String>,
    /// Protocol errors the peer hit (bad handshake, failed signature, …).
    pub errors: Vec<String>,
    /// Every `<receipt>` a bot sent, in order.
    pub receipts: Vec<ReceiptRecord>,
    /// `<ack class="message">` a bot sent: (bot phone, message id).
    pub bot_acks: Vec<(String, String)>,
    /// Messages from a bot a contact could not decrypt (tests assert none).
    pub decrypt_errors: Vec<String>,
    /// (bot phone, message id, error code) of bot messages the server
    /// nacked (`<ack error>`): a recipient it does not know.
    pub bot_nacks: Vec<(String, String, String)>,
    /// (contact phone, message id): delivery receipts contacts sent for bot
    /// messages they decrypted.
    pub delivery_receipts: Vec<(String, String)>,
    /// (contact phone, message id): retry receipts contacts sent
    /// ([`Contact::send_retry_receipt`]).
    pub contact_retry_receipts: Vec<(String, String)>,
    /// (bot phone, message id) each time a contact message was pushed to a
    /// bot connection: redeliveries show up as repeated ids.
    pub inbound_delivered: Vec<(String, String)>,
    /// Bot phones whose pre-key upload the server kept, once per upload.
    pub bundles_uploaded: Vec<String>,
    /// Client stanzas the peer does not know, answered with an error (an
    /// `<iq>`: `type="error"` code 501) or ignored (anything else), as
    /// `tag xmlns=… child=…`. Tests that use only supported features
    /// assert it stays empty.
    pub unsupported: Vec<String>,
    /// Every bot message to a group, in order (see `group.rs`).
    pub group_sends: Vec<GroupSend>,
    /// (former member's phone, message id): a bot's group message a removed
    /// participant tried and failed to decrypt with the sender keys it kept.
    pub group_eavesdrops: Vec<(String, String)>,
    /// Group messages that reached a removed participant: a sender key
    /// distributed to it, or a message it could decrypt (tests assert none).
    pub group_leaks: Vec<String>,
    /// (bot phone, notification id) of each `<ack class="notification">`.
    pub notification_acks: Vec<(String, String)>,
    /// Blobs stored by the media host (`media.rs`), bots' and contacts'.
    pub media_uploads: Vec<MediaUpload>,
    /// Blobs the media host served (or refused), to bots and contacts.
    pub media_downloads: Vec<MediaDownload>,
    /// Media of bot messages a contact could not fetch or decrypt (tests
    /// assert none).
    pub contact_media_errors: Vec<String>,
    /// Accepted logins opening (`<success>` sent) and closing, in order
    /// (see `overlap.rs`).
    pub login_spans: Vec<LoginSpan>,
}

impl PeerLog {
    /// Whether the bot logged in as `phone` has uploaded a pre-key bundle
    /// (a contact needs it to start a Signal session).
    pub fn has_prekey_bundle(&self, phone: &str) -> bool {
        self.bundles_uploaded.iter().any(|p| p == phone)
    }

    /// Connections that logged in as `phone`.
    pub fn logins<'a>(&'a self, phone: &'a str) -> impl Iterator<Item = &'a ConnectionRecord> {
        self.connections
            .iter()
            .filter(move |c| matches!(&c.client, ClientKind::Login { phone: p, .. } if p == phone))
    }

    /// Connections that logged in, whatever the phone.
    pub fn logins_total(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| matches!(c.client, ClientKind::Login { .. }))
            .count()
    }

    /// Connections that came without credentials.
    pub fn registrations(&self) -> impl Iterator<Item = &ConnectionRecord> {
        self.connections
            .iter()
            .filter(|c| c.client == ClientKind::Registration)
    }

    /// Received stanzas with this tag.
    pub fn received_tagged<'a>(&'a self, tag: &'a str) -> impl Iterator<Item = &'a Stanza> {
        self.received.iter().filter(move |s| s.node.tag == tag)
    }

    /// Received `<iq>` stanzas in namespace `xmlns`.
    pub fn received_iqs<'a>(&'a self, xmlns: &'a str) -> impl Iterator<Item = &'a Stanza> {
        self.received_tagged("iq")
            .filter(move |s| attr(&s.node, "xmlns").as_deref() == Some(xmlns))
    }

    /// Logins refused with `<failure>`, with the reason.
    pub fn refusals_of<'a>(&'a self, phone: &'a str) -> impl Iterator<Item = Refusal> + 'a {
        self.logins(phone).filter_map(|c| c.refusal)
    }

    /// Connections still open.
    pub fn open_connections(&self) -> usize {
        self.connections.iter().filter(|c| c.open).count()
    }

    fn summary(&self) -> String {
        let conns: Vec<String> = self
            .connections
            .iter()
            .map(|c| format!("#{} {:?} {:?} open={}", c.id, c.handshake, c.client, c.open))
            .collect();
        format!(
            "attempts={} refusals={} connections=[{}] pairings={} errors={:?}",
            self.attempts,
            self.refusals,
            conns.join("; "),
            self.pairings.len(),
            self.errors
        )
    }
}

/// A phone account known to the peer.
struct Account {
    key: KeyPair,
    devices: u16,
    /// Noise static public key of each paired device, by device id: a
    /// login must present the key its device registered at pairing.
    noise_keys: HashMap<u16, [u8; 32]>,
    logged_out: bool,
    banned: bool,
    outdated: bool,
}

impl Account {
    fn new() -> Self {
        Account {
            key: KeyPair::generate(&mut rand::rng()),
            devices: 0,
            noise_keys: HashMap::new(),
            logged_out: false,
            banned: false,
            outdated: false,
        }
    }
}

/// Devices written straight into a store as paired (`tests/support/paired.rs`),
/// process-wide: the accounts "the server" already knows when a test starts.
/// A peer that has no record of a device looks here (and then keeps it).
static SEEDED_DEVICES: Mutex<Vec<(String, u16, [u8; 32])>> = Mutex::new(Vec::new());

/// Which test seeded each phone (the test thread's name): a phone seeded by
/// two tests of this process is refused at once.
static SEEDED_BY: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Records that device `device` of `phone` was paired with Noise static key
/// `noise_pub` before any peer existed (a device record written straight
/// into a store). Every peer of this process accepts its logins with that key
/// only. Phones of seeded devices must be unique per test: the registry is
/// process-wide, so a second test seeding the same phone would replace the
/// first one's key, and the first test's bot would be refused (logged out)
/// at its next login, depending on timing. A phone another test seeded
/// panics here instead, naming both tests.
pub fn seed_device(phone: &str, device: u16, noise_pub: [u8; 32]) {
    let test = std::thread::current()
        .name()
        .unwrap_or("an unnamed thread")
        .to_owned();
    {
        let mut by = lock(&SEEDED_BY);
        if let Some((_, other)) = by.iter().find(|(p, t)| p == phone && *t != test) {
            panic!(
                "phone {phone} is seeded by {test} but also by {other}: \
                 tests of one binary share the seeded devices; give each test its own numbers"
            );
        }
        by.push((phone.to_string(), test));
    }
    let mut seeds = lock(&SEEDED_DEVICES);
    seeds.retain(|(p, d, _)| !(p == phone && *d == device));
    seeds.push((phone.to_string(), device, noise_pub));
}

/// A connection's server task, reachable for commands.
struct LiveConn {
    /// `None` while the handshake runs.
    client: Option<ClientKind>,
    client_static: Option<[u8; 32]>,
    commands: mpsc::UnboundedSender<Command>,
    /// The offline backlog was delivered: new contact messages go straight
    /// to this connection.
    online: bool,
}

/// State shared by the peer handle and its connection tasks.
pub(crate) struct Shared {
    identity: ServerIdentity,
    log: watch::Sender<PeerLog>,
    live: Mutex<HashMap<u64, LiveConn>>,
    accounts: Mutex<HashMap<String, Account>>,
    /// Bots' pre-key bundles and the per-phone message queues.
    mailbox: Mutex<contact::Mailbox>,
    contacts: Mutex<HashMap<String, Arc<contact::ContactState>>>,
    /// Groups, and the sender keys each contact holds.
    groups: Mutex<group::Groups>,
    sender_keys: tokio::sync::Mutex<HashMap<String, group::SenderKeys>>,
    /// The media host's blobs (`media.rs`).
    media: Mutex<media::MediaStore>,
    refusing: AtomicBool,
    /// Phones whose logins get no answer (the client waits, then retries).
    stalled: Mutex<std::collections::HashSet<String>>,
    next_conn: AtomicU64,
    next_phone: AtomicU64,
    next_iq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the peer's state from the others.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn modify_log(&self, f: impl FnOnce(&mut PeerLog)) {
        self.log.send_modify(f);
    }

    fn iq_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_iq.fetch_add(1, Ordering::Relaxed))
    }

    /// LID user the peer assigns to a phone number (stable, 15 digits).
    fn lid_for(phone: &str) -> String {
        let n: u64 = phone.bytes().fold(0u64, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(u64::from(b))
        });
        (100_000_000_000_000 + n % 900_000_000_000_000).to_string()
    }

    fn is_stalled(&self, phone: &str) -> bool {
        lock(&self.stalled).contains(phone)
    }

    /// What the server says to a login of `phone`'s device `device`
    /// presenting Noise static key `noise_pub`: `None` accepts it.
    fn login_verdict(&self, phone: &str, device: u16, noise_pub: &[u8; 32]) -> Option<Refusal> {
        let mut accounts = lock(&self.accounts);
        let seeded = || {
            lock(&SEEDED_DEVICES)
                .iter()
                .find(|(p, d, _)| p == phone && *d == device)
                .map(|(_, _, k)| *k)
        };
        let account = match accounts.get_mut(phone) {
            Some(a) => a,
            None => {
                let Some(key) = seeded() else {
                    return Some(Refusal::UnknownDevice);
                };
                let account = accounts
                    .entry(phone.to_string())
                    .or_insert_with(Account::new);
                account.devices = device;
                account.noise_keys.insert(device, key);
                account
            }
        };
        if account.logged_out {
            return Some(Refusal::LoggedOut);
        }
        let registered = match account.noise_keys.get(&device) {
            Some(k) => *k,
            None => {
                let Some(key) = seeded() else {
                    return Some(Refusal::UnknownDevice);
                };
                account.noise_keys.insert(device, key);
                key
            }
        };
        if registered != *noise_pub {
            return Some(Refusal::WrongNoiseKey);
        }
        if account.banned {
            return Some(Refusal::Banned);
        }
        if account.outdated {
            return Some(Refusal::ClientOutdated);
        }
        None
    }

    fn send_to(&self, pred: impl Fn(&LiveConn) -> bool, make: impl Fn() -> Command) -> usize {
        lock(&self.live)
            .values()
            .filter(|c| pred(c))
            .filter(|c| c.commands.send(make()).is_ok())
            .count()
    }
}

/// Default deadline for a login that is not the first after pairing.
pub const LOGIN_DEADLINE: Duration = Duration::from_secs(15);
/// Deadline for the first `Connected` after pairing: the client waits up to
/// 10 s for an app-state key share the peer never sends.
pub const PAIRING_LOGIN_DEADLINE: Duration = Duration::from_secs(40);

/// Handle to the in-process server. Cheap to clone.
#[derive(Clone)]
pub struct Peer {
    shared: Arc<Shared>,
}

impl Default for Peer {
    fn default() -> Self {
        Self::new()
    }
}

impl Peer {
    /// A peer with a fresh server static key, accepting connections.
    pub fn new() -> Self {
        let identity = ServerIdentity::generate().expect("X25519 public keys are 32 bytes");
        Self {
            shared: Arc::new(Shared {
                identity,
                log: watch::Sender::new(PeerLog::default()),
                live: Mutex::new(HashMap::new()),
                accounts: Mutex::new(HashMap::new()),
                mailbox: Mutex::new(contact::Mailbox::default()),
                contacts: Mutex::new(HashMap::new()),
                groups: Mutex::new(group::Groups::default()),
                sender_keys: tokio::sync::Mutex::new(HashMap::new()),
                media: Mutex::new(media::MediaStore::default()),
                refusing: AtomicBool::new(false),
                stalled: Mutex::new(std::collections::HashSet::new()),
                next_conn: AtomicU64::new(1),
                next_phone: AtomicU64::new(15_550_100_001),
                next_iq: AtomicU64::new(1),
            }),
        }
    }

    /// `TransportFactory` for `BotBuilder::with_transport_factory` (or the
    /// runner): every connection it opens ends in this peer.
    pub fn transport_factory(&self) -> PeerTransportFactory {
        PeerTransportFactory {
            shared: self.shared.clone(),
        }
    }

    /// `HttpClient` stub: serves the media host (`media.rs`), records
    /// every other request and fails it.
    pub fn http_client(&self) -> PeerHttpClient {
        PeerHttpClient {
            shared: self.shared.clone(),
        }
    }

    /// Points a bot builder at this peer: transport, HTTP stub, pinned
    /// version. The push name, backend and handlers stay the caller's.
    pub fn configure<B, T, H, R>(
        &self,
        builder: BotBuilder<B, T, H, R>,
    ) -> BotBuilder<B, Provided, Provided, R> {
        builder
            .with_transport_factory(self.transport_factory())
            .with_http_client(self.http_client())
            .with_version(PINNED_VERSION)
    }

    /// A copy of everything observed so far.
    pub fn seen(&self) -> PeerLog {
        self.shared.log.borrow().clone()
    }

    /// Waits until `pred` holds for the peer's log, at most `timeout`.
    /// Wakes on every change; no polling. The error names `what` and
    /// summarises the log.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&PeerLog) -> bool,
    ) -> anyhow::Result<PeerLog> {
        let mut rx = self.shared.log.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|log| pred(log)))
            .await
            .map(|found| found.map(|log| log.clone()));
        match waited {
            Ok(Ok(log)) => Ok(log),
            Ok(Err(_)) => bail!("peer log closed while waiting for {what}"),
            Err(_) => bail!(
                "timed out after {timeout:?} waiting for {what}; peer saw: {}",
                self.seen().summary()
            ),
        }
    }

    /// Acts as the phone scanning `qr_code` (as emitted in a
    /// `PairingQrCode` event): signs a device identity for a new account,
    /// sends `pair-success` on the registering connection, checks the
    /// companion's `pair-device-sign`, then sends stream error 515 so the
    /// client reconnects and logs in. Returns once the companion signed.
    pub async fn phone_scan(&self, qr_code: &str) -> anyhow::Result<Pairing> {
        let phone = self
            .shared
            .next_phone
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        self.phone_scan_as(qr_code, &phone).await
    }

    /// [`Peer::phone_scan`] for a chosen phone number (digits only).
    pub async fn phone_scan_as(&self, qr_code: &str, phone: &str) -> anyhow::Result<Pairing> {
        if phone.is_empty() || !phone.bytes().all(|b| b.is_ascii_digit()) {
            bail!("phone number must be digits, got {phone:?}");
        }
        let qr = QrCode::parse(qr_code)?;
        let commands = lock(&self.shared.live)
            .values()
            .find(|c| {
                c.client == Some(ClientKind::Registration) && c.client_static == Some(qr.noise_pub)
            })
            .map(|c| c.commands.clone())
            .ok_or_else(|| anyhow!("no registering connection shows this QR code"))?;
        let (account_key, device) = {
            let mut accounts = lock(&self.shared.accounts);
            let account = accounts
                .entry(phone.to_string())
                .or_insert_with(Account::new);
            account.devices += 1;
            // Pairing again is how a logged-out number comes back.
            account.logged_out = false;
            (account.key.clone(), account.devices)
        };
        let signed = pairing::sign_device_identity(&account_key, &qr, u32::from(device))?;
        let (reply_tx, reply_rx) = oneshot::channel();
        commands
            .send(Command::Pair(Box::new(connection::PairRequest {
                iq_id: self.shared.iq_id("pair-success"),
                qr,
                signed,
                phone: phone.to_string(),
                device,
                lid: Shared::lid_for(phone),
                reply: reply_tx,
            })))
            .map_err(|_| anyhow!("registering connection is gone"))?;
        match tokio::time::timeout(LOGIN_DEADLINE, reply_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => bail!("connection closed before the companion answered pair-success"),
            Err(_) => bail!("companion did not answer pair-success within {LOGIN_DEADLINE:?}"),
        }
    }

    /// Closes every open connection from the server side (the client sees
    /// its socket end and reconnects with backoff). Returns how many.
    pub fn drop_connections(&self) -> usize {
        self.shared.send_to(|_| true, || Command::Close)
    }

    /// While `true`, `create_transport` fails (recorded as refusals), like
    /// a server that is down. Open connections are not touched.
    pub fn refuse_connections(&self, refuse: bool) {
        self.shared.refusing.store(refuse, Ordering::SeqCst);
    }

    /// Logs `phone` out: open connections get
    /// `<stream:error code="401"><conflict type="device_removed"/>` (the
    /// client emits `LoggedOut`), and later logins as `phone` are refused
    /// with `<failure reason="401"/>` until it pairs again. Returns how many
    /// connections were told.
    pub fn log_out(&self, phone: &str) -> usize {
        lock(&self.shared.accounts)
            .entry(phone.to_string())
            .or_insert_with(Account::new)
            .logged_out = true;
        self.shared.send_to(
            |c| is_login_of(c, phone),
            || Command::Send(stanza::stream_error_logged_out()),
        )
    }

    /// Tells `phone`'s open connections another client took the session:
    /// `<stream:error><conflict type="replaced"/>` (the client emits
    /// `StreamReplaced` and stops reconnecting). Returns how many.
    pub fn replace(&self, phone: &str) -> usize {
        self.shared.send_to(
            |c| is_login_of(c, phone),
            || Command::Send(stanza::stream_error_conflict("replaced")),
        )
    }

    /// Bans `phone` temporarily: open connections are closed and every
    /// login is refused with `<failure reason="402" code="101" expire="3600"/>`
    /// (the client emits `TemporaryBan` and stops reconnecting). Returns how
    /// many connections were closed.
    pub fn ban(&self, phone: &str) -> usize {
        lock(&self.shared.accounts)
            .entry(phone.to_string())
            .or_insert_with(Account::new)
            .banned = true;
        self.drop_connections_of(phone)
    }

    /// Declares the client version too old for `phone`: open connections
    /// are closed and every login is refused with `<failure reason="405"/>`
    /// (the client emits `ClientOutdated` and stops reconnecting). Returns
    /// how many connections were closed.
    pub fn client_outdated(&self, phone: &str) -> usize {
        lock(&self.shared.accounts)
            .entry(phone.to_string())
            .or_insert_with(Account::new)
            .outdated = true;
        self.drop_connections_of(phone)
    }

    /// Registers device `device` of `phone` with Noise static key
    /// `noise_pub`, as if it had paired through this peer (e.g. a device
    /// paired with another peer, in another process). Later logins of that
    /// device must present this key.
    pub fn register_device(&self, phone: &str, device: u16, noise_pub: [u8; 32]) {
        let mut accounts = lock(&self.shared.accounts);
        let account = accounts
            .entry(phone.to_string())
            .or_insert_with(Account::new);
        account.devices = account.devices.max(device);
        account.noise_keys.insert(device, noise_pub);
    }

    /// While set, logins of `phone` get no answer after the handshake: the
    /// client waits, times out and retries, staying `reconnecting`.
    pub fn stall_logins(&self, phone: &str, stall: bool) {
        let mut s = lock(&self.shared.stalled);
        if stall {
            s.insert(phone.to_string());
        } else {
            s.remove(phone);
        }
    }

    /// Closes `phone`'s open login connections from the server side.
    pub fn drop_connections_of(&self, phone: &str) -> usize {
        self.shared
            .send_to(|c| is_login_of(c, phone), || Command::Close)
    }

    /// Sends `<stream:error code=…/>` to `phone`'s open connections (e.g.
    /// 515 restart, 503 unavailable, 409 replaced). Returns how many.
    pub fn stream_error(&self, phone: &str, code: u16) -> usize {
        self.shared.send_to(
            |c| is_login_of(c, phone),
            || Command::Send(stanza::stream_error_code(code)),
        )
    }
}

fn is_login_of(conn: &LiveConn, phone: &str) -> bool {
    matches!(&conn.client, Some(ClientKind::Login { phone: p, .. }) if p == phone)
}
