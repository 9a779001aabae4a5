//! Golden tests: the seed's example renders to the seed's objects, byte for byte.

use std::path::PathBuf;

use cohort_spec::repo::validate;

fn seed() -> cohort_spec::Repo {
    let files = cohort_spec::scaffold::repo_files();
    let (repo, diags) = validate(&files);
    assert!(diags.is_empty(), "{diags:?}");
    repo.expect("the scaffold is valid")
}

/// Compares with the file under tests/golden, or rewrites it when COHORT_UPDATE_GOLDEN is set.
fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("COHORT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected =
        std::fs::read_to_string(&path).expect("golden file exists (set COHORT_UPDATE_GOLDEN=1 to create)");
    assert!(
        expected == actual,
        "{name} differs from the golden file; run with COHORT_UPDATE_GOLDEN=1 and review the diff"
    );
}

#[test]
fn the_seed_renders_the_seed_table() {
    let repo = seed();
    let svc = &repo.services[0];
    let objects = cohort_render::render_service(&repo.pipeline, svc).expect("renders");
    let table: Vec<(String, String, Option<i64>)> = objects
        .iter()
        .map(|o| {
            (
                o.kind.to_string(),
                o.name.clone(),
                o.value.pointer("/spec/replicas").and_then(|r| r.as_i64()),
            )
        })
        .collect();
    let row = |k: &str, n: &str, r: Option<i64>| (k.to_string(), n.to_string(), r);
    assert_eq!(
        table,
        vec![
            row("Service", "account-service", None),
            row("ConfigMap", "account-service-router", None),
            row("ServiceAccount", "account-service-router", None),
            row("Role", "account-service-router", None),
            row("RoleBinding", "account-service-router", None),
            row("Deployment", "account-service-router", Some(4)),
            row("PodDisruptionBudget", "account-service-router", None),
            row("Service", "account-service-internal", None),
            row("Deployment", "account-service-internal-v1-18-0", Some(2)),
            row("Service", "account-service-canary", None),
            row("Deployment", "account-service-canary-v1-17-0", Some(4)),
            row("Service", "account-service-paid", None),
            row("Deployment", "account-service-paid-v1-15-0", Some(4)),
            row("Service", "account-service-production", None),
            row("Deployment", "account-service-production-v1-15-0", Some(10)),
            row("PodDisruptionBudget", "account-service-production", None),
        ]
    );
    for o in &objects {
        let labels = o.value.pointer("/metadata/labels").expect("labels");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "cohort", "{}", o.name);
        assert_eq!(
            labels["app.kubernetes.io/part-of"], "account-service",
            "{}",
            o.name
        );
        assert_eq!(o.value["metadata"]["namespace"], "shop");
        if o.kind == "Service" && o.name != "account-service" {
            let track = o.name.trim_start_matches("account-service-");
            assert_eq!(
                o.value["spec"]["selector"],
                serde_json::json!({"app": "account-service", "tier": "service", "track": track}),
                "the seed's selector"
            );
        }
        if o.kind == "Deployment" && o.name != "account-service-router" {
            let l = &o.value["spec"]["template"]["metadata"]["labels"];
            assert_eq!(l["app"], "account-service");
            assert_eq!(l["tier"], "service");
            assert!(
                l["version"].as_str().is_some_and(|v| v.contains('.')),
                "exact version in the label"
            );
            assert_eq!(o.value["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
            assert!(
                o.value
                    .pointer("/spec/template/spec/containers/0/readinessProbe")
                    .is_some()
            );
            assert!(
                o.value
                    .pointer("/spec/template/spec/containers/0/lifecycle/preStop")
                    .is_some()
            );
        }
    }
    let front = &objects[0].value;
    assert_eq!(
        front["spec"]["selector"],
        serde_json::json!({"app": "account-service", "tier": "router"})
    );
    golden("account-service.yaml", &cohort_render::to_yaml(&objects));
    golden("account-service.json", &cohort_render::to_json(&objects));
    golden(
        "account-service.haproxy.cfg",
        &cohort_render::haproxy_cfg(&repo.pipeline, svc).expect("expressible"),
    );
}

#[test]
fn a_track_without_a_version_renders_nothing_and_gives_its_share_away() {
    let mut repo = seed();
    let svc = &mut repo.services[0];
    svc.state.tracks.retain(|t, _| t.as_str() != "canary");
    let objects = cohort_render::render_service(&repo.pipeline, svc).expect("renders");
    assert!(objects.iter().all(|o| !o.name.contains("canary")));
    let cfg = cohort_render::router_config(&repo.pipeline, svc);
    let free = cfg
        .cohorts
        .iter()
        .find(|r| r.cohort.as_deref() == Some("FREE"))
        .expect("FREE");
    let text = serde_json::to_value(free).expect("json");
    assert_eq!(
        text,
        serde_json::json!({
            "cohort": "FREE",
            "weights": [{"track": "production", "weight": "100%"}],
            "redistributed": [{"track": "canary", "weight": "5%"}],
        })
    );
}

#[test]
fn haproxy_refuses_weights_it_cannot_express() {
    let mut repo = seed();
    let svc = &mut repo.services[0];
    let fine = cohort_core::Route::new(vec![
        (
            cohort_core::TrackName::new("paid").expect("t"),
            cohort_core::Weight::from_basis_points(10).expect("w"),
        ),
        (
            cohort_core::TrackName::new("production").expect("t"),
            cohort_core::Weight::from_basis_points(9990).expect("w"),
        ),
    ])
    .expect("route");
    svc.spec.default_route = fine;
    let err = cohort_render::haproxy_cfg(&repo.pipeline, svc).expect_err("0.1% is too fine for HAProxy");
    assert!(matches!(err, cohort_render::HaproxyError::WeightsTooFine { .. }));
}

#[test]
fn rendering_is_deterministic() {
    let repo = seed();
    let a = cohort_render::to_yaml(
        &cohort_render::render_service(&repo.pipeline, &repo.services[0]).expect("renders"),
    );
    let b = cohort_render::to_yaml(
        &cohort_render::render_service(&repo.pipeline, &seed().services[0]).expect("renders"),
    );
    assert_eq!(a, b);
}

#[test]
fn a_zero_pre_stop_pause_renders_no_pre_stop_hook() {
    let mut repo = seed();
    repo.pipeline.defaults.pre_stop.pause = cohort_core::Duration::ZERO;
    let objects = cohort_render::render_service(&repo.pipeline, &repo.services[0]).expect("renders");
    let deployment = objects
        .iter()
        .find(|o| o.name == "account-service-internal-v1-18-0")
        .expect("internal");
    assert!(
        deployment
            .value
            .pointer("/spec/template/spec/containers/0/lifecycle")
            .is_none()
    );
}

/// The ConfigMap's router.yaml is read back by the router into exactly the config it came from.
#[test]
fn the_router_config_reads_back_as_rendered() {
    let mut repo = seed();
    repo.pipeline.sticky = Some(cohort_core::Sticky::Header("X-User-Id".into()));
    for drop_canary in [false, true] {
        let svc = &mut repo.services[0];
        if drop_canary {
            svc.state.tracks.retain(|t, _| t.as_str() != "canary");
        }
        let objects = cohort_render::render_service(&repo.pipeline, svc).expect("renders");
        let cm = objects.iter().find(|o| o.kind == "ConfigMap").expect("configmap");
        let text = cm.value["data"][cohort_render::ROUTER_CONFIG_KEY]
            .as_str()
            .expect("router.yaml");
        let mut diags = vec![];
        let node = cohort_yaml::parse(text).expect("yaml");
        let read = cohort_spec::router_config::read_router_config(
            &node,
            &mut cohort_spec::diag::Sink::new("router.yaml", &mut diags),
        );
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(read, Some(cohort_render::router_config(&repo.pipeline, svc)));
    }
}

#[test]
fn a_grpc_service_is_reached_over_http2_probed_by_grpc_health_and_its_config_reads_back() {
    let mut repo = seed();
    repo.services[0].spec.protocol = cohort_core::model::Protocol::Grpc;
    let svc = &repo.services[0];
    let objects = cohort_render::render_service(&repo.pipeline, svc).expect("renders");
    let track_service = objects
        .iter()
        .find(|o| o.kind == "Service" && o.name == "account-service-canary")
        .expect("track Service");
    assert_eq!(
        track_service.value.pointer("/spec/ports/0/appProtocol"),
        Some(&serde_json::json!("kubernetes.io/h2c"))
    );
    let deployment = objects
        .iter()
        .find(|o| o.name == "account-service-canary-v1-17-0")
        .expect("canary");
    let probe = deployment
        .value
        .pointer("/spec/template/spec/containers/0/readinessProbe")
        .expect("probe");
    assert_eq!(probe["grpc"], serde_json::json!({"port": 8080}));
    assert!(probe.get("httpGet").is_none(), "{probe}");
    let cm = objects.iter().find(|o| o.kind == "ConfigMap").expect("configmap");
    let text = cm.value["data"][cohort_render::ROUTER_CONFIG_KEY]
        .as_str()
        .expect("router.yaml");
    assert!(text.contains("\nprotocol: grpc\n"), "{text}");
    let mut diags = vec![];
    let node = cohort_yaml::parse(text).expect("yaml");
    let read = cohort_spec::router_config::read_router_config(
        &node,
        &mut cohort_spec::diag::Sink::new("router.yaml", &mut diags),
    );
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(read, Some(cohort_render::router_config(&repo.pipeline, svc)));
}

/// The haproxy.cfg cohort renders imports back to the same routing: same cohorts, splits,
/// trusted peers, health check and backends (HAProxy has no versions).
#[test]
fn the_rendered_haproxy_cfg_imports_to_the_same_routing() {
    let repo = seed();
    let svc = &repo.services[0];
    let expected = cohort_render::router_config(&repo.pipeline, svc);
    let text = cohort_render::haproxy_cfg(&repo.pipeline, svc).expect("expressible");
    let mut diags = vec![];
    let imported = cohort_spec::haproxy::read_haproxy(
        &text,
        None,
        &mut cohort_spec::diag::Sink::new("haproxy.cfg", &mut diags),
    )
    .unwrap_or_else(|| panic!("imports: {diags:?}"));
    assert_eq!(imported.service, expected.service);
    assert_eq!(imported.cohort_header, expected.cohort_header);
    assert_eq!(imported.trusted_peers, expected.trusted_peers);
    assert_eq!(imported.health_check, expected.health_check);
    assert_eq!(imported.cohorts, expected.cohorts);
    assert_eq!(imported.default_route, expected.default_route);
    for track in &expected.tracks {
        let got = imported
            .tracks
            .iter()
            .find(|t| t.name == track.name)
            .expect("track imported");
        assert_eq!(got.backends, track.backends);
    }
}

/// The router pod template, whose change makes the routers roll.
fn router_template(repo: &cohort_spec::Repo) -> serde_json::Value {
    let objects = cohort_render::render_service(&repo.pipeline, &repo.services[0]).expect("renders");
    objects
        .into_iter()
        .find(|o| o.kind == "Deployment" && o.name.ends_with("-router"))
        .expect("router Deployment")
        .value["spec"]["template"]
        .clone()
}

#[test]
fn routers_roll_when_their_tracks_change_and_reload_when_only_versions_do() {
    let before = seed();
    let t = |n: &str| cohort_core::TrackName::new(n).expect("track");

    let mut new_build = seed();
    new_build.services[0].state.tracks.insert(
        t("internal"),
        cohort_core::Version::new("1.19.0").expect("version"),
    );
    assert_eq!(router_template(&before), router_template(&new_build));

    let mut no_canary = seed();
    no_canary.services[0].state.tracks.remove(&t("canary"));
    let template = router_template(&no_canary);
    assert_ne!(router_template(&before), template);
    assert_eq!(
        template["metadata"]["annotations"]["cohort.dev/tracks"],
        "internal paid production"
    );
}

/// A canary part-way through its ramp gets its current step, the rest staying with
/// production; once the ramp is done (no step recorded) it gets the configured 5%.
#[test]
fn a_ramping_canary_gets_its_step_and_production_the_rest() {
    let mut files = cohort_spec::scaffold::repo_files();
    files.pipeline = files.pipeline.map(|t| {
        format!("autopilot:\n  stages:\n    canary:\n      promote: auto\n      ramp: [1%, 2.5%, 5%]\n{t}")
    });
    files.releases[0].1.push_str("ramp:\n  canary: 1\n");
    let (repo, diags) = validate(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let repo = repo.expect("valid");
    let svc = &repo.services[0];
    let free = |svc: &cohort_spec::Service| -> Vec<(String, u32)> {
        let config = cohort_render::router_config(&repo.pipeline, svc);
        let (_, route) = config
            .cohorts
            .iter()
            .map(|r| (r.cohort.clone(), r))
            .find(|(c, _)| c.as_deref() == Some("FREE"))
            .expect("FREE");
        route
            .weights
            .iter()
            .map(|w| (w.track.to_string(), w.weight.basis_points()))
            .collect()
    };
    assert_eq!(
        free(svc),
        [("canary".to_string(), 250), ("production".to_string(), 9_750)]
    );
    let mut done = svc.clone();
    done.state.ramp.clear();
    assert_eq!(
        free(&done),
        [("canary".to_string(), 500), ("production".to_string(), 9_500)]
    );
}

#[test]
fn a_mirror_reaches_the_router_only_while_both_its_tracks_run_a_version() {
    let mut repo = seed();
    repo.services[0].spec.mirrors = vec![cohort_core::Mirror {
        cohort: Some("FREE".into()),
        from: cohort_core::TrackName::new("production").expect("track"),
        to: cohort_core::TrackName::new("internal").expect("track"),
        share: cohort_core::Weight::from_basis_points(500).expect("share"),
        max_body: 65_536,
    }];
    let config = cohort_render::router_config(&repo.pipeline, &repo.services[0]);
    assert_eq!(config.mirrors.len(), 1);
    assert_eq!(config.mirrors[0].to.as_str(), "internal");
    // It reads back as rendered.
    let objects = cohort_render::render_service(&repo.pipeline, &repo.services[0]).expect("renders");
    let cm = objects.iter().find(|o| o.kind == "ConfigMap").expect("configmap");
    let text = cm.value["data"][cohort_render::ROUTER_CONFIG_KEY]
        .as_str()
        .expect("router.yaml");
    let mut diags = vec![];
    let node = cohort_yaml::parse(text).expect("yaml");
    let read = cohort_spec::router_config::read_router_config(
        &node,
        &mut cohort_spec::diag::Sink::new("router.yaml", &mut diags),
    );
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(read, Some(config));
    repo.services[0]
        .state
        .tracks
        .retain(|t, _| t.as_str() != "internal");
    let without = cohort_render::router_config(&repo.pipeline, &repo.services[0]);
    assert!(
        without.mirrors.is_empty(),
        "no copies to a track with nothing deployed"
    );
}
