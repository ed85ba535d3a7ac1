//! Running SIPp, the reference SIP traffic generator, as a real peer in tests.
//!
//! Integration tests put SIPp on one side of a call (its built-in `uas`/`uac`
//! scenarios, or an XML scenario written by the test) and dialin or the test caller on
//! the other, all on loopback. [`sipp_or_skip`] applies the project's rule for external
//! tools: a missing `sipp` skips the test with a printed reason, unless
//! `DIALIN_STRICT_TESTS=1`, where it fails. [`SippProcess`] runs one SIPp with its logs in
//! a scratch directory and reports its exit code (0: every call succeeded, 1: some
//! failed, 97/99: SIPp's own errors). [`write_g711_pcap`] and [`write_rfc4733_pcap`] make
//! the RTP captures SIPp replays with `<exec play_pcap_audio="..."/>` (pcap file format
//! with Ethernet/IPv4/UDP/RTP frames; SIPp rewrites addresses and ports to the
//! negotiated ones when it plays them).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dialin_media::dtmf::event::{EventSender, DEFAULT_VOLUME};
use dialin_media::dtmf::Digit;
use dialin_media::rtp::{Header, PayloadType, RtpTimestamp, SeqNo, Ssrc};
use dialin_media::{new_encoder, CodecConfig, CodecKind, SampleRate};

/// Environment variable that turns a missing external tool into a failure (CI sets it).
pub const STRICT_ENV: &str = "DIALIN_STRICT_TESTS";
/// Environment variable naming the `sipp` binary to use instead of the one on `PATH`.
pub const SIPP_ENV: &str = "DIALIN_SIPP";

/// Whether missing tools must fail tests (`DIALIN_STRICT_TESTS=1`).
pub fn strict() -> bool {
    std::env::var(STRICT_ENV).is_ok_and(|v| v == "1")
}

/// A test that needs a missing tool: prints why it skips, or panics under
/// `DIALIN_STRICT_TESTS=1`.
#[allow(dead_code)]
pub fn skip_or_fail(reason: &str) {
    if strict() {
        panic!("{reason}, and {STRICT_ENV}=1: this test cannot be skipped");
    }
    eprintln!("skipping: {reason}");
}

/// The `sipp` binary (`$DIALIN_SIPP`, else the first `sipp` on `PATH`), or `None` after
/// printing why the calling test is skipped. Panics instead when `DIALIN_STRICT_TESTS=1`.
pub fn sipp_or_skip() -> Option<PathBuf> {
    match find_sipp() {
        Ok(p) => Some(p),
        Err(reason) => {
            if strict() {
                panic!("sipp is required ({STRICT_ENV}=1) but {reason}");
            }
            eprintln!("skipping: {reason} (install sipp, or set {SIPP_ENV}=/path/to/sipp)");
            None
        }
    }
}

fn find_sipp() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(SIPP_ENV) {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(format!(
                "{SIPP_ENV}={} is not an executable file",
                p.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("sipp"))
        .find(|p| is_executable(p))
        .ok_or_else(|| "sipp was not found on PATH".to_owned())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// SIP transport for a SIPp run (`-t u1` / `-t t1`: one socket or connection for all calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SippTransport {
    Udp,
    Tcp,
}

impl SippTransport {
    fn flag(self) -> &'static str {
        match self {
            SippTransport::Udp => "u1",
            SippTransport::Tcp => "t1",
        }
    }
}

/// A loopback port free for both UDP and TCP at the time of the call (there is a race
/// with other processes; loopback tests live with it).
pub fn free_port() -> u16 {
    for _ in 0..64 {
        let Ok(u) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = u.local_addr() else { continue };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, addr.port())).is_ok() {
            return addr.port();
        }
    }
    panic!("no free loopback port");
}

