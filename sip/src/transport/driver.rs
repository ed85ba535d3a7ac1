//! The tokio driver around the sans-IO transport pieces (RFC 3261 §18).
//!
//! [`Transports::bind`] opens every configured listener (UDP sockets, TCP and
//! TLS acceptors) and returns a channel of [`Incoming`] messages. Each stream
//! connection has one reader task (a [`StreamFramer`] feeding the parser) and
//! one writer task fed by a channel, so [`Transports::send`] never blocks on a
//! socket. Requests that fail to parse are answered here (400/505/513...) when
//! the error allows it; framing errors close the connection. Idle connections
//! are closed after `tcp_idle_timeout`; at most `max_connections` are open.

use super::{stamp_received, ConnectionId, Incoming, ListenAddr, StreamFramer, Target, Transport};
use crate::message::{reject_unparsable, Limits, Message};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
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
    /// Time allowed to open an outgoing TCP connection.
    pub connect_timeout: Duration,
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
        }
    }
}

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: ListenAddr, source: std::io::Error },
    #[error("tls:// listener needs tls_cert_pem and tls_key_pem")]
    TlsConfigMissing,
    #[error("cannot load TLS certificate or key: {0}")]
    TlsConfig(String),
    #[error("no {0} transport is bound for this address family")]
    NoTransport(Transport),
    #[error("connection limit reached")]
    TooManyConnections,
    #[error("opening outgoing TLS connections is not supported; the peer must keep its connection")]
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
}

/// Handle on the bound transports; cheap to clone. Dropping the last clone does
/// not stop the listeners: call [`Transports::shutdown`].
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

/// Messages queued per connection writer before `send` waits.
const WRITE_QUEUE: usize = 64;

