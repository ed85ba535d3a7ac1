//! The tokio driver around the sans-IO transport pieces (RFC 3261 §18).
//!
//! [`Transports::bind`] opens every configured listener (UDP sockets, TCP and
//! TLS acceptors) and returns a channel of [`Incoming`] messages. Each stream
//! connection has one reader task (a [`StreamFramer`] feeding the parser) and
//! one writer task fed by a channel, so [`Transports::send`] never blocks on a
//! socket. Requests that fail to parse are answered here (400/505/513...) when
//! the error allows it; a framing error gets its answer too (513 for a message
//! over the size limit, 400 for a Content-Length that cannot frame it), written
//! before the connection is closed. Double-CRLF
//! keep-alive pings are answered with a CRLF pong (RFC 5626 §4.4.1).
//!
//! # Defences against connection exhaustion
//!
//! A stream connection holds a file descriptor and a slot for as long as it is
//! open, so a peer that opens many and sends nothing could lock the trunks out.
//! The decisions are the sans-IO `admission` module's; this driver applies them:
//!
//! - **Who may open one.** At most `max_connections` (1024) are open in all,
//!   accepted and initiated; at most `max_connections_per_source` (32) accepted
//!   ones per source IP; and sources that [`TransportConfig::trusted`] rejects
//!   (no configured trunk) hold at most `max_untrusted_connections` (64)
//!   together, so they can never take the slots trusted sources need. A refused
//!   connection is closed at once after `accept`.
//! - **How long a message may take.** A message must be complete within
//!   `message_timeout` (10 s) of its first octet, and an accepted connection's
//!   first message within that of the accept (TLS handshake included): a
//!   connection that stays silent, or trickles one octet a second, is closed.
//!   Keep-alive CRLFs between messages never start that deadline; between
//!   messages only `tcp_idle_timeout` (300 s) applies.
//! - **Untrusted sources hold nothing.** Their connection gets exactly one
//!   message read and delivered as usual (the endpoint above answers it, e.g.
//!   with a stateless 403, or drops it; an unparsable one is answered here), then
//!   reading stops. It is closed as soon as the first reply has been written, or
//!   `untrusted_linger` (2 s) later if none comes.
//! - **Refusals are counted, not logged one by one.** Refused connections (per
//!   source, untrusted, limit, accept errors such as EMFILE) and connections
//!   closed at the message deadline are counted per reason; one warning sums
//!   them up per `refusal_log_interval` (10 s) in which any happened, and
//!   [`Transports::refused_connections`] gives the running totals for metrics.
//!   After an accept error the accept loop backs off (10 ms, doubling to 1 s)
//!   instead of spinning on a full descriptor table.

use super::admission::{Admission, Expiry, ReadDeadline, Refusal, RefusalLog};
use super::{
    stamp_received, ConnectionId, Incoming, ListenAddr, RefusedConnections, StreamFramer, Target,
    Transport,
};
use crate::message::{reject_unparsable, Limits, Message};
use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::rustls;

/// Transport configuration.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub listen: Vec<ListenAddr>,
    /// PEM certificate chain for `tls://` listeners.
    pub tls_cert_pem: Option<PathBuf>,
    /// PEM private key for `tls://` listeners.
    pub tls_key_pem: Option<PathBuf>,
    pub limits: Limits,
    /// A stream connection with nothing received for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Open stream connections (accepted + initiated) at most.
    pub max_connections: usize,
    /// Capacity of the incoming message channel.
    pub incoming_capacity: usize,
    /// Time allowed to open an outgoing TCP connection (and for a TLS handshake).
    pub connect_timeout: Duration,
    /// Which source addresses belong to a configured trunk; `None` trusts every
    /// source. An untrusted source gets one message read and one reply per
    /// connection, and its connections count against `max_untrusted_connections`.
    pub trusted: Option<TrustedSources>,
    /// Accepted stream connections open at most per source IP; more are closed
    /// at once after accept.
    pub max_connections_per_source: usize,
    /// Accepted stream connections open at most from all untrusted sources together,
    /// so they never take the slots that trusted sources need.
    pub max_untrusted_connections: usize,
    /// Each message on a stream must be complete within this long of its first octet,
    /// and an accepted connection's first message within this long of the accept.
    pub message_timeout: Duration,
    /// How long an untrusted connection waits for the reply to its one message
    /// before it is closed anyway.
    pub untrusted_linger: Duration,
    /// Refused connections are summed up in one warning per this interval.
    pub refusal_log_interval: Duration,
    /// Told of every request received and response sent.
    pub observer: Option<Observer>,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            listen: Vec::new(),
            tls_cert_pem: None,
            tls_key_pem: None,
            limits: Limits::default(),
            // Longer than the 64*T1 transaction lifetime (RFC 3261 §17.1.1.2) so a call's
            // in-dialog requests can reuse the connection.
            tcp_idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
            incoming_capacity: 1024,
            connect_timeout: Duration::from_secs(5),
            trusted: None,
            // A trunk normally multiplexes its calls over one or a few connections
            // (RFC 3261 §18.3 lets both sides reuse them); 32 leaves room for a pool.
            max_connections_per_source: 32,
            max_untrusted_connections: 64,
            // A message is at most `limits.max_message_size` (64 KiB by default): on any
            // working link it arrives in well under a second, a TLS handshake included.
            message_timeout: Duration::from_secs(10),
            // A stateless answer goes out at once; the linger only covers a busy endpoint.
            untrusted_linger: Duration::from_secs(2),
            refusal_log_interval: Duration::from_secs(10),
            observer: None,
        }
    }
}

/// Sees every request the transports receive and every response they send (retransmissions
/// and stateless answers included): the gateway's per-method and per-class counters.
pub trait TransportObserver: Send + Sync {
    fn request_received(&self, method: &str);
    fn response_sent(&self, status: u16);
}

/// A [`TransportObserver`] in a [`TransportConfig`].
#[derive(Clone)]
pub struct Observer(pub Arc<dyn TransportObserver>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer(..)")
    }
}

/// The status code of `data` when it is a SIP response (`SIP/2.0 NNN ...`).
fn response_status(data: &[u8]) -> Option<u16> {
    let rest = data.strip_prefix(b"SIP/2.0 ")?;
    let code = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    (100..700).contains(&code).then_some(code)
}

/// Whether a source address belongs to a configured trunk, for
/// [`TransportConfig::trusted`]. It is asked once per accepted stream
/// connection, on the accept loop, so it must be quick and must not block.
/// IPv4-mapped IPv6 sources (a dual-stack listener) are passed as IPv4.
#[derive(Clone)]
pub struct TrustedSources(Arc<TrustFn>);

type TrustFn = dyn Fn(IpAddr) -> bool + Send + Sync;

