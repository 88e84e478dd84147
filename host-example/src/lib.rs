//! The example DmFlow host: loads channel plugins, serves their webhooks, runs a
//! small deterministic bot and sends its replies back through the plugins.
//!
//! `main.rs` is only the command line; everything here is usable from tests.

pub mod admin;
pub mod bot;
pub mod channels;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod host_services;
pub mod listen;
pub mod metrics;
pub mod os;
pub mod pg_cluster;
pub mod roster;
pub mod server;
pub mod state;
pub mod store;

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    config::Config,
    dispatch::Dispatcher,
    listen::{Door, Timeouts},
    metrics::Metrics,
    roster::Roster,
    state::{AppState, BodyBudget},
    store::{now_ms, MemoryQueue, PostgresQueue, PostgresSettings, Queue, SqliteQueue},
};

/// How long a stopping host waits, once its adapters are shut down, for the outcomes
/// of the sends they cut off to be written to the queue: a safety net, since a cut
/// off send answers at once and its write takes a commit.
const SENDS_RECORDED_WITHIN: Duration = Duration::from_secs(5);

/// Connections open at once on the `[admin]` listener.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A host whose channels are up, whose ports are bound and whose queue is open, not
/// yet serving.
pub struct Server {
    config: Config,
    state: Arc<AppState>,
    store: Arc<dyn Queue>,
    listener: TcpListener,
    addr: SocketAddr,
    admin: Option<(TcpListener, SocketAddr)>,
}

