//! What the end-to-end tests against a real API server share: the gate on
//! `COHORT_E2E_KUBECONFIG`, kubectl to set the scene, throwaway namespaces, and kubeconfigs of
//! service accounts with limited rights.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// The kubeconfig to test against, or `None` (saying why the test is skipped).
// A test's note to whoever runs it, with no text from outside: the binary's rule on printing
// (cohort/clippy.toml) is for what it shows operators.
#[allow(clippy::disallowed_macros)]
pub fn kubeconfig(what: &str) -> Option<PathBuf> {
    match std::env::var_os("COHORT_E2E_KUBECONFIG") {
        Some(k) => Some(PathBuf::from(k)),
        None => {
            eprintln!(
                "SKIPPED: set COHORT_E2E_KUBECONFIG to a cluster's kubeconfig to run {what} end to end"
            );
            None
        }
    }
}

/// Runs kubectl, which must succeed.
pub fn kubectl(kc: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let out = kubectl_may_fail(kc, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs kubectl, whatever comes of it.
pub fn kubectl_may_fail(kc: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (the end-to-end tests use it to set the scene)");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    child.wait_with_output().expect("kubectl")
}

/// kubectl's `-o json` output, read.
pub fn kubectl_json(kc: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_slice(&kubectl(kc, &all, None).stdout).expect("kubectl json")
}

/// A namespace deleted when the test ends, however it ends.
pub struct Namespace<'k> {
    pub kc: &'k Path,
    pub name: String,
}

impl<'k> Namespace<'k> {
    /// A fresh namespace for `test`, its pods made Ready by the lab's fake kubelet (the label
    /// is harmless on other clusters).
    pub fn new(kc: &'k Path, test: &str) -> Namespace<'k> {
        let ns = Namespace {
            kc,
            name: format!("cohort-e2e-{test}-{}", std::process::id()),
        };
        kubectl(kc, &["create", "namespace", &ns.name], None);
        ns.pods_become_ready(true);
        ns
    }

    /// Whether the lab's fake kubelet makes this namespace's new pods Ready.
    pub fn pods_become_ready(&self, ready: bool) {
        let label = match ready {
            true => "k8s-lab/fake-kubelet=enabled",
            false => "k8s-lab/fake-kubelet-",
        };
        kubectl(self.kc, &["label", "namespace", &self.name, label], None);
    }

    /// Waits until Deployment `name` has rolled out (all replicas updated and available).
    pub fn wait_for_rollout(&self, name: &str) {
        kubectl(
            self.kc,
            &[
                "-n",
                &self.name,
                "rollout",
                "status",
                &format!("deployment/{name}"),
                "--timeout=90s",
            ],
            None,
        );
    }

    /// The names of the namespace's objects of `kind`.
    pub fn names(&self, kind: &str) -> Vec<String> {
        let list = kubectl_json(self.kc, &["-n", &self.name, "get", kind]);
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["metadata"]["name"].as_str().map(String::from))
            .collect()
    }

    /// Binds service account `account` of this namespace to `role` (`--role=NAME` or
    /// `--clusterrole=NAME`) in this namespace.
    pub fn bind(&self, binding: &str, role: &str, account: &str) {
        let subject = format!("--serviceaccount={}:{account}", self.name);
        kubectl(
            self.kc,
            &["-n", &self.name, "create", "rolebinding", binding, role, &subject],
            None,
        );
    }

    /// A kubeconfig for a new service account of this namespace that has no rights yet.
    pub fn service_account_kubeconfig(&self, account: &str, dir: &Path) -> PathBuf {
        kubectl(
            self.kc,
            &["-n", &self.name, "create", "serviceaccount", account],
            None,
        );
        self.kubeconfig_of(account, dir)
    }

    /// A kubeconfig with a token of the existing service account `account`.
    pub fn kubeconfig_of(&self, account: &str, dir: &Path) -> PathBuf {
        let token = kubectl(self.kc, &["-n", &self.name, "create", "token", account], None);
        let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
        let raw = kubectl(
            self.kc,
            &["config", "view", "--raw", "--minify", "-o", "json"],
            None,
        );
        let mut config: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("kubeconfig json");
        config["users"][0]["user"] = serde_json::json!({ "token": token });
        let path = dir.join(format!("kubeconfig-{account}"));
        std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write");
        path
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        // Pods the fake kubelet took stay Terminating (and so the namespace) unless it still
        // serves the namespace to finish their deletion; pods of a real node are not its.
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kc)
            .args([
                "label",
                "--overwrite",
                "namespace",
                &self.name,
                "k8s-lab/fake-kubelet=enabled",
            ])
            .output();
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kc)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

/// Polls `done` every 200 ms for up to `secs`.
pub fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "waited {secs} s for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The API server's minor version.
pub fn server_minor(kc: &Path) -> u32 {
    let v = kubectl_json(kc, &["version"]);
    v["serverVersion"]["minor"]
        .as_str()
        .unwrap_or("0")
        .trim_end_matches('+')
        .parse()
        .unwrap_or(0)
}

/// A release repo made by `cohort init`, in namespace `ns`, with fewer replicas (quicker) and,
/// on API servers before 1.30, the exec preStop pause.
pub fn release_repo(dir: &Path, ns: &str, kc: &Path) -> PathBuf {
    let repo = dir.join("releases");
    let init = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("init")
        .arg(&repo)
        .output()
        .expect("cohort init");
    assert!(init.status.success(), "{}", text(&init));
    let path = repo.join("cohort.yaml");
    let mut config = std::fs::read_to_string(&path).expect("cohort.yaml");
    config = config
        .replace("namespace: shop", &format!("namespace: {ns}"))
        .replace("    production: 10\n", "    production: 3\n")
        .replace("    canary: 4\n", "    canary: 2\n")
        .replace("router:\n  replicas: 4", "router:\n  replicas: 2");
    if server_minor(kc) < 30 {
        config = config.replace("  pre_stop:\n", "  pre_stop:\n    exec: true\n");
    }
    std::fs::write(&path, config).expect("write cohort.yaml");
    let git = Command::new("git")
        .args(["commit", "-qam", "for this cluster"])
        .current_dir(&repo)
        .output()
        .expect("git");
    assert!(git.status.success(), "{}", text(&git));
    repo
}

/// A child process killed when dropped, whose stderr is collected as it comes.
pub struct Running {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    /// `cohort ARGS` in `dir`.
    pub fn start(args: &[&str], dir: &Path) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cohort");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Running { child, stderr }
    }

    /// Its stderr so far.
    pub fn said(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// The first `scheme://host:port` after `marker` in its stderr, once it is there.
    pub fn address_after(&self, marker: &str) -> String {
        let mut found = None;
        wait_for(&format!("`{marker}` in the log"), 20, || {
            let said = self.said();
            found = said.find(marker).map(|at| {
                said[at + marker.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(',')
                    .to_string()
            });
            found.is_some()
        });
        found.unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Commits every change of `repo`'s tracked files.
pub fn git_commit(repo: &Path, message: &str) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qam",
            message,
        ])
        .current_dir(repo)
        .output()
        .expect("git");
    assert!(out.status.success(), "{}", text(&out));
}
