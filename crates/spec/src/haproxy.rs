//! Importing an haproxy.cfg of the seed's shape (a frontend choosing a backend per cohort by
//! header, backends of weighted servers, one server per track) as a router config, so teams
//! can point `cohort router` at the file they run today.
//!
//! Server names are track names (`canary`, or `canary-2` for a second backend of the track);
//! each backend is a route; `acl NAME hdr(H) -m str [-i] VALUE` + `use_backend B if NAME` make
//! cohorts; `default_backend` is everybody else. A directive that could change routing and is
//! not understood is an error naming its line; one that cannot (logging, timeouts, options)
//! is a warning.

use std::collections::BTreeMap;

use cohort_core::router_config::{RouterConfig, RouterHealthCheck, RouterRoute, RouterTrack, TrackWeight};
use cohort_core::{Duration, TrackName, TrustedPeers, Version, Weight};
use cohort_yaml::Pos;

use crate::diag::{Kind, Sink};

#[derive(Default)]
struct Backend {
    pos: Pos,
    /// (track, address, weight, line)
    servers: Vec<(String, String, u32, Pos)>,
}

struct HeaderAcl {
    header: String,
    values: Vec<String>,
}

/// Reads an haproxy.cfg. `service` names the router's service (HAProxy has no such notion;
/// the frontend's name is used when `None`). `None` when there is any error.
pub fn read_haproxy(text: &str, service: Option<&str>, sink: &mut Sink<'_>) -> Option<RouterConfig> {
    let mut ok = true;
    let mut section: (String, String) = (String::new(), String::new());
    let mut frontend: Option<String> = None;
    let mut frontend_pos = Pos { line: 1, col: 1 };
    let mut header_acls: BTreeMap<String, HeaderAcl> = BTreeMap::new();
    let mut src_acls: BTreeMap<String, Vec<ipnet::IpNet>> = BTreeMap::new();
    let mut uses: Vec<(String, String, Pos)> = vec![];
    let mut default_backend: Option<(String, Pos)> = None;
    let mut trusted: Option<Vec<ipnet::IpNet>> = None;
    let mut backends: BTreeMap<String, Backend> = BTreeMap::new();
    let mut health = RouterHealthCheck {
        path: "/".into(),
        interval: Duration::from_secs(2),
        rise: 2,
        fall: 3,
    };
    let mut inter_seen = false;

    for (i, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = words.first().copied() else {
            continue;
        };
        let col = raw.len() - raw.trim_start().len() + 1;
        let pos = Pos { line: i + 1, col };
        let mut error =
            |message: String, help: Option<String>| sink.error(pos, Kind::WrongType, message, help);
        match first {
            "global" | "defaults" | "resolvers" | "frontend" | "backend" | "listen" | "userlist"
            | "peers" | "mailers" | "cache" | "program" | "http-errors" | "ring" => {
                let name = words.get(1).copied().unwrap_or_default().to_string();
                section = (first.to_string(), name.clone());
                match first {
                    "frontend" if frontend.is_some() => {
                        error(
                            "a second frontend; cohort routes one service per router".into(),
                            Some("import one frontend at a time".into()),
                        );
                        ok = false;
                    }
                    "frontend" => {
                        frontend = Some(name);
                        frontend_pos = pos;
                    }
                    "backend" if backends.contains_key(&name) => {
                        error(format!("backend `{name}` is defined twice"), None);
                        ok = false;
                    }
                    "backend" => {
                        backends.insert(name, Backend { pos, servers: vec![] });
                    }
                    "listen" => {
                        error(
                            "`listen` sections are not supported".into(),
                            Some("split it into a `frontend` and `backend`s".into()),
                        );
                        ok = false;
                    }
                    _ => {}
                }
                continue;
            }
            _ => {}
        }
        let ignorable = matches!(
            first,
            "log" | "timeout" | "option" | "maxconn" | "retries" | "http-reuse" | "compression" | "errorfile"
        );
        match section.0.as_str() {
            "global" | "resolvers" | "userlist" | "peers" | "mailers" | "cache" | "program"
            | "http-errors" | "ring" => {}
            "defaults" => {
                if first == "mode" && words.get(1) != Some(&"http") {
                    error("only `mode http` can be routed by cohort".into(), None);
                    ok = false;
                }
            }
            "frontend" => match first {
                "bind" | "mode" if words.get(1) != Some(&"tcp") => {}
                "mode" => {
                    error("only `mode http` can be routed by cohort".into(), None);
                    ok = false;
                }
                "acl" => match parse_acl(&words) {
                    Ok((name, Acl::Header(acl, case_insensitive))) => {
                        if !case_insensitive {
                            sink.warning(pos, Kind::WrongType, format!("acl `{name}` matches case-sensitively; cohort matches cohort headers case-insensitively"), None);
                        }
                        header_acls.insert(name, acl);
                    }
                    Ok((name, Acl::Src(nets))) => {
                        src_acls.insert(name, nets);
                    }
                    Err(why) => {
                        error(format!("cannot use this acl: {why}"), Some("cohort understands `acl NAME hdr(HEADER) -m str [-i] VALUE...` and `acl NAME src CIDR...`".into()));
                        ok = false;
                    }
                },
                "use_backend" => match (words.get(1), words.get(2), words.get(3), words.len()) {
                    (Some(b), Some(&"if"), Some(acl), 4) => uses.push((b.to_string(), acl.to_string(), pos)),
                    _ => {
                        error(
                            "cohort understands `use_backend BACKEND if ACL` with one named acl".into(),
                            None,
                        );
                        ok = false;
                    }
                },
                "default_backend" => match words.get(1) {
                    Some(b) if words.len() == 2 => default_backend = Some((b.to_string(), pos)),
                    _ => {
                        error("`default_backend` takes one backend".into(), None);
                        ok = false;
                    }
                },
                "http-request" if words.get(1) == Some(&"del-header") => {
                    // `http-request del-header H if !trusted` / `unless trusted`: trusted peers.
                    let acl = match (words.get(3), words.get(4)) {
                        (Some(&"if"), Some(a)) => a.strip_prefix('!'),
                        (Some(&"unless"), Some(a)) => Some(*a),
                        _ => None,
                    };
                    match acl.and_then(|a| src_acls.get(a)) {
                        Some(nets) if words.len() == 5 => trusted = Some(nets.clone()),
                        // Removed from everyone: nobody chooses a cohort.
                        None if words.len() == 3 => trusted = Some(vec![]),
                        _ => {
                            error("cohort understands `http-request del-header HEADER if !SRC_ACL` (a src acl defined above)".into(), None);
                            ok = false;
                        }
                    }
                }
                _ => ok &= unhandled(first, ignorable, pos, sink),
            },
            "backend" => {
                let Some(backend) = backends.get_mut(&section.1) else {
                    continue;
                };
                match first {
                    "balance" if words.get(1) == Some(&"roundrobin") => {}
                    "balance" => {
                        error("only `balance roundrobin` is understood (cohort spreads evenly, or by a sticky key from cohort.yaml)".into(), None);
                        ok = false;
                    }
                    "mode" if words.get(1) == Some(&"http") => {}
                    "option" if words.get(1) == Some(&"httpchk") => {
                        if let Some(path) = words.iter().skip(2).find(|w| w.starts_with('/')) {
                            health.path = path.to_string();
                        }
                    }
                    "server" => match parse_server(&words) {
                        Ok(s) => {
                            if let Some(ms) = s.inter
                                && !inter_seen
                            {
                                health.interval = Duration::from_millis(ms);
                                inter_seen = true;
                            }
                            if let Some(r) = s.rise {
                                health.rise = r;
                            }
                            if let Some(f) = s.fall {
                                health.fall = f;
                            }
                            for w in &s.ignored {
                                sink.warning(
                                    pos,
                                    Kind::UnknownKey,
                                    format!("server option `{w}` does not change routing; ignored"),
                                    None,
                                );
                            }
                            backend.servers.push((s.track, s.addr, s.weight, pos));
                        }
                        Err(why) => {
                            error(format!("cannot use this server: {why}"), Some("cohort understands `server TRACK HOST:PORT [check] [inter MS] [rise N] [fall N] [weight W] [resolvers R]`".into()));
                            ok = false;
                        }
                    },
                    _ => ok &= unhandled(first, ignorable || first == "http-check", pos, sink),
                }
            }
            _ => {
                error(format!("`{first}` outside of any section"), None);
                ok = false;
            }
        }
    }

    let origin = Pos { line: 1, col: 1 };
    let Some(front) = frontend else {
        sink.error(origin, Kind::MissingKey, "there is no `frontend` section", None);
        return None;
    };
    // The cohort header is the one every hdr() acl looks at.
    let mut headers: Vec<&str> = header_acls.values().map(|a| a.header.as_str()).collect();
    headers.dedup();
    let cohort_header = match headers.as_slice() {
        [] => "X-Traffic-Group".to_string(),
        [one] => one.to_string(),
        _ => {
            sink.error(
                origin,
                Kind::Duplicate,
                format!(
                    "acls look at different headers ({}); cohort routes by one",
                    headers.join(", ")
                ),
                None,
            );
            return None;
        }
    };

    // Tracks: the union of each server name's addresses, in the order first seen.
    let mut tracks: Vec<RouterTrack> = vec![];
    for backend in backends.values() {
        for (track, addr, _, pos) in &backend.servers {
            let Ok(name) = TrackName::new(track) else {
                sink.error(
                    *pos,
                    Kind::BadName,
                    format!("server `{track}` does not name a track"),
                    Some("name servers after their track: `canary`, `canary-2`".into()),
                );
                ok = false;
                continue;
            };
            match tracks.iter_mut().find(|t| t.name == name) {
                Some(t) if !t.backends.contains(addr) => t.backends.push(addr.clone()),
                Some(_) => {}
                None => tracks.push(RouterTrack {
                    name,
                    version: Version::new("unknown").unwrap_or_else(|_| unreachable!("a valid version")),
                    backends: vec![addr.clone()],
                    endpoints: None,
                }),
            }
        }
    }

    let route = |name: &str, cohort: Option<String>, pos: Pos, sink: &mut Sink<'_>| -> Option<RouterRoute> {
        let Some(backend) = backends.get(name) else {
            sink.error(
                pos,
                Kind::UnknownTrack,
                format!("backend `{name}` is not defined"),
                None,
            );
            return None;
        };
        let mut by_track: Vec<(String, u32)> = vec![];
        for (track, _, weight, _) in &backend.servers {
            match by_track.iter_mut().find(|(t, _)| t == track) {
                Some(slot) => slot.1 += weight,
                None => by_track.push((track.clone(), *weight)),
            }
        }
        let total: u64 = by_track.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut weights = vec![];
        let mut given = 0u32;
        for (i, (track, w)) in by_track.iter().enumerate() {
            let scaled = u64::from(*w) * 10_000;
            // A backend whose servers all weigh 0 takes no traffic: an empty route (503).
            let (Some(share), Some(rest)) = (scaled.checked_div(total), scaled.checked_rem(total)) else {
                break;
            };
            let bp = if i + 1 == by_track.len() {
                10_000 - given
            } else {
                share as u32
            };
            if rest != 0 {
                sink.warning(
                    backend.pos,
                    Kind::BadWeight,
                    format!("backend `{name}`: weight {w} of {total} is not a whole basis point; rounded"),
                    None,
                );
            }
            given += bp;
            weights.push(TrackWeight {
                track: TrackName::new(track).ok()?,
                weight: Weight::from_basis_points(bp)?,
            });
        }
        Some(RouterRoute {
            cohort,
            weights,
            redistributed: vec![],
        })
    };

    let mut cohorts: Vec<RouterRoute> = vec![];
    for (backend, acl, pos) in &uses {
        let Some(h) = header_acls.get(acl) else {
            sink.error(
                *pos,
                Kind::UnknownKey,
                format!("acl `{acl}` is not a hdr() acl defined above"),
                None,
            );
            ok = false;
            continue;
        };
        for value in &h.values {
            if cohorts
                .iter()
                .any(|c| c.cohort.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(value)))
            {
                continue;
            }
            match route(backend, Some(value.clone()), *pos, sink) {
                Some(r) => cohorts.push(r),
                None => ok = false,
            }
        }
    }
    let Some((default_name, default_pos)) = default_backend else {
        sink.error(
            origin,
            Kind::MissingKey,
            "the frontend has no `default_backend`",
            Some("add `default_backend BACKEND` for everybody else".into()),
        );
        return None;
    };
    let default_route = route(&default_name, None, default_pos, sink);
    if !ok {
        return None;
    }
    if trusted.is_none() && !cohorts.is_empty() {
        // HAProxy believes a header nothing removes; cohort's router trusts nobody unless told.
        sink.warning(
            frontend_pos,
            Kind::OpenTrust,
            format!(
                "nothing here removes `{cohort_header}` from untrusted clients, so HAProxy believes it from everybody; cohort's router believes it from nobody unless the config says whom to trust"
            ),
            Some(format!(
                "add `acl trusted_peer src <your gateway's range>` and `http-request del-header {cohort_header} if !trusted_peer` to the frontend"
            )),
        );
    }
    Some(RouterConfig {
        service: service.map_or(front, str::to_string),
        cohort_header,
        protocol: Default::default(),
        trusted_peers: TrustedPeers::Only(trusted.unwrap_or_default()),
        sticky: None,
        health_check: health,
        tracks,
        cohorts,
        default_route: default_route?,
        mirrors: vec![],
    })
}

