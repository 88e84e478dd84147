//! The plugin's own tokio runtime, with in-flight accounting for shutdown.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use adapter_api::{AdapterError, ErrorKind};
use tokio::runtime::{Handle, Runtime};

use crate::Completion;

/// Runs a plugin's asynchronous work and reports each outcome through its
/// [`Completion`].
pub struct Executor {
    runtime: Mutex<Option<Runtime>>,
    handle: Handle,
    in_flight: Arc<AtomicUsize>,
    closed: AtomicBool,
}

impl Executor {
    /// A multi-threaded runtime with `workers` threads named `name`.
    pub fn new(name: &str, workers: usize) -> Result<Self, AdapterError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name(name)
            .on_thread_start(|| {
                // Best effort: a thread that stays a normal one still works.
                let _ = crate::background::run_as_background_thread();
            })
            .enable_all()
            .build()
            .map_err(|e| {
                AdapterError::new(
                    ErrorKind::INVALID_SETTINGS,
                    format!("cannot start a runtime: {e}"),
                )
            })?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
        })
    }

    /// Whether [`Executor::shutdown`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Work started and not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Runs `work` and reports its result through `done`; a panic in `work` is reported
    /// as `PANICKED`, work refused after shutdown as `SHUT_DOWN`, and work cut off
    /// by the shutdown as `TIMEOUT` (it may have taken effect).
    pub fn run<T, F>(&self, done: Completion<T>, work: F)
    where
        T: Send + 'static,
        F: Future<Output = Result<T, AdapterError>> + Send + 'static,
    {
        if self.is_closed() {
            return done.finish(Err(AdapterError::new(
                ErrorKind::SHUT_DOWN,
                "the adapter is shutting down",
            )));
        }
        let guard = InFlight::enter(&self.in_flight);
        let task = self.handle.spawn(work);
        self.handle.spawn(async move {
            let _guard = guard;
            let result = match task.await {
                Ok(result) => result,
                Err(join) if join.is_panic() => Err(AdapterError::new(
                    ErrorKind::PANICKED,
                    format!("the adapter panicked: {}", panic_text(join.into_panic())),
                )),
                Err(_) => Err(AdapterError::new(
                    ErrorKind::TIMEOUT,
                    "the adapter stopped with the work under way; it may have taken effect",
                )),
            };
            done.finish(result);
        });
    }

    /// Stops taking work, waits up to `deadline` for work in flight, then stops the
    /// runtime; unfinished work completes with `TIMEOUT` (it may have taken effect). Blocks; returns how many
    /// were still in flight at the deadline.
    pub fn shutdown(&self, deadline: Duration) -> usize {
        self.closed.store(true, Ordering::Release);
        let end = Instant::now() + deadline;
        while self.in_flight() > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let left = self.in_flight();
        let runtime = match self.runtime.lock() {
            Ok(mut runtime) => runtime.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(runtime) = runtime {
            runtime.shutdown_timeout(Duration::from_millis(200));
        }
        left
    }
}

impl Drop for Executor {
    /// The host may drop an adapter on one of its async threads, where blocking on
    /// the runtime's shutdown would panic (and a panic here would abort the host):
    /// stop it in the background instead. `shutdown` is the orderly way.
    fn drop(&mut self) {
        let runtime = match self.runtime.get_mut() {
            Ok(runtime) => runtime.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Counts work in flight.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
