//! `cohort agent` against a real API server, pulling from a real `cohort serve` over a real
//! release repo, with exactly the RBAC `cohort render --agent` emits. Runs when
//! `COHORT_E2E_KUBECONFIG` names a kubeconfig with rights to create namespaces (e.g. the
//! k8s-lab's), and is skipped, saying so, otherwise. Needs `kubectl` and `git` on PATH.

mod kube_common;
mod router_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube_common::{Namespace, Running, git_commit, kubectl, kubectl_json, release_repo, text, wait_for};

const TOKEN: &str = "eu-west-token-0123456789abcdef";
const FLEET: &str = "fleet-token-0123456789abcdef";

fn cohort(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run cohort")
}

fn head(repo: &Path) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo)
        .output()
        .expect("git");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The agent's saved state: service → applied revision.
fn applied_revision(kc: &Path, ns: &str, service: &str) -> Option<String> {
    let cm = kubectl_json(kc, &["-n", ns, "get", "configmap", "cohort-agent-state"]);
    let entry: serde_json::Value = serde_json::from_str(cm["data"][service].as_str()?).ok()?;
    entry["revision"].as_str().map(String::from)
}

/// The agent's own objects as rendered, minus its Deployment (the tests run the binary), and
/// a kubeconfig of its ServiceAccount: the agent runs with exactly the rendered rights.
fn agent_identity(kc: &Path, ns: &Namespace, repo: &Path, work: &Path) -> PathBuf {
    let rendered = cohort(
        work,
        &[
            "-C",
            repo.to_str().expect("utf-8"),
            "render",
            "--agent",
            "--control",
            "https://x",
            "--cluster",
            "eu-west",
            "-o",
            "json",
        ],
    );
    assert!(rendered.status.success(), "{}", text(&rendered));
    let mut list: serde_json::Value = serde_json::from_slice(&rendered.stdout).expect("json");
    list["items"]
        .as_array_mut()
        .expect("items")
        .retain(|o| o["kind"] != "Deployment");
    kubectl(kc, &["apply", "-f", "-"], Some(&list.to_string()));
    ns.kubeconfig_of("cohort-agent", work)
}

