//! `router.yaml`: the router's config as `cohort render` writes it into the `<svc>-router`
//! ConfigMap, read back by `cohort router --config` with every problem at file:line:col, so a
//! bad reload is refused with a message that says where.

use cohort_core::router_config::{
    EndpointsRef, RouterConfig, RouterHealthCheck, RouterMirror, RouterRoute, RouterTrack, TrackWeight,
};
use cohort_core::{Duration, TrackName, TrustedPeers, Version};
use cohort_yaml::Node;

use crate::diag::{Kind, Sink};
use crate::pipeline::{header_name, read_peers, read_sticky};
use crate::read::{self, MapReader};

/// What identifies a router config's text: `sha256:` and the hex digest of its bytes. A
/// router reports the digest of the config it runs on its admin port (`/config-digest`), and
/// `cohort apply` computes it from the ConfigMap it wrote, so it can wait until every router
/// runs what it wrote.
pub fn digest(text: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let sum = Sha256::digest(text);
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Reads a router config. `None` when there is any error (all of them are in `sink`).
pub fn read_router_config(root: &Node, sink: &mut Sink<'_>) -> Option<RouterConfig> {
    let errors_before = sink.errors();
    let mut m = MapReader::new(root, "the router config", sink);
    let mut ok = true;
    let service = m
        .req("service", "add `service: <name>`", sink)
        .and_then(|n| read::text(n, "`service`", sink).map(str::to_string));
    let cohort_header = m
        .opt("cohort_header")
        .map_or(Some("X-Traffic-Group".to_string()), |n| {
            read::text(n, "`cohort_header`", sink).and_then(|t| header_name(n, t, "the cohort header", sink))
        });
    let protocol = m.opt("protocol").map_or(Some(Default::default()), |n| {
        read::protocol(n, "`protocol`", sink)
    });
    let trusted_peers = m
        .opt("trusted_peers")
        .map_or(Some(TrustedPeers::default()), |n| read_peers(n, sink));
    let sticky = match m.opt("sticky") {
        Some(n) => {
            let s = read_sticky(n, sink);
            ok &= s.is_some();
            s
        }
        None => None,
    };
    let health_check = read_health(m.opt("health_check"), root, sink);
    let (tracks, tracks_ok) = read_tracks(m.req("tracks", "list the tracks and their backends", sink), sink);
    ok &= tracks_ok;
    // Routes are checked against every track that has a name, even one with bad backends,
    // so one mistake is reported once.
    let names: Vec<TrackName> = tracks.iter().map(|t| t.name.clone()).collect();
    let mut cohorts = vec![];
    if let Some(n) = m.opt("cohorts") {
        for item in read::list(n, "`cohorts`", sink) {
            match read_route(item, true, &names, sink) {
                Some(r)
                    if cohorts.iter().any(|c: &RouterRoute| {
                        c.cohort.as_deref().map(str::to_ascii_lowercase)
                            == r.cohort.as_deref().map(str::to_ascii_lowercase)
                    }) =>
                {
                    sink.error(
                        item.pos,
                        Kind::Duplicate,
                        format!("cohort `{}` is listed twice", r.cohort.unwrap_or_default()),
                        None,
                    );
                    ok = false;
                }
                Some(r) => cohorts.push(r),
                None => ok = false,
            }
        }
    }
    let default_route = m
        .req("default_route", "add the route for everybody else", sink)
        .and_then(|n| read_route(n, false, &names, sink));
    let mut mirrors = vec![];
    for item in m
        .opt("mirrors")
        .map(|n| read::list(n, "`mirrors`", sink))
        .unwrap_or_default()
    {
        match read_mirror(item, &names, &cohorts, sink) {
            Some(mirror) => mirrors.push(mirror),
            None => ok = false,
        }
    }
    m.finish(sink);
    // Any error refuses the whole config, an unknown key too: a router must not run a config
    // it half understood.
    if !ok || sink.errors() > errors_before {
        return None;
    }
    Some(RouterConfig {
        service: service?,
        cohort_header: cohort_header?,
        protocol: protocol?,
        trusted_peers: trusted_peers?,
        sticky,
        health_check: health_check?,
        tracks,
        cohorts,
        default_route: default_route?,
        mirrors,
    })
}

/// One of `mirrors`: `{cohort (absent: the default route), from, to, share, max_body}`, both
/// tracks among the config's and the cohort among its routes.
fn read_mirror(
    n: &Node,
    tracks: &[TrackName],
    routes: &[RouterRoute],
    sink: &mut Sink<'_>,
) -> Option<RouterMirror> {
    let mut m = MapReader::new(n, "a mirror", sink);
    let cohort = match m.opt("cohort") {
        None => Some(None),
        Some(c) => read::text(c, "the mirrored cohort", sink).and_then(|t| {
            let known = routes
                .iter()
                .any(|r| r.cohort.as_deref().is_some_and(|rc| rc.eq_ignore_ascii_case(t)));
            if !known {
                sink.error(
                    c.pos,
                    Kind::UnknownTrack,
                    format!("`{t}` is not one of the config's cohorts"),
                    None,
                );
                return None;
            }
            Some(Some(t.to_string()))
        }),
    };
    let track = |key: &'static str, m: &mut MapReader<'_>, sink: &mut Sink<'_>| {
        m.req(key, "name one of the config's tracks", sink).and_then(|t| {
            let text = read::text(t, &format!("`{key}`"), sink)?;
            let found = tracks.iter().find(|tn| tn.as_str() == text).cloned();
            if found.is_none() {
                sink.error(
                    t.pos,
                    Kind::UnknownTrack,
                    format!("`{text}` is not one of the config's tracks"),
                    None,
                );
            }
            found
        })
    };
    let from = track("from", &mut m, sink);
    let to = track("to", &mut m, sink);
    let share = m
        .req("share", "add `share: <percent>`", sink)
        .and_then(|w| read::weight(w, "the mirrored share", sink));
    let max_body = m
        .req("max_body", "add `max_body: <bytes>`", sink)
        .and_then(|b| read::bytes(b, "`max_body`", 1 << 20, sink));
    m.finish(sink);
    let (from, to) = (from?, to?);
    if from == to {
        sink.error(
            n.pos,
            Kind::BadRoute,
            format!("a mirror from `{from}` to itself"),
            None,
        );
        return None;
    }
    Some(RouterMirror {
        cohort: cohort?,
        from,
        to,
        share: share?,
        max_body: max_body?,
    })
}

