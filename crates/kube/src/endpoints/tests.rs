use std::net::SocketAddr;
use std::sync::Arc;

use cohort_core::router_config::EndpointsRef;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::{endpoint_map, ready_addresses, selector};

/// An EndpointSlice as the API server returns it, for Service `service` on port `http` 8080.
fn slice(name: &str, service: &str, endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            },
            "resourceVersion": "4711"
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .expect("an EndpointSlice")
}

fn endpoint(ip: &str, ready: bool, serving: bool, terminating: bool) -> serde_json::Value {
    json!({
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "nodeName": "node-1",
        "targetRef": {"kind": "Pod", "name": format!("pod-{ip}"), "namespace": "shop"}
    })
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().expect("addr")).collect()
}

#[test]
fn only_ready_pods_that_are_not_terminating_get_new_requests() {
    let s = slice(
        "shop-canary-abc",
        "shop-canary",
        json!([
            endpoint("10.0.0.3", true, true, false),
            endpoint("10.0.0.1", true, true, false),
            // Deleted, in its preStop pause: still serving what it has, but no new requests.
            endpoint("10.0.0.2", false, true, true),
            // Not ready yet (starting, or failing its readiness probe).
            endpoint("10.0.0.4", false, false, false),
        ]),
    );
    assert_eq!(
        ready_addresses([&s], "http"),
        addrs(&["10.0.0.1:8080", "10.0.0.3:8080"])
    );
}

#[test]
fn when_every_pod_is_terminating_those_still_serving_get_the_requests() {
    let s = slice(
        "shop-canary-abc",
        "shop-canary",
        json!([
            endpoint("10.0.0.2", false, true, true),
            endpoint("10.0.0.5", false, false, true),
        ]),
    );
    assert_eq!(ready_addresses([&s], "http"), addrs(&["10.0.0.2:8080"]));
}

#[test]
fn absent_conditions_mean_ready_and_duplicates_across_slices_count_once() {
    let bare = slice(
        "a",
        "shop-canary",
        json!([{"addresses": ["10.0.0.9"]}, {"addresses": ["10.0.0.8"], "conditions": {}}]),
    );
    let moved = slice(
        "b",
        "shop-canary",
        json!([endpoint("10.0.0.9", true, true, false)]),
    );
    assert_eq!(
        ready_addresses([&bare, &moved], "http"),
        addrs(&["10.0.0.8:8080", "10.0.0.9:8080"])
    );
}

#[test]
fn the_port_is_found_by_name_and_other_address_types_are_skipped() {
    let s = slice(
        "a",
        "shop-canary",
        json!([endpoint("10.0.0.1", true, true, false)]),
    );
    assert!(ready_addresses([&s], "grpc").is_empty(), "no port of that name");
    let mut v6 = slice(
        "b",
        "shop-canary",
        json!([endpoint("fd00::7", true, true, false)]),
    );
    v6.address_type = "IPv6".into();
    assert_eq!(ready_addresses([&v6], "http"), addrs(&["[fd00::7]:8080"]));
    let mut fqdn = slice(
        "c",
        "shop-canary",
        json!([endpoint("pod.example", true, true, false)]),
    );
    fqdn.address_type = "FQDN".into();
    assert!(ready_addresses([&fqdn], "http").is_empty());
    let mut no_port = s.clone();
    no_port.ports = Some(vec![]);
    assert!(ready_addresses([&no_port], "http").is_empty());
    let mut garbage = slice(
        "d",
        "shop-canary",
        json!([{"addresses": ["not-an-ip", "10.0.0.6"]}]),
    );
    garbage.ports = Some(vec![
        serde_json::from_value(json!({"name": "http", "port": 70000})).expect("port"),
    ]);
    assert!(
        ready_addresses([&garbage], "http").is_empty(),
        "a port out of range"
    );
}

#[test]
fn each_service_gets_its_own_slices_and_one_selector_covers_them_all() {
    let canary = EndpointsRef {
        service: "shop-canary".into(),
        port: "http".into(),
    };
    let production = EndpointsRef {
        service: "shop-production".into(),
        port: "http".into(),
    };
    let slices = vec![
        Arc::new(slice(
            "c",
            "shop-canary",
            json!([endpoint("10.0.1.1", true, true, false)]),
        )),
        Arc::new(slice(
            "p1",
            "shop-production",
            json!([endpoint("10.0.2.1", true, true, false)]),
        )),
        Arc::new(slice(
            "p2",
            "shop-production",
            json!([endpoint("10.0.2.2", true, true, false)]),
        )),
        Arc::new(slice(
            "x",
            "shop-canary-old",
            json!([endpoint("10.0.3.1", true, true, false)]),
        )),
    ];
    let paid = EndpointsRef {
        service: "shop-paid".into(),
        port: "http".into(),
    };
    let map = endpoint_map(&slices, &[canary.clone(), production.clone(), paid.clone()]);
    assert_eq!(map[&canary], addrs(&["10.0.1.1:8080"]));
    assert_eq!(map[&production], addrs(&["10.0.2.1:8080", "10.0.2.2:8080"]));
    assert!(map[&paid].is_empty(), "a Service without slices has no pods");
    assert_eq!(
        selector(&[production, canary.clone(), canary]),
        "kubernetes.io/service-name in (shop-canary,shop-production)"
    );
}
