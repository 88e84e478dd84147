//! Background threads: work that must not take the core from a host thread that is
//! answering a request.

/// Marks the calling thread as background work: on Linux, the `SCHED_BATCH` policy
/// (same share of the CPU, but its wake-ups do not preempt a running thread); a no-op
/// elsewhere. Any thread may ask it for itself; no privilege is needed.
///
/// Why: on one busy core, a thread woken for a little work (a send to make, a
/// commit to write) preempted the host's request thread tens of thousands of times a
/// second, each time for a few microseconds of work. Waiting for the core instead, it
/// finds more work ready at once: fewer switches, larger batches, and a faster,
/// steadier host under load (BENCHMARKS.md has the numbers).
pub(crate) fn run_as_background_thread() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` reads `param` only during the call, and pid 0
        // names the calling thread; it changes nothing else in this process.
        #[allow(unsafe_code)]
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn the_thread_runs_as_batch_work() {
        std::thread::spawn(|| {
            super::run_as_background_thread().unwrap();
            // SAFETY: reads the calling thread's policy.
            #[allow(unsafe_code)]
            let policy = unsafe { libc::sched_getscheduler(0) };
            assert_eq!(policy, libc::SCHED_BATCH);
        })
        .join()
        .unwrap();
    }
}
