//! `dialin serve`: opens the store, starts the admin API, the SIP transports and endpoint
//! (with the gateway's source pre-filter) and the SIP front; reloads trunks on SIGHUP
//! without touching calls in progress; drains on SIGTERM/Ctrl-C.
//!
//! Draining (DESIGN.md §Call flow step 1, §Admin API `/readyz`): `/readyz` turns `503`
//! and new INVITEs get `503` + `Retry-After` at once; calls in progress go on until they
//! end or `limits.drain_timeout_s` passes, then hear a goodbye prompt and get a BYE; the
//! process exits when the last call is gone. [`Services`] holds what every task shares:
//! trunks, store, call registry, metrics, readiness, the overload monitor and the abuse
//! counters.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminToken, AppState, Readiness};
use crate::call::registry::CallRegistry;
use crate::config::{redact_url, Config, TrunkSource};
use crate::ops::metrics::Metrics;
use crate::ops::overload::OverloadMonitor;
use crate::pins::guard::{PinGuard, NUMBER_KEY_SECRET};
use crate::pins::source::{PinSource, PinSources, SourceKind, StoreSource};
use crate::privacy::NumberKey;
use crate::store::Store;
use crate::ingress::trunk::{SharedTrunkTable, SourceRateLimiter, TrunkFailureAlarm, TrunkId, TrunkTable};

/// The shared parts of a running gateway, handed to the SIP/call-flow drivers.
#[derive(Debug, Clone)]
pub struct Services {
    pub store: Store,
    pub trunks: Arc<SharedTrunkTable>,
    pub calls: Arc<CallRegistry>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Tick lateness of every call's media loop: new calls get `503` while it is high.
    pub overload: Arc<OverloadMonitor>,
    /// Failed PINs per trunk per minute (`security.trunk_alarm_failed_per_minute`).
    pub pin_alarm: Arc<TrunkFailureAlarm>,
    /// `403`s allowed to sources matching no trunk (`[security.unmatched_source]`).
    pub unmatched: Arc<SourceRateLimiter>,
    /// Turns keyed PINs into verdicts within the per-trunk bound (`[security.pin_guard]`).
    pub guard: Arc<PinGuard>,
    /// The admin API's bearer token, replaced on SIGHUP.
    pub admin_token: Arc<std::sync::RwLock<AdminToken>>,
    /// This node's name in the store's call records.
    pub node: String,
}

