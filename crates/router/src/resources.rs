//! The router's share of the machine: how many client connections its file-descriptor limit
//! allows, which I/O errors mean the router itself ran out of something (never a backend's
//! fault), and accepting connections without spinning when it has.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

use crate::metrics::{Exhausted, Metrics};

/// Descriptors kept for the router itself: standard streams, the two listeners, the runtime's
/// epoll and wake-up descriptors, signal handling, config reads and DNS lookups, and a
/// health-check probe per backend while it runs.
pub const PROCESS_RESERVE: u64 = 128;

/// The admin port's own connection budget (`/live`, `/ready`, `/metrics`, `/stats`): enough for
/// the kubelet, a few Prometheus servers and `cohort analyze`, small enough that a flood there
/// leaves the traffic port its descriptors.
pub const ADMIN_CONNECTIONS: usize = 64;

/// The default connection limit however many descriptors there are: past this, memory (about
/// 20 KiB per open connection against the router pod's 256 MiB) is what runs out.
pub const MAX_DEFAULT_CONNECTIONS: usize = 10_000;

/// Descriptors per client connection: its own socket and the connection to a track serving it
/// (a WebSocket tunnel holds both for as long as it is open).
const PER_CONNECTION: u64 = 2;

/// Descriptors `connections` client connections need, with the reserve and the admin budget.
pub fn descriptors_for(connections: usize) -> u64 {
    PROCESS_RESERVE + ADMIN_CONNECTIONS as u64 + PER_CONNECTION.saturating_mul(connections as u64)
}

/// Client connections that fit in `limit` descriptors (`None`: unlimited), at most
/// [`MAX_DEFAULT_CONNECTIONS`]: `(limit - 128 - 64) / 2`.
pub fn connections_within(limit: Option<u64>) -> usize {
    let Some(limit) = limit else {
        return MAX_DEFAULT_CONNECTIONS;
    };
    let room = limit.saturating_sub(PROCESS_RESERVE + ADMIN_CONNECTIONS as u64) / PER_CONNECTION;
    usize::try_from(room).map_or(MAX_DEFAULT_CONNECTIONS, |r| r.min(MAX_DEFAULT_CONNECTIONS))
}

/// The process's file-descriptor limit (`ulimit -n`), after raising it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit in force now (`None`: unlimited).
    pub soft: Option<u64>,
    /// The hard limit, which the soft one cannot pass.
    pub hard: Option<u64>,
}

/// Raises the soft file-descriptor limit towards what `connections` client connections need,
/// up to the hard limit, as HAProxy does (and Go's runtime at start): containers often start
/// with a soft limit of 1024 under a far higher hard one. The router uses epoll, so a high
/// limit costs nothing until descriptors are used.
pub fn raise_fd_limit(connections: usize) -> FdLimit {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let wanted = descriptors_for(connections);
    let target = maximum.map_or(wanted, |hard| hard.min(wanted));
    if current.is_some_and(|soft| soft < target) {
        let raised = Rlimit {
            current: Some(target),
            maximum,
        };
        // Refused (a sandbox that forbids it): the limit stays what it was, and the connection
        // limit is derived from that.
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return FdLimit {
                soft: Some(target),
                hard: maximum,
            };
        }
    }
    FdLimit {
        soft: current,
        hard: maximum,
    }
}

/// Whether an error from creating or accepting a socket means this process is out of a local
/// resource (descriptors, kernel buffers, memory) rather than anything about the peer.
pub fn out_of_resources(e: &io::Error) -> bool {
    Errno::from_io_error(e)
        .is_some_and(|n| [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM].contains(&n))
}

/// Whether a failed outgoing connection is this router's own shortage: [`out_of_resources`].
/// Not `EADDRNOTAVAIL`: besides the rare exhaustion of local ports, Linux answers it for a
/// backend address this pod has no route or source address for (an AAAA record in a pod
/// without global IPv6), and such a backend must be marked down and skipped, not blamed on
/// the router for ever while the track looks healthy.
pub fn connect_failed_locally(e: &io::Error) -> bool {
    out_of_resources(e)
}

/// The pause after an accept error that would come straight back: accepting again at once
/// spins a core while the listen queue stays full (Go's net/http and tokio's examples pause
/// too). 10 ms, doubling to 100 ms while errors go on.
#[derive(Debug)]
pub(crate) struct AcceptPause {
    next: Duration,
    /// Whether the current run of errors has been reported on stderr.
    told: bool,
}

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

impl Default for AcceptPause {
    fn default() -> AcceptPause {
        AcceptPause {
            next: FIRST_PAUSE,
            told: false,
        }
    }
}

impl AcceptPause {
    /// The next connection from `listener`, or `None` after an error (and the pause it calls
    /// for). `port` names the listener in the one line a run of errors prints.
    pub(crate) async fn accept(
        &mut self,
        listener: &TcpListener,
        metrics: &Metrics,
        port: Exhausted,
    ) -> Option<(TcpStream, SocketAddr)> {
        let e = match listener.accept().await {
            Ok(accepted) => {
                self.next = FIRST_PAUSE;
                self.told = false;
                return Some(accepted);
            }
            Err(e) => e,
        };
        // The client gave up between its handshake and our accept: that connection is gone,
        // the next one is unaffected.
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
        ) {
            return None;
        }
        if out_of_resources(&e) {
            metrics.exhausted(port);
        }
        if !self.told {
            self.told = true;
            eprintln!(
                "cohort router: cannot accept on the {} port: {e}; pausing accepts until it passes \
                 (counted in cohort_router_resource_exhausted_total)",
                port.port_name()
            );
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(LONGEST_PAUSE);
        None
    }
}

/// A client connection's place within the connection limit. Whatever outlives the connection
/// itself and still holds descriptors (a WebSocket tunnel) keeps a clone of it.
pub type Slot = Arc<OwnedSemaphorePermit>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_leaves_room_for_the_router_and_its_admin_port() {
        assert_eq!(connections_within(Some(256)), 32);
        assert_eq!(connections_within(Some(1024)), 416);
        assert_eq!(connections_within(Some(192)), 0);
        assert_eq!(connections_within(Some(10)), 0);
        assert_eq!(connections_within(Some(1 << 20)), MAX_DEFAULT_CONNECTIONS);
        assert_eq!(connections_within(None), MAX_DEFAULT_CONNECTIONS);
        for limit in [194u64, 256, 1000, 4096, 20_191, 20_192] {
            let n = connections_within(Some(limit));
            assert!(descriptors_for(n) <= limit, "{n} connections fit in {limit}");
            assert!(
                n == MAX_DEFAULT_CONNECTIONS || descriptors_for(n + 1) > limit,
                "{limit} fits no more than {n}"
            );
        }
        assert_eq!(descriptors_for(MAX_DEFAULT_CONNECTIONS), 20_192);
    }

    #[test]
    fn only_local_shortages_are_out_of_resources() {
        for errno in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM] {
            let e = io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(out_of_resources(&e), "{e}");
            assert!(connect_failed_locally(&e), "{e}");
        }
        for errno in [
            Errno::ADDRNOTAVAIL,
            Errno::CONNREFUSED,
            Errno::HOSTUNREACH,
            Errno::TIMEDOUT,
            Errno::CONNRESET,
        ] {
            let e = io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(
                !connect_failed_locally(&e),
                "{e} is the backend's or the network's"
            );
        }
        assert!(!out_of_resources(&io::Error::other("no errno")));
    }
}
