//! The git source over HTTP and HTTPS: git's smart protocol served by the real
//! `git http-backend` (behind a small CGI bridge on 127.0.0.1, with TLS from a CA made in the
//! test), fetched by the agent's mirror through gix's HTTP transport.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use cohort_agent::Source;
use cohort_agent::source::{GitSource, Polled, SourceError};
use cohort_release::mirror::{ExtraRoots, FetchError, Mirror};
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

/// Serves the git repositories under `root` on 127.0.0.1: over TLS with `tls`, else plain.
async fn git_http_server(root: &Path, tls: Option<Arc<rustls::ServerConfig>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let root = Arc::new(root.to_path_buf());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let root = root.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| cgi(root.clone(), req));
                let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match acceptor {
                    // A client that refuses the certificate ends the handshake: nothing to serve.
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                        Err(_) => return,
                    },
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                };
            });
        }
    });
    format!("{scheme}://{addr}")
}

/// A test CA (its certificate in PEM) and a server configuration with a certificate it
/// signed for 127.0.0.1.
fn test_ca() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "cohort test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(vec![server.der().clone()], key)
            .expect("server config");
    (ca_cert.pem(), Arc::new(config))
}

/// A release repo committed in `work` and served bare from `served/release.git`.
fn served_release_repo(tmp: &Path) -> (PathBuf, PathBuf) {
    let work = tmp.join("work");
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
    let served = tmp.join("served");
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
    (work, served)
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
    let (work, served) = served_release_repo(tmp.path());
    let base = git_http_server(&served, None).await;
    let url = format!("{base}/release.git");
    let mirror = Mirror::open(&tmp.path().join("mirror"), &url, "main").expect("mirror");
    let mut source = GitSource::new(mirror, Path::new(""), "eu-west", None);
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

#[tokio::test]
async fn over_https_the_git_source_trusts_the_system_roots_and_the_ca_file_it_is_given() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_work, served) = served_release_repo(tmp.path());
    let (ca_pem, tls) = test_ca();
    let base = git_http_server(&served, Some(tls)).await;
    assert!(base.starts_with("https://"));
    let url = format!("{base}/release.git");

    // The test CA is in no system store: refused, nothing fetched.
    let mirror = Mirror::open(&tmp.path().join("untrusting"), &url, "main").expect("mirror");
    let mut source = GitSource::new(mirror, Path::new(""), "eu-west", None);
    let refused = source.poll().await.expect_err("a certificate from an unknown CA");
    match &refused {
        SourceError::Fetch(FetchError::Untrusted { certificate, .. }) => assert!(certificate.unknown_ca()),
        other => panic!("not a refused certificate: {other:?}"),
    }
    assert!(
        refused.to_string().ends_with(
            "the server's certificate is signed by a CA this client does not trust; \
             if your own CA signed it, give that CA's certificate with --git-ca-file"
        ),
        "{refused}"
    );

    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("write");
    let mut mirror = Mirror::open(&tmp.path().join("trusting"), &url, "main").expect("mirror");
    mirror.trust(ExtraRoots::from_pem_file(&ca_file).expect("the CA file"));
    let mut source = GitSource::new(mirror, Path::new(""), "eu-west", None);
    match source.poll().await.expect("fetch over https") {
        Polled::Changed(state) => {
            assert!(state.problems.is_empty(), "{:?}", state.problems);
            assert_eq!(state.services[0].name, "account-service");
        }
        Polled::Unchanged => panic!("the first poll brings the revision"),
    }
    assert!(matches!(source.poll().await.expect("poll"), Polled::Unchanged));
}
