//! Active health checks: each backend of a table is probed with `GET <path>` every interval,
//! for as long as the table is in use.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use cohort_core::model::Protocol;

use crate::metrics::{Exhausted, Metrics};
use crate::table::{Backend, Table};

/// What one health check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A 2xx or 3xx answer in time.
    Healthy,
    /// Refused, timed out, or any other answer.
    Unhealthy,
    /// This router could not open a socket (out of descriptors, buffers or memory): nothing
    /// was learnt about the backend, and the check counts neither way.
    NotRun,
}

/// Starts the checks of each backend of `table` not yet checked; each stops once the last
/// table holding its backend is dropped (a backend carried over to a new table keeps its
/// checks and its state).
pub fn spawn_checks(table: &Arc<Table>, metrics: &Arc<Metrics>) {
    let hc = &table.config.health_check;
    let interval = Duration::from_millis(hc.interval.as_millis().max(100));
    for track in &table.tracks {
        for backend in &track.backends {
            if backend.checked.swap(true, Ordering::Relaxed) {
                continue;
            }
            let weak: Weak<Backend> = Arc::downgrade(backend);
            let metrics = Arc::clone(metrics);
            let (addr, path, rise, fall) = (backend.addr, hc.path.clone(), hc.rise, hc.fall);
            let protocol = table.config.protocol;
            let name = track.name.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if weak.strong_count() == 0 {
                        return;
                    }
                    let timeout = interval.min(Duration::from_secs(2));
                    let found = match protocol {
                        Protocol::Http1 => probe(addr, &path, timeout).await,
                        Protocol::H2c => probe_h2(addr, H2Check::Get(&path), timeout).await,
                        Protocol::Grpc => probe_h2(addr, H2Check::Grpc, timeout).await,
                    };
                    let ok = match found {
                        Probe::Healthy => true,
                        Probe::Unhealthy => false,
                        Probe::NotRun => {
                            metrics.exhausted(Exhausted::HealthCheck);
                            continue;
                        }
                    };
                    let Some(backend) = weak.upgrade() else { return };
                    if let Some(up) = backend.health.record(ok, rise, fall) {
                        let state = if up { "up" } else { "down" };
                        eprintln!("cohort router: backend {addr} of track {name} is {state}");
                    }
                }
            });
        }
    }
}

/// What an HTTP/2 probe asks.
#[derive(Clone, Copy, Debug)]
pub enum H2Check<'p> {
    /// `GET path`: a 2xx or 3xx answer is healthy.
    Get(&'p str),
    /// gRPC's health service (`grpc.health.v1.Health/Check` for the whole server): SERVING is
    /// healthy, and so is UNIMPLEMENTED (the server speaks gRPC and has no health service;
    /// Kubernetes' readiness probe is then what says more).
    Grpc,
}

/// One probe over a new HTTP/2 connection (prior knowledge), within `timeout`.
pub async fn probe_h2(addr: SocketAddr, check: H2Check<'_>, timeout: Duration) -> Probe {
    use http_body_util::{BodyExt, Full};
    let attempt = async {
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) if crate::resources::connect_failed_locally(&e) => return Some(Probe::NotRun),
            Err(_) => return None,
        };
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .ok()?;
        let conn = tokio::spawn(conn);
        let request = match check {
            H2Check::Get(path) => http::Request::get(format!("http://{addr}{path}"))
                .header(http::header::USER_AGENT, "cohort-health-check")
                .body(Full::new(bytes::Bytes::new())),
            // An empty HealthCheckRequest (service ""), in gRPC's 5-byte message frame.
            H2Check::Grpc => http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header(http::header::TE, "trailers")
                .header(http::header::USER_AGENT, "cohort-health-check")
                .body(Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]))),
        }
        .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let status = response.status();
        let head_status = crate::grpc::GRPC_STATUS;
        let in_head = response.headers().get(&head_status).cloned();
        let body = response.into_body().collect().await.ok()?;
        conn.abort();
        let healthy = match check {
            H2Check::Get(_) => status.is_success() || status.is_redirection(),
            H2Check::Grpc => {
                let code = in_head.or_else(|| body.trailers().and_then(|t| t.get(&head_status).cloned()));
                match code.as_ref().map(http::HeaderValue::as_bytes) {
                    // UNIMPLEMENTED: no health service, but a gRPC server that answers.
                    Some(b"12") => true,
                    // HealthCheckResponse { status: SERVING (1) }, framed.
                    Some(b"0") => body.to_bytes().as_ref() == [0, 0, 0, 0, 2, 0x08, 0x01],
                    _ => false,
                }
            }
        };
        healthy.then_some(Probe::Healthy)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Some(found)) => found,
        Ok(None) | Err(_) => Probe::Unhealthy,
    }
}

/// One probe: a 2xx or 3xx answer within `timeout` is healthy.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Probe {
    let attempt = async {
        let mut stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) if crate::resources::connect_failed_locally(&e) => return Some(Probe::NotRun),
            Err(_) => return None,
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: cohort-health-check\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 16];
        let mut got = 0;
        while got < 12 {
            let n = stream.read(&mut head[got..]).await.ok()?;
            if n == 0 {
                break;
            }
            got += n;
        }
        // "HTTP/1.1 200"
        let status: u16 = std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()?;
        (200..400).contains(&status).then_some(Probe::Healthy)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Some(found)) => found,
        Ok(None) | Err(_) => Probe::Unhealthy,
    }
}

#[cfg(test)]
mod tests {
    use crate::table::BackendHealth;

    #[test]
    fn rise_and_fall_need_streaks() {
        let h = BackendHealth::default();
        assert!(h.is_up());
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), None, "a success breaks the failure streak");
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), Some(true));
        h.mark_down();
        assert!(!h.is_up(), "a refused connection takes it out at once");
    }
}