fn read_health(n: Option<&Node>, root: &Node, sink: &mut Sink<'_>) -> Option<RouterHealthCheck> {
    let mut m = MapReader::optional(n, root.pos, "`health_check`", sink);
    let path = m.opt("path").map_or(Some("/healthz".to_string()), |p| {
        read::http_path(p, "the health check path", sink)
    });
    let interval = m
        .opt("interval")
        .map_or(Some(Duration::from_secs(2)), |d| {
            read::duration(d, "`health_check.interval`", sink)
        })
        .filter(|d| *d > Duration::ZERO);
    let rise = m.opt("rise").map_or(Some(2), |r| {
        read::number(r, "`health_check.rise`", 1, 100, sink).map(|r| r as u32)
    });
    let fall = m.opt("fall").map_or(Some(3), |f| {
        read::number(f, "`health_check.fall`", 1, 100, sink).map(|f| f as u32)
    });
    m.finish(sink);
    Some(RouterHealthCheck {
        path: path?,
        interval: interval?,
        rise: rise?,
        fall: fall?,
    })
}

/// The tracks that have a valid name and version, and whether everything read cleanly.
fn read_tracks(n: Option<&Node>, sink: &mut Sink<'_>) -> (Vec<RouterTrack>, bool) {
    let Some(n) = n else { return (vec![], false) };
    let mut out: Vec<RouterTrack> = vec![];
    let mut ok = true;
    for item in read::list(n, "`tracks`", sink) {
        let mut m = MapReader::new(item, "a track", sink);
        let name = m.req("name", "add `name: <track>`", sink).and_then(|n| {
            let t = read::text(n, "the track name", sink)?;
            match TrackName::new(t) {
                Ok(tn) if out.iter().any(|o| o.name == tn) => {
                    sink.error(
                        n.pos,
                        Kind::Duplicate,
                        format!("track `{t}` is listed twice"),
                        None,
                    );
                    None
                }
                Ok(tn) => Some(tn),
                Err(e) => {
                    sink.error(n.pos, Kind::BadName, e.to_string(), None);
                    None
                }
            }
        });
        let version = m.req("version", "add `version: <version>`", sink).and_then(|n| {
            let t = read::text(n, "the version", sink)?;
            Version::new(t)
                .map_err(|e| sink.error(n.pos, Kind::BadVersion, e.to_string(), None))
                .ok()
        });
        let mut backends = vec![];
        for b in m
            .req("backends", "list `host:port` of each backend", sink)
            .map(|n| read::list(n, "`backends`", sink))
            .unwrap_or_default()
        {
            let Some(t) = read::text(b, "a backend", sink) else {
                ok = false;
                continue;
            };
            match t.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>())) {
                Some((host, Ok(port))) if !host.is_empty() && port > 0 => backends.push(t.to_string()),
                _ => {
                    sink.error(
                        b.pos,
                        Kind::WrongType,
                        format!("backend `{t}` is not `host:port`"),
                        Some("write e.g. `account-service-canary.shop.svc:8080` or `127.0.0.1:9001`".into()),
                    );
                    ok = false;
                }
            }
        }
        let endpoints = match m.opt("endpoints") {
            Some(n) => {
                let e = read_endpoints(n, sink);
                ok &= e.is_some();
                e
            }
            None => None,
        };
        m.finish(sink);
        match (name, version) {
            (Some(name), Some(version)) => out.push(RouterTrack {
                name,
                version,
                backends,
                endpoints,
            }),
            _ => ok = false,
        }
    }
    (out, ok)
}

