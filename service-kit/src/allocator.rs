//! The system allocator's one setting that this project changes: how many arenas glibc's malloc
//! keeps.

/// Caps glibc's malloc at one arena per core and one more, unless the environment already sets it
/// (`MALLOC_ARENA_MAX`, or `arena_max` in `GLIBC_TUNABLES`). It must run before any thread
/// starts, as a thread takes its arena at its first allocation: [`crate::binary::start`] calls it
/// before it builds the runtime.
///
/// glibc gives each new thread an arena of its own, up to eight per core, and every arena keeps
/// the high-water mark of what its thread once had in use. sqlx runs each SQLite connection on
/// a thread of its own, so the one-process binary on SQLite held an arena per pooled connection,
/// and its peak RSS under load came to about twice its live heap (BENCHMARKS.md, "Memory on
/// SQLite: malloc's arenas and SQLite's heap"). The main thread, which only waits in
/// `block_on`, takes the first arena and then hardly allocates; the one more leaves about one
/// per core to the threads that run.
/// Capped at the core count alone, threads waited for each other's arena locks: on SQLite that
/// cost about a tenth of the created deliveries per second at concurrency 64, which the one more
/// gave back for a peak 1.05× as high (same section).
///
/// Elsewhere (musl, macOS) it does nothing.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if environment_sets_arenas(std::env::var_os("MALLOC_ARENA_MAX").is_some(), &tunables) {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let arenas = libc::c_int::try_from(cores + 1).unwrap_or(libc::c_int::MAX);
        #[allow(unsafe_code, reason = "mallopt is C; this is the workspace's one unsafe call")]
        // SAFETY: mallopt takes two integers and changes the allocator's own settings only;
        // M_ARENA_MAX bounds the arenas created from then on and frees nothing.
        let _accepted = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
    }
}

/// Whether the operator chose the arena count: glibc reads both variables itself at start.
/// `GLIBC_TUNABLES` is a colon-separated list of `name=value`.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn environment_sets_arenas(malloc_arena_max_set: bool, glibc_tunables: &str) -> bool {
    malloc_arena_max_set
        || glibc_tunables
            .split(':')
            .any(|tunable| tunable.split('=').next() == Some("glibc.malloc.arena_max"))
}

#[cfg(test)]
mod tests {
    use super::environment_sets_arenas;

    #[test]
    fn an_arena_count_in_the_environment_is_left_alone() {
        let cases = [
            (false, "", false),
            (true, "", true),
            (false, "glibc.malloc.arena_max=4", true),
            (
                false,
                "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1",
                true,
            ),
            (false, "glibc.malloc.arena_test=2", false),
            (false, "glibc.malloc.trim_threshold=131072", false),
        ];
        for (variable_set, tunables, expected) in cases {
            assert_eq!(
                environment_sets_arenas(variable_set, tunables),
                expected,
                "MALLOC_ARENA_MAX set: {variable_set}, GLIBC_TUNABLES={tunables:?}"
            );
        }
    }
}
