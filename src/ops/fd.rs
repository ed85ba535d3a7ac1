//! The process's open-file budget.
//!
//! Every call holds descriptors (its RTP socket; with LiveKit, the signal WebSocket and the
//! peer connections' UDP sockets), and so does every SIP stream connection. Connections are
//! the one part a stranger can multiply, so they get what is left once the calls, the
//! listeners, the admin API and the store have their share: a flood of connections then
//! meets the connection limit, never `EMFILE` on an RTP port or the admin listener.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard one (the shell's default of 1024
//! is far too low for a gateway; the systemd unit raises the hard limit).

/// Descriptors per call at most: the RTP socket, and for a LiveKit room the signal
/// WebSocket, the publisher's and subscriber's UDP sockets and a TURN relay.
pub const PER_CALL: u64 = 5;
/// Descriptors kept for everything that is not a call or a SIP connection: listeners, the
/// admin API's connections, the store's pool, logs, the runtime.
pub const BASE_RESERVE: u64 = 256;
/// Fewer SIP stream connections than this is a configuration to warn about.
pub const MIN_CONNECTIONS: u64 = 64;

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force,
/// or `None` where it cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Some(lim.rlim_cur as u64)
}

/// A write past the file-size limit (`RLIMIT_FSIZE`) raises `SIGXFSZ`, which by default
/// kills the process. Ignored, the write fails with `EFBIG` instead: the store reports it
/// like a full disk (not ready, OPTIONS `503`) and calls in progress go on.
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// How many SIP stream connections fit in `limit` descriptors once `max_calls` calls and the
/// base reserve have theirs, capped at `configured`.
pub fn connection_budget(limit: u64, max_calls: u64, configured: u64) -> u64 {
    let reserved = max_calls.saturating_mul(PER_CALL).saturating_add(BASE_RESERVE);
    limit.saturating_sub(reserved).min(configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_get_what_calls_and_the_reserve_leave() {
        assert_eq!(connection_budget(1024, 100, 4096), 1024 - 500 - 256);
        assert_eq!(connection_budget(1_048_576, 1000, 4096), 4096);
        assert_eq!(connection_budget(1024, 1000, 4096), 0);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let now = raise_open_file_limit().expect("RLIMIT_NOFILE is readable");
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(now, lim.rlim_cur as u64);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
