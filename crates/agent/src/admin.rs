//! An admin port: `/live`, `/ready` and `/metrics`, for the agent and the autopilot alike.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;

use crate::agent::Readiness;

/// Whether the process is ready: `Err` says why not.
pub type Ready = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The agent's readiness: its last poll reached the source.
pub fn agent_ready(readiness: Arc<Mutex<Readiness>>) -> Ready {
    Arc::new(move || {
        let r = readiness.lock().map(|r| r.clone()).unwrap_or_default();
        match (r.source_reachable, r.problem) {
            (true, _) => Ok(()),
            (false, Some(problem)) => Err(problem),
            (false, None) => Err("the source has not been polled yet".into()),
        }
    })
}

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}

fn route(path: &str, registry: &Registry, ready: &Ready) -> Response<Full<Bytes>> {
    match path {
        "/live" => answer(StatusCode::OK, "text/plain", "ok\n".into()),
        "/ready" => match ready() {
            Ok(()) => answer(StatusCode::OK, "text/plain", "ok\n".into()),
            Err(why) => answer(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{why}\n")),
        },
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, registry) {
                Ok(()) => answer(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
            }
        }
        _ => answer(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; the admin port serves /live, /ready and /metrics\n".into(),
        ),
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    ready: Ready,
    shutdown: impl Future<Output = ()>,
) {
    let registry = Arc::new(registry);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin port: accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let (registry, ready) = (registry.clone(), ready.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = route(req.uri().path(), &registry, &ready);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
