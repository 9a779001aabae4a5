//! What the tests of `cohort router` processes share: loopback backends that answer with
//! their name, and a router process started on ephemeral ports.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A backend answering every request with its name (and an `x-track` header), one request
/// per connection. Every `fail_every`-th request (0: none) gets a 500; `GET /slow` takes
/// 800 ms, longer than the tests' drain delay.
pub fn backend(name: &'static str, fail_every: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /slow ") {
                    // Outlives the drain delay: only a graceful shutdown lets it finish.
                    std::thread::sleep(Duration::from_millis(800));
                }
                let n = seen.fetch_add(1, Ordering::Relaxed) + 1;
                let status = match fail_every {
                    k if k > 0 && n.is_multiple_of(k) => "500 Internal Server Error",
                    _ => "200 OK",
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\nx-track: {name}\r\n\r\n{name}",
                    name.len()
                );
            });
        }
    });
    addr
}

/// A `cohort router` process, killed when dropped.
pub struct RouterProcess {
    /// The process.
    pub child: Child,
    /// Where it takes traffic.
    pub traffic: SocketAddr,
    /// Its admin port.
    pub admin: SocketAddr,
    /// Its first line: where it listens, how many connections it takes.
    pub started: String,
    /// What it printed before that line (warnings).
    pub said_before: Vec<String>,
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cohort router ARGS --listen 127.0.0.1:0 --admin 127.0.0.1:0` and reads the two
/// addresses from its first line.
pub fn start_router(args: &[&std::ffi::OsStr]) -> RouterProcess {
    start_router_within(None, args)
}

/// Starts `cohort router ARGS`, under `ulimit -n NOFILE` (soft and hard) when given, on
/// ephemeral loopback ports (the admin port's address can be given in ARGS), and reads the
/// two addresses from the line that names them.
pub fn start_router_within(nofile: Option<u64>, args: &[&std::ffi::OsStr]) -> RouterProcess {
    let mut command = match nofile {
        None => Command::new(env!("CARGO_BIN_EXE_cohort")),
        Some(n) => {
            // `exec` keeps the pid, so the test can read the router's own /proc entries.
            let mut sh = Command::new("sh");
            sh.args([
                "-c",
                &format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                env!("CARGO_BIN_EXE_cohort"),
            ]);
            sh
        }
    };
    command.arg("router").args(args).args(["--listen", "127.0.0.1:0"]);
    if !args.iter().any(|a| *a == "--admin") {
        command.args(["--admin", "127.0.0.1:0"]);
    }
    let mut child = command.stderr(Stdio::piped()).spawn().expect("router starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut said_before = vec![];
    loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("the router stopped before listening; it said: {said_before:?}");
        };
        // "cohort router: account-service on 127.0.0.1:PORT (admin on 127.0.0.1:PORT), ..."
        let addrs: Vec<SocketAddr> = line
            .split([' ', '(', ')', ','])
            .filter_map(|w| w.parse().ok())
            .collect();
        if addrs.len() != 2 {
            said_before.push(line);
            continue;
        }
        std::thread::spawn(move || for _ in lines {});
        return RouterProcess {
            child,
            traffic: addrs[0],
            admin: addrs[1],
            started: line,
            said_before,
        };
    }
}

/// A router config for account-service: FREE goes 20% to canary (`version`, at `canary`), 80%
/// to production 1.15.0 (at `production`); everybody else to production.
pub fn canary_config(version: &str, canary: SocketAddr, production: SocketAddr) -> String {
    format!(
        "service: account-service\ntrusted_peers: [127.0.0.0/8]\ntracks:\n  - name: canary\n    version: {version}\n    backends: [\"{canary}\"]\n  - name: production\n    version: 1.15.0\n    backends: [\"{production}\"]\ncohorts:\n  - cohort: FREE\n    weights:\n      - track: canary\n        weight: 20%\n      - track: production\n        weight: 80%\ndefault_route:\n  weights:\n    - track: production\n      weight: 100%\n"
    )
}

/// Sends `n` requests of cohort FREE to `addr`, a connection each.
pub fn free_requests(addr: SocketAddr, n: usize) {
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: x\r\nX-Traffic-Group: FREE\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
    }
}