/// A directive the importer does not handle: a warning when it cannot change routing (`ignorable`),
/// otherwise an error. Returns whether the file is still usable.
fn unhandled(directive: &str, ignorable: bool, pos: Pos, sink: &mut Sink<'_>) -> bool {
    if ignorable {
        sink.warning(
            pos,
            Kind::UnknownKey,
            format!("`{directive}` does not change routing; ignored"),
            None,
        );
        return true;
    }
    sink.error(
        pos,
        Kind::WrongType,
        format!("`{directive}` may change routing and cohort does not understand it"),
        Some("remove it, or route with cohort's own config".into()),
    );
    false
}

fn strip_comment(line: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return &line[..i];
        }
        prev_space = c.is_whitespace();
    }
    line
}

enum Acl {
    Header(HeaderAcl, bool),
    Src(Vec<ipnet::IpNet>),
}

fn parse_acl(words: &[&str]) -> Result<(String, Acl), String> {
    let name = words.get(1).ok_or("no acl name")?.to_string();
    let criterion = words.get(2).ok_or("no criterion")?;
    if *criterion == "src" {
        let nets = words[3..]
            .iter()
            .map(|w| {
                w.parse::<ipnet::IpNet>()
                    .or_else(|_| w.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "a src address does not parse".to_string())?;
        if nets.is_empty() {
            return Err("src lists no address".into());
        }
        return Ok((name, Acl::Src(nets)));
    }
    let header = criterion
        .strip_prefix("hdr(")
        .and_then(|h| h.strip_suffix(')'))
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("`{criterion}` is not hdr(HEADER) or src"))?;
    let mut case_insensitive = false;
    let mut values = vec![];
    let mut rest = words[3..].iter();
    while let Some(w) = rest.next() {
        match *w {
            "-i" => case_insensitive = true,
            "-m" => match rest.next() {
                Some(&"str") => {}
                other => return Err(format!("match method `{}` is not `str`", other.unwrap_or(&""))),
            },
            "--" => values.extend(rest.by_ref().map(|v| v.to_string())),
            v if v.starts_with('-') => return Err(format!("flag `{v}` is not understood")),
            v => values.push(v.to_string()),
        }
    }
    if values.is_empty() {
        return Err("no value to match".into());
    }
    Ok((
        name,
        Acl::Header(
            HeaderAcl {
                header: header.to_string(),
                values,
            },
            case_insensitive,
        ),
    ))
}

struct Server {
    track: String,
    addr: String,
    weight: u32,
    inter: Option<u64>,
    rise: Option<u32>,
    fall: Option<u32>,
    ignored: Vec<String>,
}

fn parse_server(words: &[&str]) -> Result<Server, String> {
    let name = words.get(1).ok_or("no server name")?;
    let addr = words.get(2).ok_or("no address")?;
    match addr.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
        Some((h, Ok(p))) if !h.is_empty() && p > 0 => {}
        _ => return Err(format!("`{addr}` is not HOST:PORT")),
    }
    // `canary-2` is the second server of track `canary`.
    let track = match name.rsplit_once('-') {
        Some((t, n)) if !t.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => t,
        _ => name,
    };
    let mut s = Server {
        track: track.to_string(),
        addr: addr.to_string(),
        weight: 1,
        inter: None,
        rise: None,
        fall: None,
        ignored: vec![],
    };
    let mut rest = words[3..].iter();
    let number = |w: Option<&&str>, what: &str| -> Result<u64, String> {
        let w = w.ok_or(format!("`{what}` needs a value"))?;
        let digits = w.trim_end_matches("ms");
        match (
            w.strip_suffix('s').filter(|_| !w.ends_with("ms")),
            digits.parse::<u64>(),
        ) {
            (Some(secs), _) => secs
                .parse::<u64>()
                .map(|v| v * 1000)
                .map_err(|_| format!("`{what} {w}` is not a number")),
            (None, Ok(v)) => Ok(v),
            _ => Err(format!("`{what} {w}` is not a number")),
        }
    };
    while let Some(w) = rest.next() {
        match *w {
            "check" => {}
            "inter" => s.inter = Some(number(rest.next(), "inter")?),
            "rise" => s.rise = Some(number(rest.next(), "rise")?.clamp(1, 100) as u32),
            "fall" => s.fall = Some(number(rest.next(), "fall")?.clamp(1, 100) as u32),
            "weight" => {
                let v = rest
                    .next()
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or("`weight` needs a number")?;
                if v > 256 {
                    return Err(format!("weight {v} is above HAProxy's 256"));
                }
                s.weight = v;
            }
            "resolvers" | "init-addr" | "resolve-prefer" | "maxconn" | "slowstart" => {
                rest.next();
                s.ignored.push(w.to_string());
            }
            "backup" | "disabled" | "redir" | "track" | "ssl" | "send-proxy" => {
                return Err(format!("`{w}` changes routing and is not understood"));
            }
            other => s.ignored.push(other.to_string()),
        }
    }
    s.ignored.retain(|w| w != "resolvers");
    Ok(s)
}

#[cfg(test)]
mod tests;
