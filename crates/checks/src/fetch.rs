//! Asking the servers: an HTTP(S) GET with a deadline, a size limit, an optional bearer
//! token and extra CA certificates; secrets read from where the release repo says.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cohort_core::SecretRef;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a server could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot read CA certificates from {}: {why}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// A secret is missing, unreadable or not one line.
    #[error("the bearer token {from}: {why}")]
    Secret {
        /// `in $VAR` or `in /path`.
        from: String,
        /// What is wrong.
        why: String,
    },
    /// Not a URL.
    #[error("`{url}` is not a URL: {why}")]
    Url {
        /// As given.
        url: String,
        /// Why.
        why: String,
    },
    /// No connection, TLS refused, the answer broke off.
    #[error("cannot reach {url}: {why}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// No whole answer within the deadline.
    #[error("{url}: no answer within {seconds:.0} s")]
    Timeout {
        /// The URL.
        url: String,
        /// The deadline.
        seconds: f64,
    },
    /// An answer larger than the limit.
    #[error("{url}: the answer is larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
}

/// The longest a secret may be.
const MAX_SECRET: u64 = 16 * 1024;

/// Reads a secret: an environment variable or a file, surrounding whitespace dropped.
pub fn read_secret(secret: &SecretRef) -> Result<String, FetchError> {
    let (from, text) = match secret {
        SecretRef::Env(var) => (
            format!("in ${var}"),
            std::env::var(var).map_err(|_| FetchError::Secret {
                from: format!("in ${var}"),
                why: "the variable is not set (or not UTF-8)".into(),
            })?,
        ),
        SecretRef::File(path) => {
            let from = format!("in {}", path.display());
            let err = |why: String| FetchError::Secret {
                from: from.clone(),
                why,
            };
            let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
            let mut text = String::new();
            use std::io::Read;
            file.take(MAX_SECRET + 1)
                .read_to_string(&mut text)
                .map_err(|e| err(e.to_string()))?;
            if text.len() as u64 > MAX_SECRET {
                return Err(err(format!("the file is larger than {MAX_SECRET} bytes")));
            }
            (from, text)
        }
    };
    let token = text.trim();
    if token.is_empty() || token.contains(['\n', '\r']) {
        return Err(FetchError::Secret {
            from,
            why: match token.is_empty() {
                true => "it is empty".into(),
                false => "it is several lines; it must be the token alone".into(),
            },
        });
    }
    Ok(token.to_string())
}

/// An HTTP(S) client trusting the public roots and, if given, the certificates in a CA file.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Fetcher {
    /// A client; `ca_file` adds certificates (PEM) to the public roots.
    pub fn new(ca_file: Option<&Path>) -> Result<Fetcher, FetchError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca_file {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let ca = |why: String| FetchError::Ca {
                path: path.to_owned(),
                why,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca(e.to_string()))?;
            }
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| FetchError::Tls(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Fetcher {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// GETs `url`: its status and body, the whole exchange within `timeout`, the body at
    /// most `limit` bytes.
    pub async fn get(
        &self,
        url: &str,
        token: Option<&str>,
        timeout: Duration,
        limit: usize,
    ) -> Result<(u16, Bytes), FetchError> {
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| FetchError::Url {
            url: url.to_string(),
            why: e.to_string(),
        })?;
        let mut request = http::Request::get(uri).header(http::header::ACCEPT, "application/json");
        if let Some(t) = token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = request.body(Empty::new()).map_err(|e| FetchError::Url {
            url: url.to_string(),
            why: e.to_string(),
        })?;
        let unreachable = |why: String| FetchError::Unreachable {
            url: url.to_string(),
            why,
        };
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                // The cause (refused, certificate unknown) is what says what to fix.
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why = format!("{why}: {s}");
                    source = s.source();
                }
                unreachable(why)
            })?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                    Some(_) => FetchError::TooLarge {
                        url: url.to_string(),
                        limit,
                    },
                    None => unreachable(format!("the answer broke off: {e}")),
                })?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout {
                url: url.to_string(),
                seconds: timeout.as_secs_f64(),
            })?
    }
}

/// `base/api/v1/query?query=...&time=...`, the query percent-encoded.
pub fn query_url(base: &str, promql: &str, time: f64) -> String {
    let mut q = String::with_capacity(promql.len() * 3);
    for b in promql.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => q.push(b as char),
            _ => q.push_str(&format!("%{b:02X}")),
        }
    }
    format!(
        "{}/api/v1/query?query={q}&time={time:.3}",
        base.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_percent_encoded_whole() {
        assert_eq!(
            query_url("http://p:9090/", "sum(rate(x{a=\"b c\"}[5m]))+1", 1700000000.5),
            "http://p:9090/api/v1/query?query=sum%28rate%28x%7Ba%3D%22b%20c%22%7D%5B5m%5D%29%29%2B1&time=1700000000.500"
        );
    }

    #[test]
    fn a_secret_is_one_line_from_its_variable_or_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret\n").expect("write");
        assert_eq!(
            read_secret(&SecretRef::File(file.clone())).expect("read"),
            "s3cret"
        );
        std::fs::write(&file, "a\nb\n").expect("write");
        let e = read_secret(&SecretRef::File(file.clone())).expect_err("two lines");
        assert!(
            e.to_string()
                .ends_with("it is several lines; it must be the token alone"),
            "{e}"
        );
        std::fs::write(&file, "x".repeat(20_000)).expect("write");
        assert!(read_secret(&SecretRef::File(file)).is_err());
        let missing = read_secret(&SecretRef::File(dir.path().join("nope"))).expect_err("missing");
        assert!(
            missing.to_string().starts_with("the bearer token in /"),
            "{missing}"
        );
        let unset = read_secret(&SecretRef::Env("COHORT_TEST_NEVER_SET_TOKEN".into())).expect_err("unset");
        assert_eq!(
            unset.to_string(),
            "the bearer token in $COHORT_TEST_NEVER_SET_TOKEN: the variable is not set (or not UTF-8)"
        );
    }
}