impl Services {
    /// Opens the store (running migrations) and builds the shared tables.
    pub async fn open(config: &Config) -> anyhow::Result<Services> {
        let store = Store::open(&config.store.url, config.store.max_connections)
            .await
            .with_context(|| format!("opening the store at {}", redact_url(&config.store.url)))?;
        let secret = match &config.security.secret {
            Some(s) => s.expose().to_owned(),
            None => store
                .shared_secret(NUMBER_KEY_SECRET, &NumberKey::generate_secret())
                .await
                .context("reading the number-hash secret from the store")?,
        };
        let guard = Arc::new(
            PinGuard::new(
                store.clone(),
                NumberKey::from_secret(&secret),
                config.security.pin_guard.policy(),
                config.security.lockout.clone(),
                std::time::Duration::from_secs(config.security.pin_guard.trusted_for_s),
            )
            .with_sources(pin_sources(config, &store)?),
        );
        let node = config.store.node_name(&config.sip);
        match store.close_interrupted_records(&node, chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                node = %node,
                records = n,
                "closed call records this node left open when it last stopped (outcome interrupted)"
            ),
            Err(e) => tracing::warn!(error = %e, "could not close the call records left open"),
        }
        Ok(Services {
            node,
            guard,
            admin_token: Arc::new(std::sync::RwLock::new(AdminToken::new(config.admin.token()))),
            store,
            // LiveKit's trunks are read once the gateway runs (`sync_livekit_trunks`).
            trunks: Arc::new(SharedTrunkTable::new(TrunkTable::new(
                match config.trunk_source.source {
                    TrunkSource::Config => config.trunks.clone(),
                    TrunkSource::Livekit => Vec::new(),
                },
            ))),
            calls: CallRegistry::new(),
            metrics: Arc::new(Metrics::new()),
            readiness: Readiness::new(),
            overload: Arc::new(OverloadMonitor::new(std::time::Instant::now())),
            pin_alarm: Arc::new(TrunkFailureAlarm::new(
                config.security.trunk_alarm_failed_per_minute,
            )),
            unmatched: Arc::new(SourceRateLimiter::new(
                config.security.unmatched_source.burst,
                config.security.unmatched_source.per_second,
                SourceRateLimiter::DEFAULT_MAX_SOURCES,
            )),
        })
    }

    /// Starts reading LiveKit's inbound trunks into the trunk table when `[trunks] source =
    /// "livekit"`; the first read is waited for (a few seconds at most) so that the first
    /// calls find their trunk.
    pub async fn sync_livekit_trunks(
        &self,
        config: &Config,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        if config.trunk_source.source != TrunkSource::Livekit {
            return Ok(None);
        }
        let lk = &config.livekit;
        let secret = lk
            .api_secret
            .as_ref()
            .map(|s| s.expose())
            .unwrap_or_default();
        let client = crate::room::livekit::api::SipClient::new(&lk.url, &lk.api_key, secret)
            .map_err(|e| anyhow::anyhow!("trunks.source = \"livekit\": {e}"))?;
        let reader: Arc<dyn crate::ingress::livekit_trunks::TrunkReader> = Arc::new(client);
        match tokio::time::timeout(std::time::Duration::from_secs(10), reader.read()).await {
            Ok(Ok(infos)) => {
                let table = crate::ingress::livekit_trunks::table(&infos, &config.trunks);
                tracing::info!(trunks = table.len(), "LiveKit inbound trunks read");
                self.trunks.replace(table);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "LiveKit inbound trunks could not be read at start; retrying")
            }
            Err(_) => {
                tracing::error!("LiveKit inbound trunks: no answer within 10 s at start; retrying")
            }
        }
        let every = std::time::Duration::from_secs(config.trunk_source.refresh_s);
        let shared = Arc::clone(&self.trunks);
        let overrides = config.trunks.clone();
        Ok(Some(tokio::spawn(async move {
            tokio::time::sleep(every).await;
            crate::ingress::livekit_trunks::keep_in_sync(reader, overrides, shared, every).await;
        })))
    }

    /// A caller on `trunk` keyed a PIN that was refused (unknown, revoked, out of its
    /// validity window, or the caller is locked out). Raises the per-trunk alarm when the
    /// trunk crosses its failed-PIN ceiling for the minute: guessing spread over many
    /// calling numbers is only visible per trunk, and the trunk's address is never locked.
    pub fn pin_refused(&self, trunk: &TrunkId, now: std::time::Instant) {
        self.metrics.pin_failure(trunk.as_str());
        if self.pin_alarm.record_failure(trunk, now) {
            self.metrics.trunk_pin_failure_alarm();
            tracing::warn!(
                alarm = "trunk_failed_pins",
                trunk = %trunk,
                per_minute = self.pin_alarm.threshold(),
                "alarm: failed PINs on this trunk are over the per-minute ceiling (PIN guessing?)"
            );
        }
    }

    /// The admin API's view of these services.
    pub fn admin_state(&self) -> AppState {
        AppState {
            store: self.store.clone(),
            trunks: Arc::clone(&self.trunks),
            calls: Arc::clone(&self.calls),
            metrics: Arc::clone(&self.metrics),
            readiness: Arc::clone(&self.readiness),
            token: Arc::clone(&self.admin_token),
        }
    }
}

/// The PIN sources of `[pins] sources`, in order.
fn pin_sources(config: &Config, store: &Store) -> anyhow::Result<PinSources> {
    let mut list: Vec<Arc<dyn PinSource>> = Vec::new();
    for kind in &config.pins.sources {
        match kind {
            SourceKind::Store => list.push(Arc::new(StoreSource(store.clone()))),
            SourceKind::Livekit => {
                let lk = &config.livekit;
                let secret = lk
                    .api_secret
                    .as_ref()
                    .map(|s| s.expose())
                    .unwrap_or_default();
                let client =
                    crate::room::livekit::api::SipClient::new(&lk.url, &lk.api_key, secret)
                        .map_err(|e| anyhow::anyhow!("pins.sources \"livekit\": {e}"))?;
                list.push(Arc::new(crate::pins::livekit::DispatchRules::new(
                    Arc::new(client),
                    std::time::Duration::from_secs(config.pins.livekit.refresh_s),
                    std::time::Duration::from_secs(config.pins.livekit.miss_refresh_s),
                )));
            }
            SourceKind::Http => {
                let http =
                    config.pins.http.as_ref().ok_or_else(|| {
                        anyhow::anyhow!("pins.http is required for the http source")
                    })?;
                let source = crate::pins::http::HttpSource::new(http)
                    .map_err(|e| anyhow::anyhow!("pins.http: {e}"))?;
                list.push(Arc::new(source));
            }
        }
    }
    Ok(PinSources::new(list))
}

