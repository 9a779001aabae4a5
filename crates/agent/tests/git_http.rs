//! The git source over HTTP: git's smart protocol served by the real `git http-backend`
//! (behind a small CGI bridge on 127.0.0.1), fetched by the agent's mirror through gix's
//! HTTP transport, the one `https://` remotes use.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use cohort_agent::Source;
use cohort_agent::source::{GitSource, Polled};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `git http-backend` for one request, as a web server's CGI would.
async fn cgi(
    root: Arc<PathBuf>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root.as_path())
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("git http-backend");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&body).await.expect("write the request body");
    drop(stdin);
    let mut out = vec![];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .await
        .expect("read");
    let _ = child.wait().await;
    // CGI output: header lines, a blank line, the body.
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .expect("CGI headers");
    let head = String::from_utf8_lossy(&out[..split.0]).into_owned();
    let mut response = hyper::Response::new(Full::new(Bytes::copy_from_slice(&out[split.0 + split.1..])));
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            *response.status_mut() = hyper::StatusCode::from_u16(code).expect("status");
        } else if let (Ok(n), Ok(v)) = (
            http::HeaderName::try_from(name.trim()),
            http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    Ok(response)
}

async fn git_http_server(root: &Path) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let root = Arc::new(root.to_path_buf());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let root = root.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| cgi(root.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_git_source_fetches_over_gits_smart_http_protocol() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(work.join("services")).expect("dirs");
    std::fs::create_dir_all(work.join("releases")).expect("dirs");
    let files = cohort_spec::scaffold::repo_files();
    std::fs::write(work.join("cohort.yaml"), files.pipeline.expect("pipeline")).expect("write");
    for (path, text) in files.services.iter().chain(&files.releases) {
        std::fs::write(work.join(path), text).expect("write");
    }
    git(&work, &["init", "-q"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "seed"]);
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).expect("dir");
    git(
        &served,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().expect("utf-8"),
            "release.git",
        ],
    );

    let base = git_http_server(&served).await;
    let url = format!("{base}/release.git");
    let mirror = tmp.path().join("mirror");
    let mut source = GitSource::new(&url, "main", &mirror, Path::new(""), "eu-west", None).expect("source");
    let first = match source.poll().await.expect("fetch over http") {
        Polled::Changed(state) => state,
        Polled::Unchanged => panic!("the first poll brings the revision"),
    };
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    assert_eq!(first.services[0].name, "account-service");
    assert!(matches!(source.poll().await.expect("poll"), Polled::Unchanged));

    // A push to the served repo arrives with the next fetch.
    std::fs::write(work.join("NOTES.md"), "a change\n").expect("write");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "notes"]);
    git(
        &work,
        &[
            "push",
            "-q",
            served.join("release.git").to_str().expect("utf-8"),
            "main",
        ],
    );
    match source.poll().await.expect("poll") {
        Polled::Changed(state) => assert_ne!(state.revision, first.revision),
        Polled::Unchanged => panic!("the pushed commit was not fetched"),
    }
}