/// `endpoints: {service: <Service name>, port: <its port's name>}`: both as Kubernetes allows
/// them (a DNS label; an IANA service name), so a typo is caught here rather than by a watch
/// that never finds anything.
fn read_endpoints(n: &Node, sink: &mut Sink<'_>) -> Option<EndpointsRef> {
    let mut m = MapReader::new(n, "`endpoints`", sink);
    let service = m
        .req("service", "add `service: <the track's Service>`", sink)
        .and_then(|s| {
            let t = read::text(s, "the Service name", sink)?;
            let label = !t.is_empty()
                && t.len() <= 63
                && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && t.starts_with(|c: char| c.is_ascii_lowercase())
                && !t.ends_with('-');
            if !label {
                sink.error(
                    s.pos,
                    Kind::BadName,
                    format!("`{t}` is not a Service name"),
                    Some("a Service name is at most 63 lowercase letters, digits and `-`, starting with a letter".into()),
                );
                return None;
            }
            Some(t.to_string())
        });
    let port = m
        .req("port", "add `port: <the Service port's name>`", sink)
        .and_then(|p| {
            let t = read::text(p, "the port name", sink)?;
            let name = !t.is_empty()
                && t.len() <= 15
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && t.bytes().any(|b| b.is_ascii_lowercase())
                && !t.starts_with('-')
                && !t.ends_with('-')
                && !t.contains("--");
            if !name {
                sink.error(
                    p.pos,
                    Kind::BadName,
                    format!("`{t}` is not a port name"),
                    Some("a port name is at most 15 lowercase letters, digits and `-` (e.g. `http`)".into()),
                );
                return None;
            }
            Some(t.to_string())
        });
    m.finish(sink);
    Some(EndpointsRef {
        service: service?,
        port: port?,
    })
}

