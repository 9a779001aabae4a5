//! Zero downtime with real pods: cohort's own image (built by image/build.sh from the binary
//! under test) runs the routers, a tiny versioned HTTP image runs the tracks, and real traffic
//! goes through the front Service with the seed's cohort mix while cohort changes the cluster.
//!
//! Needs a cluster whose pods really run and whose node can be given images without a registry:
//! `COHORT_E2E_KUBECONFIG` names its kubeconfig and `COHORT_E2E_REAL_LAB` the k8s-lab directory
//! (`$LAB`, with `real/containerd/containerd.sock` and `real/buildah`, the images
//! `localhost/lab-web:{1.15.0,1.17.0,1.18.0,1.19.0}` imported; see ../shared/k8s-lab/real/).
//! The agent's git remote is served on the node's bridge address, `COHORT_E2E_NODE_IP`
//! (default the lab's 10.88.0.1), which pods reach and loopback is not. Skipped, saying so,
//! otherwise. What it measured is printed (`--nocapture` shows it).
#![allow(clippy::disallowed_macros)]

mod kube_common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_common::{Namespace, kubectl, kubectl_json, kubectl_may_fail, release_repo, text, wait_for};

const SERVICE: &str = "account-service";

fn lab() -> Option<(PathBuf, PathBuf)> {
    let kc = kube_common::kubeconfig("zero-downtime rollouts with real pods")?;
    match std::env::var_os("COHORT_E2E_REAL_LAB") {
        Some(lab) => Some((kc, PathBuf::from(lab))),
        None => {
            println!(
                "SKIPPED: set COHORT_E2E_REAL_LAB to the k8s-lab directory whose real node runs pods \
                 (../shared/k8s-lab/real/) to send real traffic through real pods"
            );
            None
        }
    }
}

fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {}", text(&out));
    out
}

/// Builds cohort's image from the binary under test with the repository's own build script,
/// and hands it to the node's containerd. Returns its reference.
fn image(lab: &Path, dir: &Path) -> String {
    image_as(lab, dir, &format!("localhost/cohort:e2e-{}", std::process::id()))
}

/// `image`, tagged `tag`.
fn image_as(lab: &Path, dir: &Path, tag: &str) -> String {
    let tag = tag.to_string();
    let archive = dir.join("cohort-image.tar");
    let buildah = format!(
        "--root {0}/real/buildah/storage --runroot {0}/real/buildah/run --storage-driver vfs",
        lab.display()
    );
    run(
        "image/build.sh",
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../image/build.sh"))
            .args([
                "--binary",
                env!("CARGO_BIN_EXE_cohort"),
                "--tag",
                &tag,
                "--archive",
            ])
            .arg(&archive)
            .env("BUILDAH_ARGS", buildah),
    );
    let socket = lab.join("real/containerd/containerd.sock");
    run(
        "ctr images import",
        Command::new("ctr")
            .arg("-a")
            .arg(&socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive),
    );
    tag
}

/// The seed's release repo, made for the lab: tracks run `localhost/lab-web`, which answers
/// `GET /` with its version; routers run the image under test.
fn repo_for_real_pods(dir: &Path, ns: &str, kc: &Path, router_image: &str) -> PathBuf {
    let repo = release_repo(dir, ns, kc);
    let edit = |file: &str, f: &dyn Fn(String) -> String| {
        let path = repo.join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, f(text)).expect("write");
    };
    edit("cohort.yaml", &|c| {
        c.replace("path: /healthz", "path: /version")
            .replace("    pause: 10s\n", "    pause: 5s\n")
            .replace("    paid: 4\n", "    paid: 2\n")
            .replace("router:\n", &format!("router:\n  image: {router_image}\n"))
    });
    edit("services/account-service.yaml", &|s| {
        s.replace(
            "image: registry.example.com/shop/account-service",
            "image: localhost/lab-web",
        )
        .replace("path: /healthz", "path: /version")
        // The lab's node has two cores; the scaffold asks a quarter of one per pod.
        .replace("cpu: 250m", "cpu: 20m")
    });
    cohort_ok(&repo, None, &["validate"]);
    let git = run(
        "git commit",
        Command::new("git")
            .args(["commit", "-qam", "for the real-pod lab"])
            .current_dir(&repo),
    );
    drop(git);
    repo
}