impl TrustedSources {
    pub fn new(f: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> TrustedSources {
        TrustedSources(Arc::new(f))
    }

    /// True when `ip` belongs to a trunk.
    pub fn contains(&self, ip: IpAddr) -> bool {
        (self.0)(ip.to_canonical())
    }
}

impl From<Arc<TrustFn>> for TrustedSources {
    fn from(f: Arc<TrustFn>) -> TrustedSources {
        TrustedSources(f)
    }
}

impl fmt::Debug for TrustedSources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TrustedSources(..)")
    }
}

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: ListenAddr,
        source: std::io::Error,
    },
    #[error("tls:// listener needs tls_cert_pem and tls_key_pem")]
    TlsConfigMissing,
    #[error("cannot load TLS certificate or key: {0}")]
    TlsConfig(String),
    #[error("no {0} transport is bound for this address family")]
    NoTransport(Transport),
    #[error("connection limit reached")]
    TooManyConnections,
    #[error(
        "opening outgoing TLS connections is not supported; the peer must keep its connection"
    )]
    TlsConnectUnsupported,
    #[error("connection closed")]
    ConnectionClosed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

struct ConnHandle {
    peer: SocketAddr,
    transport: Transport,
    tx: mpsc::Sender<Bytes>,
}

struct Inner {
    udp: Vec<Arc<UdpSocket>>,
    local: Vec<ListenAddr>,
    conns: Mutex<HashMap<ConnectionId, ConnHandle>>,
    next_conn: AtomicU64,
    slots: Arc<Semaphore>,
    limits: Limits,
    idle: Duration,
    connect_timeout: Duration,
    incoming: mpsc::Sender<Incoming>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    trusted: Option<TrustedSources>,
    admission: Arc<Mutex<Admission>>,
    message_timeout: Duration,
    untrusted_linger: Duration,
    refusals: Mutex<RefusalLog>,
    /// Wakes the refusal reporter when a refusal opens a log window.
    refusal_window: Notify,
    observer: Option<Observer>,
}

/// One stream connection, as its reader sees it.
#[derive(Debug, Clone, Copy)]
struct StreamConn {
    id: ConnectionId,
    peer: SocketAddr,
    local: SocketAddr,
    transport: Transport,
    /// False for a source with no trunk: one message read, one reply written.
    trusted: bool,
}

/// An accepted connection's place in the per-source and untrusted counts,
/// given back when the connection's task ends.
struct Admitted {
    admission: Arc<Mutex<Admission>>,
    ip: IpAddr,
    trusted: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut a) = self.admission.lock() {
            a.release(self.ip, self.trusted);
        }
    }
}

/// What became of a message handed to [`Transports::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Parsed and sent up the incoming channel.
    Up,
    /// Unparsable; an error response was queued to the source.
    Answered,
    /// Unparsable and not answerable (e.g. a broken response).
    Dropped,
    /// The incoming channel's receiver is gone.
    ReceiverGone,
}

/// Why a stream reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// Close the connection (after the writer drains what is queued).
    Close,
    /// An untrusted source's one message is in: wait for its reply, then close.
    AwaitReply,
    /// The stream cannot be framed and its error response is queued: close once it is
    /// written, reading and discarding what the peer still sends meanwhile so that the
    /// close is not a reset that could destroy the response before the peer reads it.
    CloseAfterReply,
}

/// How long a connection that failed framing is drained after its error response before it
/// is closed anyway.
const REJECT_LINGER: Duration = Duration::from_secs(2);

/// Handle on the bound transports; cheap to clone. Dropping the last clone does
/// not stop the listeners: call [`Transports::shutdown`].
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transports")
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

/// Messages queued per connection writer before `send` waits.
const WRITE_QUEUE: usize = 64;

/// RFC 5626 §4.4.1: the pong answering a double-CRLF ping.
const PONG: &[u8] = b"\r\n";