/// Runs the gateway until SIGTERM or Ctrl-C. `config_path` is re-read on SIGHUP.
pub async fn run(config: Config, config_path: PathBuf) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    crate::ops::fd::ignore_file_size_signal();
    let services = Services::open(&config).await?;
    if config.admin.token() == "change-me" {
        tracing::warn!("admin.token is still the shipped example value; set DIALIN_ADMIN_TOKEN");
    }
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("binding the admin API to {}", config.admin.listen))?;
    tracing::info!(addr = %config.admin.listen, store = services.store.engine(), trunks = config.trunks.len(), "admin API listening");

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve_with_shutdown(
        admin_listener,
        services.admin_state(),
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
    ));

    let trunk_task = services.sync_livekit_trunks(&config).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sip = start_sip(&config, &services, shutdown_rx).await?;
    services.readiness.set_transports_bound(true);
    let overload_task = tokio::spawn(watch_overload(services.clone()));
    let history_task = tokio::spawn(sample_calls(services.clone()));
    let store_task = tokio::spawn(watch_store(services.clone()));

    wait_for_signals(&mut signals, &services, &config_path, config.clone()).await?;

    services.readiness.set_draining(true);
    tracing::info!(calls = services.calls.len(), "draining: refusing new calls");
    drain(&services, &config, &shutdown_tx).await;
    let _ = sip.shutdown();
    let _ = stop_tx.send(true);
    match admin_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "admin API stopped with an error"),
        Err(e) => tracing::error!(error = %e, "admin API task failed"),
    }
    overload_task.abort();
    history_task.abort();
    store_task.abort();
    if let Some(t) = trunk_task {
        t.abort();
    }
    services.store.close().await;
    Ok(())
}

/// Samples the calls in progress once a minute for the console's chart.
async fn sample_calls(services: Services) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        services.metrics.sample_calls(chrono::Utc::now(), services.calls.len());
    }
}

