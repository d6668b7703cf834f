//! This process's identity — a worker id fixed at first use, the host name, the cores it may
//! use — and whether a process is alive: what runs record about who executes them (storage) and what the monitor
//! checks to find runs whose process died.

/// An id for this process, fixed at first use: stored on runs so a later process that happens
/// to get the same pid is never mistaken for the one executing them.
pub fn worker_id() -> &'static str {
    static WORKER_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    WORKER_ID.get_or_init(|| uuid::Uuid::now_v7().to_string())
}

/// The cores this process may use (`available_parallelism`: CPU affinity and cgroup quota), read
/// once — on Linux each call reads the cgroup files, too slow for every step of a run; 1 if
/// unknown.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

/// This machine's host name.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Whether process `pid` is alive on this host. Zombies count as dead. Where `/proc` does not
/// exist the answer is "alive" and the heartbeat timeout decides.
pub fn process_alive(pid: i64) -> bool {
    let proc_root = std::path::Path::new("/proc");
    if !proc_root.exists() {
        return true;
    }
    match std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        // Field 3 (after the parenthesised command name) is the state.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
