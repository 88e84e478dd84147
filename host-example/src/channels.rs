//! One adapter per enabled channel, with fault isolation: a channel whose adapter
//! fails (panics, or cannot be created) is down for a while, then gets a fresh
//! adapter; the delay grows while the failures go on (a circuit breaker, see
//! [`Backoff`]). The other channels go on meanwhile. A reload may give a channel a
//! new plugin or new settings: its next adapter is built from those
//! ([`Channel::replace`]).

mod backoff;

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak},
    time::{Duration, Instant},
};

use adapter_api::{Adapter, AdapterError, ErrorKind, LoadedPlugin, PluginInfo};

use self::backoff::Backoff;
use crate::{host_services, metrics::ChannelMetrics};

/// An enabled channel: its name, the plugin behind it, and its adapter.
pub struct Channel {
    /// The channel name (the URL segment).
    pub name: String,
    /// The channel's metrics.
    pub metrics: ChannelMetrics,
    state: RwLock<State>,
    /// This channel, for the thread that builds its next adapter.
    this: Weak<Channel>,
}

struct State {
    health: Health,
    backoff: Backoff,
    setup: Setup,
    /// Whether a thread is building the next adapter.
    rebuilding: bool,
}

/// What the channel's adapters are built from.
struct Setup {
    library: LoadedPlugin,
    /// The settings JSON (holds secrets: never logged).
    settings_json: String,
    /// Counts replacements: an adapter built from an older setup is not used.
    version: u64,
}

enum Health {
    Up {
        adapter: Arc<Adapter>,
        since: Instant,
    },
    Down(Outage),
}

/// Why a channel is down, and when a fresh adapter is tried.
#[derive(Clone, Debug)]
pub struct Outage {
    /// What failed, in words fit for `/healthz`: no panic text, no setting.
    pub reason: String,
    /// When the next adapter is built (in the past while that build runs).
    pub retry_at: Instant,
}

impl Channel {
    /// Creates the channel with its first adapter (`built`: the constructor's
    /// outcome); if that failed, the channel starts down and the adapter is tried
    /// again later.
    pub(crate) fn open(
        name: &str,
        library: &LoadedPlugin,
        settings_json: String,
        metrics: ChannelMetrics,
        built: Result<Adapter, AdapterError>,
    ) -> Arc<Self> {
        let channel = Arc::new_cyclic(|this| Self {
            name: name.to_owned(),
            metrics,
            state: RwLock::new(State {
                // Until the first build's outcome is in, a moment from now.
                health: Health::Down(Outage {
                    reason: "the adapter is being created".to_owned(),
                    retry_at: Instant::now(),
                }),
                backoff: Backoff::default(),
                setup: Setup {
                    library: library.clone(),
                    settings_json,
                    version: 0,
                },
                rebuilding: false,
            }),
            this: this.clone(),
        });
        if channel.built(0, built, false) == Built::Down {
            channel.rebuild_later();
        }
        channel
    }

    /// What the plugin behind the channel said about itself.
    pub fn plugin(&self) -> PluginInfo {
        self.read().setup.library.info.clone()
    }

    /// Whether the channel's adapters are built by `library` from `settings_json`.
    pub fn built_from(&self, library: &LoadedPlugin, settings_json: &str) -> bool {
        let state = self.read();
        state.setup.library.path == library.path && state.setup.settings_json == settings_json
    }

    /// Builds the channel's adapters by `library` from `settings_json` from now on,
    /// starting with `built` (the constructor's outcome): the next sends use it,
    /// while sends under way finish on the adapter they started with (it stops when
    /// the last of them is done). A failed build takes the channel down, with the
    /// breaker's delays starting afresh.
    pub fn replace(
        &self,
        library: &LoadedPlugin,
        settings_json: String,
        built: Result<Adapter, AdapterError>,
    ) {
        let version = {
            let mut state = self.write();
            state.setup = Setup {
                library: library.clone(),
                settings_json,
                version: state.setup.version + 1,
            };
            state.backoff = Backoff::default();
            state.setup.version
        };
        if self.built(version, built, false) == Built::Down {
            self.rebuild_later();
        }
    }

    /// The adapter, or `None` while the channel is down.
    pub fn adapter(&self) -> Option<Arc<Adapter>> {
        match &self.read().health {
            Health::Up { adapter, .. } => Some(Arc::clone(adapter)),
            Health::Down(_) => None,
        }
    }

    /// Why the channel is down and until when, or `None` while it is up.
    pub fn outage(&self) -> Option<Outage> {
        match &self.read().health {
            Health::Up { .. } => None,
            Health::Down(outage) => Some(outage.clone()),
        }
    }

    /// Why the channel is down (fit for `/healthz`), if it is.
    pub fn failure(&self) -> Option<String> {
        self.outage().map(|outage| outage.reason)
    }

    /// `None` while the channel is up; while it is down, when a fresh adapter is
    /// tried (in the past while that build runs).
    pub fn retry_at(&self) -> Option<Instant> {
        self.outage().map(|outage| outage.retry_at)
    }

