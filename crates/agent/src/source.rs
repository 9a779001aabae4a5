//! Where the agent gets its desired state: a git remote of the release repo, or a cohort
//! control API. Both hand the agent the same thing, a [`DesiredState`] rendered by
//! [`cohort_control::desired_from_files`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cohort_control::{DesiredState, REPORT_WANTED, Report};
use cohort_release::mirror::{FetchError, Mirror};
use cohort_release::tls::UntrustedCertificate;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// What a poll found.
#[derive(Debug)]
pub enum Polled {
    /// Nothing new since the last poll.
    Unchanged,
    /// A revision the agent has not seen.
    Changed(DesiredState),
}

/// Why a poll or a report failed. Retried with backoff; the cluster is left as it is.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The git remote could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The local mirror could not be read.
    #[error(transparent)]
    Git(#[from] cohort_release::git::GitError),
    /// The control API could not be reached.
    #[error("cannot reach {url}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The control API's certificate was refused.
    #[error("cannot reach {url}: {}", certificate.advice("--ca-file"))]
    Untrusted {
        /// What was asked.
        url: String,
        /// What was wrong with the certificate.
        certificate: UntrustedCertificate,
    },
    /// The control API answered with an error.
    #[error("{url} answered {status}: {message}")]
    Refused {
        /// What was asked.
        url: String,
        /// The status.
        status: StatusCode,
        /// The server's explanation.
        message: String,
    },
    /// The control API's answer is not a desired state.
    #[error("{url} answered with something that is not a desired state")]
    BadAnswer {
        /// What was asked.
        url: String,
        /// Why it could not be read.
        #[source]
        source: serde_json::Error,
    },
    /// The source's task failed.
    #[error("the poll was interrupted")]
    Interrupted,
}

impl SourceError {
    /// Whether the source refused the agent's credentials (a token problem an operator must fix).
    pub fn is_auth(&self) -> bool {
        matches!(self, SourceError::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN)
    }
}

/// A source of desired state.
pub trait Source: Send {
    /// Looks for a new revision.
    fn poll(&mut self) -> impl Future<Output = Result<Polled, SourceError>> + Send;
    /// Sends a report (a source with nowhere to send it does nothing).
    fn report(&mut self, report: &Report) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// Whether the last poll's answer asked for a report now (the control API holds none from
    /// this cluster, after its restart).
    fn report_wanted(&self) -> bool {
        false
    }
    /// The source in words, for logs.
    fn describe(&self) -> String;
}

/// A git remote of the release repo, mirrored in a local directory.
pub struct GitSource {
    mirror: Arc<Mutex<Mirror>>,
    prefix: PathBuf,
    cluster: String,
    only: Option<Vec<String>>,
    last: Option<String>,
    description: String,
}

impl GitSource {
    /// Polls `mirror` (its branch of its remote); the release repo sits at `prefix` in it;
    /// `only` limits the services.
    pub fn new(mirror: Mirror, prefix: &Path, cluster: &str, only: Option<Vec<String>>) -> GitSource {
        let description = format!("git {} branch {}", mirror.url(), mirror.branch());
        GitSource {
            mirror: Arc::new(Mutex::new(mirror)),
            prefix: prefix.to_owned(),
            cluster: cluster.to_string(),
            only,
            last: None,
            description,
        }
    }
}

impl Source for GitSource {
    async fn poll(&mut self) -> Result<Polled, SourceError> {
        let mirror = self.mirror.clone();
        let (prefix, cluster, only, last) = (
            self.prefix.clone(),
            self.cluster.clone(),
            self.only.clone(),
            self.last.clone(),
        );
        // gix fetches with blocking I/O: off the async threads.
        let polled =
            tokio::task::spawn_blocking(move || -> Result<(String, Option<DesiredState>), SourceError> {
                let mut mirror = mirror.lock().map_err(|_| SourceError::Interrupted)?;
                let commit = mirror.fetch(&AtomicBool::new(false))?;
                if last.as_deref() == Some(commit.as_str()) {
                    return Ok((commit, None));
                }
                let files = mirror.files_at(&commit, &prefix)?;
                let state = cohort_control::desired_from_files(&files, &commit, &cluster, only.as_deref());
                Ok((commit, Some(state)))
            })
            .await
            .map_err(|_| SourceError::Interrupted)??;
        self.last = Some(polled.0);
        Ok(match polled.1 {
            Some(state) => Polled::Changed(state),
            None => Polled::Unchanged,
        })
    }

