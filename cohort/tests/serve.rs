//! `cohort serve` and its clients as processes: HTTPS with a certificate from a test CA,
//! `cohort status --fleet`, tokens refused, the agent's exit status when the cluster cannot
//! be reached, and the agent's manifests (`render --agent`). (The agent's whole loop against serve is in crates/agent/tests and,
//! against a real API server, in agent_e2e.rs.)

mod tls_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

const EU: &str = "eu-west-token-0123456789abcdef";
const FLEET: &str = "fleet-token-0123456789abcdef";

fn run(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn cohort(dir: &Path, args: &[&str]) -> Output {
    run(dir, env!("CARGO_BIN_EXE_cohort"), args)
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_serve(dir: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args([
            "-C",
            "repo",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "tokens.yaml",
        ])
        .args(extra)
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("cohort serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let url = first
        .split("control API on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

/// What `cohort <args>` (a serve) says first on stderr; then it is stopped.
fn first_line_of_serve(dir: &Path, args: &[&str]) -> String {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let first = BufReader::new(serve.stderr.take().expect("stderr"))
        .lines()
        .next()
        .expect("a line")
        .expect("utf-8");
    let _ = serve.kill();
    let _ = serve.wait();
    first
}

fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let init = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["init", "repo"])
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("init");
    assert!(init.status.success(), "{}", text(&init));
    std::fs::write(
        dir.join("tokens.yaml"),
        format!("fleet_token: {FLEET}\nclusters:\n  eu-west:\n    token: {EU}\n  us-east:\n    token: us-east-token-0123456789abcdef\n"),
    )
    .expect("tokens");
    std::fs::write(dir.join("fleet.token"), format!("{FLEET}\n")).expect("token");
    std::fs::write(dir.join("eu.token"), EU).expect("token");
    std::fs::write(dir.join("wrong.token"), "not-a-token-of-this-server").expect("token");
    tmp
}

#[test]
fn over_https_the_fleet_view_lists_every_cluster_and_wrong_tokens_are_refused() {
    let tmp = setup();
    let dir = tmp.path();
    tls_common::certificates(dir);
    let server = start_serve(dir, &["--tls-cert", "server.pem", "--tls-key", "server.key"]);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);

    // No agent has reported yet: both clusters listed, neither in sync, exit 1.
    let fleet = cohort(
        dir,
        &[
            "status",
            "--fleet",
            &server.url,
            "--token-file",
            "fleet.token",
            "--ca-file",
            "ca.pem",
        ],
    );
    assert_eq!(fleet.status.code(), Some(1), "{}", text(&fleet));
    let out = String::from_utf8_lossy(&fleet.stdout).into_owned();
    assert!(out.starts_with("CLUSTER"), "{out}");
    assert!(
        out.contains("eu-west") && out.contains("us-east") && out.contains("no report"),
        "{out}"
    );
    let json = cohort(
        dir,
        &[
            "status",
            "--fleet",
            &server.url,
            "--token-file",
            "fleet.token",
            "--ca-file",
            "ca.pem",
            "-o",
            "json",
        ],
    );
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(doc["clusters"][0]["name"], "eu-west");
    assert_eq!(doc["clusters"][0]["state"], "unknown");
    assert_eq!(doc["revision"].as_str().map(str::len), Some(40));

    // A cluster's token does not read the fleet; an unknown token is not let in; a server
    // whose certificate is not trusted is not talked to.
    let forbidden = cohort(
        dir,
        &[
            "status",
            "--fleet",
            &server.url,
            "--token-file",
            "eu.token",
            "--ca-file",
            "ca.pem",
        ],
    );
    assert_eq!(forbidden.status.code(), Some(2), "{}", text(&forbidden));
    assert!(text(&forbidden).contains("403 Forbidden"), "{}", text(&forbidden));
    let unknown = cohort(
        dir,
        &[
            "status",
            "--fleet",
            &server.url,
            "--token-file",
            "wrong.token",
            "--ca-file",
            "ca.pem",
        ],
    );
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(text(&unknown).contains("401 Unauthorized"), "{}", text(&unknown));
    let untrusted = cohort(
        dir,
        &["status", "--fleet", &server.url, "--token-file", "fleet.token"],
    );
    assert_eq!(untrusted.status.code(), Some(2), "{}", text(&untrusted));
    assert!(
        text(&untrusted).contains(
            "the server's certificate is signed by a CA this client does not trust; \
             if your own CA signed it, give that CA's certificate with --ca-file"
        ),
        "{}",
        text(&untrusted)
    );

    // The agent exits 2 when it cannot reach its cluster, before it applies anything.
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: shop\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: x\n",
    )
    .expect("kubeconfig");
    let agent = cohort(
        dir,
        &[
            "agent",
            "--control",
            &server.url,
            "--cluster",
            "eu-west",
            "--token-file",
            "eu.token",
            "--ca-file",
            "ca.pem",
            "--kubeconfig",
            "kubeconfig",
            "--once",
        ],
    );
    assert_eq!(agent.status.code(), Some(2), "{}", text(&agent));
    assert!(
        text(&agent).contains("cannot read the agent's state"),
        "{}",
        text(&agent)
    );
}

#[test]
fn serve_refuses_plain_http_off_loopback_and_a_bad_tokens_file_with_its_place() {
    let tmp = setup();
    let dir = tmp.path();
    let open = cohort(
        dir,
        &[
            "-C",
            "repo",
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--tokens",
            "tokens.yaml",
        ],
    );
    assert_eq!(open.status.code(), Some(2), "{}", text(&open));
    assert!(
        text(&open).contains("refusing plain HTTP on 0.0.0.0:0"),
        "{}",
        text(&open)
    );
    std::fs::write(dir.join("bad.yaml"), "clusters:\n  eu-west:\n    token: short\n").expect("write");
    let bad = cohort(dir, &["-C", "repo", "serve", "--tokens", "bad.yaml"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("bad.yaml:3:12: the token of cluster eu-west must be at least 16 characters"),
        "{}",
        text(&bad)
    );
    let missing = cohort(dir, &["-C", "repo", "serve", "--tokens", "nope.yaml"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(
        text(&missing).contains("cannot use the tokens file: nope.yaml cannot be read"),
        "{}",
        text(&missing)
    );
    // A CA file for the git remote that cannot be read is named before anything is fetched.
    let serve_git = |url: &str| {
        cohort(
            dir,
            &[
                "serve",
                "--tokens",
                "tokens.yaml",
                "--git",
                url,
                "--mirror-dir",
                "mirror",
                "--git-ca-file",
                "company-ca.pem",
            ],
        )
    };
    let no_ca = serve_git("https://git.example.com/release.git");
    assert_eq!(no_ca.status.code(), Some(2), "{}", text(&no_ca));
    assert!(
        text(&no_ca).contains("cannot use company-ca.pem as CA certificates"),
        "{}",
        text(&no_ca)
    );
    std::fs::write(dir.join("company-ca.pem"), "").expect("write");
    let local = serve_git("repo");
    assert_eq!(local.status.code(), Some(2), "{}", text(&local));
    assert!(
        text(&local).contains("--git-ca-file is for an https remote; repo is not one"),
        "{}",
        text(&local)
    );
    assert!(
        !dir.join("mirror").exists(),
        "nothing made before the flags are checked"
    );
    // A cluster given a service the repo does not have is warned about at start.
    std::fs::write(
        dir.join("typo.yaml"),
        format!("clusters:\n  eu-west:\n    token: {EU}\n    services: [acount-service]\n"),
    )
    .expect("write");
    let first = first_line_of_serve(
        dir,
        &[
            "-C",
            "repo",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "typo.yaml",
        ],
    );
    assert_eq!(
        first,
        "warning: cluster eu-west names service acount-service, which the release repo does not have (yet)"
    );
    let agent = cohort(dir, &["agent", "--once"]);
    assert_eq!(agent.status.code(), Some(2), "{}", text(&agent));
    assert!(
        text(&agent).contains("--git") && text(&agent).contains("--control"),
        "{}",
        text(&agent)
    );
}

#[test]
fn serve_follows_what_is_pushed_to_a_git_remote() {
    use cohort_agent::Source;
    use cohort_agent::source::{ControlSource, Polled};
    let tmp = setup();
    let dir = tmp.path();
    let remote = dir.join("repo");
    let server = start_serve(
        dir,
        &[
            "--git",
            remote.to_str().expect("utf-8"),
            "--mirror-dir",
            "mirror",
            "--fetch-every",
            "100ms",
        ],
    );
    let head = |repo: &Path| {
        String::from_utf8_lossy(&run(repo, "git", &["rev-parse", "HEAD"]).stdout)
            .trim()
            .to_string()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut agent = ControlSource::new(&server.url, "eu-west", EU, None).expect("client");
    let first = match runtime.block_on(agent.poll()).expect("poll") {
        Polled::Changed(state) => state.revision,
        Polled::Unchanged => panic!("the first poll brings the state"),
    };
    assert_eq!(first, head(&remote));
    assert!(matches!(
        runtime.block_on(agent.poll()).expect("poll"),
        Polled::Unchanged
    ));

    // A commit lands in the remote: the next fetch serves it.
    let deploy = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["-C", "repo", "deploy", "account-service", "1.19.0"])
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("deploy");
    assert!(deploy.status.success(), "{}", text(&deploy));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match runtime.block_on(agent.poll()).expect("poll") {
            Polled::Changed(state) => {
                assert_eq!(state.revision, head(&remote));
                let objects = serde_json::to_string(&state.services[0].objects).expect("json");
                assert!(objects.contains("internal-v1-19-0"), "the new build is served");
                break;
            }
            Polled::Unchanged => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the pushed commit was never served"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// schemathesis (installed by the README's test command) sends what the OpenAPI document
/// allows, and some of what it does not, and checks every answer against the document:
/// status codes, headers, content types and bodies.
#[test]
fn the_openapi_document_describes_what_serve_answers() {
    let tmp = setup();
    let dir = tmp.path();
    let server = start_serve(dir, &[]);
    let schema = format!("{}/openapi.json", server.url);
    for (name, token, paths) in [
        (
            "cluster",
            EU,
            ["--exclude-path", "/v1/fleet", "--exclude-path", "/v1/counts"],
        ),
        (
            "fleet",
            FLEET,
            ["--include-path", "/v1/fleet", "--include-path", "/v1/counts"],
        ),
    ] {
        let config = dir.join(format!("schemathesis-{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "headers = {{ Authorization = \"Bearer {token}\" }}\n\
                 [parameters]\n\"path.cluster\" = \"eu-west\"\n"
            ),
        )
        .expect("config");
        let out = run(
            dir,
            "python3",
            &[
                "-c",
                "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; schemathesis()",
                "--config-file",
                config.to_str().expect("utf-8"),
                "run",
                &schema,
                "--checks",
                "all",
                "--max-examples",
                "30",
                paths[0],
                paths[1],
                paths[2],
                paths[3],
            ],
        );
        assert!(
            out.status.success(),
            "schemathesis with the {name} token (install it with `python3 -m pip install schemathesis`):\n{}",
            text(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(" passed"), "{stdout}");
        assert!(!stdout.contains("Authentication failed"), "{stdout}");
    }
}

#[test]
fn render_agent_mounts_a_ca_configmap_for_an_https_source_and_refuses_it_for_another() {
    let tmp = setup();
    let dir = tmp.path();
    let rendered = cohort(
        dir,
        &[
            "-C",
            "repo",
            "render",
            "--agent",
            "--git",
            "https://git.example.com/release.git",
            "--ca-configmap",
            "company-ca",
            "-o",
            "json",
        ],
    );
    assert!(rendered.status.success(), "{}", text(&rendered));
    let list: serde_json::Value = serde_json::from_slice(&rendered.stdout).expect("json");
    let deployment = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("the agent's Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].to_string();
    assert!(
        args.contains(r#""--git-ca-file","/etc/cohort/ca/ca.crt""#),
        "{args}"
    );
    assert!(pod["volumes"].to_string().contains("company-ca"));
    assert!(
        text(&rendered).contains("kubectl -n shop create configmap company-ca --from-file=ca.crt="),
        "{}",
        text(&rendered)
    );

    let plain = cohort(
        dir,
        &[
            "-C",
            "repo",
            "render",
            "--agent",
            "--control",
            "http://cohort.internal:8443",
            "--cluster",
            "eu-west",
            "--ca-configmap",
            "company-ca",
        ],
    );
    assert_eq!(plain.status.code(), Some(2), "{}", text(&plain));
    assert!(
        text(&plain)
            .contains("--ca-configmap is for an https source; http://cohort.internal:8443 is not one"),
        "{}",
        text(&plain)
    );
}

/// `cohort serve --git https://…` panicked inside gix's reqwest transport: no rustls provider
/// was installed outside the agent's git source. Now the mirror installs it, and a company CA
/// given with --git-ca-file is trusted.
#[test]
fn serve_fetches_an_https_git_remote_instead_of_panicking_for_want_of_a_tls_provider() {
    use cohort_agent::Source;
    use cohort_agent::source::{ControlSource, Polled};
    let tmp = setup();
    let dir = tmp.path();
    tls_common::certificates(dir);
    std::fs::create_dir_all(dir.join("served")).expect("dir");
    let clone = run(
        dir,
        "git",
        &["clone", "-q", "--bare", "repo", "served/release.git"],
    );
    assert!(clone.status.success(), "{}", text(&clone));
    let mut git_server = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/git_https_server.py"))
        .args(["served", "server.pem", "server.key"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let port = BufReader::new(git_server.stdout.take().expect("stdout"))
        .lines()
        .next()
        .expect("the port")
        .expect("utf-8");
    let git_server = Server {
        child: git_server,
        url: format!("https://127.0.0.1:{port}/release.git"),
    };
    let url = git_server.url.as_str();

    // The test CA is in no system store: refused, saying why, exit 2.
    let untrusted = cohort(
        dir,
        &[
            "serve",
            "--tokens",
            "tokens.yaml",
            "--git",
            url,
            "--mirror-dir",
            "m1",
        ],
    );
    assert_eq!(untrusted.status.code(), Some(2), "{}", text(&untrusted));
    assert!(
        text(&untrusted).contains(
            "the server's certificate is signed by a CA this client does not trust; \
             if your own CA signed it, give that CA's certificate with --git-ca-file"
        ),
        "{}",
        text(&untrusted)
    );

    let server = start_serve(
        dir,
        &["--git", url, "--mirror-dir", "m2", "--git-ca-file", "ca.pem"],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut agent = ControlSource::new(&server.url, "eu-west", EU, None).expect("client");
    let head = run(&dir.join("repo"), "git", &["rev-parse", "HEAD"]);
    match runtime.block_on(agent.poll()).expect("poll") {
        Polled::Changed(state) => {
            assert_eq!(state.revision, String::from_utf8_lossy(&head.stdout).trim());
            assert_eq!(state.services[0].name, "account-service");
        }
        Polled::Unchanged => panic!("the first poll brings the state"),
    }
}

#[test]
fn serve_warns_when_the_revision_it_serves_is_not_valid_at_start_and_when_fetched() {
    let tmp = setup();
    let dir = tmp.path();
    // A --path with no release repo under it: said at start, before the address.
    let first = first_line_of_serve(
        dir,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "tokens.yaml",
            "--git",
            "repo",
            "--path",
            "sub",
            "--mirror-dir",
            "m1",
        ],
    );
    assert!(
        first.starts_with("warning: the release repo at ")
            && first.contains("is not valid, so agents skip it until a valid commit lands: cohort.yaml:1:1"),
        "{first}"
    );

    // A bad commit pushed while serving: said when it is fetched.
    let mut serving = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tokens", "tokens.yaml"])
        .args(["--git", "repo", "--mirror-dir", "m2", "--fetch-every", "100ms"])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stderr = serving.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // Serving the good revision first.
    let up = lines_rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("serve starts");
    assert!(up.starts_with("cohort serve: control API on"), "{up}");
    let repo = dir.join("repo");
    let pipeline = std::fs::read_to_string(repo.join("cohort.yaml")).expect("read");
    std::fs::write(
        repo.join("cohort.yaml"),
        pipeline.replace("namespace: shop", "namespace: Shop!"),
    )
    .expect("write");
    let commit = run(
        &repo,
        "git",
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qam",
            "bad namespace",
        ],
    );
    assert!(commit.status.success(), "{}", text(&commit));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = vec![];
    let warning = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) if line.starts_with("warning: the release repo at ") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no warning about the bad commit; serve said: {seen:?}"),
        }
    };
    let _ = serving.kill();
    let _ = serving.wait();
    assert!(warning.contains("cohort.yaml:"), "{warning}");
    assert!(
        seen.iter().any(|l| l.starts_with("cohort serve: new revision ")),
        "{seen:?}"
    );
}

/// A socket to a plain-HTTP serve, for what a client that does not play along sends.
fn raw(server: &Server) -> std::net::TcpStream {
    let addr = server.url.trim_start_matches("http://");
    std::net::TcpStream::connect(addr).expect("connect")
}

/// Everything the server sends until it closes the connection, and how long that took
/// (`None`: still open after `wait`).
fn until_closed(
    stream: &mut std::net::TcpStream,
    wait: std::time::Duration,
) -> (String, Option<std::time::Duration>) {
    use std::io::Read;
    let start = std::time::Instant::now();
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    loop {
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), None);
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), Some(start.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Closed with a reset: closed all the same.
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), Some(start.elapsed())),
        }
    }
}

fn send(stream: &mut std::net::TcpStream, bytes: &[u8]) {
    use std::io::Write;
    stream.write_all(bytes).expect("send");
}

const REPORTS: &str = "/v1/clusters/eu-west/reports";

/// serve read a report's whole body (axum's default limit, 2 MB) before it looked at the
/// token: 300 unauthenticated uploads held open took it from 39 to 605 MiB. Now the token is
/// checked on the head, the refusal comes at once, and the body is never read.
#[test]
fn an_unauthenticated_report_is_refused_before_its_body_is_read() {
    let tmp = setup();
    let server = start_serve(tmp.path(), &[]);
    let huge = "Content-Type: application/json\r\nContent-Length: 1073741824\r\n";
    for (credentials, status) in [
        ("", "401"),
        ("Authorization: Bearer not-a-token-of-this-server\r\n", "401"),
        (
            "Authorization: Bearer not-a-token-of-this-server\r\nExpect: 100-continue\r\n",
            "401",
        ),
        ("Authorization: Bearer us-east-token-0123456789abcdef\r\n", "403"),
        (&format!("Authorization: Bearer {FLEET}\r\n") as &str, "403"),
    ] {
        let mut s = raw(&server);
        send(
            &mut s,
            format!("POST {REPORTS} HTTP/1.1\r\nHost: cohort\r\n{credentials}{huge}\r\n").as_bytes(),
        );
        // A few bytes of the gigabyte; the rest never comes.
        send(&mut s, b"{\"cluster\":");
        let (answer, closed) = until_closed(&mut s, std::time::Duration::from_secs(10));
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{credentials:?}: {answer:?}"
        );
        assert!(!answer.contains("100 Continue"), "{answer}");
        assert!(answer.to_lowercase().contains("connection: close"), "{answer}");
        assert!(
            closed.is_some(),
            "{credentials:?}: the connection stays open waiting for the body: {answer:?}"
        );
    }
}

/// A report over the limit is refused: at once when its length is declared, as soon as it
/// passes the limit when it is chunked; one whose body stalls gets 408; each closes the
/// connection.
#[test]
fn an_over_limit_report_gets_413_and_a_stalled_one_408() {
    let tmp = setup();
    let server = start_serve(tmp.path(), &["--body-timeout", "1s"]);
    let auth = format!("Authorization: Bearer {EU}\r\n");
    let mut declared = raw(&server);
    send(
        &mut declared,
        format!("POST {REPORTS} HTTP/1.1\r\nHost: cohort\r\n{auth}Content-Length: 2097152\r\n\r\n")
            .as_bytes(),
    );
    let (answer, closed) = until_closed(&mut declared, std::time::Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer:?}");
    assert!(
        answer.contains("a report may be at most 1048576 bytes"),
        "{answer}"
    );
    assert!(closed.is_some(), "{answer:?}");

    let mut chunked = raw(&server);
    send(
        &mut chunked,
        format!("POST {REPORTS} HTTP/1.1\r\nHost: cohort\r\n{auth}Transfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    );
    let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
    for _ in 0..16 {
        send(&mut chunked, chunk.as_bytes());
    }
    send(&mut chunked, b"1\r\n \r\n");
    let (answer, closed) = until_closed(&mut chunked, std::time::Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer:?}");
    assert!(closed.is_some(), "{answer:?}");

    let mut stalled = raw(&server);
    send(
        &mut stalled,
        format!("POST {REPORTS} HTTP/1.1\r\nHost: cohort\r\n{auth}Content-Length: 1000\r\n\r\n{{\"cluster\"")
            .as_bytes(),
    );
    let (answer, closed) = until_closed(&mut stalled, std::time::Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(answer.contains("did not arrive within 1s"), "{answer}");
    let closed = closed.expect("closed after the 408");
    assert!(closed >= std::time::Duration::from_millis(900), "{closed:?}");
}

/// serve never closed a connection that sent nothing, or half a request head, or a head one
/// byte at a time, or that sat idle after a request: each held a file descriptor and memory
/// for as long as the client liked.
#[test]
fn a_silent_connection_and_a_half_sent_head_are_closed_after_the_header_timeout() {
    use std::time::Duration;
    let tmp = setup();
    let server = start_serve(tmp.path(), &["--header-timeout", "1s", "--idle-timeout", "6s"]);
    let closed_within = |s: &mut std::net::TcpStream, what: &str, low: u64, high: u64| {
        let (answer, closed) = until_closed(s, Duration::from_secs(20));
        let closed = closed.unwrap_or_else(|| panic!("{what}: still open after 20s"));
        assert!(
            closed >= Duration::from_millis(low) && closed <= Duration::from_millis(high),
            "{what}: closed after {closed:?}"
        );
        answer
    };

    let mut silent = raw(&server);
    let answer = closed_within(&mut silent, "silent", 800, 4000);
    assert!(answer.is_empty(), "{answer:?}");

    let mut half = raw(&server);
    send(&mut half, b"GET /live HTTP/1.1\r\nHost: cohort\r\n");
    closed_within(&mut half, "half a head", 800, 4000);

    // A byte every 300 ms: each read is quick, the head never whole.
    let mut trickle = raw(&server);
    let start = std::time::Instant::now();
    for b in b"GET /live HTTP/1.1\r\nHost: cohort\r\n" {
        if std::io::Write::write_all(&mut trickle, &[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "trickled for {:?}",
        start.elapsed()
    );

    // Kept alive: idle for the idle timeout, but a head once begun has the header timeout.
    let mut kept = raw(&server);
    send(&mut kept, b"GET /live HTTP/1.1\r\nHost: cohort\r\n\r\n");
    let (answer, closed) = until_closed(&mut kept, Duration::from_millis(1500));
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("ok\n"),
        "{answer:?}"
    );
    assert_eq!(closed, None, "kept alive past the header timeout");
    closed_within(&mut kept, "kept alive and idle", 3000, 12000);

    let mut kept = raw(&server);
    send(&mut kept, b"GET /live HTTP/1.1\r\nHost: cohort\r\n\r\n");
    // Past the first header timeout, so the connection waits on its idle timeout when the
    // next head begins.
    std::thread::sleep(Duration::from_millis(1500));
    send(&mut kept, b"GET /live HTTP/1.1\r\n");
    let answer = closed_within(&mut kept, "kept alive, then half a head", 500, 3000);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
}

/// Past --max-connections, serve stops accepting: the next client waits until a connection
/// closes, rather than the server taking file descriptors and memory without bound.
#[test]
fn serve_accepts_no_more_than_max_connections_and_the_rest_wait() {
    use std::time::Duration;
    let tmp = setup();
    let server = start_serve(tmp.path(), &["--max-connections", "2", "--header-timeout", "30s"]);
    let first = raw(&server);
    let _second = raw(&server);
    std::thread::sleep(Duration::from_millis(300));
    let mut third = raw(&server);
    send(
        &mut third,
        b"GET /live HTTP/1.1\r\nHost: cohort\r\nConnection: close\r\n\r\n",
    );
    let (answer, closed) = until_closed(&mut third, Duration::from_secs(1));
    assert!(
        answer.is_empty() && closed.is_none(),
        "answered past the limit: {answer:?}"
    );
    drop(first);
    let (answer, closed) = until_closed(&mut third, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    assert!(closed.is_some(), "{answer:?}");
}

/// Whether `text` holds a character that could drive a terminal (a control character other
/// than the line breaks between lines, or a bidi override).
fn drives_a_terminal(text: &str) -> bool {
    text.chars().any(|c| {
        c != '\n' && (c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
    })
}

/// A cluster's token holder could put ESC, CR and LF in its report's service names and
/// problems and so forge rows of `cohort status --fleet`: a fake "in sync" line for another
/// cluster, cursor moves that erase the real one. Now every cell and note is shown escaped;
/// `-o json` keeps the exact text.
#[test]
fn a_report_with_terminal_escapes_cannot_forge_rows_of_status_fleet() {
    let tmp = setup();
    let dir = tmp.path();
    let server = start_serve(dir, &[]);
    let forged_row =
        "account-service\r\nus-east   in sync    1s ago     1s ago       aaaaaaaa  1/1 applied  healthy";
    let erase = "\x1b[1A\x1b[2Kus-east   in sync";
    let report = serde_json::json!({
        "cluster": "eu-west",
        "agent_version": "0.1.0\x1b]0;owned\x07",
        "at": 1,
        "seen_revision": "ab\rcd",
        "services": [{
            "name": forged_row,
            "applied_revision": "ab\rcd",
            "state": "failed",
            "error": "\u{9b}2K boom",
        }],
        "problems": [erase, "two\nlines"],
        "health": [{"service": "a\u{202e}b", "healthy": false, "findings": ["\u{2066}ko\u{2069}"]}],
    })
    .to_string();
    let mut post = raw(&server);
    send(
        &mut post,
        format!(
            "POST {REPORTS} HTTP/1.1\r\nHost: cohort\r\nAuthorization: Bearer {EU}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{report}",
            report.len()
        )
        .as_bytes(),
    );
    let (answer, _) = until_closed(&mut post, std::time::Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 204 "), "{answer}");

    let fleet = cohort(
        dir,
        &["status", "--fleet", &server.url, "--token-file", "fleet.token"],
    );
    assert_eq!(fleet.status.code(), Some(1), "{}", text(&fleet));
    let shown = String::from_utf8_lossy(&fleet.stdout).into_owned();
    assert!(!drives_a_terminal(&shown), "{shown:?}");
    for escaped in [
        r"account-service\r\nus-east   in sync",
        r"\x1b[1A\x1b[2Kus-east   in sync",
        r"\u{9b}2K boom",
        r"two\nlines",
        r"a\u{202e}b: \u{2066}ko\u{2069}",
    ] {
        assert!(shown.contains(escaped), "{escaped} not in {shown}");
    }
    let rows: Vec<&str> = shown.lines().filter(|l| !l.starts_with("    ")).collect();
    assert_eq!(rows.len(), 4, "header, two clusters, the revision: {shown}");
    assert!(rows[1].starts_with("eu-west  failing    never"), "{shown}");
    assert!(rows[1].contains(r" ab\rcd "), "{shown}");
    assert!(rows[2].starts_with("us-east  no report  never"), "{shown}");

    let json = cohort(
        dir,
        &[
            "status",
            "--fleet",
            &server.url,
            "--token-file",
            "fleet.token",
            "-o",
            "json",
        ],
    );
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let held = &doc["clusters"][0]["report"];
    assert_eq!(held["services"][0]["name"], forged_row);
    assert_eq!(held["problems"][0], erase);
    assert_eq!(held["agent_version"], "0.1.0\x1b]0;owned\x07");
    assert_eq!(held["health"][0]["findings"][0], "\u{2066}ko\u{2069}");
}

/// Seconds of CPU a process has used (utime + stime from /proc, in clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

/// Out of file descriptors, serve's TLS accept loop retried at once, for ever: a core at 100%
/// serving nothing. Now it waits, longer each time, and serves again once connections close
/// (silent ones do, at the header timeout).
#[test]
fn out_of_file_descriptors_serve_backs_off_instead_of_spinning() {
    use cohort_agent::Source;
    use cohort_agent::source::{ControlSource, Polled};
    use std::time::Duration;
    let tmp = setup();
    let dir = tmp.path();
    tls_common::certificates(dir);
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 64 && exec \"$0\" -C repo serve --listen 127.0.0.1:0 --tokens tokens.yaml \
             --tls-cert server.pem --tls-key server.key --header-timeout 3s --max-connections 1000",
            env!("CARGO_BIN_EXE_cohort"),
        ])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let url = first
        .split("control API on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    let server = Server { child, url };
    let pid = server.child.id();
    let addr = server.url.trim_start_matches("https://").to_string();
    let silent: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(pid) - before;
    assert!(
        used < 0.5,
        "serve used {used:.2}s of CPU in 2s while out of file descriptors"
    );

    // The silent connections are closed at the header timeout; an agent is served again.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut agent =
        ControlSource::new(&server.url, "eu-west", EU, Some(&dir.join("ca.pem"))).expect("client");
    let polled = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(15), agent.poll())
            .await
            .expect("answered within 15s")
    });
    assert!(matches!(polled.expect("poll"), Polled::Changed(_)));
    drop(silent);
}