/// How often the store is probed with a write, and how long a probe may take.
const STORE_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
const STORE_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Probes the store every second with a write (and, for SQLite, its file's identity and
/// permissions): while it fails, `/readyz` fails and OPTIONS probes get `503`, so that a SIP
/// load balancer sends calls elsewhere (a call that still arrives is answered and told the
/// service is unavailable). Changes are logged once each way.
async fn watch_store(services: Services) {
    let mut every = tokio::time::interval(STORE_PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let probe = tokio::time::timeout(
            STORE_PROBE_TIMEOUT,
            services.store.health_check(chrono::Utc::now()),
        )
        .await;
        let problem = match probe {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer within 3 s".to_owned()),
        };
        let before = services.readiness.store_problem();
        match (&before, &problem) {
            (None, Some(p)) => tracing::error!(
                problem = %p,
                "store unusable: not ready, OPTIONS probes get 503 until it recovers"
            ),
            (Some(_), None) => tracing::info!("store usable again: accepting calls"),
            _ => {}
        }
        services.readiness.set_store_problem(problem);
    }
}

/// How often the overload state is judged for the gauge and the log, between INVITEs.
const OVERLOAD_WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Keeps `dialin_overloaded` current and logs when the node enters or leaves overload.
async fn watch_overload(services: Services) {
    let mut every = tokio::time::interval(OVERLOAD_WATCH_EVERY);
    // After a stall, one late wake-up (measured below) rather than a burst of them.
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was = false;
    loop {
        let due = every.tick().await.into_std();
        let now = std::time::Instant::now();
        let calls = services.calls.len();
        // This task itself is a probe: woken far past its time, the runtime was starved.
        services
            .overload
            .record_stall(now.saturating_duration_since(due), calls);
        let is = services.overload.check(now, calls);
        let load = services.overload.load(now);
        tracing::trace!(
            ticks = load.ticks,
            late = load.late,
            overloaded = is,
            "media tick load"
        );
        if is != was {
            if is {
                tracing::warn!(
                    ticks = load.ticks,
                    late = load.late,
                    calls = services.calls.len(),
                    "overloaded: media ticks running late; refusing new calls with 503"
                );
            } else {
                tracing::info!(
                    ticks = load.ticks,
                    late = load.late,
                    "overload cleared: accepting new calls"
                );
            }
            services.metrics.set_overloaded(is);
            was = is;
        }
    }
}

/// Binds the SIP transports and starts the endpoint and the gateway's SIP front.
async fn start_sip(
    config: &Config,
    services: &Services,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<dialin_sip::endpoint::EndpointHandle> {
    use dialin_sip::endpoint::{EndpointConfig, EndpointDriver};
    use dialin_sip::transport::{ListenAddr, Transport, TransportConfig, Transports, TrustedSources};

    let listen: Vec<ListenAddr> = config
        .sip
        .listen
        .iter()
        .map(|l| ListenAddr {
            transport: match l.transport {
                crate::config::Transport::Udp => Transport::Udp,
                crate::config::Transport::Tcp => Transport::Tcp,
                crate::config::Transport::Tls => Transport::Tls,
            },
            addr: l.addr,
        })
        .collect();
    // Connections get what the open-file limit leaves once calls have their descriptors.
    let nofile = crate::ops::fd::raise_open_file_limit();
    let max_connections = match nofile {
        Some(limit) => {
            let budget = crate::ops::fd::connection_budget(
                limit,
                u64::from(config.limits.max_calls),
                config.sip.max_connections,
            );
            if budget < crate::ops::fd::MIN_CONNECTIONS {
                tracing::warn!(
                    open_file_limit = limit,
                    max_calls = config.limits.max_calls,
                    connections = budget,
                    "the open-file limit leaves few SIP connections once calls have their \
                     descriptors; raise LimitNOFILE (ulimit -n) or lower limits.max_calls"
                );
            }
            tracing::info!(open_file_limit = limit, sip_connections = budget, "descriptor budget");
            budget.max(1)
        }
        None => config.sip.max_connections,
    };
    let trunks = Arc::clone(&services.trunks);
    let mut tconf = TransportConfig {
        listen: listen.clone(),
        trusted: Some(TrustedSources::new(move |ip| {
            trunks.load().is_trunk_address(ip)
        })),
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        max_connections_per_source: usize::try_from(config.sip.max_connections_per_source)
            .unwrap_or(usize::MAX),
        max_untrusted_connections: usize::try_from(config.sip.max_untrusted_connections)
            .unwrap_or(usize::MAX),
        message_timeout: std::time::Duration::from_secs(config.sip.message_timeout_s),
        tcp_idle_timeout: std::time::Duration::from_secs(config.sip.idle_timeout_s),
        observer: Some(services.metrics.observer()),
        ..TransportConfig::default()
    };
    tconf.tls_cert_pem = config.sip.tls.cert.clone();
    tconf.tls_key_pem = config.sip.tls.key.clone();
    tconf.limits.max_message_size = config.sip.max_message_size;
    let (transports, incoming) = Transports::bind(tconf)
        .await
        .context("binding the SIP listen addresses")?;
    services.metrics.watch_transports(transports.clone());
    for l in transports.local_addrs() {
        tracing::info!(transport = l.transport.via_token(), addr = %l.addr, "SIP listening");
    }
    let econf = EndpointConfig {
        public_address: config.sip.public_address,
        user_agent: config.sip.user_agent.clone(),
        max_calls: (config.limits.max_calls as usize).saturating_mul(2).max(16),
        source_filter: Some(crate::ingress::gateway::source_filter(services)),
        ..EndpointConfig::default()
    };
    let (handle, events) = EndpointDriver::spawn(transports, incoming, econf);

    let ports = dialin_media::ports::PortAllocator::new(
        config.media.rtp_ports.first..=config.media.rtp_ports.last,
    )
    .map_err(|e| anyhow::anyhow!("media.rtp_ports: {e}"))?;
    services.metrics.watch_ports(ports.clone());
    let listen_addrs: Vec<std::net::SocketAddr> = listen.iter().map(|l| l.addr).collect();
    let media_bind = crate::ingress::gateway::MediaBind::from_listen(&listen_addrs);
    let rooms: Arc<dyn crate::room::RoomBackend> = match config.rooms.backend {
        crate::config::RoomsBackend::Local => Arc::new(crate::room::local::LocalRooms::new()),
        crate::config::RoomsBackend::Livekit => Arc::new(
            crate::room::livekit::LiveKitRooms::new(&config.livekit)
                .map_err(|e| anyhow::anyhow!("livekit: {e}"))?
                .with_trunk_overrides(Arc::clone(&services.trunks))
                .with_metrics(Arc::clone(&services.metrics)),
        ),
    };
    let prompts =
        crate::ingress::gateway::Prompts::load(config.prompts.dir.as_deref()).context("loading prompts")?;
    let gw = crate::ingress::gateway::Gateway {
        config: Arc::new(config.clone()),
        services: services.clone(),
        sip: handle.clone(),
        ports,
        rooms,
        prompts,
        media_bind,
        shutdown,
    };
    tokio::spawn(crate::ingress::gateway::run(gw, events));
    Ok(handle)
}

/// Lets calls in progress go on until they end or `limits.drain_timeout_s` passes, then
/// ends the rest with a goodbye prompt.
async fn drain(services: &Services, config: &Config, shutdown: &watch::Sender<bool>) {
    let deadline = tokio::time::Instant::now() + config.limits.drain_timeout();
    while !services.calls.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    if !services.calls.is_empty() {
        tracing::info!(
            calls = services.calls.len(),
            "drain timeout: ending the remaining calls"
        );
        let _ = shutdown.send(true);
        let end = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !services.calls.is_empty() && tokio::time::Instant::now() < end {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The process's signals, installed before anything listens: a SIGHUP or SIGTERM that
/// arrives while the store opens or the transports bind must be handled, not kill the
/// process with the default action.
#[cfg(unix)]
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals)
    }
}

/// Reloads the configuration on SIGHUP; returns on SIGTERM or Ctrl-C.
#[cfg(unix)]
async fn wait_for_signals(
    signals: &mut Signals,
    services: &Services,
    config_path: &std::path::Path,
    mut current: Config,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = signals.hup.recv() => {
                if let Some(next) = reload(services, config_path, &current) {
                    current = next;
                }
            }
            _ = signals.term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(
    _signals: &mut Signals,
    _services: &Services,
    _config_path: &std::path::Path,
    _current: Config,
) -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}

/// Re-reads the configuration and applies what can change live: the trunks (calls in
/// progress keep the trunk they matched) and the admin token. Sections that changed but need
/// a restart are named in the log and keep their running values. A bad file is logged and
/// everything in force is kept. Returns the configuration now in force when it was applied.
pub fn reload(services: &Services, config_path: &std::path::Path, current: &Config) -> Option<Config> {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; keeping the configuration in force");
            return None;
        }
    };
    let n = config.trunks.len();
    if config.trunk_source.source == TrunkSource::Config {
        services.trunks.replace(TrunkTable::new(config.trunks.clone()));
    }
    let token_changed = config.admin.token() != current.admin.token();
    if token_changed {
        *services
            .admin_token
            .write()
            .unwrap_or_else(|e| e.into_inner()) = AdminToken::new(config.admin.token());
    }
    tracing::info!(trunks = n, admin_token_changed = token_changed, "configuration reloaded: trunks reloaded, admin token applied");
    let restart = restart_needed(current, &config);
    if !restart.is_empty() {
        tracing::warn!(
            sections = %restart.join(", "),
            "configuration reload: these sections changed but need a restart to apply; they keep their running values"
        );
    }
    // What needs a restart keeps its running value, so the next comparison is against it.
    let mut applied = current.clone();
    applied.trunks = config.trunks;
    applied.admin.token = config.admin.token;
    Some(applied)
}

