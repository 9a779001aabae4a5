//! The one-command install of the agent, deploy/install.yaml: it is exactly what `cohort render
//! --agent --install` prints, and a real API server takes it, and what `cohort render --agent`
//! prints, in a throwaway namespace (a server-side dry run, then the install for real to check
//! what its RoleBinding grants). The cluster part runs when `COHORT_E2E_KUBECONFIG` names a
//! kubeconfig with rights to create namespaces, and is skipped, saying so, otherwise.

mod kube_common;

use std::path::Path;
use std::process::{Command, Output};

use kube_common::{Namespace, kubectl, kubectl_may_fail, release_repo, text};

/// The committed file, from the repository's top.
const INSTALL_YAML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/install.yaml");
const REGENERATE: &str = "cargo run -q -p cohort -- render --agent --install > deploy/install.yaml";

/// `cohort ARGS` in `dir`, with no release repo named by the environment.
fn cohort(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .current_dir(dir)
        .env_remove("COHORT_REPO")
        .output()
        .expect("cohort runs")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8(o.stdout.clone()).expect("utf-8")
}

#[test]
fn deploy_install_yaml_is_what_render_agent_install_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let printed = stdout(&cohort(dir.path(), &["render", "--agent", "--install"]));
    let committed = std::fs::read_to_string(INSTALL_YAML).unwrap_or_default();
    if printed != committed {
        let line = printed
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| printed.lines().count().min(committed.lines().count()));
        panic!(
            "deploy/install.yaml is not what `cohort render --agent --install` prints (first \
             difference at line {}: {:?} printed, {:?} committed); regenerate it from the \
             repository's top with:\n  {REGENERATE}",
            line + 1,
            printed.lines().nth(line),
            committed.lines().nth(line),
        );
    }
}

#[test]
fn the_generic_install_reads_no_release_repo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = stdout(&cohort(dir.path(), &["render", "--agent", "--install"]));
    assert!(stdout(&cohort(dir.path(), &["init"])).contains("Created a release repo"));
    let inside = stdout(&cohort(dir.path(), &["render", "--agent", "--install"]));
    assert_eq!(outside, inside, "the same bytes in a release repo or out of one");
    assert!(!inside.contains("namespace:"), "{inside}");
    let image = concat!("image: ghcr.io/cohort-dev/cohort:", env!("CARGO_PKG_VERSION"));
    assert!(inside.contains(image), "{inside}");
}

#[test]
fn without_a_release_repo_the_namespace_is_given_and_with_one_it_must_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = ["render", "--agent", "--git", "https://git.example.com/r.git"];
    let o = cohort(dir.path(), &git);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--namespace"), "{}", text(&o));

    let mut args = git.to_vec();
    args.extend([
        "--namespace",
        "payments",
        "--image",
        "registry.example.com/cohort:9.9.9",
    ]);
    let yaml = stdout(&cohort(dir.path(), &args));
    assert_eq!(yaml.matches("namespace: payments").count(), 5, "{yaml}");
    assert!(
        yaml.contains("image: registry.example.com/cohort:9.9.9"),
        "{yaml}"
    );

    for (namespace, image) in [
        ("Payments", "registry.example.com/cohort:1"),
        ("payments", "Registry.example.com/Cohort"),
    ] {
        let mut bad = git.to_vec();
        bad.extend(["--namespace", namespace, "--image", image]);
        let o = cohort(dir.path(), &bad);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("lowercase"), "{}", text(&o));
    }

    // In a release repo (the seed's namespace is shop) the namespace is the repo's.
    assert!(stdout(&cohort(dir.path(), &["init"])).contains("Created a release repo"));
    let from_repo = stdout(&cohort(dir.path(), &git));
    assert!(from_repo.contains("namespace: shop"), "{from_repo}");
    let mut same = git.to_vec();
    same.extend(["-n", "shop"]);
    assert_eq!(stdout(&cohort(dir.path(), &same)), from_repo);
    let mut other = git.to_vec();
    other.extend(["-n", "payments"]);
    let o = cohort(dir.path(), &other);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the release repo's namespace is shop"),
        "{}",
        text(&o)
    );
}

#[test]
fn install_yaml_and_render_agent_pass_a_server_side_dry_run() {
    let Some(kc) = kube_common::kubeconfig("the agent's install (deploy/install.yaml)") else {
        return;
    };
    let ns = Namespace::new(&kc, "install");
    let dir = tempfile::tempdir().expect("tempdir");

    // install.yaml names no namespace: kubectl's -n places it.
    let dry = kubectl(
        &kc,
        &["-n", &ns.name, "apply", "--dry-run=server", "-f", INSTALL_YAML],
        None,
    );
    let said = text(&dry);
    for object in [
        "serviceaccount/cohort-agent",
        "role.rbac.authorization.k8s.io/cohort-agent",
        "rolebinding.rbac.authorization.k8s.io/cohort-agent",
        "deployment.apps/cohort-agent",
    ] {
        assert!(
            said.contains(&format!("{object} created (server dry run)")),
            "{said}"
        );
    }
    assert!(ns.names("deployments").is_empty(), "a dry run creates nothing");

    // `cohort render --agent`, from a release repo of this namespace and without one.
    let repo = release_repo(dir.path(), &ns.name, &kc);
    let repo = repo.to_str().expect("utf-8");
    let renders: [&[&str]; 3] = [
        &[
            "-C",
            repo,
            "render",
            "--agent",
            "--control",
            "https://cohort.example.com",
            "--cluster",
            "eu-west",
        ],
        &[
            "render",
            "--agent",
            "-n",
            &ns.name,
            "--git",
            "https://git.example.com/r.git",
            "--branch",
            "release",
        ],
        &[
            "render",
            "--agent",
            "-n",
            &ns.name,
            "--git",
            "https://git.example.com/r.git",
            "--ca-configmap",
            "company-ca",
            "--image",
            "registry.example.com/cohort:1.2.3",
        ],
    ];
    for args in renders {
        let yaml = stdout(&cohort(dir.path(), args));
        let dry = kubectl(&kc, &["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
        assert!(
            text(&dry).contains("deployment.apps/cohort-agent created (server dry run)"),
            "{args:?}: {}",
            text(&dry)
        );
    }

    // For real: the RoleBinding with no namespace on its subject binds this namespace's
    // ServiceAccount, to what the agent needs here and nothing elsewhere.
    kubectl(&kc, &["-n", &ns.name, "apply", "-f", INSTALL_YAML], None);
    let agent = format!("--as=system:serviceaccount:{}:cohort-agent", ns.name);
    let can = |namespace: &str, verb: &str, resource: &str| {
        let o = kubectl_may_fail(
            &kc,
            &["-n", namespace, "auth", "can-i", verb, resource, &agent],
            None,
        );
        String::from_utf8_lossy(&o.stdout).trim() == "yes"
    };
    assert!(can(&ns.name, "patch", "deployments.apps"));
    assert!(can(&ns.name, "create", "configmaps"));
    assert!(can(&ns.name, "update", "leases.coordination.k8s.io"));
    assert!(!can(&ns.name, "get", "secrets"));
    assert!(!can("default", "patch", "deployments.apps"));
}
