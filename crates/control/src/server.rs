//! `cohort serve`: the control API over a release repo (axum). Agents pull their cluster's
//! desired state (an idle poll is a 304 that renders nothing) and push reports; operators read
//! the fleet view. Every request but the OpenAPI document needs a bearer token from the
//! tokens file, and a cluster's token reaches only that cluster's resources.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cohort_release::git::ReleaseRepo;
use cohort_release::mirror::Mirror;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::tokens::{Caller, Tokens};
use crate::wire::{Fleet, FleetCluster, FleetCounts, REPORT_WANTED, Report, ReportTaken, SilentCluster};

/// The OpenAPI document describing this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The largest report accepted (a report lists services and findings; this is generous).
pub const MAX_REPORT_BYTES: usize = 1 << 20;

/// How long a report's body may take to arrive, by default.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where the API reads the release repo.
pub enum RepoSource {
    /// A clone with a worktree (`-C DIR`): its HEAD, as commits land in it.
    Worktree(ReleaseRepo),
    /// A mirror of a remote's branch: what has been pushed, as far as the last fetch saw
    /// (reported with [`Control::fetched`]).
    Mirror {
        /// Reads the mirror's objects.
        reader: Mirror,
        /// The branch's commit at the last fetch.
        head: Option<String>,
    },
}

impl RepoSource {
    fn head(&self) -> Result<Option<String>, cohort_release::git::GitError> {
        match self {
            RepoSource::Worktree(repo) => repo.head_commit(),
            RepoSource::Mirror { head, .. } => Ok(head.clone()),
        }
    }

    fn files_at(
        &self,
        revision: &str,
        prefix: &Path,
    ) -> Result<cohort_spec::repo::RepoFiles, cohort_release::git::GitError> {
        match self {
            RepoSource::Worktree(repo) => repo.files_at(revision, prefix),
            RepoSource::Mirror { reader, .. } => reader.files_at(revision, prefix),
        }
    }
}

/// The state behind the API: the release repo, the tokens, the last word of every cluster.
pub struct Control {
    repo: Mutex<RepoSource>,
    prefix: PathBuf,
    tokens: Tokens,
    rendered: Mutex<Rendered>,
    seen: Mutex<BTreeMap<String, Seen>>,
    body_timeout: std::time::Duration,
    counts: Mutex<crate::counts::CountLog>,
    silent_after: std::time::Duration,
}

/// How long a cluster may go without a report before its counts are taken to be missing.
pub const SILENT_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// Bodies rendered for the current revision, per cluster.
#[derive(Default)]
struct Rendered {
    revision: String,
    bodies: HashMap<String, (String, Bytes)>,
}

#[derive(Default, Clone)]
struct Seen {
    last_poll: Option<i64>,
    last_report_at: Option<i64>,
    report: Option<Report>,
}

impl Control {
    /// The API over the release repo `repo` (whose files sit at `prefix` in the git repository).
    pub fn new(repo: RepoSource, prefix: &Path, tokens: Tokens) -> Control {
        Control {
            repo: Mutex::new(repo),
            prefix: prefix.to_owned(),
            tokens,
            rendered: Mutex::new(Rendered::default()),
            seen: Mutex::new(BTreeMap::new()),
            body_timeout: BODY_TIMEOUT,
            counts: Mutex::new(crate::counts::CountLog::new(now_ms())),
            silent_after: SILENT_AFTER,
        }
    }

    /// How long a cluster may go without a report before `GET /v1/counts` calls it silent
    /// (its services then cannot be judged to pass).
    pub fn with_silent_after(mut self, after: std::time::Duration) -> Control {
        self.silent_after = after;
        self
    }

    /// How long a report's body may take to arrive, from when its token has been checked
    /// (then 408, and the connection is closed).
    pub fn with_body_timeout(mut self, timeout: std::time::Duration) -> Control {
        self.body_timeout = timeout;
        self
    }

    /// With a mirror: the commit its branch was fetched at, by whoever fetches it (off the
    /// lock, so a slow remote never holds up a poll).
    pub fn fetched(&self, commit: String) {
        let mut repo = self.repo.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let RepoSource::Mirror { head, .. } = &mut *repo {
            *head = Some(commit);
        }
    }