fn read_legs(
    n: Option<&Node>,
    what: &str,
    tracks: &[TrackName],
    check_tracks: bool,
    sink: &mut Sink<'_>,
) -> Option<Vec<TrackWeight>> {
    let mut out: Vec<TrackWeight> = vec![];
    let mut ok = true;
    for item in n.map(|n| read::list(n, what, sink)).unwrap_or_default() {
        let mut m = MapReader::new(item, "a weight", sink);
        let track = m.req("track", "add `track: <name>`", sink).and_then(|n| {
            let t = read::text(n, "the track", sink)?;
            match TrackName::new(t) {
                Ok(tn) if check_tracks && !tracks.contains(&tn) => {
                    sink.error(
                        n.pos,
                        Kind::UnknownTrack,
                        format!("`{t}` is not one of the config's tracks"),
                        None,
                    );
                    None
                }
                Ok(tn) => Some(tn),
                Err(e) => {
                    sink.error(n.pos, Kind::BadName, e.to_string(), None);
                    None
                }
            }
        });
        let weight = m
            .req("weight", "add `weight: <percent>`", sink)
            .and_then(|n| read::weight(n, "the weight", sink));
        m.finish(sink);
        match (track, weight) {
            (Some(track), Some(weight)) => out.push(TrackWeight { track, weight }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn read_route(n: &Node, named: bool, tracks: &[TrackName], sink: &mut Sink<'_>) -> Option<RouterRoute> {
    let mut m = MapReader::new(
        n,
        if named {
            "a cohort's route"
        } else {
            "`default_route`"
        },
        sink,
    );
    let cohort = if named {
        let c = m
            .req("cohort", "add `cohort: <header value>`", sink)
            .and_then(|c| read::text(c, "the cohort", sink));
        Some(c?.to_string())
    } else {
        None
    };
    let weights = read_legs(m.opt("weights"), "`weights`", tracks, true, sink);
    let redistributed = read_legs(m.opt("redistributed"), "`redistributed`", tracks, false, sink);
    m.finish(sink);
    let weights = weights?;
    let total: u32 = weights.iter().map(|w| w.weight.basis_points()).sum();
    if !weights.is_empty() && total != 10_000 {
        sink.error(
            n.pos,
            Kind::BadRoute,
            format!(
                "the weights add up to {}, not 100%",
                cohort_core::weight::percent(total)
            ),
            Some("an empty `weights` list means 503; otherwise the weights must add up to 100%".into()),
        );
        return None;
    }
    Some(RouterRoute {
        cohort,
        weights,
        redistributed: redistributed?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Option<RouterConfig>, Vec<crate::Diagnostic>) {
        let mut diags = vec![];
        let node = cohort_yaml::parse(text).expect("yaml");
        let cfg = read_router_config(&node, &mut Sink::new("router.yaml", &mut diags));
        (cfg, diags)
    }

    const MINIMAL: &str = "service: s\ntracks:\n  - name: production\n    version: 1.0.0\n    backends: [\"127.0.0.1:9000\"]\ndefault_route:\n  weights:\n    - track: production\n      weight: 100%\n";

    #[test]
    fn the_digest_is_sha256_of_the_bytes_and_changes_with_any_of_them() {
        // sha256("") from FIPS 180-2's test vectors.
        assert_eq!(
            digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(
            digest(MINIMAL.as_bytes()),
            digest(MINIMAL.replace("100%", "100 %").as_bytes())
        );
    }

    #[test]
    fn a_minimal_config_gets_defaults() {
        let (cfg, diags) = read(MINIMAL);
        assert!(diags.is_empty(), "{diags:?}");
        let cfg = cfg.expect("valid");
        assert_eq!(cfg.cohort_header, "X-Traffic-Group");
        assert_eq!(cfg.health_check.interval, Duration::from_secs(2));
        assert!(cfg.trusted_peers.is_nobody());
    }

    #[test]
    fn errors_say_where() {
        let bad = MINIMAL
            .replace("127.0.0.1:9000", "127.0.0.1")
            .replace("weight: 100%", "weight: 90%");
        let (cfg, diags) = read(&bad);
        assert!(cfg.is_none());
        let kinds: Vec<(Kind, usize)> = diags.iter().map(|d| (d.kind, d.pos.line)).collect();
        assert_eq!(kinds, vec![(Kind::WrongType, 5), (Kind::BadRoute, 7)]);
        let unknown = MINIMAL.replace("track: production\n      weight", "track: canary\n      weight");
        let (_, diags) = read(&unknown);
        assert_eq!(
            diags.iter().map(|d| d.kind).collect::<Vec<_>>(),
            vec![Kind::UnknownTrack]
        );
    }

    #[test]
    fn an_unknown_key_refuses_the_whole_config() {
        let typo = MINIMAL.replace("    backends:", "    backend: [x]\n    backends:");
        let (cfg, diags) = read(&typo);
        assert!(cfg.is_none());
        assert_eq!(
            diags.iter().map(|d| (d.kind, d.pos.line)).collect::<Vec<_>>(),
            vec![(Kind::UnknownKey, 5)]
        );
        let (cfg, _) = read(&format!("{MINIMAL}colour: blue\n"));
        assert!(cfg.is_none());
    }

    #[test]
    fn a_tracks_endpoints_name_its_service_and_port() {
        let with = |e: &str| {
            MINIMAL.replace(
                "    backends: [\"127.0.0.1:9000\"]\n",
                &format!("    backends: [\"127.0.0.1:9000\"]\n    endpoints: {e}\n"),
            )
        };
        let (cfg, diags) = read(&with("{service: shop-production, port: http}"));
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(
            cfg.expect("valid").tracks[0].endpoints,
            Some(EndpointsRef {
                service: "shop-production".into(),
                port: "http".into()
            })
        );
        for bad in [
            "{service: Shop, port: http}",
            "{service: shop, port: a-very-long-port-name}",
            "{service: shop}",
            "{service: shop, port: http, namespace: x}",
            "{service: \"shop.other\", port: http}",
        ] {
            let (cfg, diags) = read(&with(bad));
            assert!(cfg.is_none(), "{bad} was taken");
            assert!(diags.iter().all(|d| d.pos.line == 6), "{bad}: {diags:?}");
        }
    }
}
