//! The system allocator's one setting that this project changes: how many arenas glibc's malloc
//! keeps.

/// Caps glibc's malloc at one arena per core, unless the environment already sets it
/// (`MALLOC_ARENA_MAX`, or `arena_max` in `GLIBC_TUNABLES`). Call it first thing in `main`,
/// before any thread starts: a thread takes its arena at its first allocation.
///
/// glibc gives each new thread an arena of its own, up to eight per core, and every arena keeps
/// the high-water mark of what its thread once had in use. sqlx runs each SQLite connection on
/// a thread of its own, so the one-process binary on SQLite held an arena per pooled connection,
/// and its peak RSS under load came to about twice its live heap (BENCHMARKS.md, "Memory on
/// SQLite: malloc's arenas and SQLite's heap"). Threads that run at the same time are at most one
/// per core, so that many arenas keep them from contending.
///
/// Elsewhere (musl, macOS) it does nothing.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() || tunables.contains("arena_max") {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        #[allow(unsafe_code, reason = "mallopt is C; this is the workspace's one unsafe call")]
        // SAFETY: mallopt takes two integers and changes the allocator's own settings only;
        // M_ARENA_MAX bounds the arenas created from then on and frees nothing.
        let _accepted = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
    }
}