    async fn report(&mut self, _report: &Report) -> Result<(), SourceError> {
        Ok(())
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A cohort control API (`cohort serve`), reached over HTTPS (or plain HTTP) with a bearer token.
pub struct ControlSource {
    client: Client<Https, Full<Bytes>>,
    base: String,
    cluster: String,
    token: String,
    etag: Option<String>,
    report_wanted: bool,
    timeout: Duration,
}

/// Why a control API client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot read CA certificates from {}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// rustls refused the configuration.
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
}

impl ControlSource {
    /// A client of the control API at `base` (`https://cohort.example.com`) for `cluster`,
    /// trusting the public roots and, if given, the CA certificates in `ca_file`.
    pub fn new(
        base: &str,
        cluster: &str,
        token: &str,
        ca_file: Option<&Path>,
    ) -> Result<ControlSource, ClientError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca_file {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let ca = |source: Box<dyn std::error::Error + Send + Sync>| ClientError::Ca {
                path: path.to_owned(),
                source,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ca(Box::new(e)))?;
            if certs.is_empty() {
                return Err(ca("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca(Box::new(e)))?;
            }
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(ClientError::Tls)?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(ControlSource {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.trim_end_matches('/').to_string(),
            cluster: cluster.to_string(),
            token: token.to_string(),
            etag: None,
            report_wanted: false,
            timeout: Duration::from_secs(30),
        })
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v1/clusters/{}/{tail}", self.base, self.cluster)
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        url: &str,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), SourceError> {
        let unreachable =
            |source: Box<dyn std::error::Error + Send + Sync>| match UntrustedCertificate::find(&*source) {
                Some(certificate) => SourceError::Untrusted {
                    url: url.to_string(),
                    certificate,
                },
                None => SourceError::Unreachable {
                    url: url.to_string(),
                    source,
                },
            };
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer in {} s", self.timeout.as_secs()).into()))?
            .map_err(|e| unreachable(Box::new(e)))?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(self.timeout, body.collect())
            .await
            .map_err(|_| unreachable("the answer stalled".into()))?
            .map_err(|e| unreachable(Box::new(e)))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    fn request(
        &self,
        method: http::Method,
        url: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, SourceError> {
        Request::builder()
            .method(method)
            .uri(url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(
                header::USER_AGENT,
                concat!("cohort-agent/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| SourceError::Unreachable {
                url: url.to_string(),
                source: Box::new(e),
            })
    }
}

impl ControlSource {
    /// The fleet view (`GET /v1/fleet`; the token must be the server's fleet_token).
    pub async fn fleet(&self) -> Result<cohort_control::Fleet, SourceError> {
        self.get_json(format!("{}/v1/fleet", self.base)).await
    }

    /// GETs `url` and reads its JSON answer.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: String) -> Result<T, SourceError> {
        let request = self.request(http::Method::GET, &url, Bytes::new())?;
        let (status, _, body) = self.send(request, &url).await?;
        match status {
            StatusCode::OK => {
                serde_json::from_slice(&body).map_err(|source| SourceError::BadAnswer { url, source })
            }
            status => Err(refused(&url, status, &body)),
        }
    }
}

impl ControlSource {
    /// Every cluster's router counts after `after` (`GET /v1/counts`; the token must be the
    /// server's fleet_token).
    pub async fn counts(&self, after: Option<&str>) -> Result<cohort_control::FleetCounts, SourceError> {
        self.get_json(match after {
            Some(mark) => format!("{}/v1/counts?after={mark}", self.base),
            None => format!("{}/v1/counts", self.base),
        })
        .await
    }
}

fn refused(url: &str, status: StatusCode, body: &[u8]) -> SourceError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    SourceError::Refused {
        url: url.to_string(),
        status,
        message,
    }
}

impl Source for ControlSource {
    async fn poll(&mut self) -> Result<Polled, SourceError> {
        let url = self.url("desired-state");
        let mut request = self.request(http::Method::GET, &url, Bytes::new())?;
        if let Some(etag) = self.etag.as_deref().and_then(|e| HeaderValue::from_str(e).ok()) {
            request.headers_mut().insert(header::IF_NONE_MATCH, etag);
        }
        let (status, headers, body) = self.send(request, &url).await?;
        self.report_wanted = headers.contains_key(REPORT_WANTED);
        match status {
            StatusCode::NOT_MODIFIED => Ok(Polled::Unchanged),
            StatusCode::OK => {
                let state: DesiredState =
                    serde_json::from_slice(&body).map_err(|source| SourceError::BadAnswer { url, source })?;
                self.etag = headers
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                Ok(Polled::Changed(state))
            }
            status => Err(refused(&url, status, &body)),
        }
    }

    async fn report(&mut self, report: &Report) -> Result<(), SourceError> {
        let url = self.url("reports");
        let body = serde_json::to_vec(report).map_err(|source| SourceError::BadAnswer {
            url: url.clone(),
            source,
        })?;
        let mut request = self.request(http::Method::POST, &url, Bytes::from(body))?;
        request
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let (status, _, body) = self.send(request, &url).await?;
        if status == StatusCode::OK
            && let Ok(taken) = serde_json::from_slice::<cohort_control::ReportTaken>(&body)
        {
            for why in taken.counts_refused {
                tracing::warn!(why = %why, "the control API did not take these routers' counts");
            }
        }
        match status.is_success() {
            true => Ok(()),
            false => Err(refused(&url, status, &body)),
        }
    }

    fn report_wanted(&self) -> bool {
        self.report_wanted
    }

    fn describe(&self) -> String {
        format!("control API {} as cluster {}", self.base, self.cluster)
    }
}
