//! Process settings for a host that faces the internet. Unix only; elsewhere these
//! do nothing.

/// Descriptors the host needs besides its listeners' connections: the admin
/// listener's, the plugins' connections to the channels' APIs, the queue's files,
/// the libraries.
const OTHER_FILES: u64 = 1024;

/// Makes every file the process creates from now on readable and writable by its
/// user only (umask 077): the queue, its WAL, journal and lock files hold users'
/// messages and reply tokens.
pub fn private_files() {
    #[cfg(unix)]
    umask_077();
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn umask_077() {
    // SAFETY: umask only sets the process's file mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Raises the soft limit on open files so that `connections` fit beside the host's
/// other files, up to the hard limit; logs what it did, or why it could not.
pub fn fit_open_files(connections: usize) {
    #[cfg(unix)]
    {
        let needed = (connections as u64).saturating_add(OTHER_FILES);
        match raise_open_files(needed) {
            Ok(Raised::Already(soft)) => {
                tracing::debug!(
                    soft,
                    needed,
                    "the open-file limit fits server.max_connections"
                );
            }
            Ok(Raised::To { from, to }) if to >= needed => {
                tracing::info!(
                    "open-file limit raised from {from} to {to} to fit server.max_connections"
                );
            }
            Ok(Raised::To { from, to }) => tracing::warn!(
                "the open-file limit is {to} (raised from {from}, the hard limit), below the \
                 {needed} that server.max_connections = {connections} needs: past it, new \
                 connections wait until others close; raise the hard limit (LimitNOFILE= in \
                 systemd, ulimit -Hn) or lower max_connections"
            ),
            Err(err) => tracing::warn!(
                "cannot raise the open-file limit to {needed} for server.max_connections = \
                 {connections}: {err}"
            ),
        }
    }
    #[cfg(not(unix))]
    let _ = connections;
}

#[cfg(unix)]
enum Raised {
    Already(u64),
    To { from: u64, to: u64 },
}

#[cfg(unix)]
#[allow(unsafe_code)]
// `rlim_t` is u64 on Linux, not on every Unix.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn raise_open_files(needed: u64) -> std::io::Result<Raised> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (soft, hard) = (u64::from(limit.rlim_cur), u64::from(limit.rlim_max));
    if limit.rlim_cur == libc::RLIM_INFINITY || soft >= needed {
        return Ok(Raised::Already(soft));
    }
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        needed
    } else {
        needed.min(hard)
    };
    if target <= soft {
        return Ok(Raised::To {
            from: soft,
            to: soft,
        });
    }
    limit.rlim_cur = libc::rlim_t::try_from(target).unwrap_or(limit.rlim_max);
    // SAFETY: `limit` is a valid rlimit; only the soft limit changes, within the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Raised::To {
        from: soft,
        to: target,
    })
}

/// Marks the calling thread as background work: on Linux, the `SCHED_BATCH` policy
/// (the same share of the CPU, but its wake-ups do not preempt a running thread); a
/// no-op elsewhere. The store's writer and checkpointer run this way so that a commit
/// to write does not take the core from a thread answering a request.
pub fn run_as_background_thread() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` reads `param` only during the call; pid 0 names
        // the calling thread.
        #[allow(unsafe_code)]
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Returns the allocator's free memory to the system, which it would otherwise keep
/// for reuse (glibc: `malloc_trim`); for a thread that has just freed a cache and will
/// stay idle a while. Says whether any memory went back; always `false` elsewhere.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` only walks the allocator's own free lists, under its lock.
        #[allow(unsafe_code)]
        let released = unsafe { libc::malloc_trim(0) };
        released == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn a_background_thread_runs_under_the_batch_policy() {
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

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_heap_blocks_are_given_back_to_the_system() {
        // 64 MiB in 4 KiB blocks (on the heap, below glibc's mmap threshold), one in
        // 64 kept so that the heap cannot simply shrink from its top: only a trim
        // gives the pages between them back.
        let mut blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 4096]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
        drop(blocks);
        assert!(super::release_free_memory());
        drop(kept);
    }
}