    /// What an operator should hear about the release repo's current revision, as sentences:
    /// that it is not valid (agents skip it, so nothing reaches the clusters until a valid
    /// commit lands), or the services the tokens file gives a cluster that it does not have (a
    /// typo there would silently serve that cluster less).
    pub fn warnings(&self) -> Vec<String> {
        let Ok(Some(revision)) = self.head() else {
            return vec![];
        };
        let short = &revision[..revision.len().min(8)];
        let files = {
            let repo = self.repo.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match repo.files_at(&revision, &self.prefix) {
                Ok(files) => files,
                Err(e) => {
                    return vec![format!(
                        "cannot read the release repo at {short}: {}",
                        error_chain(&e)
                    )];
                }
            }
        };
        let (repo, diags) = cohort_spec::repo::validate(&files);
        let Some(repo) = repo else {
            let errors: Vec<String> = diags
                .iter()
                .filter(|d| d.severity == cohort_spec::diag::Severity::Error)
                .map(|d| d.to_string().lines().next().unwrap_or_default().to_string())
                .collect();
            return vec![format!(
                "the release repo at {short} is not valid, so agents skip it until a valid commit lands: {}",
                errors.join("; ")
            )];
        };
        let mut out = vec![];
        for cluster in &self.tokens.clusters {
            for wanted in cluster.services.iter().flatten() {
                if !repo.services.iter().any(|s| s.spec.name.as_str() == wanted) {
                    out.push(format!(
                        "cluster {} names service {wanted}, which the release repo does not have (yet)",
                        cluster.name
                    ));
                }
            }
        }
        out
    }

    fn head(&self) -> Result<Option<String>, ApiError> {
        let repo = self
            .repo
            .lock()
            .map_err(|_| ApiError::internal("the repo lock is poisoned"))?;
        repo.head().map_err(|e| ApiError::internal(&error_chain(&e)))
    }

    /// The body and ETag of `cluster`'s desired state at `revision`, rendered once per revision.
    fn desired(&self, cluster: &str, revision: &str) -> Result<(String, Bytes), ApiError> {
        {
            let rendered = self
                .rendered
                .lock()
                .map_err(|_| ApiError::internal("cache lock poisoned"))?;
            if rendered.revision == revision
                && let Some(hit) = rendered.bodies.get(cluster)
            {
                return Ok(hit.clone());
            }
        }
        let only = self.tokens.cluster(cluster).and_then(|c| c.services.clone());
        let files = {
            let repo = self
                .repo
                .lock()
                .map_err(|_| ApiError::internal("the repo lock is poisoned"))?;
            repo.files_at(revision, &self.prefix)
                .map_err(|e| ApiError::internal(&error_chain(&e)))?
        };
        let state = crate::desired_from_files(&files, revision, cluster, only.as_deref());
        let body = Bytes::from(serde_json::to_vec(&state).map_err(|e| ApiError::internal(&e.to_string()))?);
        let etag = etag(revision, only.as_deref());
        let mut rendered = self
            .rendered
            .lock()
            .map_err(|_| ApiError::internal("cache lock poisoned"))?;
        if rendered.revision != revision {
            *rendered = Rendered {
                revision: revision.to_string(),
                bodies: HashMap::new(),
            };
        }
        rendered
            .bodies
            .insert(cluster.to_string(), (etag.clone(), body.clone()));
        Ok((etag, body))
    }

    fn note(&self, cluster: &str, f: impl FnOnce(&mut Seen)) {
        if let Ok(mut seen) = self.seen.lock() {
            f(seen.entry(cluster.to_string()).or_default());
        }
    }
}

/// The ETag of a cluster's desired state: the revision, and which services the cluster runs
/// (so a changed tokens file is not answered with a stale 304).
fn etag(revision: &str, only: Option<&[String]>) -> String {
    let scope = match only {
        None => "all".to_string(),
        Some(names) => {
            let mut h = Sha256::new();
            for n in names {
                h.update(n.as_bytes());
                h.update(b"\n");
            }
            crate::hex(&h.finalize()[..6])
        }
    };
    format!("\"{revision}-{scope}\"")
}

/// Whether an `If-None-Match` header value names `etag` (weak or strong, or `*`).
fn none_match(header: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(value) = header.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// An error answer: a status and a sentence, as JSON `{"error": ...}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn internal(message: &str) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cohort\""),
            );
        }
        response
    }
}

fn caller<'a>(control: &'a Control, headers: &HeaderMap) -> Result<Caller<'a>, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme's name is case-insensitive (RFC 9110).
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim);
    let unauthorized = |message: &str| ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.to_string(),
    };
    match token {
        None => Err(unauthorized(
            "no bearer token; send `Authorization: Bearer <token>`",
        )),
        Some(token) => match control.tokens.caller(token) {
            Caller::Unknown => Err(unauthorized(
                "the bearer token is not in the server's tokens file",
            )),
            known => Ok(known),
        },
    }
}

