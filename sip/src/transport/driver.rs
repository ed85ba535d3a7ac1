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
use bytes::Bytes;
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

    /// Sends octets. Streams reuse `target.conn` if it is still open, else any open
    /// connection to `target.addr`, else (TCP only) open one.
    pub async fn send(&self, target: &Target, data: Bytes) -> Result<(), TransportError> {
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
        let me = self.clone();
        let handle = tokio::spawn(async move {
            me.run_connection(stream, rx, id, addr, local, Transport::Tcp)
                .await;
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
        let reply_tx = self
            .inner
            .conns
            .lock()
            .ok()
            .and_then(|c| c.get(&id).map(|h| h.tx.clone()));
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
                        if !self
                            .deliver(raw, peer, local, transport, Some(id), reply_tx.as_ref())
                            .await
                        {
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
                let inc = Incoming {
                    message,
                    raw,
                    source,
                    local,
                    transport,
                    conn,
                };
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
        if !me
            .deliver(raw, source, local, Transport::Udp, None, None)
            .await
        {
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
                None => {
                    me2.run_connection(stream, rx, id, peer, local, transport)
                        .await
                }
                Some(acc) => {
                    match tokio::time::timeout(me2.inner.connect_timeout, acc.accept(stream)).await
                    {
                        Ok(Ok(s)) => me2.run_connection(s, rx, id, peer, local, transport).await,
                        _ => {
                            tracing::debug!(%peer, "TLS handshake failed");
                            if let Ok(mut c) = me2.inner.conns.lock() {
                                c.remove(&id);
                            }
                        }
                    }
                }
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

    const WAIT: Duration = Duration::from_secs(5);

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