/// Pause after a failed `accept`, doubling while it keeps failing. EMFILE/ENFILE
/// leave the connection in the backlog, so retrying at once would spin.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Transports {
    /// Binds every listener in `config.listen` and starts receiving.
    pub async fn bind(
        config: TransportConfig,
    ) -> Result<(Transports, mpsc::Receiver<Incoming>), TransportError> {
        let (tx, rx) = mpsc::channel(config.incoming_capacity.max(1));
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut tls = Vec::new();
        let mut local = Vec::new();
        let acceptor = if config.listen.iter().any(|l| l.transport == Transport::Tls) {
            Some(tls_acceptor(&config)?)
        } else {
            None
        };
        for l in &config.listen {
            let bind_err = |source| TransportError::Bind { addr: *l, source };
            match l.transport {
                Transport::Udp => {
                    let s = UdpSocket::bind(l.addr).await.map_err(bind_err)?;
                    local.push(ListenAddr {
                        transport: l.transport,
                        addr: s.local_addr()?,
                    });
                    udp.push(Arc::new(s));
                }
                Transport::Tcp | Transport::Tls => {
                    let s = TcpListener::bind(l.addr).await.map_err(bind_err)?;
                    local.push(ListenAddr {
                        transport: l.transport,
                        addr: s.local_addr()?,
                    });
                    if l.transport == Transport::Tcp {
                        tcp.push(s);
                    } else {
                        tls.push(s);
                    }
                }
            }
        }
        let inner = Arc::new(Inner {
            udp: udp.clone(),
            local,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            slots: Arc::new(Semaphore::new(config.max_connections)),
            limits: config.limits.clone(),
            idle: config.tcp_idle_timeout,
            connect_timeout: config.connect_timeout,
            incoming: tx,
            tasks: Mutex::new(Vec::new()),
            trusted: config.trusted.clone(),
            admission: Arc::new(Mutex::new(Admission::new(
                config.max_connections_per_source,
                config.max_untrusted_connections,
            ))),
            message_timeout: config.message_timeout,
            untrusted_linger: config.untrusted_linger,
            refusals: Mutex::new(RefusalLog::new(config.refusal_log_interval)),
            refusal_window: Notify::new(),
            observer: config.observer.clone(),
        });
        let me = Transports { inner };
        let mut tasks = vec![tokio::spawn(report_refusals(me.clone()))];
        for s in udp {
            tasks.push(tokio::spawn(udp_loop(me.clone(), s)));
        }
        for l in tcp {
            tasks.push(tokio::spawn(accept_loop(me.clone(), l, None)));
        }
        for l in tls {
            tasks.push(tokio::spawn(accept_loop(me.clone(), l, acceptor.clone())));
        }
        if let Ok(mut t) = me.inner.tasks.lock() {
            t.extend(tasks);
        }
        Ok((me, rx))
    }

    /// The bound addresses (with the actual ports when `:0` was configured).
    pub fn local_addrs(&self) -> &[ListenAddr] {
        &self.inner.local
    }

    /// The first bound address of that transport.
    pub fn local_addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.inner
            .local
            .iter()
            .find(|l| l.transport == transport)
            .map(|l| l.addr)
    }

    /// Number of open stream connections.
    pub fn connection_count(&self) -> usize {
        self.inner.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Stream connections refused (per source, untrusted, limit, accept errors) and
    /// closed for missing the message deadline, counted since `bind`.
    pub fn refused_connections(&self) -> RefusedConnections {
        self.inner
            .refusals
            .lock()
            .map(|r| r.total())
            .unwrap_or_default()
    }

    /// Sends octets. Streams reuse `target.conn` if it is still open, else any open
    /// connection to `target.addr`, else (TCP only) open one.
    pub async fn send(&self, target: &Target, data: Bytes) -> Result<(), TransportError> {
        self.observe_sent(&data);
        match target.transport {
            Transport::Udp => self.send_udp(target.addr, &data).await,
            Transport::Tcp | Transport::Tls => {
                let tx = self.find_conn(target);
                let tx = match tx {
                    Some(tx) => tx,
                    None if target.transport == Transport::Tls => {
                        return Err(TransportError::TlsConnectUnsupported)
                    }
                    None => self.connect_tcp(target.addr).await?,
                };
                tx.send(data)
                    .await
                    .map_err(|_| TransportError::ConnectionClosed)
            }
        }
    }

    /// Queues octets on an open stream connection to `target` without waiting, so that
    /// messages go out in the order they are queued (a `100 Trying` never after the final
    /// response it precedes). `Err(data)` gives them back when no connection is open: the
    /// caller connects with [`Transports::send`]. A connection whose write queue is full
    /// belongs to a peer that stopped reading; its message is dropped rather than hold up
    /// every other call.
    pub fn send_queued(&self, target: &Target, data: Bytes) -> Result<(), Bytes> {
        let Some(tx) = self.find_conn(target) else {
            return Err(data);
        };
        self.observe_sent(&data);
        match tx.try_send(data) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(
                    "SIP connection to {} not reading: message dropped",
                    target.addr
                );
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(data)) => Err(data),
        }
    }

    /// Tells the observer of a response about to go out.
    fn observe_sent(&self, data: &[u8]) {
        if let (Some(o), Some(status)) = (&self.inner.observer, response_status(data)) {
            o.0.response_sent(status);
        }
    }

    async fn send_udp(&self, addr: SocketAddr, data: &[u8]) -> Result<(), TransportError> {
        let sock = self
            .inner
            .udp
            .iter()
            .find(|s| s.local_addr().is_ok_and(|a| a.is_ipv4() == addr.is_ipv4()))
            .ok_or(TransportError::NoTransport(Transport::Udp))?;
        sock.send_to(data, addr).await?;
        Ok(())
    }

    /// Stops listeners and closes every connection.
    pub fn shutdown(&self) {
        if let Ok(mut t) = self.inner.tasks.lock() {
            for h in t.drain(..) {
                h.abort();
            }
        }
        if let Ok(mut c) = self.inner.conns.lock() {
            c.clear();
        }
    }

    fn find_conn(&self, target: &Target) -> Option<mpsc::Sender<Bytes>> {
        let conns = self.inner.conns.lock().ok()?;
        if let Some(h) = target.conn.and_then(|id| conns.get(&id)) {
            if !h.tx.is_closed() {
                return Some(h.tx.clone());
            }
        }
        conns
            .values()
            .find(|h| h.peer == target.addr && h.transport == target.transport && !h.tx.is_closed())
            .map(|h| h.tx.clone())
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> Result<mpsc::Sender<Bytes>, TransportError> {
        let permit = self
            .inner
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| TransportError::TooManyConnections)?;
        let stream = tokio::time::timeout(self.inner.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let local = stream.local_addr()?;
        let (id, tx, rx) = self.register(addr, Transport::Tcp);
        let conn = StreamConn {
            id,
            peer: addr,
            local,
            transport: Transport::Tcp,
            trusted: true,
        };
        let deadline = ReadDeadline::opened(
            Instant::now().into_std(),
            self.inner.message_timeout,
            self.inner.idle,
        );
        let me = self.clone();
        let handle = tokio::spawn(async move {
            me.run_connection(stream, rx, conn, deadline).await;
            drop(permit);
        });
        self.track(handle);
        Ok(tx)
    }

    fn register(
        &self,
        peer: SocketAddr,
        transport: Transport,
    ) -> (ConnectionId, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
        let id = ConnectionId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        if let Ok(mut c) = self.inner.conns.lock() {
            c.insert(
                id,
                ConnHandle {
                    peer,
                    transport,
                    tx: tx.clone(),
                },
            );
        }
        (id, tx, rx)
    }

    /// Drops a registered connection that never got to run.
    fn forget(&self, id: ConnectionId) {
        if let Ok(mut c) = self.inner.conns.lock() {
            c.remove(&id);
        }
    }

    fn track(&self, h: JoinHandle<()>) {
        if let Ok(mut t) = self.inner.tasks.lock() {
            t.retain(|h| !h.is_finished());
            t.push(h);
        }
    }

    /// Whether a source belongs to a trunk (every source without a predicate).
    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.inner.trusted.as_ref().is_none_or(|t| t.contains(ip))
    }

    /// Takes a place in the per-source and untrusted counts for an accepted connection.
    fn admit(&self, ip: IpAddr, trusted: bool) -> Result<Admitted, Refusal> {
        let mut a = self.inner.admission.lock().map_err(|_| Refusal::Limit)?;
        a.admit(ip, trusted)?;
        Ok(Admitted {
            admission: self.inner.admission.clone(),
            ip,
            trusted,
        })
    }

    /// Counts a refused or timed-out connection for the summary and the totals.
    fn refuse(&self, why: Refusal) {
        let opened = self
            .inner
            .refusals
            .lock()
            .is_ok_and(|mut r| r.record(why, Instant::now().into_std()));
        if opened {
            self.inner.refusal_window.notify_one();
        }
    }

    async fn run_connection<S>(
        &self,
        stream: S,
        mut rx: mpsc::Receiver<Bytes>,
        conn: StreamConn,
        deadline: ReadDeadline,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let one_reply = !conn.trusted;
        let mut writer = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
                if one_reply {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let reply_tx = self
            .inner
            .conns
            .lock()
            .ok()
            .and_then(|c| c.get(&conn.id).map(|h| h.tx.clone()));
        let end = self
            .read_stream(&mut rd, conn, deadline, reply_tx.as_ref())
            .await;
        // The writer ends with the first reply on an untrusted connection: keep the
        // connection findable for that reply until it is written or the linger is over.
        let mut writer_done = false;
        if end == ReadEnd::AwaitReply {
            match tokio::time::timeout(self.inner.untrusted_linger, &mut writer).await {
                Ok(_) => writer_done = true,
                Err(_) => {
                    tracing::debug!(peer = %conn.peer, "no reply to an untrusted source, closing");
                    writer.abort();
                }
            }
        }
        if let Ok(mut c) = self.inner.conns.lock() {
            c.remove(&conn.id);
        }
        drop(reply_tx);
        if !writer_done {
            // The writer drains what is queued (e.g. a 400) and then ends.
            let _ = writer.await;
        }
        if end == ReadEnd::CloseAfterReply {
            // Our side is shut down; the peer sees the response, then the end of stream.
            let drain = async {
                let mut sink = [0u8; 4096];
                while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
            };
            let _ = tokio::time::timeout(REJECT_LINGER, drain).await;
        }
    }

    /// Reads messages off one stream connection and delivers them until it is closed,
    /// fails, misses a deadline or (untrusted) has delivered its one message.
    async fn read_stream<R: AsyncRead + Unpin>(
        &self,
        mut rd: R,
        conn: StreamConn,
        mut deadline: ReadDeadline,
        reply: Option<&mpsc::Sender<Bytes>>,
    ) -> ReadEnd {
        let StreamConn {
            peer, transport, ..
        } = conn;
        let mut framer = StreamFramer::new(self.inner.limits.clone());
        loop {
            let (until, expiry) = deadline.poll_timeout();
            let read =
                tokio::time::timeout_at(Instant::from_std(until), rd.read_buf(framer.buffer_mut()))
                    .await;
            match read {
                Err(_) if expiry == Expiry::Idle => {
                    tracing::debug!(%peer, "closing idle {transport} connection");
                    return ReadEnd::Close;
                }
                Err(_) => {
                    tracing::debug!(%peer, "{transport} message not complete in time, closing");
                    self.refuse(Refusal::TimedOut);
                    return ReadEnd::Close;
                }
                Ok(Err(_)) | Ok(Ok(0)) => return ReadEnd::Close,
                Ok(Ok(_)) => {}
            }
            let now = Instant::now().into_std();
            loop {
                let raw = match framer.pop() {
                    Ok(None) => break,
                    Ok(Some(raw)) => raw,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "stream framing error, closing connection");
                        let (Some(resp), Some(tx)) = (framer.rejection(), reply) else {
                            return ReadEnd::Close;
                        };
                        let bytes = resp.to_bytes();
                        self.observe_sent(&bytes);
                        let _ = tx.send(bytes).await;
                        return ReadEnd::CloseAfterReply;
                    }
                };
                deadline.on_message();
                let delivery = self
                    .deliver(raw, peer, conn.local, transport, Some(conn.id), reply)
                    .await;
                match delivery {
                    Delivery::ReceiverGone => return ReadEnd::Close,
                    // Nothing more is read from a source with no trunk: what else it
                    // sent stays unread until the connection closes.
                    Delivery::Up | Delivery::Answered if !conn.trusted => {
                        return ReadEnd::AwaitReply
                    }
                    Delivery::Dropped if !conn.trusted => return ReadEnd::Close,
                    Delivery::Up | Delivery::Answered | Delivery::Dropped => {}
                }
            }
            let pings = framer.take_pings();
            if conn.trusted {
                if let Some(tx) = reply {
                    for _ in 0..pings {
                        // A peer that does not read its pongs loses them, not the connection.
                        let _ = tx.try_send(Bytes::from_static(PONG));
                    }
                }
            }
            deadline.on_read(now, framer.in_message());
        }
    }

    /// Parses and hands a message up; answers unparsable requests.
    async fn deliver(
        &self,
        raw: Bytes,
        source: SocketAddr,
        local: SocketAddr,
        transport: Transport,
        conn: Option<ConnectionId>,
        reply: Option<&mpsc::Sender<Bytes>>,
    ) -> Delivery {
        match Message::parse(raw.clone(), &self.inner.limits) {
            Ok(mut message) => {
                if let Message::Request(r) = &mut message {
                    stamp_received(r, source);
                    if let Some(o) = &self.inner.observer {
                        o.0.request_received(r.method.as_str());
                    }
                }
                let inc = Incoming {
                    message,
                    raw,
                    source,
                    local,
                    transport,
                    conn,
                };
                match self.inner.incoming.send(inc).await {
                    Ok(()) => Delivery::Up,
                    Err(_) => Delivery::ReceiverGone,
                }
            }
            Err(e) => {
                tracing::debug!(%source, error = %e, "unparsable SIP message");
                let Some(resp) = reject_unparsable(&raw, &e) else {
                    return Delivery::Dropped;
                };
                let bytes = resp.to_bytes();
                self.observe_sent(&bytes);
                match reply {
                    Some(tx) => {
                        let _ = tx.send(bytes).await;
                    }
                    // The Via of an unparsable request is not trusted: answer the source
                    // address (as with rport, RFC 3581 §4).
                    None => {
                        let _ = self.send_udp(source, &bytes).await;
                    }
                }
                Delivery::Answered
            }
        }
    }
}

