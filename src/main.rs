//! The `lifeboat` binary: everything happens in the library; see `lifeboat::cli`.

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    lifeboat::cli::main()
}

/// glibc gives threads that allocate at once arenas of their own, up to eight per core, and each
/// arena keeps what was freed in it for reuse. lifeboat's workers pass megabyte buffers between
/// many short-lived blocking threads, so a restore's resident memory grew to about twice its live
/// heap; two arenas keep it closer, no slower (`scripts/bench --only incremental`, pgbench scale
/// 100: a chain restore peaked at 108 MiB before, 69 MiB after; incrementals at 85-96 MiB before,
/// 52-78 MiB after). Set before the first thread starts; `MALLOC_ARENA_MAX` in the environment
/// still decides when it is set.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator settings; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
