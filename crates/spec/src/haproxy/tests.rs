use super::*;
use crate::diag::Severity;

fn read(text: &str) -> (Option<RouterConfig>, Vec<crate::Diagnostic>) {
    let mut diags = vec![];
    let cfg = read_haproxy(text, None, &mut Sink::new("haproxy.cfg", &mut diags));
    (cfg, diags)
}

const SEED: &str = "\
global
    log stdout format raw local0

defaults
    mode http
    timeout connect 5s

frontend account-service
    bind *:8080
    acl is_internal hdr(X-Traffic-Group) -m str -i INTERNAL
    acl is_free hdr(X-Traffic-Group) -m str -i FREE
    use_backend internal if is_internal
    use_backend free if is_free
    default_backend paid

backend internal
    balance roundrobin
    server internal 127.0.0.1:9001 check inter 2000

backend free
    balance roundrobin
    server canary 127.0.0.1:9002 check inter 2000 weight 5
    server production 127.0.0.1:9004 check inter 2000 weight 95

backend paid
    balance roundrobin
    server paid 127.0.0.1:9003 check inter 2000 weight 5
    server production 127.0.0.1:9004 check inter 2000 weight 90
    server production-2 127.0.0.1:9005 check inter 2000 weight 5
";

#[test]
fn the_seed_shape_becomes_tracks_and_routes() {
    let (cfg, diags) = read(SEED);
    assert!(diags.iter().all(|d| d.severity == Severity::Warning), "{diags:?}");
    let cfg = cfg.expect("valid");
    assert_eq!(cfg.service, "account-service");
    assert_eq!(cfg.cohort_header, "X-Traffic-Group");
    assert_eq!(cfg.health_check.interval, Duration::from_millis(2000));
    let tracks: Vec<(&str, Vec<&str>)> = cfg
        .tracks
        .iter()
        .map(|t| (t.name.as_str(), t.backends.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        tracks,
        vec![
            ("canary", vec!["127.0.0.1:9002"]),
            ("production", vec!["127.0.0.1:9004", "127.0.0.1:9005"]),
            ("internal", vec!["127.0.0.1:9001"]),
            ("paid", vec!["127.0.0.1:9003"]),
        ]
    );
    let free = cfg
        .cohorts
        .iter()
        .find(|c| c.cohort.as_deref() == Some("FREE"))
        .expect("FREE");
    let split: Vec<(&str, u32)> = free
        .weights
        .iter()
        .map(|w| (w.track.as_str(), w.weight.basis_points()))
        .collect();
    assert_eq!(split, vec![("canary", 500), ("production", 9500)]);
    let paid: Vec<(&str, u32)> = cfg
        .default_route
        .weights
        .iter()
        .map(|w| (w.track.as_str(), w.weight.basis_points()))
        .collect();
    assert_eq!(
        paid,
        vec![("paid", 500), ("production", 9500)],
        "production-2 is production"
    );
}

#[test]
fn what_could_change_routing_is_an_error_naming_its_line() {
    let text = SEED.replace(
        "    default_backend paid",
        "    http-request redirect location /x\n    default_backend paid",
    );
    let (cfg, diags) = read(&text);
    assert!(cfg.is_none());
    let e = diags
        .iter()
        .find(|d| d.severity == Severity::Error)
        .expect("an error");
    assert_eq!(e.pos.line, 14);
    assert!(e.message.contains("`http-request`"), "{e}");
    let text = SEED.replace(
        "balance roundrobin\n    server internal",
        "balance leastconn\n    server internal",
    );
    assert!(read(&text).0.is_none());
    let text = SEED.replace(
        "weight 5\n    server production 127.0.0.1:9004 check inter 2000 weight 95",
        "weight 5 backup\n    server production 127.0.0.1:9004 check inter 2000 weight 95",
    );
    assert!(read(&text).0.is_none());
}

#[test]
fn what_cannot_change_routing_is_a_warning() {
    let text = SEED.replace(
        "    bind *:8080",
        "    bind *:8080\n    timeout client 30s\n    option forwardfor",
    );
    let (cfg, diags) = read(&text);
    assert!(cfg.is_some());
    let warnings: Vec<usize> = diags
        .iter()
        .filter(|d| d.severity == Severity::Warning && d.kind != Kind::OpenTrust)
        .map(|d| d.pos.line)
        .collect();
    assert_eq!(warnings, vec![10, 11]);
}

#[test]
fn a_case_sensitive_acl_is_warned_about() {
    let text = SEED.replace("-m str -i FREE", "-m str FREE");
    let (cfg, diags) = read(&text);
    assert!(cfg.is_some());
    assert!(
        diags
            .iter()
            .any(|d| d.severity == Severity::Warning && d.pos.line == 11),
        "{diags:?}"
    );
}

#[test]
fn trusted_peers_come_from_del_header() {
    let text = SEED.replace(
        "    bind *:8080",
        "    bind *:8080\n    acl trusted_peer src 10.0.0.0/8 192.168.0.0/16\n    http-request del-header X-Traffic-Group if !trusted_peer",
    );
    let cfg = read(&text).0.expect("valid");
    assert_eq!(
        cfg.trusted_peers,
        TrustedPeers::Only(vec![
            "10.0.0.0/8".parse().expect("net"),
            "192.168.0.0/16".parse().expect("net")
        ])
    );
}

/// HAProxy believes a header nothing removes; the import used to carry that over as "trust
/// everybody". Now the router trusts nobody, and the import says why INTERNAL stops matching.
#[test]
fn an_haproxy_cfg_that_removes_no_header_imports_as_trusting_nobody_with_a_warning() {
    let (cfg, diags) = read(SEED);
    assert!(cfg.expect("valid").trusted_peers.is_nobody());
    let warned: Vec<_> = diags.iter().filter(|d| d.kind == Kind::OpenTrust).collect();
    assert_eq!(warned.len(), 1, "{diags:?}");
    assert_eq!(warned[0].severity, Severity::Warning);
    assert_eq!(warned[0].pos, Pos { line: 8, col: 1 }, "at the frontend");
    let removed = SEED.replace(
        "    bind *:8080",
        "    bind *:8080\n    http-request del-header X-Traffic-Group",
    );
    let (cfg, diags) = read(&removed);
    assert!(cfg.expect("valid").trusted_peers.is_nobody());
    assert!(diags.iter().all(|d| d.kind != Kind::OpenTrust), "{diags:?}");
}

#[test]
fn missing_pieces_are_errors() {
    assert!(read("backend b\n    server a 127.0.0.1:1\n").0.is_none());
    assert!(read(&SEED.replace("    default_backend paid\n", "")).0.is_none());
    assert!(
        read(&SEED.replace("use_backend free if is_free", "use_backend nowhere if is_free"))
            .0
            .is_none()
    );
    assert!(read(&SEED.replace("127.0.0.1:9002", "127.0.0.1")).0.is_none());
}

proptest::proptest! {
    /// Whatever the text, reading never panics (a stand-in until the fuzz target runs in CI).
    #[test]
    fn any_text_is_read_without_panicking(lines in proptest::collection::vec(
        proptest::prop_oneof![
            proptest::string::string_regex("[a-z_-]{1,12}( [-a-zA-Z0-9.:/()*!]{0,20}){0,6}").expect("regex"),
            proptest::string::string_regex("\\PC{0,40}").expect("regex"),
            proptest::sample::select(SEED.lines().map(str::to_string).collect::<Vec<_>>()),
        ],
        0..40,
    )) {
        let _ = read(&lines.join("\n"));
    }
}