async fn udp_loop(me: Transports, sock: Arc<UdpSocket>) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    // RFC 3261 §18.1.1: a datagram is at most 65,535 octets. The receive buffer is
    // reused; each datagram is copied out at its exact size so a queued message
    // never pins a 64 KiB buffer.
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, source) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors surface here on some systems; keep serving.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        let raw = Bytes::copy_from_slice(buf.get(..n).unwrap_or(&[]));
        // Lone CRLF keep-alives (RFC 5626 §4.4.1 uses STUN on UDP; CRLF is seen in the wild).
        if raw.iter().all(|b| *b == b'\r' || *b == b'\n') {
            continue;
        }
        let delivery = me
            .deliver(raw, source, local, Transport::Udp, None, None)
            .await;
        if delivery == Delivery::ReceiverGone {
            return;
        }
    }
}

async fn accept_loop(
    me: Transports,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => {
                backoff = ACCEPT_BACKOFF_MIN;
                s
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept error");
                me.refuse(Refusal::AcceptError);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let accepted = Instant::now();
        let ip = peer.ip().to_canonical();
        let trusted = me.is_trusted(ip);
        // Refused connections are dropped (closed) at once and only counted: under an
        // attack a line per connection would flood the log.
        let admitted = match me.admit(ip, trusted) {
            Ok(a) => a,
            Err(why) => {
                me.refuse(why);
                continue;
            }
        };
        let Ok(permit) = me.inner.slots.clone().try_acquire_owned() else {
            me.refuse(Refusal::Limit);
            continue;
        };
        let local = stream.local_addr().unwrap_or(peer);
        let _ = stream.set_nodelay(true);
        let (id, _tx, rx) = me.register(peer, transport);
        let conn = StreamConn {
            id,
            peer,
            local,
            transport,
            trusted,
        };
        let deadline =
            ReadDeadline::accepted(accepted.into_std(), me.inner.message_timeout, me.inner.idle);
        let me2 = me.clone();
        let tls = tls.clone();
        let h = tokio::spawn(async move {
            match tls {
                None => me2.run_connection(stream, rx, conn, deadline).await,
                Some(acc) => {
                    // The handshake is part of the time to the first message.
                    let limit = me2.inner.connect_timeout.min(me2.inner.message_timeout);
                    match tokio::time::timeout_at(accepted + limit, acc.accept(stream)).await {
                        Ok(Ok(s)) => me2.run_connection(s, rx, conn, deadline).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            me2.forget(id);
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake not complete in time");
                            me2.refuse(Refusal::TimedOut);
                            me2.forget(id);
                        }
                    }
                }
            }
            drop(permit);
            drop(admitted);
        });
        me.track(h);
    }
}

/// Sums up refused connections: one warning per window in which any were refused.
async fn report_refusals(me: Transports) {
    loop {
        let due = me.inner.refusals.lock().ok().and_then(|r| r.poll_timeout());
        let Some(due) = due else {
            me.inner.refusal_window.notified().await;
            continue;
        };
        tokio::time::sleep_until(Instant::from_std(due)).await;
        let summary = me
            .inner
            .refusals
            .lock()
            .ok()
            .and_then(|mut r| Some((r.poll_summary(Instant::now().into_std())?, r.interval())));
        if let Some((s, interval)) = summary {
            tracing::warn!(
                per_source = s.per_source,
                untrusted = s.untrusted,
                limit = s.limit,
                accept_errors = s.accept_errors,
                timed_out = s.timed_out,
                "refused {} SIP stream connections in the last {} s: per_source={}, untrusted={}, \
                 limit={}, accept_errors={}; {} closed for not completing a message in time",
                s.refused(),
                interval.as_secs_f64(),
                s.per_source,
                s.untrusted,
                s.limit,
                s.accept_errors,
                s.timed_out,
            );
        }
    }
}