fn http_get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_agent_pulls_from_cohort_serve_applies_with_its_own_rbac_and_resumes() {
    let Some(kc) = kube_common::kubeconfig("cohort agent") else {
        return;
    };
    let ns = Namespace::new(&kc, "agent");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), &ns.name, &kc);
    let work = dir.path();

    let agent_kc = agent_identity(&kc, &ns, &repo, work);

    // The control API over the release repo.
    let tokens = work.join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!("fleet_token: {FLEET}\nclusters:\n  eu-west:\n    token: {TOKEN}\n"),
    )
    .expect("tokens");
    let token_file = work.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let fleet_file = work.join("fleet-token");
    std::fs::write(&fleet_file, FLEET).expect("fleet token");
    let serve = Running::start(
        &[
            "-C",
            repo.to_str().expect("utf-8"),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            tokens.to_str().expect("utf-8"),
        ],
        work,
    );
    let url = serve.address_after("control API on ");
    let agent_args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "agent",
            "--control",
            &url,
            "--cluster",
            "eu-west",
            "--token-file",
            token_file.to_str().expect("utf-8"),
            "--kubeconfig",
            agent_kc.to_str().expect("utf-8"),
            "-n",
            &ns.name,
            "--timeout",
            "60s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let once = || {
        let args = agent_args(&["--once"]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cohort(work, &refs)
    };

    // First sync: everything rolled out by the agent, its place saved.
    let first = once();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert!(
        text(&first).contains("account-service") && text(&first).contains("applied"),
        "{}",
        text(&first)
    );
    let rev1 = head(&repo);
    assert_eq!(
        applied_revision(&kc, &ns.name, "account-service").as_deref(),
        Some(rev1.as_str())
    );
    let deployments = ns.names("deployments");
    assert_eq!(deployments.len(), 5, "{deployments:?}");
    let router = kubectl_json(
        &kc,
        &[
            "-n",
            &ns.name,
            "get",
            "deployment",
            "account-service-router",
            "--show-managed-fields",
        ],
    );
    assert!(
        router["metadata"]["managedFields"]
            .as_array()
            .expect("fields")
            .iter()
            .any(|f| f["manager"] == "cohort"),
        "applied with cohort's field manager, as `cohort apply` does"
    );

    // A no-op pass (as after a restart): nothing applied again.
    let generation = router["metadata"]["generation"].clone();
    let again = once();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(
        !text(&again).contains("\"applying\"") && !text(&again).contains(" applying"),
        "{}",
        text(&again)
    );
    let router = kubectl_json(
        &kc,
        &["-n", &ns.name, "get", "deployment", "account-service-router"],
    );
    assert_eq!(router["metadata"]["generation"], generation);

    // An invalid revision: refused, reported, the cluster unchanged.
    let config_path = repo.join("cohort.yaml");
    let config = std::fs::read_to_string(&config_path).expect("cohort.yaml");
    std::fs::write(
        &config_path,
        config.replace("router:\n", "router:\n  bogus_key: 1\n"),
    )
    .expect("write");
    git_commit(&repo, "a bad edit");
    let bad = once();
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("is not valid"), "{}", text(&bad));
    assert_eq!(
        applied_revision(&kc, &ns.name, "account-service").as_deref(),
        Some(rev1.as_str())
    );

    // Fixed, and a new build deployed: the long-running agent applies it, prunes the old
    // version after the new one rolled out, reports, and stops cleanly on SIGTERM.
    std::fs::write(&config_path, &config).expect("write");
    git_commit(&repo, "undo the bad edit");
    let deploy = cohort(
        work,
        &[
            "-C",
            repo.to_str().expect("utf-8"),
            "deploy",
            "account-service",
            "1.19.0",
        ],
    );
    assert!(deploy.status.success(), "{}", text(&deploy));
    let rev2 = head(&repo);
    let args = agent_args(&["--interval", "1s", "--admin", "127.0.0.1:0"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Running::start(&refs, work);
    let admin = agent.address_after("admin=");
    wait_for("the agent to apply the new revision", 90, || {
        applied_revision(&kc, &ns.name, "account-service").as_deref() == Some(rev2.as_str())
    });
    let names = ns.names("deployments");
    assert!(names.iter().any(|n| n.ends_with("internal-v1-19-0")), "{names:?}");
    assert!(
        !names.iter().any(|n| n.ends_with("internal-v1-18-0")),
        "the old version is pruned: {names:?}"
    );
    let (status, _) = http_get(&format!("http://{admin}/ready"));
    assert_eq!(status, 200, "{}", agent.said());
    let (_, metrics) = http_get(&format!("http://{admin}/metrics"));
    assert!(
        metrics.contains("cohort_agent_applies_total{service=\"account-service\",result=\"ok\"} 1"),
        "{metrics}"
    );

    // The fleet view shows the cluster in sync and healthy.
    wait_for("the cluster to be in sync in the fleet view", 60, || {
        let fleet = cohort(
            work,
            &[
                "status",
                "--fleet",
                &url,
                "--token-file",
                fleet_file.to_str().expect("utf-8"),
            ],
        );
        fleet.status.code() == Some(0) && text(&fleet).contains("eu-west") && text(&fleet).contains("in sync")
    });

    let killed = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut exited = None;
    wait_for("the agent to stop on SIGTERM", 20, || {
        exited = agent.child.try_wait().expect("wait");
        exited.is_some()
    });
    assert_eq!(exited.and_then(|s| s.code()), Some(0), "{}", agent.said());
    assert!(agent.said().contains("agent stopped"), "{}", agent.said());
    drop(serve);

    // The same cluster pulled straight from git: the revision is applied already (the state
    // ConfigMap says so), so the pass applies nothing.
    let mirror = work.join("mirror");
    let from_git = cohort(
        work,
        &[
            "agent",
            "--git",
            repo.to_str().expect("utf-8"),
            "--mirror-dir",
            mirror.to_str().expect("utf-8"),
            "--cluster",
            "eu-west",
            "--kubeconfig",
            agent_kc.to_str().expect("utf-8"),
            "-n",
            &ns.name,
            "--once",
        ],
    );
    assert_eq!(from_git.status.code(), Some(0), "{}", text(&from_git));
    assert!(!text(&from_git).contains(" applying"), "{}", text(&from_git));
    assert!(text(&from_git).contains(&rev2[..12]), "{}", text(&from_git));
    let _: PathBuf = repo;
}

/// Pull mode with real agents: two `cohort agent` processes, each its cluster's (here: each
/// with its own router, read by --metrics-url), send their routers' counts with their reports
/// to `cohort serve`; `cohort autopilot --control` judges on both clusters' sum.
#[test]
fn two_agents_send_their_routers_counts_and_the_autopilot_judges_on_both() {
    let Some(kc) = kube_common::kubeconfig("pull-mode counts from two agents") else {
        return;
    };
    let ns = Namespace::new(&kc, "agent-counts");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), &ns.name, &kc);
    let work = dir.path();
    // The autopilot may promote into paid; paid's gate has no soak time here.
    let path = repo.join("cohort.yaml");
    let pipeline = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        format!(
            "autopilot:\n  stages:\n    paid:\n      promote: auto\njudgement:\n  min_error_increase: 2%\n{}",
            pipeline.replace("    min_time_in_previous: 1h\n", "")
        ),
    )
    .expect("write");
    git_commit(&repo, "autopilot into paid");

    let agent_kc = agent_identity(&kc, &ns, &repo, work);

    const US: &str = "us-east-token-0123456789abcdef";
    let tokens = work.join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "fleet_token: {FLEET}\nclusters:\n  eu-west:\n    token: {TOKEN}\n  us-east:\n    token: {US}\n"
        ),
    )
    .expect("tokens");
    for (file, token) in [("eu", TOKEN), ("us", US), ("fleet", FLEET)] {
        std::fs::write(work.join(format!("{file}.token")), token).expect("token");
    }
    let serve = Running::start(
        &[
            "-C",
            repo.to_str().expect("utf-8"),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            tokens.to_str().expect("utf-8"),
        ],
        work,
    );
    let url = serve.address_after("control API on ");

    // Each cluster's router: canary 1.17.0 (the repo's) and production, both healthy.
    let router_in = |dir: &Path| {
        let config = dir.join("router.yaml");
        std::fs::write(
            &config,
            router_common::canary_config(
                "1.17.0",
                router_common::backend("canary", 0),
                router_common::backend("production", 0),
            ),
        )
        .expect("write");
        router_common::start_router(&["--config".as_ref(), config.as_os_str()])
    };
    let (eu_dir, us_dir) = (work.join("eu"), work.join("us"));
    std::fs::create_dir_all(&eu_dir).expect("dir");
    std::fs::create_dir_all(&us_dir).expect("dir");
    let (eu, us) = (router_in(&eu_dir), router_in(&us_dir));
    router_common::free_requests(eu.traffic, 3_000);
    router_common::free_requests(us.traffic, 3_000);
    let canary_requests = |admin: std::net::SocketAddr| -> u64 {
        let (_, body) = http_get(&format!("http://{admin}/stats?window=60s"));
        let stats: serde_json::Value = serde_json::from_str(&body).expect("stats");
        stats["series"]
            .as_array()
            .expect("series")
            .iter()
            .filter(|s| s["track"] == "canary")
            .map(|s| s["requests"].as_u64().unwrap_or_default())
            .sum()
    };
    let both = canary_requests(eu.admin) + canary_requests(us.admin);

    for (cluster, token, router) in [("eu-west", "eu", eu.admin), ("us-east", "us", us.admin)] {
        let token = work.join(format!("{token}.token"));
        let metrics = format!("http://{router}");
        let out = cohort(
            work,
            &[
                "agent",
                "--once",
                "--control",
                &url,
                "--cluster",
                cluster,
                "--token-file",
                token.to_str().expect("utf-8"),
                "--metrics-url",
                &metrics,
                "--kubeconfig",
                agent_kc.to_str().expect("utf-8"),
                "-n",
                &ns.name,
                "--timeout",
                "90s",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{cluster}: {}", text(&out));
    }

    let fleet_token = work.join("fleet.token");
    let out = cohort(
        &repo,
        &[
            "autopilot",
            "--once",
            "--control",
            &url,
            "--token-file",
            fleet_token.to_str().expect("utf-8"),
            "-o",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let service = &report["services"][0];
    let canary = service["judgements"]
        .as_array()
        .expect("judgements")
        .iter()
        .find(|j| j["track"] == "canary")
        .expect("canary judged");
    let evidence = canary["evidence"].as_str().expect("evidence");
    assert!(evidence.starts_with("pass: canary 1.17.0"), "{evidence}");
    assert!(
        evidence.contains(&format!("over {both} and ")),
        "both clusters' {both} canary requests: {evidence}"
    );
    assert_eq!(service["decision"]["action"], "promote", "{service}");
    assert!(service["commit"].is_string(), "{service}");
}
