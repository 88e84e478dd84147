//! The example DmFlow host: loads channel plugins, serves their webhooks, runs a
//! small deterministic bot and sends its replies back through the plugins.
//!
//! `main.rs` is only the command line; everything here is usable from tests.

pub mod bot;
pub mod channels;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod host_services;
pub mod sandbox;
pub mod server;

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{config::Config, dispatch::Dispatcher, server::AppState};

/// A host whose channels are up and whose port is bound, not yet serving.
pub struct Server {
    config: Config,
    state: Arc<AppState>,
    listener: TcpListener,
    addr: SocketAddr,
}

impl Server {
    /// Loads the plugins, creates the enabled channels' adapters and binds the port.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let channels = channels::start(&config)?;
        let dispatcher = Dispatcher::start(
            config.server.workers,
            config.server.queue_capacity,
            config.bot.clone(),
            config.send_timeout(),
        );
        let state = Arc::new(AppState {
            channels: channels.by_name,
            plugins: channels.plugins,
            dispatcher,
            max_body_bytes: config.server.max_body_bytes,
        });
        let listen = config.server.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("server.listen: cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        Ok(Self {
            config,
            state,
            listener,
            addr,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then drains: stops accepting webhooks, lets
    /// queued events and in-flight sends finish (up to `server.shutdown_grace_ms`),
    /// and shuts the adapters down.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            state,
            listener,
            addr,
        } = self;
        let channels: Vec<_> = state.channels.values().cloned().collect();
        tracing::info!(%addr, channels = channels.len(), "serving webhooks");
        axum::serve(listener, server::app(Arc::clone(&state)))
            .with_graceful_shutdown(shutdown)
            .await
            .context("HTTP server failed")?;

        let grace = Duration::from_millis(config.server.shutdown_grace_ms);
        let started = Instant::now();
        tracing::info!("shutting down: draining queued events");
        let state = wait_for_sole_owner(state).await;
        if !state.dispatcher.drain(grace).await {
            tracing::warn!("shutdown grace period over with events still queued");
        }
        for channel in channels {
            let left = grace.saturating_sub(started.elapsed());
            tokio::task::spawn_blocking(move || channel.adapter.shutdown(left))
                .await
                .ok();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// `serve`: binds, prints `listening on http://ADDR` on stdout, and runs until
/// SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::bind(config).await?;
    println!("listening on http://{}", server.addr());
    server.run(shutdown_signal()).await
}

/// Request handlers that are still finishing hold the state; wait for them briefly.
async fn wait_for_sole_owner(mut state: Arc<AppState>) -> AppState {
    loop {
        match Arc::try_unwrap(state) {
            Ok(state) => return state,
            Err(shared) => {
                state = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
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