impl Server {
    /// Loads the plugins, creates the enabled channels' adapters, binds the port,
    /// opens the event queue (locking it: one host per queue file), and queues the
    /// events a previous run left pending. A second host started by mistake stops at
    /// the port or the lock, before it has resumed or sent anything.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let metrics = Arc::new(Metrics::default());
        let roster = Roster::start(config.clone(), Arc::clone(&metrics))?;
        let listen = config
            .server
            .listen
            .resolve(&config.file, "server.listen")
            .await?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("{}: server.listen: cannot listen", config.file))?;
        let addr = listener.local_addr()?;
        let admin = match &config.admin.listen {
            None => None,
            Some(listen) => {
                let listen = listen.resolve(&config.file, "admin.listen").await?;
                let listener = TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("{}: admin.listen: cannot listen", config.file))?;
                let addr = listener.local_addr()?;
                Some((listener, addr))
            }
        };
        let store = open_queue(&config).await?;
        let dispatcher = Dispatcher::new(
            dispatch::Settings {
                workers: config.server.workers,
                capacity: config.server.queue_capacity,
                send_timeout: config.send_timeout(),
                retry_for: Duration::from_secs(config.queue.retry_for_secs),
                resend_unknown: config.queue.resend_unknown,
            },
            Arc::clone(&store),
            Arc::new(bot::Bot::new(config.bot.clone())),
            Arc::clone(&metrics),
        );
        let feed = store.feed();
        if feed.is_none() {
            resume_pending(&*store, &dispatcher, &roster).await?;
        }
        let state = Arc::new(AppState {
            roster,
            dispatcher,
            queue_capacity: config.server.queue_capacity,
            queue: Arc::clone(&store),
            max_body_bytes: config.server.max_body_bytes,
            bodies: BodyBudget::new(
                config.server.max_inflight_body_bytes,
                metrics.inflight_body_bytes.clone(),
            ),
            metrics,
            body_timeout: Duration::from_millis(config.server.body_timeout_ms),
        });
        if let Some(feed) = feed {
            // A shared queue hands this host its events as it comes to own them.
            tokio::spawn(take_feed(feed, Arc::clone(&state)));
        }
        Ok(Self {
            config,
            state,
            store,
            listener,
            addr,
            admin,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reloads the config and the plugins folder each time `hangup` (SIGHUP)
    /// arrives, until the host stops.
    #[cfg(unix)]
    pub fn reload_on_hangup(&self, mut hangup: tokio::signal::unix::Signal) {
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading the config");
                // The reload logs its outcome.
                let _ = state.roster.reload().await;
            }
        });
    }

    /// The `[admin]` listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves until `shutdown` completes, then drains, all within
    /// `server.shutdown_grace_ms`: stops accepting connections, closes those with
    /// no request in progress and lets the others be answered, lets queued events
    /// and in-flight sends finish, and shuts the adapters down. Events still unsent
    /// stay in the store.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            state,
            store,
            listener,
            addr,
            admin,
        } = self;
        tracing::info!(
            %addr,
            channels = state.roster.current().channels.len(),
            "serving webhooks"
        );
        let remember = Duration::from_secs(config.queue.remember_secs);
        let pruning = tokio::spawn(prune_forever(Arc::clone(&store), remember));
        let grace = Duration::from_millis(config.server.shutdown_grace_ms);
        let mut doors = vec![Door {
            name: "public",
            listener,
            app: server::app(Arc::clone(&state), admin.is_none()),
            max_connections: config.server.max_connections,
            metrics: state.metrics.connections("public"),
        }];
        if let Some((listener, addr)) = admin {
            tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
            doors.push(Door {
                name: "admin",
                listener,
                app: admin::app(Arc::clone(&state)),
                max_connections: ADMIN_MAX_CONNECTIONS,
                metrics: state.metrics.connections("admin"),
            });
        }
        let timeouts = Timeouts {
            header: Duration::from_millis(config.server.header_timeout_ms),
            idle: Duration::from_millis(config.server.idle_timeout_ms),
        };
        let started = Arc::new(std::sync::OnceLock::new());
        let stopping = {
            let started = Arc::clone(&started);
            async move {
                shutdown.await;
                let _ = started.set(Instant::now());
            }
        };
        listen::serve(doors, timeouts, grace, stopping).await;
        pruning.abort();

        let started = started.get().copied().unwrap_or_else(Instant::now);
        tracing::info!(
            pending = state.dispatcher.depth(),
            "shutting down: draining accepted events"
        );
        if !state
            .dispatcher
            .drain(grace.saturating_sub(started.elapsed()))
            .await
        {
            tracing::warn!(
                pending = state.dispatcher.depth(),
                "events left queued for the next start (grace period over, or waiting for a retry)"
            );
        }
        // The adapters stop first, with what is left of the grace: a send they cut
        // off or refuse has its outcome written down while the queue is still open.
        for channel in state.roster.current().channels.values() {
            let left = grace.saturating_sub(started.elapsed());
            if let Some(adapter) = channel.adapter() {
                tokio::task::spawn_blocking(move || adapter.shutdown(left))
                    .await
                    .ok();
            }
        }
        if !state.dispatcher.sends_recorded(SENDS_RECORDED_WITHIN).await {
            tracing::warn!("sends still under way at the stop: their outcome will be unknown");
        }
        if let Err(err) = store.close().await {
            tracing::warn!("{err}");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Queues what a previous run accepted and did not finish.
async fn resume_pending(
    store: &dyn Queue,
    dispatcher: &Dispatcher,
    roster: &Roster,
) -> anyhow::Result<()> {
    let pending = store.pending().await?;
    if pending.is_empty() {
        return Ok(());
    }
    tracing::info!(
        events = pending.len(),
        "resuming events accepted before the last stop"
    );
    for item in pending {
        match roster.channel(&item.key.channel) {
            Some(channel) => dispatcher.resume(&channel, item),
            None => tracing::warn!(
                channel = item.key.channel,
                event_id = %item.event.event_id,
                "pending event of a channel that is not enabled; left in the queue"
            ),
        }
    }
    Ok(())
}

/// Queues the events a shared queue hands this host.
async fn take_feed(mut feed: tokio::sync::mpsc::Receiver<store::Pending>, state: Arc<AppState>) {
    while let Some(item) = feed.recv().await {
        match state.roster.channel(&item.key.channel) {
            Some(channel) => state.dispatcher.resume(&channel, item),
            None => tracing::warn!(
                channel = item.key.channel,
                event_id = %item.event.event_id,
                "pending event of a channel that is not enabled here; left in the queue"
            ),
        }
    }
}

/// Opens the queue `[queue]` names.
async fn open_queue(config: &Config) -> anyhow::Result<Arc<dyn Queue>> {
    if let Some(url) = &config.queue.url {
        let settings = PostgresSettings {
            url: url.clone(),
            partitions: config.queue.partitions,
            lease: Duration::from_millis(config.queue.lease_ms),
            poll: Duration::from_millis(config.queue.poll_ms),
        };
        let queue = PostgresQueue::open(settings)
            .await
            .map_err(|err| anyhow::anyhow!("{}: queue.url: {err}", config.file))?;
        return Ok(Arc::new(queue));
    }
    if config.queue.in_memory() {
        return Ok(Arc::new(MemoryQueue::new(config.queue.remember_max)));
    }
    // Formatted into a fresh error: a `StoreError` may tell its cause in its message
    // and as its source, and the chain would print it twice. It names the queue's
    // file where that helps (a lock held by another host says what to do).
    SqliteQueue::open(&config.queue.path)
        .map(|queue| Arc::new(queue) as Arc<dyn Queue>)
        .map_err(|err| anyhow::anyhow!("{}: queue.path: {err}", config.file))
}

/// Forgets processed event ids older than `remember` once a minute.
async fn prune_forever(store: Arc<dyn Queue>, remember: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let remember = i64::try_from(remember.as_millis()).unwrap_or(i64::MAX);
        match store.prune(now_ms().saturating_sub(remember)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(forgotten = n, "old event ids pruned"),
            Err(err) => tracing::error!("{err}"),
        }
    }
}

/// `serve`: makes the files it creates private to its user (umask 077), raises the
/// open-file limit to fit `server.max_connections`, binds, prints `admin on
/// http://ADDR` (with an `[admin]` listener) then `listening on http://ADDR` on
/// stdout, reloads its config on SIGHUP, and runs until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    os::private_files();
    os::fit_open_files(config.server.max_connections + ADMIN_MAX_CONNECTIONS);
    // Taken over before anything else: SIGHUP's default action ends the process.
    #[cfg(unix)]
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot take SIGHUP for reloads")?;
    let server = Server::bind(config).await?;
    #[cfg(unix)]
    server.reload_on_hangup(hangup);
    if let Some(admin) = server.admin_addr() {
        println!("admin on http://{admin}");
    }
    println!("listening on http://{}", server.addr());
    server.run(shutdown_signal()).await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