fn tls_acceptor(config: &TransportConfig) -> Result<tokio_rustls::TlsAcceptor, TransportError> {
    let (Some(cert), Some(key)) = (&config.tls_cert_pem, &config.tls_key_pem) else {
        return Err(TransportError::TlsConfigMissing);
    };
    let e = |what: &str, err: &dyn std::fmt::Display| {
        TransportError::TlsConfig(format!("{what}: {err}"))
    };
    let cert_file = std::fs::File::open(cert).map_err(|x| e("certificate file", &x))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(cert_file))
        .collect::<Result<_, _>>()
        .map_err(|x| e("certificate", &x))?;
    if certs.is_empty() {
        return Err(TransportError::TlsConfig(
            "no certificate in PEM file".into(),
        ));
    }
    let key_file = std::fs::File::open(key).map_err(|x| e("key file", &x))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(key_file))
        .map_err(|x| e("key", &x))?
        .ok_or_else(|| TransportError::TlsConfig("no private key in PEM file".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|x| e("protocol versions", &x))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|x| e("certificate/key", &x))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Response, StatusCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;
    use tokio::task::JoinSet;

    const WAIT: Duration = Duration::from_secs(5);
    const TRUNK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    /// Loopback answers the whole of 127/8: a second source address for the same host.
    const STRANGER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    fn only_the_trunk_is_trusted(c: &mut TransportConfig) {
        c.trusted = Some(TrustedSources::new(|ip| ip == TRUNK));
    }

    /// A TCP connection to `server` from source address `from`.
    async fn connect_from(from: IpAddr, server: SocketAddr) -> TcpStream {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::new(from, 0))
            .expect("bind a loopback source");
        let c = sock.connect(server).await.expect("connect");
        c.set_nodelay(true).expect("nodelay");
        c
    }

    /// Reads until the server closes the connection (end of stream or reset);
    /// false if it is still open after `WAIT`.
    async fn closed_by_server<R: AsyncRead + Unpin>(rd: &mut R) -> bool {
        let mut buf = [0u8; 512];
        let closed = async {
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(WAIT, closed).await.is_ok()
    }

    /// The next message on a client connection, or `None` once the server closed it.
    async fn response_or_close<R: AsyncRead + Unpin>(rd: &mut R) -> Option<Message> {
        let mut framer = StreamFramer::new(Limits::default());
        loop {
            if let Some(frame) = framer.pop().expect("framing") {
                return Some(Message::parse(frame, &Limits::default()).expect("parses"));
            }
            match tokio::time::timeout(WAIT, rd.read_buf(framer.buffer_mut()))
                .await
                .expect("a response or the close in time")
            {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Waits for a condition the server reaches on its own time.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let since = Instant::now();
        while !cond() {
            assert!(since.elapsed() < WAIT, "{what}: not within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn answer(inc: &Incoming, status: StatusCode) -> Bytes {
        let req = inc.message.as_request().expect("request");
        Response::to_request(req, status, None).to_bytes()
    }

    fn options(via_host: &str, branch: &str, extra_body: &str) -> String {
        format!(
            "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via_host};branch=z9hG4bK{branch};rport\r\n\
From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\nContent-Length: {}\r\n\r\n{extra_body}",
            extra_body.len()
        )
    }

    async fn start(
        listen: &[&str],
        tweak: impl FnOnce(&mut TransportConfig),
    ) -> (Transports, mpsc::Receiver<Incoming>) {
        let mut cfg = TransportConfig {
            listen: listen
                .iter()
                .map(|s| s.parse().expect("listen addr"))
                .collect(),
            ..TransportConfig::default()
        };
        tweak(&mut cfg);
        Transports::bind(cfg).await.expect("bind on loopback")
    }

    async fn next(rx: &mut mpsc::Receiver<Incoming>) -> Incoming {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("message in time")
            .expect("channel open")
    }

    async fn read_response<R: AsyncRead + Unpin>(rd: &mut R) -> Message {
        let mut framer = StreamFramer::new(Limits::default());
        loop {
            if let Some(frame) = framer.pop().expect("framing") {
                return Message::parse(frame, &Limits::default()).expect("response parses");
            }
            let n = tokio::time::timeout(WAIT, rd.read_buf(framer.buffer_mut()))
                .await
                .expect("read in time")
                .expect("read");
            assert!(n > 0, "connection closed before a response");
        }
    }

    #[tokio::test]
    async fn udp_request_is_delivered_stamped_and_answered_to_its_source_port() {
        let (t, mut rx) = start(&["udp://127.0.0.1:0"], |_| {}).await;
        let server = t.local_addr(Transport::Udp).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // sent-by names another port: the response must still reach the source port (rport).
        client
            .send_to(options("127.0.0.1:9", "u1", "").as_bytes(), server)
            .await
            .unwrap();
        let inc = next(&mut rx).await;
        assert_eq!(inc.transport, Transport::Udp);
        assert_eq!(inc.source, client.local_addr().unwrap());
        let Message::Request(req) = &inc.message else {
            panic!("request expected")
        };
        let via = req.headers.top_via().unwrap();
        assert_eq!(via.rport(), Some(client.local_addr().unwrap().port()));
        assert_eq!(via.received(), Some("127.0.0.1"));
        let resp = Response::to_request(req, StatusCode::OK, None).with_to_tag("t");
        t.send(&inc.reply_target().unwrap(), resp.to_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(WAIT, client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let back = Message::parse(Bytes::copy_from_slice(&buf[..n]), &Limits::default()).unwrap();
        assert_eq!(back.as_response().map(|r| r.status), Some(StatusCode::OK));
        t.shutdown();
    }

    #[tokio::test]
    async fn oversize_udp_request_is_answered_513() {
        let (t, mut rx) = start(&["udp://127.0.0.1:0"], |c| c.limits.max_message_size = 1000).await;
        let server = t.local_addr(Transport::Udp).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(
                options("127.0.0.1:9", "big", &"x".repeat(1500)).as_bytes(),
                server,
            )
            .await
            .unwrap();
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(WAIT, client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let back = Message::parse(Bytes::copy_from_slice(&buf[..n]), &Limits::default()).unwrap();
        assert_eq!(
            back.as_response().map(|r| r.status),
            Some(StatusCode::MESSAGE_TOO_LARGE)
        );
        assert!(
            rx.try_recv().is_err(),
            "oversize message must not be delivered"
        );
        t.shutdown();
    }

    #[tokio::test]
    async fn tcp_partial_writes_and_two_messages_in_one_write_are_framed_and_answered_on_the_connection(
    ) {
        let (t, mut rx) = start(&["tcp://127.0.0.1:0"], |_| {}).await;
        let server = t.local_addr(Transport::Tcp).unwrap();
        let mut c = TcpStream::connect(server).await.unwrap();
        c.set_nodelay(true).unwrap();
        let first = options("127.0.0.1:9", "t1", "");
        for chunk in first.as_bytes().chunks(17) {
            c.write_all(chunk).await.unwrap();
            c.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let both = format!(
            "{}\r\n\r\n{}",
            options("127.0.0.1:9", "t2", "ab"),
            options("127.0.0.1:9", "t3", "")
        );
        c.write_all(both.as_bytes()).await.unwrap();
        let mut ids = Vec::new();
        let mut conn = None;
        for _ in 0..3 {
            let inc = next(&mut rx).await;
            assert_eq!(inc.transport, Transport::Tcp);
            conn = inc.conn;
            ids.push(inc.message.headers().call_id().unwrap().to_string());
            if ids.len() == 3 {
                let req = inc.message.as_request().unwrap();
                let resp = Response::to_request(req, StatusCode::OK, None);
                t.send(&inc.reply_target().unwrap(), resp.to_bytes())
                    .await
                    .unwrap();
            }
        }
        assert_eq!(ids, ["t1", "t2", "t3"]);
        assert!(conn.is_some());
        let back = read_response(&mut c).await;
        assert_eq!(back.headers().call_id().unwrap(), "t3");
        t.shutdown();
    }

    #[tokio::test]
    async fn malformed_tcp_request_gets_400_and_the_connection_stays_usable() {
        let (t, mut rx) = start(&["tcp://127.0.0.1:0"], |_| {}).await;
        let mut c = TcpStream::connect(t.local_addr(Transport::Tcp).unwrap())
            .await
            .unwrap();
        let bad = options("127.0.0.1:9", "bad", "").replacen("OPTIONS sip", "OPTIONS  sip", 1);
        c.write_all(bad.as_bytes()).await.unwrap();
        let back = read_response(&mut c).await;
        assert_eq!(
            back.as_response().map(|r| r.status),
            Some(StatusCode::BAD_REQUEST)
        );
        c.write_all(options("127.0.0.1:9", "good", "").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            next(&mut rx).await.message.headers().call_id().unwrap(),
            "good"
        );
        t.shutdown();
    }

    #[tokio::test]
    async fn tcp_framing_error_closes_the_connection() {
        let (t, _rx) = start(&["tcp://127.0.0.1:0"], |c| c.limits.max_message_size = 1000).await;
        let mut c = TcpStream::connect(t.local_addr(Transport::Tcp).unwrap())
            .await
            .unwrap();
        c.write_all(b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nContent-Length: 5000\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "connection closed");
        t.shutdown();
    }

    #[tokio::test]
    async fn udp_request_with_two_content_lengths_is_answered_400() {
        // RFC 4475 §3.3.9: over UDP the element SHOULD respond with an error.
        let (t, mut rx) = start(&["udp://127.0.0.1:0"], |_| {}).await;
        let server = t.local_addr(Transport::Udp).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let two = options("127.0.0.1:9", "mcl", "hello").replace(
            "Content-Length: 5\r\n",
            "Content-Length: 13\r\nContent-Length: 5\r\n",
        );
        client.send_to(two.as_bytes(), server).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(WAIT, client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let back = Message::parse(Bytes::copy_from_slice(&buf[..n]), &Limits::default()).unwrap();
        assert_eq!(
            back.as_response().map(|r| r.status),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(back.headers().call_id().unwrap(), "mcl");
        assert!(rx.try_recv().is_err(), "not delivered");
        t.shutdown();
    }

    /// Sends `raw` on a fresh TCP connection; returns the response written before the server
    /// closed the connection, asserting that it closes.
    async fn answer_then_close(listen_limit: usize, raw: &[u8]) -> Option<Message> {
        let (t, mut rx) = start(&["tcp://127.0.0.1:0"], |c| {
            c.limits.max_message_size = listen_limit
        })
        .await;
        let mut c = TcpStream::connect(t.local_addr(Transport::Tcp).unwrap())
            .await
            .unwrap();
        c.write_all(raw).await.unwrap();
        let back = response_or_close(&mut c).await;
        if back.is_some() {
            assert!(closed_by_server(&mut c).await, "closed after the response");
        }
        assert!(rx.try_recv().is_err(), "nothing delivered");
        t.shutdown();
        back
    }

    #[tokio::test]
    async fn tcp_request_over_the_size_limit_gets_513_before_the_close() {
        let head = options("127.0.0.1:9", "big", "")
            .replace("Content-Length: 0\r\n", "Content-Length: 5000\r\n");
        // The peer is still sending its body when we answer: the close must not reset
        // the connection before it has read the 513.
        let mut raw = head.into_bytes();
        raw.extend(std::iter::repeat(b'x').take(3000));
        let back = answer_then_close(1000, &raw).await.expect("a response");
        assert_eq!(
            back.as_response().map(|r| r.status),
            Some(StatusCode::MESSAGE_TOO_LARGE)
        );
        assert_eq!(back.headers().call_id().unwrap(), "big");
    }

    #[tokio::test]
    async fn tcp_headers_over_the_size_limit_get_513_before_the_close() {
        let head = options("127.0.0.1:9", "hdrs", "").replace(
            "Max-Forwards: 70\r\n",
            &"X-Padding: 0123456789012345678901234567890123456789\r\n".repeat(40),
        );
        let unterminated = head.trim_end_matches("\r\n");
        let back = answer_then_close(1000, unterminated.as_bytes())
            .await
            .expect("a response");
        assert_eq!(
            back.as_response().map(|r| r.status),
            Some(StatusCode::MESSAGE_TOO_LARGE)
        );
    }

    #[tokio::test]
    async fn tcp_request_that_cannot_be_framed_gets_400_before_the_close() {
        let base = options("127.0.0.1:9", "frame", "hello");
        for raw in [
            // RFC 4475 §3.3.9 mcl01: two different Content-Length values.
            base.replace(
                "Content-Length: 5\r\n",
                "Content-Length: 13\r\nContent-Length: 5\r\n",
            ),
            // RFC 4475 §3.1.2.3 ncl: a negative one.
            base.replace("Content-Length: 5\r\n", "Content-Length: -999\r\n"),
        ] {
            let back = answer_then_close(65_535, raw.as_bytes())
                .await
                .expect("a response");
            assert_eq!(
                back.as_response().map(|r| r.status),
                Some(StatusCode::BAD_REQUEST),
                "{raw}"
            );
            assert_eq!(back.headers().call_id().unwrap(), "frame");
        }
    }

    #[tokio::test]
    async fn idle_tcp_connection_is_closed_after_the_timeout() {
        let (t, _rx) = start(&["tcp://127.0.0.1:0"], |c| {
            c.tcp_idle_timeout = Duration::from_millis(100)
        })
        .await;
        let mut c = TcpStream::connect(t.local_addr(Transport::Tcp).unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(WAIT, c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(t.connection_count(), 0);
        t.shutdown();
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_refused() {
        let (t, mut rx) = start(&["tcp://127.0.0.1:0"], |c| c.max_connections = 1).await;
        let addr = t.local_addr(Transport::Tcp).unwrap();
        let mut first = TcpStream::connect(addr).await.unwrap();
        first
            .write_all(options("127.0.0.1:9", "c1", "").as_bytes())
            .await
            .unwrap();
        next(&mut rx).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(WAIT, second.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "second connection closed");
        assert_eq!(t.connection_count(), 1);
        assert_eq!(t.refused_connections().limit, 1);
        t.shutdown();
    }

    #[test]
    fn ipv4_mapped_sources_are_judged_as_ipv4() {
        let trusted = TrustedSources::new(|ip| ip == TRUNK);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(trusted.contains(mapped));
        assert!(!trusted.contains(STRANGER));
        assert_eq!(format!("{trusted:?}"), "TrustedSources(..)");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_from_a_source_with_no_trunk_are_closed_and_a_trunk_still_gets_in() {
        const ATTACK: u64 = 300;
        let (t, mut rx) = start(&["tcp://127.0.0.1:0"], |c| {
            only_the_trunk_is_trusted(c);
            c.message_timeout = Duration::from_millis(300);
            // Fewer slots than the attack has connections: without the defences the
            // trunk below would find none free.
            c.max_connections = 100;
            // Let the untrusted cap, not the per-source one, do the work.
            c.max_connections_per_source = 1000;
        })
        .await;
        let server = t.local_addr(Transport::Tcp).unwrap();
        let mut idle = Vec::new();
        for _ in 0..ATTACK {
            idle.push(connect_from(STRANGER, server).await);
        }
        let mut waits = JoinSet::new();
        for mut c in idle {
            waits.spawn(async move { closed_by_server(&mut c).await });
        }
        while let Some(closed) = waits.join_next().await {
            assert!(closed.unwrap(), "an idle connection was left open");
        }
        // Each was either refused at accept or timed out waiting for its first message.
        let r = t.refused_connections();
        assert_eq!(r.untrusted + r.timed_out, ATTACK, "{r:?}");
        assert!(r.untrusted > 0, "the untrusted cap was reached: {r:?}");
        assert_eq!((r.per_source, r.limit), (0, 0), "{r:?}");
        eventually("attack connections gone", || t.connection_count() == 0).await;

        let mut trunk = connect_from(TRUNK, server).await;
        trunk
            .write_all(options("127.0.0.1:9", "trunk", "").as_bytes())
            .await
            .unwrap();
        let inc = next(&mut rx).await;
        assert_eq!(inc.message.headers().call_id().unwrap(), "trunk");
        assert_eq!(inc.source.ip(), TRUNK);
        t.shutdown();
    }

    #[tokio::test]
    async fn a_sender_trickling_one_octet_at_a_time_is_closed_at_the_message_deadline() {
        let (t, mut rx) = start(&["tcp://127.0.0.1:0"], |c| {
            c.message_timeout = Duration::from_millis(300);
        })
        .await;
        let c = TcpStream::connect(t.local_addr(Transport::Tcp).unwrap())
            .await
            .unwrap();
        c.set_nodelay(true).unwrap();
        let (mut rd, mut wr) = c.into_split();
        // A first message arrives whole; the connection stays open between messages.
        wr.write_all(options("127.0.0.1:9", "whole", "").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            next(&mut rx).await.message.headers().call_id().unwrap(),
            "whole"
        );
        // The next one would take about ten seconds, octet by octet; the idle timeout
        // (300 s) never fires because octets keep coming.
        let slow = options("127.0.0.1:9", "slow", "");
        let trickle = tokio::spawn(async move {
            for b in slow.bytes() {
                if wr.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        assert!(
            closed_by_server(&mut rd).await,
            "trickling connection left open"
        );
        assert_eq!(t.refused_connections().timed_out, 1);
        assert!(
            rx.try_recv().is_err(),
            "the trickled message is never delivered"
        );
        trickle.abort();
        t.shutdown();
    }

    #[tokio::test]
    async fn keepalive_pings_get_a_pong_and_do_not_start_the_message_deadline() {
        let timeout = Duration::from_millis(200);
        let (t, mut rx) = start(&["tcp://127.0.0.1:0"], |c| c.message_timeout = timeout).await;
        let mut c = TcpStream::connect(t.local_addr(Transport::Tcp).unwrap())
            .await
            .unwrap();
        c.write_all(options("127.0.0.1:9", "first", "").as_bytes())
            .await
            .unwrap();
        next(&mut rx).await;
        for _ in 0..3 {
            c.write_all(b"\r\n\r\n").await.unwrap();
            let mut pong = [0u8; 2];
            tokio::time::timeout(WAIT, c.read_exact(&mut pong))
                .await
                .expect("pong in time")
                .expect("connection still open");
            assert_eq!(&pong, b"\r\n");
            // Together longer than the message deadline, had a ping started it.
            tokio::time::sleep(timeout / 2).await;
        }
        c.write_all(options("127.0.0.1:9", "after-pings", "").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            next(&mut rx).await.message.headers().call_id().unwrap(),
            "after-pings"
        );
        assert_eq!(t.refused_connections(), RefusedConnections::default());
        t.shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_over_the_per_source_cap_are_refused_and_counted() {
        const CAP: usize = 4;
        const OVER: usize = 5;
        let (t, mut rx) = start(&["tcp://127.0.0.1:0"], |c| {
            c.max_connections_per_source = CAP
        })
        .await;
        let server = t.local_addr(Transport::Tcp).unwrap();
        let mut clients = Vec::new();
        for _ in 0..CAP + OVER {
            clients.push(connect_from(TRUNK, server).await);
        }
        // Every client asks; each request that gets in is answered on its connection.
        for (i, c) in clients.iter_mut().enumerate() {
            // A refused connection may already be reset: its write may fail.
            let _ = c
                .write_all(options("127.0.0.1:9", &format!("c{i}"), "").as_bytes())
                .await;
        }
        for _ in 0..CAP {
            let inc = next(&mut rx).await;
            let target = inc.reply_target().unwrap();
            assert_eq!(t.send_queued(&target, answer(&inc, StatusCode::OK)), Ok(()));
        }
        let mut answered = 0;
        for c in &mut clients {
            if response_or_close(c).await.is_some() {
                answered += 1;
            }
        }
        assert_eq!(answered, CAP, "exactly the cap stays open");
        assert_eq!(t.refused_connections().per_source, OVER as u64);
        assert_eq!(t.connection_count(), CAP);
        assert!(rx.try_recv().is_err(), "nothing from a refused connection");

        // Closing a connection gives its place back.
        drop(clients);
        eventually("connections closed", || t.connection_count() == 0).await;
        let mut again = connect_from(TRUNK, server).await;
        again
            .write_all(options("127.0.0.1:9", "again", "").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            next(&mut rx).await.message.headers().call_id().unwrap(),
            "again"
        );
        assert_eq!(t.refused_connections().per_source, OVER as u64);
        t.shutdown();
    }

    #[tokio::test]
    async fn a_source_with_no_trunk_gets_one_request_read_and_is_closed_after_the_reply() {
        let (t, mut rx) = start(&["tcp://127.0.0.1:0"], only_the_trunk_is_trusted).await;
        let mut c = connect_from(STRANGER, t.local_addr(Transport::Tcp).unwrap()).await;
        // Two requests in one write: only the first is read.
        let both = format!(
            "{}{}",
            options("127.0.0.2:9", "first", ""),
            options("127.0.0.2:9", "second", "")
        );
        c.write_all(both.as_bytes()).await.unwrap();
        let inc = next(&mut rx).await;
        assert_eq!(inc.message.headers().call_id().unwrap(), "first");
        assert_eq!(inc.source.ip(), STRANGER);
        // As the endpoint's source filter does: a stateless 403 on the connection.
        let target = inc.reply_target().unwrap();
        assert_eq!(
            t.send_queued(&target, answer(&inc, StatusCode::FORBIDDEN)),
            Ok(())
        );
        let back = response_or_close(&mut c).await.expect("the 403");
        assert_eq!(
            back.as_response().map(|r| r.status),
            Some(StatusCode::FORBIDDEN)
        );
        assert!(closed_by_server(&mut c).await, "closed after the reply");
        eventually("connection gone", || t.connection_count() == 0).await;
        assert!(rx.try_recv().is_err(), "the second request is never read");
        t.shutdown();
    }

    #[tokio::test]
    async fn a_source_with_no_trunk_is_closed_after_the_linger_when_no_reply_comes() {
        let (t, mut rx) = start(&["tcp://127.0.0.1:0"], |c| {
            only_the_trunk_is_trusted(c);
            c.untrusted_linger = Duration::from_millis(200);
        })
        .await;
        let mut c = connect_from(STRANGER, t.local_addr(Transport::Tcp).unwrap()).await;
        c.write_all(options("127.0.0.2:9", "dropped", "").as_bytes())
            .await
            .unwrap();
        let inc = next(&mut rx).await;
        // The endpoint drops it: no reply ever comes.
        assert!(closed_by_server(&mut c).await, "closed after the linger");
        eventually("connection gone", || t.connection_count() == 0).await;
        let late = answer(&inc, StatusCode::FORBIDDEN);
        assert_eq!(
            t.send_queued(&inc.reply_target().unwrap(), late.clone()),
            Err(late),
            "nothing is left to reply on"
        );
        t.shutdown();
    }

    #[tokio::test]
    async fn an_unparsable_request_from_a_source_with_no_trunk_gets_400_and_is_closed() {
        let (t, mut rx) = start(&["tcp://127.0.0.1:0"], only_the_trunk_is_trusted).await;
        let mut c = connect_from(STRANGER, t.local_addr(Transport::Tcp).unwrap()).await;
        let bad = options("127.0.0.2:9", "bad", "").replacen("OPTIONS sip", "OPTIONS  sip", 1);
        c.write_all(bad.as_bytes()).await.unwrap();
        let back = response_or_close(&mut c).await.expect("the 400");
        assert_eq!(
            back.as_response().map(|r| r.status),
            Some(StatusCode::BAD_REQUEST)
        );
        assert!(closed_by_server(&mut c).await, "closed after the 400");
        assert!(rx.try_recv().is_err(), "nothing delivered");
        t.shutdown();
    }

    #[tokio::test]
    async fn a_trunk_connection_that_never_sends_a_message_is_closed_at_the_deadline() {
        let (t, _rx) = start(&["tcp://127.0.0.1:0"], |c| {
            c.message_timeout = Duration::from_millis(100);
        })
        .await;
        let mut c = TcpStream::connect(t.local_addr(Transport::Tcp).unwrap())
            .await
            .unwrap();
        // Keep-alives alone do not make a first message.
        c.write_all(b"\r\n\r\n").await.unwrap();
        assert!(closed_by_server(&mut c).await);
        assert_eq!(t.refused_connections().timed_out, 1);
        t.shutdown();
    }

    #[tokio::test]
    async fn send_opens_a_tcp_connection_when_none_is_open() {
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (t, _rx) = start(&["tcp://127.0.0.1:0"], |_| {}).await;
        let target = Target {
            addr: peer.local_addr().unwrap(),
            transport: Transport::Tcp,
            conn: None,
        };
        t.send(&target, Bytes::from(options("127.0.0.1:9", "out", "")))
            .await
            .unwrap();
        let (mut s, _) = tokio::time::timeout(WAIT, peer.accept())
            .await
            .unwrap()
            .unwrap();
        let m = read_response(&mut s).await;
        assert_eq!(m.headers().call_id().unwrap(), "out");
        assert_eq!(t.connection_count(), 1);
        t.shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_messages_go_out_on_a_connection_in_the_order_queued() {
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (t, _rx) = start(&["tcp://127.0.0.1:0"], |_| {}).await;
        let target = Target {
            addr: peer.local_addr().unwrap(),
            transport: Transport::Tcp,
            conn: None,
        };
        // Nothing open yet: the message comes back for the caller to connect with.
        let first = Bytes::from(options("127.0.0.1:9", "m0", ""));
        assert_eq!(t.send_queued(&target, first.clone()), Err(first.clone()));
        t.send(&target, first).await.unwrap();
        let (mut s, _) = tokio::time::timeout(WAIT, peer.accept())
            .await
            .unwrap()
            .unwrap();
        // Fewer than the connection's write queue holds, so none is dropped.
        for i in 1..WRITE_QUEUE {
            let m = Bytes::from(options("127.0.0.1:9", &format!("m{i}"), ""));
            assert_eq!(t.send_queued(&target, m), Ok(()));
        }
        // One framer for the whole stream: a read may hold several messages.
        let mut framer = StreamFramer::new(Limits::default());
        let mut i = 0;
        while i < WRITE_QUEUE {
            if let Some(frame) = framer.pop().expect("framing") {
                let m = Message::parse(frame, &Limits::default()).expect("parses");
                assert_eq!(m.headers().call_id().unwrap(), format!("m{i}").as_str());
                i += 1;
                continue;
            }
            let n = tokio::time::timeout(WAIT, s.read_buf(framer.buffer_mut()))
                .await
                .expect("read in time")
                .expect("read");
            assert!(n > 0, "connection closed after {i} messages");
        }
        t.shutdown();
    }

    #[tokio::test]
    async fn tls_listener_without_certificate_fails_fast() {
        let r = Transports::bind(TransportConfig {
            listen: vec!["tls://127.0.0.1:0".parse().unwrap()],
            ..TransportConfig::default()
        })
        .await;
        assert!(matches!(r, Err(TransportError::TlsConfigMissing)));
    }

    #[tokio::test]
    async fn tls_request_round_trip_on_loopback() {
        let dir = std::env::temp_dir().join(format!("dialin-sip-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .args([
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output();
        if !made.as_ref().is_ok_and(|o| o.status.success()) {
            if std::env::var("DIALIN_STRICT_TESTS").as_deref() == Ok("1") {
                panic!("openssl is needed to make a test certificate: {made:?}");
            }
            eprintln!("skipping: openssl not available to make a test certificate");
            return;
        }
        let (t, mut rx) = start(&["tls://127.0.0.1:0"], |c| {
            c.tls_cert_pem = Some(cert.clone());
            c.tls_key_pem = Some(key.clone());
        })
        .await;
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&cert).unwrap();
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = TcpStream::connect(t.local_addr(Transport::Tls).unwrap())
            .await
            .unwrap();
        let name =
            rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(
            options("127.0.0.1:9", "tls1", "")
                .replace("UDP", "TLS")
                .as_bytes(),
        )
        .await
        .unwrap();
        let inc = next(&mut rx).await;
        assert_eq!(inc.transport, Transport::Tls);
        let resp = Response::to_request(inc.message.as_request().unwrap(), StatusCode::OK, None);
        t.send(&inc.reply_target().unwrap(), resp.to_bytes())
            .await
            .unwrap();
        let back = read_response(&mut tls).await;
        assert_eq!(back.as_response().map(|r| r.status), Some(StatusCode::OK));
        t.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