/// The sections of `next` that differ from `current` and are only read at start.
/// Secrets compare by value.
fn restart_needed(current: &Config, next: &Config) -> Vec<&'static str> {
    fn differs<T: serde::Serialize>(a: &T, b: &T) -> bool {
        serde_json::to_value(a).ok() != serde_json::to_value(b).ok()
    }
    let mut out = Vec::new();
    let sections: [(&'static str, bool); 14] = [
        ("pins", differs(&current.pins, &next.pins)),
        ("trunks", differs(&current.trunk_source, &next.trunk_source)),
        (
            "trunk (LiveKit trunks' settings)",
            current.trunk_source.source == TrunkSource::Livekit
                && differs(&current.trunks, &next.trunks),
        ),
        ("sip", differs(&current.sip, &next.sip)),
        ("media", differs(&current.media, &next.media)),
        ("ivr", differs(&current.ivr, &next.ivr)),
        ("store", differs(&current.store, &next.store)),
        ("rooms", differs(&current.rooms, &next.rooms)),
        (
            "livekit",
            differs(&current.livekit, &next.livekit)
                || current.livekit.api_secret.as_ref().map(|s| s.expose())
                    != next.livekit.api_secret.as_ref().map(|s| s.expose()),
        ),
        ("admin.listen", current.admin.listen != next.admin.listen),
        (
            "security",
            differs(&current.security, &next.security)
                || current.security.secret.as_ref().map(|s| s.expose())
                    != next.security.secret.as_ref().map(|s| s.expose()),
        ),
        ("limits", differs(&current.limits, &next.limits)),
        ("prompts", differs(&current.prompts, &next.prompts)),
        ("log", differs(&current.log, &next.log)),
    ];
    for (name, changed) in sections {
        if changed {
            out.push(name);
        }
    }
    out
}
