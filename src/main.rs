//! The `lifeboat` binary: everything happens in the library; see `lifeboat::cli`.

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    lifeboat::cli::main()
}

/// glibc gives threads that allocate at once arenas of their own, up to eight per core, and each
/// arena keeps what was freed in it for reuse. lifeboat's workers pass megabyte buffers between
/// many short-lived blocking threads, so a restore's resident memory grew to about twice its live
/// heap; two arenas keep it close (measured on a chain restore: 85-91 MiB with glibc's default,
/// 70-79 MiB with two, no slower). Set before the first thread starts; `MALLOC_ARENA_MAX` in the
/// environment still decides when it is set.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator settings; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