    /// `adapter` failed (`what`: a fixed phrase such as "send panicked", shown on
    /// `/healthz`): counts the failure and takes the channel down until a fresh
    /// adapter is built, after the breaker's delay. Nothing more if the channel
    /// has moved on from `adapter` already.
    pub fn plugin_failed(&self, adapter: &Arc<Adapter>, what: &str) {
        self.metrics.plugin_failures.inc();
        let mut state = self.write();
        let up_for = match &state.health {
            Health::Up {
                adapter: current,
                since,
            } if Arc::ptr_eq(current, adapter) => since.elapsed(),
            _ => return,
        };
        let delay = state.go_down(Some(up_for), format!("the adapter failed: {what}"));
        drop(state);
        tracing::warn!(
            channel = self.name,
            "adapter failed ({what}); channel down, a fresh adapter in {delay:?}"
        );
        // Let the broken adapter finish what it can, off this thread.
        let old = Arc::clone(adapter);
        std::thread::spawn(move || old.shutdown(Duration::from_secs(1)));
        self.rebuild_later();
    }

    /// Puts an adapter built from setup `version` in place (`restart`: by the
    /// breaker, in place of a failed one), or takes the channel down for the next
    /// delay. Starts no rebuild. An adapter built from a setup replaced meanwhile is
    /// dropped unused, and so is the breaker's build when a replacement has put the
    /// channel up meanwhile: it never takes down a channel that is up.
    fn built(&self, version: u64, built: Result<Adapter, AdapterError>, restart: bool) -> Built {
        let mut state = self.write();
        let up = matches!(state.health, Health::Up { .. });
        if state.setup.version != version || (restart && up) {
            return Built::Stale;
        }
        let plugin = state.setup.library.info.id.clone();
        match built {
            Ok(adapter) => {
                // The adapter it replaces (if any) lives on in the sends under way
                // that hold it, and stops when the last of them is done.
                state.health = Health::Up {
                    adapter: Arc::new(adapter),
                    since: Instant::now(),
                };
                if restart {
                    self.metrics.adapter_restarts.inc();
                    tracing::info!(channel = self.name, "fresh adapter built; channel up");
                }
                Built::Up
            }
            Err(err) => {
                self.metrics.plugin_failures.inc();
                let reason = format!(
                    "the {plugin} plugin could not create the adapter ({})",
                    err.kind
                );
                let delay = state.go_down(None, reason);
                drop(state);
                tracing::error!(
                    channel = self.name,
                    "the {plugin} plugin could not create the adapter: {err}; next try in {delay:?}"
                );
                Built::Down
            }
        }
    }

    /// Builds a fresh adapter on a thread of its own (the plugin's constructor may
    /// block) once the channel's retry time has come, again after each failed build,
    /// until one is up. One such thread runs while the channel is down.
    fn rebuild_later(&self) {
        {
            let mut state = self.write();
            if state.rebuilding {
                return;
            }
            state.rebuilding = true;
        }
        let this = Weak::clone(&self.this);
        let spawned = std::thread::Builder::new()
            .name(format!("rebuild-{}", self.name))
            .spawn(move || loop {
                let Some(retry_at) = this.upgrade().and_then(|c| c.next_build()) else {
                    return;
                };
                std::thread::sleep(retry_at.saturating_duration_since(Instant::now()));
                let Some(channel) = this.upgrade() else {
                    return;
                };
                let (library, settings_json, version) = {
                    let state = channel.read();
                    let setup = &state.setup;
                    (
                        setup.library.clone(),
                        setup.settings_json.clone(),
                        setup.version,
                    )
                };
                let built = new_adapter(&library, &channel.name, &settings_json);
                // Down again: the loop waits for the next retry time; up, or built
                // from a replaced setup: the loop finds out whether to go on.
                channel.built(version, built, true);
            });
        if let Err(err) = spawned {
            self.write().rebuilding = false;
            tracing::error!(
                channel = self.name,
                "cannot start the thread that rebuilds the adapter: {err}"
            );
        }
    }

    /// When the rebuilding thread builds next; `None`, and the thread is done,
    /// once the channel is up.
    fn next_build(&self) -> Option<Instant> {
        let mut state = self.write();
        match &state.health {
            Health::Down(outage) => Some(outage.retry_at),
            Health::Up { .. } => {
                state.rebuilding = false;
                None
            }
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// What became of a built adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Built {
    /// It is the channel's adapter now.
    Up,
    /// It could not be built: the channel is down until the next try.
    Down,
    /// Built from a setup replaced meanwhile: dropped.
    Stale,
}

impl State {
    /// Takes the channel down after a failure (`up_for`: how long the failed adapter
    /// was up; `None`: the build failed); returns the delay before the next build.
    fn go_down(&mut self, up_for: Option<Duration>, reason: String) -> Duration {
        let delay = self.backoff.failed(up_for);
        self.health = Health::Down(Outage {
            reason,
            retry_at: Instant::now() + delay,
        });
        delay
    }
}

/// Asks `library` for channel `name`'s adapter; a panic on the host's side of the
/// call is an error too.
pub(crate) fn new_adapter(
    library: &LoadedPlugin,
    name: &str,
    settings_json: &str,
) -> Result<Adapter, AdapterError> {
    catch_unwind(AssertUnwindSafe(|| {
        library.new_adapter(settings_json, host_services::for_channel(name))
    }))
    .unwrap_or_else(|_| {
        Err(AdapterError::new(
            ErrorKind::PANICKED,
            "panicked while creating the adapter",
        ))
    })
    .map(Adapter::new)
}