/// The caller must be `cluster`'s own agent.
fn own_cluster(control: &Control, headers: &HeaderMap, cluster: &str) -> Result<(), ApiError> {
    match caller(control, headers)? {
        Caller::Cluster(name) if name == cluster => Ok(()),
        Caller::Cluster(name) => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!("this token is cluster {name}'s; it reaches only /v1/clusters/{name}/"),
        }),
        Caller::Fleet | Caller::Unknown => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: "the fleet token reads the fleet view only".to_string(),
        }),
    }
}

async fn desired_state(
    State(control): State<Arc<Control>>,
    UrlPath(cluster): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    own_cluster(&control, &headers, &cluster)?;
    let mut has_report = false;
    control.note(&cluster, |s| {
        s.last_poll = Some(now());
        has_report = s.report.is_some();
    });
    let Some(revision) = control.head()? else {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the release repo has no commit yet".to_string(),
        });
    };
    let control2 = control.clone();
    let (etag, body) = tokio::task::spawn_blocking(move || control2.desired(&cluster, &revision))
        .await
        .map_err(|e| ApiError::internal(&e.to_string()))??;
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::internal(&e.to_string()))?;
    let mut response = if none_match(headers.get(header::IF_NONE_MATCH), &etag) {
        (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response()
    } else {
        (
            StatusCode::OK,
            [
                (header::ETAG, etag_value),
                (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            ],
            body,
        )
            .into_response()
    };
    // Reports live in memory: after a restart the server asks each agent for one at its next
    // poll, so the fleet view fills within one interval rather than one heartbeat.
    if !has_report {
        response
            .headers_mut()
            .insert(REPORT_WANTED, HeaderValue::from_static("1"));
    }
    Ok(response)
}

async fn post_report(
    State(control): State<Arc<Control>>,
    UrlPath(cluster): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    // The token first: whoever cannot show one gets no byte of their body read.
    own_cluster(&control, &headers, &cluster)?;
    let body = read_body(body, &headers, control.body_timeout).await?;
    let report: Report = serde_json::from_slice(&body).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("the report is not valid JSON of the Report schema (see /openapi.json): {e}"),
    })?;
    if report.cluster != cluster {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "the report says cluster {}, but the token is cluster {cluster}'s",
                report.cluster
            ),
        });
    }
    let may_run = |service: &str| {
        control
            .tokens
            .cluster(&cluster)
            .and_then(|c| c.services.as_ref())
            .is_none_or(|only| only.iter().any(|s| s == service))
    };
    let mut report = report;
    // Kept apart: the fleet view shows a cluster's last word, the counts add up over time.
    // A count that cannot be used costs only itself: the rest of the report still counts.
    let (counts, refused) = crate::counts::check(std::mem::take(&mut report.counts), may_run);
    let refused: Vec<String> = refused.iter().map(ToString::to_string).collect();
    if !counts.is_empty() {
        let mut log = control
            .counts
            .lock()
            .map_err(|_| ApiError::internal("lock poisoned"))?;
        log.prune(now());
        log.add(now_ms(), counts);
    }
    control.note(&cluster, |s| {
        s.last_report_at = Some(now());
        s.report = Some(report);
    });
    Ok(match refused.is_empty() {
        true => StatusCode::NO_CONTENT.into_response(),
        false => (
            StatusCode::OK,
            Json(ReportTaken {
                counts_refused: refused,
            }),
        )
            .into_response(),
    })
}

