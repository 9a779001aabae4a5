//! Upgraded (WebSocket) tunnels through the router on loopback: they count against the
//! connection limit for as long as they are open, and close when neither side sends.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use cohort_core::router_config::{RouterConfig, RouterHealthCheck, RouterRoute, RouterTrack, TrackWeight};
use cohort_core::{TrackName, Version, Weight};
use cohort_router::proxy::{Limits, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::echo_upgrade_backend;

/// A router sending everybody to the echo backend, within `limits`.
async fn router_to_echo(limits: Limits) -> SocketAddr {
    let track = TrackName::new("production").expect("track");
    let config = RouterConfig {
        service: "account-service".into(),
        cohort_header: "X-Traffic-Group".into(),
        protocol: Default::default(),
        trusted_peers: cohort_core::TrustedPeers::default(),
        sticky: None,
        health_check: RouterHealthCheck {
            path: "/healthz".into(),
            interval: cohort_core::Duration::from_secs(60),
            rise: 2,
            fall: 3,
        },
        tracks: vec![RouterTrack {
            name: track.clone(),
            version: Version::new("1.0.0").expect("version"),
            backends: vec![echo_upgrade_backend().await.to_string()],
            endpoints: None,
        }],
        cohorts: vec![],
        default_route: RouterRoute {
            cohort: None,
            weights: vec![TrackWeight {
                track,
                weight: Weight::from_basis_points(10_000).expect("weight"),
            }],
            redistributed: vec![],
        },
        mirrors: vec![],
    };
    let table = cohort_router::table::Table::build(config).await.expect("table");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(cohort_router::proxy::serve(
        listener,
        Router::with_limits(table, limits),
        std::future::pending(),
    ));
    addr
}

/// Asks for the upgrade on a new connection and reads the response head.
async fn upgrade(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut s).await;
    (s, head)
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.expect("head") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn echo(s: &mut TcpStream, text: &[u8]) {
    s.write_all(text).await.expect("write");
    let mut back = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut back))
        .await
        .expect("echoed in time")
        .expect("read");
    assert_eq!(back, text);
}

/// An open tunnel holds two descriptors; it used to give its connection slot back as soon as
/// the upgrade was done, so `--max-connections` did not bound tunnels at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_tunnel_holds_its_connection_slot() {
    let addr = router_to_echo(Limits {
        max_connections: 1,
        ..Limits::default()
    })
    .await;
    let (mut first, head) = upgrade(addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo(&mut first, b"hello").await;

    // The limit is taken by the tunnel: the next client waits in the backlog.
    let mut second = TcpStream::connect(addr).await.expect("connect");
    second
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "served while the tunnel held the only slot: {early:?}"
    );

    // The tunnel closes: its slot goes to the waiting client.
    drop(first);
    let head = tokio::time::timeout(Duration::from_secs(3), read_head(&mut second))
        .await
        .expect("served once the tunnel closed");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// HAProxy's `timeout tunnel`: without it, a WebSocket nobody speaks on held its descriptors
/// (client and track side) forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_websocket_tunnel_is_closed_after_the_tunnel_timeout() {
    let addr = router_to_echo(Limits {
        tunnel_idle_timeout: Duration::from_millis(400),
        ..Limits::default()
    })
    .await;
    let (mut s, head) = upgrade(addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Talk keeps it open past the timeout...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        echo(&mut s, b"still here").await;
    }
    // ...silence closes it.
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    let end = tokio::time::timeout(Duration::from_secs(3), s.read(&mut byte))
        .await
        .expect("closed in time");
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "closed after the quiet time, not before: {waited:?}"
    );
}
