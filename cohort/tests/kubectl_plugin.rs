//! `kubectl cohort ...`: the binary on the PATH as kubectl-cohort (a symbolic link, as the
//! README installs it), run by the real kubectl's plugin mechanism. Skipped, saying so, when
//! kubectl is not on the PATH; the part that reaches a cluster runs when
//! `COHORT_E2E_KUBECONFIG` names one.

mod kube_common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube_common::{Namespace, kubectl, release_repo, text};

/// A directory holding kubectl-cohort, and the PATH with it first.
struct Plugin {
    _dir: tempfile::TempDir,
    path: OsString,
}

impl Plugin {
    fn install() -> Plugin {
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cohort"), dir.path().join("kubectl-cohort"))
            .expect("symlink");
        let mut dirs = vec![dir.path().to_path_buf()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let path = std::env::join_paths(dirs).expect("PATH");
        Plugin { _dir: dir, path }
    }

    /// `kubectl ARGS` with kubectl-cohort on the PATH, in `dir`.
    fn kubectl(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .current_dir(dir)
            .env("PATH", &self.path)
            .env_remove("COHORT_REPO")
            .output()
            .expect("kubectl runs")
    }
}

/// kubectl, if it is on the PATH; otherwise `None`, saying that the test is skipped.
// A test's note to whoever runs it (cohort/clippy.toml's rule is for what cohort shows).
#[allow(clippy::disallowed_macros)]
fn kubectl_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|k| k.is_file());
    if found.is_none() {
        eprintln!("SKIPPED: kubectl is not on the PATH, so `kubectl cohort` cannot be run through it");
    }
    found
}

fn success(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn kubectl_runs_cohort_as_its_plugin_and_help_names_it_so() {
    if kubectl_on_path().is_none() {
        return;
    }
    let plugin = Plugin::install();
    let work = tempfile::tempdir().expect("tempdir");
    let here = work.path();

    let list = success(&plugin.kubectl(here, &["plugin", "list"]));
    assert!(list.contains("kubectl-cohort"), "{list}");

    let help = success(&plugin.kubectl(here, &["cohort", "--help"]));
    assert!(
        help.contains("Usage: kubectl cohort [OPTIONS] <COMMAND>"),
        "{help}"
    );
    for (command, usage) in [
        ("status", "Usage: kubectl cohort status [OPTIONS]"),
        ("apply", "Usage: kubectl cohort apply [OPTIONS]"),
    ] {
        let help = success(&plugin.kubectl(here, &["cohort", command, "--help"]));
        assert!(help.contains(usage), "{help}");
        assert!(
            help.contains("--kubeconfig") && help.contains("--context"),
            "{help}"
        );
        assert!(help.contains("-n, --namespace"), "{help}");
    }
    let version = success(&plugin.kubectl(here, &["cohort", "--version"]));
    assert_eq!(version.trim(), concat!("cohort ", env!("CARGO_PKG_VERSION")));

    let wrong = plugin.kubectl(here, &["cohort", "frobnicate"]);
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("Usage: kubectl cohort [OPTIONS] <COMMAND>"),
        "{}",
        text(&wrong)
    );

    // Under either name the commands do the same; only the name in help differs.
    let direct = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["render", "--agent", "--install"])
        .current_dir(here)
        .env_remove("COHORT_REPO")
        .output()
        .expect("cohort runs");
    let through = plugin.kubectl(here, &["cohort", "render", "--agent", "--install"]);
    assert_eq!(success(&through), success(&direct));
    let help = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("--help")
        .output()
        .expect("cohort runs");
    assert!(success(&help).contains("Usage: cohort [OPTIONS] <COMMAND>"));
}

#[test]
fn kubectl_cohort_applies_and_checks_status_with_kubectls_flags() {
    if kubectl_on_path().is_none() {
        return;
    }
    let Some(kc) = kube_common::kubeconfig("`kubectl cohort apply` and `kubectl cohort status`") else {
        return;
    };
    let ns = Namespace::new(&kc, "plugin");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), &ns.name, &kc);
    let context = String::from_utf8_lossy(&kubectl(&kc, &["config", "current-context"], None).stdout)
        .trim()
        .to_string();
    let plugin = Plugin::install();
    let kc = kc.to_str().expect("utf-8");
    let cluster = ["--kubeconfig", kc, "--context", &context];

    let mut apply = vec!["cohort", "apply", "--timeout", "90s"];
    apply.extend(cluster);
    let applied = plugin.kubectl(&repo, &apply);
    assert!(applied.status.success(), "{}", text(&applied));
    assert!(
        ns.names("deployments")
            .contains(&"account-service-router".to_string())
    );

    // From outside the release repo, the namespace comes from -n, as with kubectl (and the
    // router replicas expected from a flag: release_repo runs 2).
    let mut status = vec!["cohort", "status", "-n", &ns.name, "--router-replicas", "2"];
    status.extend(cluster);
    // EndpointSlices may trail the rollouts apply waited for by a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = plugin.kubectl(dir.path(), &status);
    while !seen.status.success() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        seen = plugin.kubectl(dir.path(), &status);
    }
    assert!(seen.status.success(), "{}", text(&seen));
    assert!(
        String::from_utf8_lossy(&seen.stdout).contains("account-service"),
        "{}",
        text(&seen)
    );
}