fn cohort_ok(repo: &Path, kc: Option<&Path>, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cohort"));
    cmd.args(args).arg("-C").arg(repo).env("NO_COLOR", "1");
    if let Some(kc) = kc {
        cmd.arg("--kubeconfig").arg(kc);
    }
    text(&run(&format!("cohort {args:?}"), &mut cmd))
}

/// One answer seen by the load: the cohort asked for, and the version that answered (or why
/// there was none).
type Answer = (&'static str, Result<String, String>);

/// Requests through the front Service from a few threads, each answer filed under the phase
/// current when it came back.
struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    answers: Arc<Mutex<BTreeMap<usize, Vec<Answer>>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The seed's mix: mostly free users, some enterprise ones, a few staff, the rest with no
/// cohort header (the default route).
const MIX: [&str; 10] = [
    "FREE",
    "FREE",
    "FREE",
    "FREE",
    "FREE",
    "ENTERPRISE",
    "ENTERPRISE",
    "INTERNAL",
    "",
    "",
];

fn get(addr: SocketAddr, cohort: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let header = match cohort {
        "" => String::new(),
        c => format!("X-Traffic-Group: {c}\r\n"),
    };
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {SERVICE}\r\n{header}Connection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    s.read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let status = response.split(' ').nth(1).unwrap_or("");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    match status {
        "200" => Ok(body),
        _ => Err(response.lines().next().unwrap_or("no response").to_string()),
    }
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(Mutex::new(BTreeMap::new()));
        let threads = (0..4)
            .map(|t| {
                let (stop, phase, answers) = (stop.clone(), phase.clone(), answers.clone());
                std::thread::spawn(move || {
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let cohort = MIX[i % MIX.len()];
                        i += 1;
                        let answer = get(addr, cohort);
                        let p = phase.load(Ordering::Relaxed);
                        answers
                            .lock()
                            .expect("lock")
                            .entry(p)
                            .or_insert_with(Vec::new)
                            .push((cohort, answer));
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load {
            stop,
            phase,
            answers,
            threads,
        }
    }

    /// Starts phase `p`: answers from now on are filed under it.
    fn phase(&self, p: usize) {
        self.phase.store(p, Ordering::Relaxed);
    }

    fn answers(&self, p: usize) -> Vec<Answer> {
        self.answers
            .lock()
            .expect("lock")
            .get(&p)
            .cloned()
            .unwrap_or_default()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// What a phase's answers come to: requests, failures (with a few examples), and how often
/// each cohort was answered by each version.
fn summary(answers: &[Answer]) -> (usize, Vec<String>, BTreeMap<(&'static str, String), usize>) {
    let mut failed = vec![];
    let mut by = BTreeMap::new();
    for (cohort, a) in answers {
        match a {
            Ok(version) => *by.entry((*cohort, version.clone())).or_insert(0) += 1,
            Err(e) => failed.push(format!("{cohort}: {e}")),
        }
    }
    (answers.len(), failed, by)
}

fn front(kc: &Path, ns: &str) -> SocketAddr {
    let svc = kubectl_json(kc, &["-n", ns, "get", "service", SERVICE]);
    let ip = svc["spec"]["clusterIP"].as_str().expect("clusterIP");
    let port = svc["spec"]["ports"][0]["port"].as_u64().expect("port");
    format!("{ip}:{port}").parse().expect("address")
}

/// How many configs router pod `pod` has reloaded, from its metrics through the API server's
/// pod proxy (the admin port, 9901 by default).
fn router_reloads(kc: &Path, ns: &str, pod: &str) -> u64 {
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}:9901/proxy/metrics");
    let out = kubectl_may_fail(kc, &["get", "--raw", &path], None);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("cohort_router_reloads_total{") && l.contains("result=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|n| n as u64)
        .sum()
}

fn pods(kc: &Path, ns: &str, selector: &str) -> Vec<String> {
    let list = kubectl_json(kc, &["-n", ns, "get", "pods", "-l", selector]);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `localhost/lab-pod:VERSION`: lab-web whose pods answer `GET /pod` with their own name, so
/// the spread over pods is measured where the requests land.
fn pod_image(lab: &Path, dir: &Path, version: &str) -> String {
    let tag = format!("localhost/lab-pod:{version}");
    let storage = |cmd: &mut Command| {
        cmd.arg("--root")
            .arg(lab.join("real/buildah/storage"))
            .arg("--runroot")
            .arg(lab.join("real/buildah/run"))
            .args(["--storage-driver", "vfs"])
            .env("BUILDAH_ISOLATION", "chroot");
    };
    let buildah = |what: &str, args: &[&str]| {
        let mut cmd = Command::new("buildah");
        storage(&mut cmd);
        text(&run(what, cmd.args(args))).trim().to_string()
    };
    let container = buildah("buildah from", &["from", "--quiet", "localhost/lab-web:1.19.0"]);
    buildah(
        "buildah config",
        &[
            "config",
            "--entrypoint",
            r#"["/bin/sh","-c","cat /etc/hostname > /www/pod; exec /bin/busybox httpd -f -p 8080 -h /www"]"#,
            &container,
        ],
    );
    buildah("buildah commit", &["commit", "--quiet", &container, &tag]);
    let archive = dir.join("lab-pod.tar");
    let _ = std::fs::remove_file(&archive);
    buildah(
        "buildah push",
        &[
            "push",
            "--quiet",
            &tag,
            &format!("docker-archive:{}:{tag}", archive.display()),
        ],
    );
    run(
        "ctr images import",
        Command::new("ctr")
            .arg("-a")
            .arg(lab.join("real/containerd/containerd.sock"))
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive),
    );
    tag
}

/// When an answer came, and the pod that gave it (or why none did).
type PodAnswer = (Instant, Result<String, String>);

/// `GET /pod` through the front Service: the name of the pod that answered.
fn which_pod(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /pod HTTP/1.1\r\nHost: {SERVICE}\r\nX-Traffic-Group: ENTERPRISE\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    s.read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    match response.split(' ').nth(1) {
        Some("200") => Ok(response.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string()),
        _ => Err(response.lines().next().unwrap_or("no response").to_string()),
    }
}

#[test]
fn requests_spread_evenly_over_pods_and_a_deleted_pod_gets_none_once_it_is_terminating() {
    let Some((kc, lab)) = lab() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let router_image = image(&lab, dir.path());
    pod_image(&lab, dir.path(), "2.0.0");
    let ns = Namespace::new(&kc, "spread");
    ns.pods_become_ready(false);
    let repo = repo_for_real_pods(dir.path(), &ns.name, &kc, &router_image);
    // Production (three pods) and internal (staff have nowhere else to go), of a build that
    // names its pod; ENTERPRISE goes to production alone.
    let spec = repo.join("services/account-service.yaml");
    let text_of = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(&spec, text_of.replace("localhost/lab-web", "localhost/lab-pod")).expect("write");
    std::fs::write(
        repo.join("releases/account-service.yaml"),
        "service: account-service\ntracks:\n  internal: \"2.0.0\"\n  production: \"2.0.0\"\n",
    )
    .expect("write");
    run(
        "git commit",
        Command::new("git")
            .args(["commit", "-qam", "pods that say who they are"])
            .current_dir(&repo),
    );
    cohort_ok(&repo, Some(&kc), &["apply", "--timeout", "3m"]);
    let addr = front(&kc, &ns.name);
    wait_for("the front Service to answer", 60, || which_pod(addr).is_ok());
    let production = pods(&kc, &ns.name, "track=production");
    assert_eq!(production.len(), 3, "{production:?}");

    // Four clients, a connection per request, for 20 s.
    let answers: Arc<Mutex<Vec<PodAnswer>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (answers, stop) = (Arc::clone(&answers), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let a = which_pod(addr);
                    answers.lock().expect("lock").push((Instant::now(), a));
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(20));
    let steady: Vec<PodAnswer> = std::mem::take(&mut *answers.lock().expect("lock"));
    let mut per_pod: BTreeMap<String, usize> = BTreeMap::new();
    for (_, a) in &steady {
        *per_pod
            .entry(a.clone().unwrap_or_else(|e| format!("failed: {e}")))
            .or_default() += 1;
    }
    let total: usize = per_pod.values().sum();
    println!("spread over {} requests:", total);
    for (pod, n) in &per_pod {
        println!("  {pod}: {n} ({:.1}%)", *n as f64 * 100.0 / total as f64);
    }
    assert_eq!(
        per_pod.keys().cloned().collect::<Vec<_>>(),
        {
            let mut p = production.clone();
            p.sort();
            p
        },
        "every answer from a production pod, none failed"
    );
    for (pod, n) in &per_pod {
        let share = *n as f64 / total as f64;
        assert!(
            (share - 1.0 / 3.0).abs() < 0.03,
            "{pod} got {:.1}% of the requests, not a third within 3 points",
            share * 100.0
        );
    }

    // A deleted pod sits in its preStop pause (5 s here) while the routers stop sending to it.
    let victim = production[0].clone();
    let deleted = Instant::now();
    kubectl(
        &kc,
        &["-n", &ns.name, "delete", "pod", &victim, "--wait=false"],
        None,
    );
    std::thread::sleep(Duration::from_secs(12));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let after = std::mem::take(&mut *answers.lock().expect("lock"));
    let failed: Vec<&String> = after.iter().filter_map(|(_, a)| a.as_ref().err()).collect();
    let last_from_victim = after
        .iter()
        .filter(|(_, a)| a.as_deref() == Ok(victim.as_str()))
        .map(|(at, _)| at.saturating_duration_since(deleted))
        .max();
    println!(
        "pod {victim} deleted: {} requests in the next 12 s, {} failed; its last answer {} after the delete (its preStop pause: 5 s)",
        after.len(),
        failed.len(),
        last_from_victim.map_or("came before".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
    );
    assert!(failed.is_empty(), "{failed:?}");
    if let Some(d) = last_from_victim {
        assert!(
            d < Duration::from_secs(5),
            "the deleted pod still got requests {:.1} s after it was deleted",
            d.as_secs_f64()
        );
    }
}

#[test]
fn deploys_promotions_weight_changes_rollbacks_and_pod_kills_under_load_lose_no_request() {
    let Some((kc, lab)) = lab() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let router_image = image(&lab, dir.path());
    let ns = Namespace::new(&kc, "realpods");
    // The pods really run: the lab's fake kubelet leaves this namespace to the real node.
    ns.pods_become_ready(false);
    let repo = repo_for_real_pods(dir.path(), &ns.name, &kc, &router_image);
    let apply = |what: &str| {
        let started = Instant::now();
        let said = cohort_ok(&repo, Some(&kc), &["apply", "--timeout", "3m"]);
        println!("{what}: applied in {:.1} s", started.elapsed().as_secs_f64());
        said
    };
    apply("from nothing");
    let addr = front(&kc, &ns.name);
    wait_for("the front Service to answer", 60, || get(addr, "FREE").is_ok());

    let load = Load::start(addr);
    let mut phases: Vec<(&str, usize)> = vec![];
    let mut phase = |name: &'static str, act: &mut dyn FnMut()| {
        let p = phases.len() + 1;
        load.phase(p);
        act();
        // The last answers of the old state and the first of the new both count.
        std::thread::sleep(Duration::from_secs(3));
        phases.push((name, p));
    };

    phase("steady (split)", &mut || {
        std::thread::sleep(Duration::from_secs(40))
    });
    phase("deploy 1.19.0 to internal (routers roll)", &mut || {
        cohort_ok(&repo, None, &["deploy", SERVICE, "1.19.0"]);
        apply("deploy");
    });
    phase("promote to canary", &mut || {
        cohort_ok(
            &repo,
            None,
            &["promote", SERVICE, "--to", "canary", "--force", "--reason", "e2e"],
        );
        apply("promote to canary");
    });
    let reloads_before: Vec<(String, u64)> = pods(&kc, &ns.name, "tier=router")
        .into_iter()
        .map(|pod| {
            let n = router_reloads(&kc, &ns.name, &pod);
            (pod, n)
        })
        .collect();
    phase("weight change (routers reload)", &mut || {
        let path = repo.join("cohort.yaml");
        let config = std::fs::read_to_string(&path).expect("read");
        std::fs::write(
            &path,
            config.replace(
                "    canary: 5%\n    production: 95%",
                "    canary: 20%\n    production: 80%",
            ),
        )
        .expect("write");
        run(
            "git commit",
            Command::new("git")
                .args(["commit", "-qam", "FREE: 20% canary"])
                .current_dir(&repo),
        );
        let said = apply("weight change");
        assert!(said.contains("the new config ("), "{said}");
        // In force when apply returns: every router has reloaded by then, not when the
        // kubelet's sync period next comes round.
        for (pod, before) in &reloads_before {
            assert!(
                router_reloads(&kc, &ns.name, pod) > *before,
                "router {pod} had not reloaded when apply returned:\n{said}"
            );
        }
    });
    phase("steady after the weight change (split)", &mut || {
        std::thread::sleep(Duration::from_secs(40))
    });
    // The autopilot reads the routers through the API server and the rollouts from the
    // cluster: canary's 1.19.0 is judged from what the router pods counted, and every track
    // counts as rolled out.
    phase("an autopilot pass (dry run, from the cluster)", &mut || {
        let said = cohort_ok(
            &repo,
            Some(&kc),
            &["autopilot", "--once", "--dry-run", "-o", "json"],
        );
        let report: serde_json::Value = serde_json::from_str(&said).expect("json");
        let service = &report["services"][0];
        let canary = service["judgements"]
            .as_array()
            .expect("judgements")
            .iter()
            .find(|j| j["track"] == "canary")
            .unwrap_or_else(|| panic!("canary judged: {said}"));
        let evidence = canary["evidence"].as_str().expect("evidence");
        assert!(
            evidence.contains("canary 1.19.0 against production 1.15.0, cohorts FREE"),
            "{said}"
        );
        let rolled_out: Vec<&str> = service["rolled_out"]
            .as_array()
            .expect("rolled_out")
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        for track in ["internal", "canary", "production"] {
            assert!(rolled_out.contains(&track), "{track} rolled out: {said}");
        }
        println!("autopilot pass: {evidence}");
    });
    phase("promote to paid and production", &mut || {
        cohort_ok(
            &repo,
            None,
            &["promote", SERVICE, "--to", "paid", "--force", "--reason", "e2e"],
        );
        cohort_ok(
            &repo,
            None,
            &[
                "promote",
                SERVICE,
                "--to",
                "production",
                "--force",
                "--reason",
                "e2e",
            ],
        );
        apply("promote to production");
    });
    phase("roll production back", &mut || {
        cohort_ok(
            &repo,
            None,
            &["rollback", SERVICE, "production", "--reason", "e2e"],
        );
        apply("rollback");
    });
    phase("kill a production pod", &mut || {
        let victim = pods(&kc, &ns.name, "track=production")
            .pop()
            .expect("a production pod");
        kubectl(
            &kc,
            &["-n", &ns.name, "delete", "pod", &victim, "--wait=false"],
            None,
        );
        std::thread::sleep(Duration::from_secs(15));
    });
    phase("kill a router pod", &mut || {
        let victim = pods(&kc, &ns.name, "tier=router").pop().expect("a router pod");
        kubectl(
            &kc,
            &["-n", &ns.name, "delete", "pod", &victim, "--wait=false"],
            None,
        );
        std::thread::sleep(Duration::from_secs(15));
    });
    let phases = phases;
    load.phase(usize::MAX);
    std::thread::sleep(Duration::from_millis(200));

    let mut report = String::new();
    let mut lost = 0;
    let mut splits = vec![];
    for (name, p) in &phases {
        let (sent, failed, by) = summary(&load.answers(*p));
        lost += failed.len();
        report.push_str(&format!(
            "{name}: {sent} requests, {} failed {:?}\n",
            failed.len(),
            &failed[..failed.len().min(5)]
        ));
        for ((cohort, version), n) in &by {
            report.push_str(&format!("    {cohort:<10} {version:<7} {n}\n"));
        }
        // ENTERPRISE is production's, always: never a canary's or internal's build. Production
        // ran 1.15.0 throughout but for the promotion (1.19.0) and its rollback.
        for (cohort, version) in by.keys() {
            if *cohort == "ENTERPRISE" {
                assert!(
                    version == "1.15.0"
                        || (version == "1.19.0"
                            && ["promote to paid and production", "roll production back"].contains(name)),
                    "{name}: ENTERPRISE answered by {version}\n{report}"
                );
            }
        }
        let count = |v: &str| by.get(&("FREE", v.to_string())).copied().unwrap_or(0) as f64;
        if name.starts_with("steady (split)") {
            let (canary, production) = (count("1.17.0"), count("1.15.0"));
            splits.push((name, 0.05, canary / (canary + production), canary + production));
        }
        if name.starts_with("steady after") {
            let (canary, production) = (count("1.19.0"), count("1.15.0"));
            splits.push((name, 0.20, canary / (canary + production), canary + production));
        }
    }
    load.stop();
    println!("{report}");
    assert_eq!(lost, 0, "requests failed:\n{report}");
    // The split measured at the answers (each track answers with its own version): FREE's
    // canary share within a point of the configured weight, before and after the change.
    for (name, configured, share, n) in splits {
        println!(
            "{name}: FREE to canary {:.2}% of {n} requests (configured {:.0}%)",
            share * 100.0,
            configured * 100.0
        );
        assert!(
            (share - configured).abs() <= 0.01,
            "{name}: FREE to canary {:.2}%\n{report}",
            share * 100.0
        );
    }
}

/// A git remote served over HTTP where the node's pods reach the host, killed when dropped.
struct GitRemote {
    child: std::process::Child,
    url: String,
}

impl GitRemote {
    /// Serves `root`'s bare repositories on the lab's bridge address (`COHORT_E2E_NODE_IP`,
    /// default the real-pod lab's 10.88.0.1).
    fn start(root: &Path) -> GitRemote {
        use std::io::BufRead;
        let ip = std::env::var("COHORT_E2E_NODE_IP").unwrap_or_else(|_| "10.88.0.1".into());
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/git_https_server.py"))
            .arg(root)
            .env("GIT_SERVER_BIND", &ip)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let port = std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .lines()
            .next()
            .expect("the port")
            .expect("utf-8");
        GitRemote {
            child,
            url: format!("http://{ip}:{port}/release.git"),
        }
    }
}

impl Drop for GitRemote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_agent_installed_from_install_yaml_brings_the_namespace_to_the_repo_and_ships_a_push_losing_no_request()
{
    let Some((kc, lab)) = lab() else { return };
    // The committed install.yaml, unchanged: its image is built from the binary under test
    // under the very reference the file names, so the node finds it without a registry.
    let install = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/install.yaml");
    let manifest = std::fs::read_to_string(install).expect("deploy/install.yaml");
    let reference = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .expect("install.yaml names an image")
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    image_as(&lab, dir.path(), &reference);
    let ns = Namespace::new(&kc, "agentreal");
    ns.pods_become_ready(false);
    let repo = repo_for_real_pods(dir.path(), &ns.name, &kc, &reference);
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    run(
        "git clone --bare",
        Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&repo)
            .arg(served.join("release.git")),
    );
    run(
        "git branch -m",
        Command::new("git")
            .args(["symbolic-ref", "HEAD", "refs/heads/main"])
            .current_dir(served.join("release.git")),
    );
    // What the agent pulls: the repo's HEAD as the remote's main.
    let push = || {
        run(
            "git push",
            Command::new("git")
                .args(["push", "-q"])
                .arg(served.join("release.git"))
                .arg("HEAD:refs/heads/main")
                .current_dir(&repo),
        )
    };
    push();
    let remote = GitRemote::start(&served);

    // The whole install: the remote in a ConfigMap, then install.yaml.
    kubectl(
        &kc,
        &[
            "-n",
            &ns.name,
            "create",
            "configmap",
            "cohort-agent",
            &format!("--from-literal=git={}", remote.url),
            "--from-literal=branch=main",
        ],
        None,
    );
    let started = Instant::now();
    kubectl(&kc, &["-n", &ns.name, "apply", "-f", install], None);
    let mut addr = None;
    wait_for("the agent to apply the release repo", 300, || {
        let found = kubectl_may_fail(&kc, &["-n", &ns.name, "get", "service", SERVICE], None);
        if found.status.success() && addr.is_none() {
            addr = Some(front(&kc, &ns.name));
        }
        addr.is_some_and(|a| get(a, "INTERNAL").as_deref() == Ok("1.18.0") && get(a, "FREE").is_ok())
    });
    let addr = addr.expect("the front Service");
    println!(
        "install.yaml to the repo's state: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // A push reaches the cluster through the agent alone, under load.
    let load = Load::start(addr);
    load.phase(1);
    cohort_ok(&repo, None, &["deploy", SERVICE, "1.19.0"]);
    push();
    let pushed = Instant::now();
    wait_for("the agent to ship the push", 240, || {
        get(addr, "INTERNAL").as_deref() == Ok("1.19.0")
    });
    println!(
        "push to INTERNAL on 1.19.0: {:.1} s",
        pushed.elapsed().as_secs_f64()
    );
    // The agent's apply ends with the old build pruned, after the routers have rolled: the
    // load runs until then.
    wait_for("the agent to finish the apply", 240, || {
        !ns.names("deployments")
            .contains(&"account-service-internal-v1-18-0".to_string())
    });
    println!(
        "push to the old build pruned: {:.1} s",
        pushed.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    load.phase(2);
    let (sent, failed, by) = summary(&load.answers(1));
    load.stop();
    println!(
        "while the agent shipped the push: {sent} requests, {} failed {failed:?} {by:?}",
        failed.len()
    );
    assert_eq!(failed.len(), 0, "{failed:?}");
    assert!(sent > 100, "{sent} requests");
    drop(remote);
}
