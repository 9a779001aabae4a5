use serde_json::Value;

use super::{AgentPlacement, AgentSource, agent};

fn control() -> AgentSource {
    AgentSource::Control {
        url: "https://cohort.example.com".into(),
        cluster: "eu-west".into(),
    }
}

fn git() -> AgentSource {
    AgentSource::Git {
        url: "https://git.example.com/release.git".into(),
        branch: "main".into(),
    }
}

fn container_args(pod: &Value) -> Vec<&str> {
    pod["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

fn seed() -> cohort_core::Pipeline {
    let (repo, diags) = cohort_spec::repo::validate(&cohort_spec::scaffold::repo_files());
    assert!(diags.is_empty(), "{diags:?}");
    repo.expect("valid").pipeline
}

#[test]
fn the_agent_gets_a_namespaced_role_its_token_from_a_secret_and_probes() {
    let pipeline = seed();
    let objects = agent(AgentPlacement::of(&pipeline), &control(), None).expect("renders");
    let kinds: Vec<&str> = objects.iter().map(|o| o.kind).collect();
    assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding", "Deployment"]);
    for o in &objects {
        assert_eq!(
            o.value["metadata"]["namespace"],
            pipeline.namespace.as_str(),
            "{}",
            o.kind
        );
        assert_eq!(
            o.value["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "cohort-agent"
        );
    }
    let role = &objects[1].value;
    let text = role.to_string();
    // The pod proxy only to ask routers which config they run after an apply changed it.
    assert!(!text.contains('*') && !text.contains("secrets"), "{text}");
    let configmaps = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|x| x == "configmaps"))
        })
        .expect("configmaps rule");
    assert!(
        configmaps["verbs"]
            .as_array()
            .expect("verbs")
            .iter()
            .any(|v| v == "patch")
    );
    let binding = &objects[2].value;
    assert_eq!(binding["subjects"][0]["name"], "cohort-agent");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    let pod = &objects[3].value["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "cohort-agent");
    let args = container_args(pod);
    assert_eq!(
        args,
        [
            "agent",
            "--control",
            "https://cohort.example.com",
            "--cluster",
            "eu-west",
            "--token-file",
            "/var/run/secrets/cohort/token",
            "--admin",
            "0.0.0.0:9102"
        ]
    );
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "cohort-agent-token");
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/ready"
    );
    assert_eq!(pod["containers"][0]["image"], pipeline.router.image.as_str());

    let objects = agent(AgentPlacement::of(&pipeline), &git(), None).expect("renders");
    let pod = &objects[3].value["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].to_string();
    assert!(args.contains("--git") && args.contains("--mirror-dir"), "{args}");
    assert!(!pod.to_string().contains("cohort-agent-token"));
    assert!(!pod.to_string().contains("ca.crt"), "no CA unless asked");
}

#[test]
fn a_ca_config_map_is_mounted_and_given_to_the_sources_ca_flag() {
    let pipeline = seed();
    for (source, flag) in [
        (control(), "--ca-file"),
        (git(), "--git-ca-file"),
        (AgentSource::GitFromConfigMap, "--git-ca-file"),
    ] {
        let objects = agent(AgentPlacement::of(&pipeline), &source, Some("company-ca")).expect("renders");
        let pod = &objects[3].value["spec"]["template"]["spec"];
        let args = container_args(pod);
        let at = args.iter().position(|a| *a == flag).expect("the CA flag");
        assert_eq!(args[at + 1], "/etc/cohort/ca/ca.crt");
        let volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "ca")
            .expect("the CA volume");
        assert_eq!(volume["configMap"]["name"], "company-ca");
        let mount = pod["containers"][0]["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["name"] == "ca")
            .expect("the CA mount");
        assert_eq!(mount["mountPath"], "/etc/cohort/ca");
        assert_eq!(mount["readOnly"], true);
    }
}

#[test]
fn the_generic_install_names_no_namespace_and_reads_its_remote_from_the_config_map() {
    let place = AgentPlacement {
        namespace: None,
        image: "registry.example.com/cohort:1.2.3",
    };
    let objects = agent(place, &AgentSource::GitFromConfigMap, None).expect("renders");
    for o in &objects {
        assert!(
            o.value["metadata"].get("namespace").is_none(),
            "{} must take kubectl's -n: {}",
            o.kind,
            o.value["metadata"]
        );
    }
    // With no namespace the API server binds the ServiceAccount of the RoleBinding's own.
    let subject = &objects[2].value["subjects"][0];
    assert_eq!(subject["kind"], "ServiceAccount");
    assert!(subject.get("namespace").is_none(), "{subject}");
    let pod = &objects[3].value["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "registry.example.com/cohort:1.2.3");
    let args = container_args(pod);
    assert_eq!(
        args[..5],
        [
            "agent",
            "--git",
            "$(COHORT_AGENT_GIT)",
            "--branch",
            "$(COHORT_AGENT_BRANCH)"
        ]
    );
    let env = pod["containers"][0]["env"].as_array().expect("env");
    let from: Vec<(&str, &str, &str)> = env
        .iter()
        .map(|e| {
            let r = &e["valueFrom"]["configMapKeyRef"];
            (
                e["name"].as_str().unwrap_or_default(),
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        from,
        [
            ("COHORT_AGENT_GIT", "cohort-agent", "git"),
            ("COHORT_AGENT_BRANCH", "cohort-agent", "branch")
        ]
    );
    // Required keys: a missing one stops the pod rather than reaching the agent as `$(VAR)`.
    assert!(
        env.iter()
            .all(|e| e["valueFrom"]["configMapKeyRef"].get("optional").is_none())
    );
}

#[test]
fn a_pipelines_agent_has_no_environment_from_config_maps() {
    let pipeline = seed();
    for source in [control(), git()] {
        let objects = agent(AgentPlacement::of(&pipeline), &source, None).expect("renders");
        assert!(
            objects[3].value["spec"]["template"]["spec"]["containers"][0]
                .get("env")
                .is_none()
        );
    }
}
