//! The admin port: `/live`, `/ready`, `/metrics` (Prometheus text), `/config` (the config
//! in force, as JSON) and `/stats?window=` (per-second counts for the canary judgement).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::proxy::Router;

/// Serves the admin endpoints until `shutdown` completes.
pub async fn serve_admin(listener: TcpListener, router: Arc<Router>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let router = Arc::clone(&router);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(Arc::clone(&router), req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(router: Arc<Router>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, kind, body) = match req.uri().path() {
        "/live" => (StatusCode::OK, "text/plain", "live\n".to_string()),
        "/ready" if router.is_ready() => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_string(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            router.metrics.render(&router.table()),
        ),
        "/stats" => match stats_window(req.uri().query()) {
            Ok(window) => {
                let table = router.table();
                let stats = router
                    .metrics
                    .windows
                    .stats(&table.config.service, crate::window::now(), window);
                match serde_json::to_string(&stats) {
                    Ok(json) => (StatusCode::OK, "application/json", json + "\n"),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
                }
            }
            Err(why) => (StatusCode::BAD_REQUEST, "text/plain", why),
        },
        "/config" => match serde_json::to_string_pretty(&router.table().config) {
            Ok(json) => (StatusCode::OK, "application/json", json + "\n"),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /live /ready /metrics /config /stats?window=10m\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(kind) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

/// The `window` of `/stats?window=5m` in seconds (default and at most ten minutes).
fn stats_window(query: Option<&str>) -> Result<u64, String> {
    let asked = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("window="));
    let Some(text) = asked else {
        return Ok(crate::window::SECONDS);
    };
    match cohort_core::Duration::parse(text) {
        Some(d) if d.as_millis() >= 1000 && d.as_millis() <= crate::window::SECONDS * 1000 => {
            Ok(d.as_millis() / 1000)
        }
        _ => Err(format!(
            "window `{text}` should be a duration from 1s to {}s, e.g. `window=5m`\n",
            crate::window::SECONDS
        )),
    }
}
