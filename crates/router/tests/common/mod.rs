//! What the router's loopback tests share.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A backend that switches every request to an echo protocol (`Upgrade: echo`).
pub async fn echo_upgrade_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|mut req: Request<hyper::body::Incoming>| async move {
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = on.await {
                            let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                    });
                    let mut resp = Response::new(Empty::<Bytes>::new());
                    *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut()
                        .insert("upgrade", "echo".parse().expect("header"));
                    resp.headers_mut()
                        .insert("connection", "upgrade".parse().expect("header"));
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A router serving `config` within `limits` on an ephemeral loopback port, until the test
/// ends: its address, and the router (its metrics and table).
pub async fn start_router(
    config: cohort_core::router_config::RouterConfig,
    limits: cohort_router::proxy::Limits,
) -> (SocketAddr, Arc<cohort_router::proxy::Router>) {
    let table = cohort_router::table::Table::build(config).await.expect("table");
    let router = cohort_router::proxy::Router::with_limits(table, limits);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(cohort_router::proxy::serve(
        listener,
        Arc::clone(&router),
        std::future::pending(),
    ));
    (addr, router)
}
