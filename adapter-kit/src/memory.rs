//! Memory given back to the system.

/// Returns the allocator's free memory to the system, where it keeps it for reuse
/// otherwise (glibc on Linux: `malloc_trim`); a no-op elsewhere. For a thread that
/// has just freed a cache and will stay idle a while.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` only walks the allocator's own free lists, under its lock.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The RSS in KiB, from `/proc/self/status`.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_small_blocks_go_back_to_the_system() {
        // 128 MiB in 4 KiB blocks (below glibc's mmap threshold: on the heap), one in
        // 64 kept so that the heap cannot simply shrink from its top. Other tests of
        // this crate run meanwhile, but none allocates anywhere near 64 MiB.
        let mut blocks: Vec<Vec<u8>> = (0..32_768).map(|i| vec![i as u8; 4096]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
        drop(blocks);
        let before = rss_kib();
        super::release_free_memory();
        let after = rss_kib();
        assert!(
            after + 64 * 1024 < before,
            "RSS {before} KiB before, {after} KiB after"
        );
        drop(kept);
    }
}