/// Two consecutive free UDP ports, the first even: an RTP port and its RTCP port, for
/// `-mp` (SIPp binds both).
pub fn free_media_port() -> u16 {
    for _ in 0..256 {
        let Ok(u) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = u.local_addr() else { continue };
        let p = addr.port() & !1;
        drop(u);
        if p < 1024 || p == u16::MAX - 1 {
            continue;
        }
        let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, p));
        let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, p + 1));
        if a.is_ok() && b.is_ok() {
            return p;
        }
    }
    panic!("no free pair of loopback UDP ports");
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A scratch directory for one SIPp run (scenario files, logs, pcaps), removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(label: &str) -> io::Result<ScratchDir> {
        let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("dialin-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir { path })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Writes `contents` to `name` in the directory; returns the full path.
    pub fn write(&self, name: &str, contents: &[u8]) -> io::Result<PathBuf> {
        let p = self.path.join(name);
        std::fs::write(&p, contents)?;
        Ok(p)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One running SIPp. Killed on drop if still running.
pub struct SippProcess {
    child: Child,
    dir: ScratchDir,
    args: Vec<String>,
    /// A UAS's SIP address (where to call it); for a UAC, the address it calls.
    pub sip_addr: SocketAddr,
}

/// How a SIPp run ended.
pub struct SippOutcome {
    /// The exit code; `None` when it was killed (timeout) or died by a signal.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// The `-trace_msg` log: every SIP message SIPp sent and received.
    pub messages: String,
    /// The `-trace_err` log: unexpected messages.
    pub errors: String,
    args: Vec<String>,
}

impl SippOutcome {
    /// Exit code 0: every call of the scenario succeeded.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Debug for SippOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn tail(s: &str, n: usize) -> &str {
            let start = s.len().saturating_sub(n);
            let start = (start..s.len())
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(s.len());
            &s[start..]
        }
        writeln!(
            f,
            "sipp {} exited with {:?} (timed out: {})",
            self.args.join(" "),
            self.code,
            self.timed_out
        )?;
        writeln!(f, "--- stderr ---\n{}", tail(&self.stderr, 4000))?;
        writeln!(f, "--- errors ---\n{}", tail(&self.errors, 4000))?;
        writeln!(f, "--- messages ---\n{}", tail(&self.messages, 12000))
    }
}

impl SippProcess {
    /// Starts `sipp` with `args`, in a fresh scratch directory, with `-nostdin`,
    /// `-trace_msg` and `-trace_err` added (logs read back by [`SippProcess::wait`]).
    /// `sip_addr` is recorded as [`SippProcess::sip_addr`].
    pub fn spawn(sipp: &Path, args: &[String], sip_addr: SocketAddr) -> io::Result<SippProcess> {
        let dir = ScratchDir::new("sipp")?;
        Self::spawn_in(sipp, args, sip_addr, dir)
    }

    /// As [`SippProcess::spawn`], in a directory the test already filled (scenario, pcaps).
    pub fn spawn_in(
        sipp: &Path,
        args: &[String],
        sip_addr: SocketAddr,
        dir: ScratchDir,
    ) -> io::Result<SippProcess> {
        let mut all: Vec<String> = args.to_vec();
        let log = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        all.extend([
            "-nostdin".to_owned(),
            "-trace_msg".to_owned(),
            "-message_file".to_owned(),
            log("messages.log"),
            "-trace_err".to_owned(),
            "-error_file".to_owned(),
            log("errors.log"),
        ]);
        let child = Command::new(sipp)
            .args(&all)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log"))?)
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
            .spawn()?;
        Ok(SippProcess {
            child,
            dir,
            args: all,
            sip_addr,
        })
    }

    /// Starts SIPp's built-in UAS (`-sn uas`: 180, 200 with a PCMU offer/answer, then
    /// waits for ACK and BYE and answers 200) for `calls` calls on a free loopback port,
    /// and waits until it listens. It exits 0 once `calls` calls completed, and fails after
    /// `timeout`.
    pub async fn uas(
        sipp: &Path,
        transport: SippTransport,
        calls: u32,
        timeout: Duration,
    ) -> io::Result<SippProcess> {
        let port = free_port();
        let media = free_media_port();
        let args: Vec<String> = [
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            transport.flag(),
            "-m",
            &calls.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &media.to_string(),
            "-timeout",
            &format!("{}s", timeout.as_secs().max(1)),
            "-timeout_error",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut p = SippProcess::spawn(sipp, &args, addr)?;
        p.wait_listening(transport, Duration::from_secs(10)).await?;
        Ok(p)
    }

    /// Waits until SIPp has bound its SIP port (binding it ourselves fails).
    pub async fn wait_listening(
        &mut self,
        transport: SippTransport,
        limit: Duration,
    ) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let bound = match transport {
                SippTransport::Udp => UdpSocket::bind(self.sip_addr).is_err(),
                SippTransport::Tcp => TcpListener::bind(self.sip_addr).is_err(),
            };
            if bound {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "sipp exited with {status} before listening: {}",
                    std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("sipp did not start listening"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The scratch directory (logs, scenario files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits for SIPp to exit, at most `limit` (then kills it), and collects its logs.
    pub async fn wait(mut self, limit: Duration) -> SippOutcome {
        let deadline = Instant::now() + limit;
        let mut timed_out = false;
        let status: Option<ExitStatus> = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Ok(None) => {
                    timed_out = true;
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
                Err(_) => break None,
            }
        };
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        SippOutcome {
            code: if timed_out {
                None
            } else {
                status.and_then(|s| s.code())
            },
            timed_out,
            stdout: read("stdout.log"),
            stderr: read("stderr.log"),
            messages: read("messages.log"),
            errors: read("errors.log"),
            args: self.args.clone(),
        }
    }
}

impl SippProcess {
    /// Starts a SIPp UAC that calls `target` (UDP, Request-URI user `1000`), plays `pcap`
    /// (see [`write_g711_pcap`], [`write_rfc4733_pcap`]) once answered, waits `pause`, and
    /// hangs up. Exits 0 when the call went through.
    pub fn uac_playing_pcap(
        sipp: &Path,
        target: SocketAddr,
        pcap: &Path,
        pause: Duration,
        dir: ScratchDir,
    ) -> io::Result<SippProcess> {
        let scenario = UAC_PLAY_PCAP_SCENARIO
            .replace("PCAP_FILE", &pcap.to_string_lossy())
            .replace("PAUSE_MS", &pause.as_millis().to_string());
        let sf = dir.write("uac.xml", scenario.as_bytes())?;
        let args: Vec<String> = [
            target.to_string(),
            "-sf".into(),
            sf.to_string_lossy().into_owned(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            free_port().to_string(),
            "-t".into(),
            "u1".into(),
            "-m".into(),
            "1".into(),
            "-s".into(),
            "1000".into(),
            "-mi".into(),
            "127.0.0.1".into(),
            "-mp".into(),
            free_media_port().to_string(),
            "-timeout".into(),
            "30s".into(),
            "-timeout_error".into(),
        ]
        .into_iter()
        .collect();
        SippProcess::spawn_in(sipp, &args, target, dir)
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIPp UAC scenario: calls (PCMU and telephone-event/8000 as payload type 101), plays
/// `PCAP_FILE` with `play_pcap_audio`, waits `PAUSE_MS`, hangs up. Used by
/// [`SippProcess::uac_playing_pcap`]; a starting point for tests' own scenarios.
pub const UAC_PLAY_PCAP_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="pcap player">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec play_pcap_audio="PCAP_FILE"/>
    </action>
  </nop>
  <pause milliseconds="PAUSE_MS"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"#;

// ---------------------------------------------------------------------------
// pcap files for <exec play_pcap_audio="..."/>

/// libpcap file format: magic, version 2.4, LINKTYPE_ETHERNET.
const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
/// Placeholder addresses: SIPp replaces them with the call's media addresses.
const PCAP_SRC: ([u8; 4], u16) = ([127, 0, 0, 1], 6000);
const PCAP_DST: ([u8; 4], u16) = ([127, 0, 0, 1], 6002);

/// A G.711 law for [`write_g711_pcap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum G711 {
    Pcmu,
    Pcma,
}

impl G711 {
    fn kind(self) -> CodecKind {
        match self {
            G711::Pcmu => CodecKind::Pcmu,
            G711::Pcma => CodecKind::Pcma,
        }
    }
    fn payload_type(self) -> PayloadType {
        match self {
            G711::Pcmu => PayloadType::PCMU,
            G711::Pcma => PayloadType::PCMA,
        }
    }
}

/// Writes 8 kHz `pcm` as G.711 RTP (20 ms packets, payload type 0 or 8) into a pcap file
/// that SIPp can play with `<exec play_pcap_audio="file"/>`.
pub fn write_g711_pcap(path: &Path, law: G711, pcm: &[i16]) -> io::Result<()> {
    let mut enc = new_encoder(law.kind(), SampleRate::Hz8000, &CodecConfig::default())
        .map_err(io::Error::other)?;
    let mut w = PcapWriter::new();
    let mut payload = [0u8; 160];
    for (i, frame) in pcm.chunks(160).enumerate() {
        let mut f = [0i16; 160];
        if let Some(d) = f.get_mut(..frame.len()) {
            d.copy_from_slice(frame);
        }
        let n = enc.encode(&f, &mut payload).map_err(io::Error::other)?;
        let i = i as u32;
        let mut h = Header::new(
            law.payload_type(),
            SeqNo(i as u16),
            RtpTimestamp(i * 160),
            Ssrc(0x5151_7070),
        );
        h.marker = i == 0;
        w.rtp(
            Duration::from_millis(u64::from(i) * 20),
            &h,
            payload.get(..n).unwrap_or(&[]),
        )?;
    }
    std::fs::write(path, w.finish())
}

/// Writes a tone (`hz`, peak `dbfs` AES17) of `duration` as G.711 RTP into a pcap file.
pub fn write_tone_pcap(
    path: &Path,
    law: G711,
    hz: f64,
    dbfs: f64,
    duration: Duration,
) -> io::Result<()> {
    let len = (duration.as_millis() as usize) * 8;
    write_g711_pcap(path, law, &super::tone::sine(8000, hz, dbfs, len))
}

/// Writes `digits` as RFC 4733 events (payload type `pt`, 8 kHz clock; 100 ms press,
/// 100 ms gap; start, 50 ms updates, three end packets) into a pcap file. Silence
/// (PCMU, payload type 0) is sent in the gaps and for `lead_in` before the first digit,
/// so the stream looks like a phone's.
pub fn write_rfc4733_pcap(path: &Path, digits: &str, pt: u8, lead_in: Duration) -> io::Result<()> {
    let pt = PayloadType::new(pt).map_err(io::Error::other)?;
    let digits: Vec<Digit> = digits
        .chars()
        .map(Digit::from_char)
        .collect::<Result<_, _>>()
        .map_err(io::Error::other)?;
    let ssrc = Ssrc(0x4733_4733);
    let mut w = PcapWriter::new();
    let mut seq = SeqNo(1000);
    let silence = [0xffu8; 160];
    let mut t = Duration::ZERO;
    let mut ts = 0u32;
    let send_silence = |w: &mut PcapWriter,
                        t: &mut Duration,
                        ts: &mut u32,
                        seq: &mut SeqNo,
                        dur: Duration|
     -> io::Result<()> {
        let end = *t + dur;
        while *t < end {
            w.rtp(
                *t,
                &Header::new(PayloadType::PCMU, *seq, RtpTimestamp(*ts), ssrc),
                &silence,
            )?;
            *seq = seq.next();
            *ts = ts.wrapping_add(160);
            *t += Duration::from_millis(20);
        }
        Ok(())
    };
    send_silence(&mut w, &mut t, &mut ts, &mut seq, lead_in)?;
    for d in digits {
        let mut sender = EventSender::new(d, ts, 8000, Duration::from_millis(100), DEFAULT_VOLUME);
        let mut buf = [0u8; 4];
        let start = t;
        let mut last = start;
        while let Some(p) = sender.next_packet(&mut buf).map_err(io::Error::other)? {
            let mut h = Header::new(pt, seq, RtpTimestamp(p.timestamp), ssrc);
            h.marker = p.marker;
            last = start + p.send_after;
            w.rtp(last, &h, buf.get(..p.len).unwrap_or(&[]))?;
            seq = seq.next();
        }
        // The audio clock ran on during the event.
        let elapsed = last - start + Duration::from_millis(20);
        t = start + elapsed;
        ts = ts.wrapping_add((elapsed.as_millis() as u32) * 8);
        send_silence(
            &mut w,
            &mut t,
            &mut ts,
            &mut seq,
            Duration::from_millis(100),
        )?;
    }
    std::fs::write(path, w.finish())
}

/// Builds a pcap capture of UDP datagrams in memory.
struct PcapWriter {
    out: Vec<u8>,
    ip_id: u16,
}

impl PcapWriter {
    fn new() -> PcapWriter {
        let mut out = Vec::with_capacity(64 * 1024);
        out.extend_from_slice(&PCAP_MAGIC.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        out.extend_from_slice(&65_535u32.to_le_bytes()); // snaplen
        out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        PcapWriter { out, ip_id: 1 }
    }

    fn rtp(&mut self, at: Duration, header: &Header<'_>, payload: &[u8]) -> io::Result<()> {
        let mut pkt = vec![0u8; header.wire_len() + payload.len()];
        let n = header.write(payload, &mut pkt).map_err(io::Error::other)?;
        pkt.truncate(n);
        self.udp(at, &pkt);
        Ok(())
    }

    fn udp(&mut self, at: Duration, payload: &[u8]) {
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let frame_len = 14 + ip_len;
        // Record header: seconds, microseconds, captured length, original length.
        let w = &mut self.out;
        w.extend_from_slice(&(at.as_secs() as u32).to_le_bytes());
        w.extend_from_slice(&at.subsec_micros().to_le_bytes());
        w.extend_from_slice(&(frame_len as u32).to_le_bytes());
        w.extend_from_slice(&(frame_len as u32).to_le_bytes());
        // Ethernet II: destination, source, EtherType.
        w.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        w.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        w.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        // IPv4 header (RFC 791), no options.
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        ip[8] = 64;
        ip[9] = IPPROTO_UDP;
        ip[12..16].copy_from_slice(&PCAP_SRC.0);
        ip[16..20].copy_from_slice(&PCAP_DST.0);
        let sum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        w.extend_from_slice(&ip);
        self.ip_id = self.ip_id.wrapping_add(1);
        // UDP header (RFC 768); checksum 0 = none, allowed over IPv4.
        w.extend_from_slice(&PCAP_SRC.1.to_be_bytes());
        w.extend_from_slice(&PCAP_DST.1.to_be_bytes());
        w.extend_from_slice(&(udp_len as u16).to_be_bytes());
        w.extend_from_slice(&0u16.to_be_bytes());
        w.extend_from_slice(payload);
    }

    fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// RFC 791 header checksum: one's complement of the one's complement sum of 16-bit words.
fn ipv4_checksum(header: &[u8; 20]) -> u16 {
    let mut sum: u32 = header
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Reads back the RTP payloads of a pcap written by this module: (time, RTP packet).
/// For checking the files themselves.
pub fn read_pcap_rtp(path: &Path) -> io::Result<Vec<(Duration, Vec<u8>)>> {
    let data = std::fs::read(path)?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not a pcap written by write_*_pcap",
        )
    };
    let magic = data.get(0..4).ok_or_else(bad)?;
    if magic != PCAP_MAGIC.to_le_bytes() {
        return Err(bad());
    }
    let mut out = Vec::new();
    let mut pos = 24;
    while pos < data.len() {
        let rec = data.get(pos..pos + 16).ok_or_else(bad)?;
        let secs = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let micros = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
        let len = u32::from_le_bytes([rec[8], rec[9], rec[10], rec[11]]) as usize;
        let frame = data.get(pos + 16..pos + 16 + len).ok_or_else(bad)?;
        let udp = frame.get(14 + 20..).ok_or_else(bad)?;
        let payload = udp.get(8..).ok_or_else(bad)?;
        out.push((
            Duration::from_secs(u64::from(secs)) + Duration::from_micros(u64::from(micros)),
            payload.to_vec(),
        ));
        pos += 16 + len;
    }
    Ok(out)
}