impl Transports {
    /// Binds every listener in `config.listen` and starts receiving.
    pub async fn bind(config: TransportConfig) -> Result<(Transports, mpsc::Receiver<Incoming>), TransportError> {
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
                    local.push(ListenAddr { transport: l.transport, addr: s.local_addr()? });
                    udp.push(Arc::new(s));
                }
                Transport::Tcp | Transport::Tls => {
                    let s = TcpListener::bind(l.addr).await.map_err(bind_err)?;
                    local.push(ListenAddr { transport: l.transport, addr: s.local_addr()? });
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
        });
        let me = Transports { inner };
        let mut tasks = Vec::new();
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
        self.inner.local.iter().find(|l| l.transport == transport).map(|l| l.addr)
    }

    /// Number of open stream connections.
    pub fn connection_count(&self) -> usize {
        self.inner.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Sends octets. Streams reuse `target.conn` if it is still open, else any open
    /// connection to `target.addr`, else (TCP only) open one.
    pub async fn send(&self, target: &Target, data: Bytes) -> Result<(), TransportError> {
        match target.transport {
            Transport::Udp => self.send_udp(target.addr, &data).await,
            Transport::Tcp | Transport::Tls => {
                let tx = self.find_conn(target);
                let tx = match tx {
                    Some(tx) => tx,
                    None if target.transport == Transport::Tls => return Err(TransportError::TlsConnectUnsupported),
                    None => self.connect_tcp(target.addr).await?,
                };
                tx.send(data).await.map_err(|_| TransportError::ConnectionClosed)
            }
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
        let permit = self.inner.slots.clone().try_acquire_owned().map_err(|_| TransportError::TooManyConnections)?;
        let stream = tokio::time::timeout(self.inner.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let local = stream.local_addr()?;
        let (id, tx, rx) = self.register(addr, Transport::Tcp);
        let me = self.clone();
        let handle = tokio::spawn(async move {
            me.run_connection(stream, rx, id, addr, local, Transport::Tcp).await;
            drop(permit);
        });
        self.track(handle);
        Ok(tx)
    }

    fn register(&self, peer: SocketAddr, transport: Transport) -> (ConnectionId, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
        let id = ConnectionId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        if let Ok(mut c) = self.inner.conns.lock() {
            c.insert(id, ConnHandle { peer, transport, tx: tx.clone() });
        }
        (id, tx, rx)
    }

    fn track(&self, h: JoinHandle<()>) {
        if let Ok(mut t) = self.inner.tasks.lock() {
            t.retain(|h| !h.is_finished());
            t.push(h);
        }
    }

    async fn run_connection<S>(
        &self,
        stream: S,
        mut rx: mpsc::Receiver<Bytes>,
        id: ConnectionId,
        peer: SocketAddr,
        local: SocketAddr,
        transport: Transport,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let writer = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let reply_tx = self.inner.conns.lock().ok().and_then(|c| c.get(&id).map(|h| h.tx.clone()));
        let mut framer = StreamFramer::new(self.inner.limits.clone());
        'conn: loop {
            match tokio::time::timeout(self.inner.idle, rd.read_buf(framer.buffer_mut())).await {
                Err(_) => {
                    tracing::debug!(%peer, "closing idle {transport} connection");
                    break;
                }
                Ok(Err(_)) | Ok(Ok(0)) => break,
                Ok(Ok(_)) => {}
            }
            loop {
                match framer.pop() {
                    Ok(None) => break,
                    Ok(Some(raw)) => {
                        if !self.deliver(raw, peer, local, transport, Some(id), reply_tx.as_ref()).await {
                            break 'conn;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "stream framing error, closing connection");
                        break 'conn;
                    }
                }
            }
        }
        if let Ok(mut c) = self.inner.conns.lock() {
            c.remove(&id);
        }
        drop(reply_tx);
        // The writer drains what is queued (e.g. a 400) and then ends.
        let _ = writer.await;
    }

    /// Parses and hands a message up; answers unparsable requests. Returns false
    /// when the receiver is gone.
    async fn deliver(
        &self,
        raw: Bytes,
        source: SocketAddr,
        local: SocketAddr,
        transport: Transport,
        conn: Option<ConnectionId>,
        reply: Option<&mpsc::Sender<Bytes>>,
    ) -> bool {
        match Message::parse(raw.clone(), &self.inner.limits) {
            Ok(mut message) => {
                if let Message::Request(r) = &mut message {
                    stamp_received(r, source);
                }
                let inc = Incoming { message, raw, source, local, transport, conn };
                self.inner.incoming.send(inc).await.is_ok()
            }
            Err(e) => {
                tracing::debug!(%source, error = %e, "unparsable SIP message");
                if let Some(resp) = reject_unparsable(&raw, &e) {
                    let bytes = resp.to_bytes();
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
                }
                true
            }
        }
    }
}

async fn udp_loop(me: Transports, sock: Arc<UdpSocket>) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    // RFC 3261 §18.1.1: a datagram is at most 65,535 octets.
    let mut buf = BytesMut::with_capacity(65_536);
    loop {
        buf.clear();
        buf.reserve(65_536);
        let (n, source) = match sock.recv_buf_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors surface here on some systems; keep serving.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        let raw = buf.split_to(n).freeze();
        // Lone CRLF keep-alives (RFC 5626 §4.4.1 uses STUN on UDP; CRLF is seen in the wild).
        if raw.iter().all(|b| *b == b'\r' || *b == b'\n') {
            continue;
        }
        if !me.deliver(raw, source, local, Transport::Udp, None, None).await {
            return;
        }
    }
}

async fn accept_loop(me: Transports, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
    let transport = if tls.is_some() { Transport::Tls } else { Transport::Tcp };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "accept error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = me.inner.slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached, refusing {transport} connection");
            drop(stream);
            continue;
        };
        let local = stream.local_addr().unwrap_or(peer);
        let _ = stream.set_nodelay(true);
        let (id, _tx, rx) = me.register(peer, transport);
        let me2 = me.clone();
        let tls = tls.clone();
        let h = tokio::spawn(async move {
            match tls {
                None => me2.run_connection(stream, rx, id, peer, local, transport).await,
                Some(acc) => match tokio::time::timeout(me2.inner.connect_timeout, acc.accept(stream)).await {
                    Ok(Ok(s)) => me2.run_connection(s, rx, id, peer, local, transport).await,
                    _ => {
                        tracing::debug!(%peer, "TLS handshake failed");
                        if let Ok(mut c) = me2.inner.conns.lock() {
                            c.remove(&id);
                        }
                    }
                },
            }
            drop(permit);
        });
        me.track(h);
    }
}

fn tls_acceptor(config: &TransportConfig) -> Result<tokio_rustls::TlsAcceptor, TransportError> {
    let (Some(cert), Some(key)) = (&config.tls_cert_pem, &config.tls_key_pem) else {
        return Err(TransportError::TlsConfigMissing);
    };
    let e = |what: &str, err: &dyn std::fmt::Display| TransportError::TlsConfig(format!("{what}: {err}"));
    let cert_file = std::fs::File::open(cert).map_err(|x| e("certificate file", &x))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(cert_file))
        .collect::<Result<_, _>>()
        .map_err(|x| e("certificate", &x))?;
    if certs.is_empty() {
        return Err(TransportError::TlsConfig("no certificate in PEM file".into()));
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