/// `GET /v1/counts?after=MARK`: every cluster's router counts that arrived after MARK (all
/// that are kept without it), summed per service, and the clusters that have gone silent.
async fn fleet_counts(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<FleetCounts>, ApiError> {
    fleet_only(&control, &headers, "the fleet's counts need")?;
    let mut after = None;
    for pair in query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("after", value)) => {
                // As `until` gives it: `EPOCH.MARK`.
                after = Some(crate::counts::parse_mark(value).ok_or_else(|| ApiError {
                    status: StatusCode::BAD_REQUEST,
                    message: format!(
                        "after={value:?} is not a mark: give the `until` of the previous answer as it is, or leave `after` out for every count kept"
                    ),
                })?);
            }
            _ => {
                return Err(ApiError {
                    status: StatusCode::BAD_REQUEST,
                    message: format!("unknown query parameter {pair:?}; the only one is after=MARK"),
                });
            }
        }
    }
    let read = {
        let mut log = control
            .counts
            .lock()
            .map_err(|_| ApiError::internal("lock poisoned"))?;
        log.prune(now());
        log.after(after)
    };
    let seen = control
        .seen
        .lock()
        .map_err(|_| ApiError::internal("lock poisoned"))?
        .clone();
    let silent_after = control.silent_after.as_secs() as i64;
    let silent = control
        .tokens
        .clusters
        .iter()
        .filter_map(|c| {
            let last = seen.get(&c.name).and_then(|s| s.last_report_at);
            if last.is_none_or(|at| now() - at > silent_after) {
                return Some(SilentCluster {
                    name: c.name.clone(),
                    services: c.services.clone(),
                    last_report_at: last,
                    unread: false,
                });
            }
            // It reports, but said some of its routers' counts are missing.
            let missing: Vec<String> = seen
                .get(&c.name)
                .and_then(|s| s.report.as_ref())
                .map(|r| r.counts_missing.clone())
                .unwrap_or_default();
            (!missing.is_empty()).then(|| SilentCluster {
                name: c.name.clone(),
                services: Some(missing),
                last_report_at: last,
                unread: true,
            })
        })
        .collect();
    Ok(Json(FleetCounts {
        until: crate::counts::show_mark(read.epoch, read.until),
        services: read.services,
        silent,
        complete: read.complete,
    }))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A request body of at most [`MAX_REPORT_BYTES`], whole within `timeout`: a declared length
/// over the limit is refused before any of it is read, a longer chunked body as soon as it
/// passes the limit.
async fn read_body(
    body: axum::body::Body,
    headers: &HeaderMap,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt as _;
    let too_large = || ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("a report may be at most {MAX_REPORT_BYTES} bytes"),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REPORT_BYTES as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, MAX_REPORT_BYTES);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the report's body did not arrive within {}s; send it whole at once",
                timeout.as_secs_f64()
            ),
        }),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("the report's body could not be read: {e}"),
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Only the fleet_token passes: `what` (e.g. "the fleet view needs") says what was asked for.
fn fleet_only(control: &Control, headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    match caller(control, headers)? {
        Caller::Fleet => Ok(()),
        _ => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!("a cluster's token reads only its own state; {what} the fleet_token"),
        }),
    }
}

async fn fleet(State(control): State<Arc<Control>>, headers: HeaderMap) -> Result<Json<Fleet>, ApiError> {
    fleet_only(&control, &headers, "the fleet view needs")?;
    let revision = control.head()?;
    let seen = control
        .seen
        .lock()
        .map_err(|_| ApiError::internal("lock poisoned"))?
        .clone();
    let clusters = control
        .tokens
        .clusters
        .iter()
        .map(|c| {
            let s = seen.get(&c.name).cloned().unwrap_or_default();
            FleetCluster {
                name: c.name.clone(),
                last_poll: s.last_poll,
                last_report_at: s.last_report_at,
                report: s.report,
            }
        })
        .collect();
    Ok(Json(Fleet { revision, clusters }))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn live() -> &'static str {
    "ok\n"
}

/// The API's routes.
pub fn app(control: Arc<Control>) -> axum::Router {
    axum::Router::new()
        .route("/v1/clusters/{cluster}/desired-state", get(desired_state))
        .route("/v1/clusters/{cluster}/reports", post(post_report))
        .route("/v1/fleet", get(fleet))
        .route("/v1/counts", get(fleet_counts))
        .route("/openapi.json", get(openapi))
        .route("/live", get(live))
        .with_state(control)
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot read {what} from {}", path.display())]
    Pem {
        /// `the certificate chain` or `the private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair.
    #[error("the certificate and key cannot be used together")]
    Config(#[source] rustls::Error),
}

/// A rustls server configuration from PEM files (the certificate chain, leaf first, and its key).
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            what: "the certificate chain",
            path: cert.to_owned(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        what: "the private key",
        path: key.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::{etag, none_match};

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_star() {
        let tag = etag("abc", None);
        assert_eq!(tag, "\"abc-all\"");
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(none_match(Some(&h("\"abc-all\"")), &tag));
        assert!(none_match(Some(&h("W/\"abc-all\"")), &tag));
        assert!(none_match(Some(&h("\"x\", \"abc-all\"")), &tag));
        assert!(none_match(Some(&h("*")), &tag));
        assert!(!none_match(Some(&h("\"abd-all\"")), &tag));
        assert!(!none_match(None, &tag));
        assert_ne!(etag("abc", Some(&["a".into()])), etag("abc", Some(&["b".into()])));
    }
}
