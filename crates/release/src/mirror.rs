//! A bare mirror of a remote release repo, for the in-cluster agent: fetch one branch (only
//! what changed since the last fetch, by git's negotiation) and read the release repo's files
//! at any commit without a worktree.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use cohort_spec::repo::RepoFiles;
use gix::ObjectId;
use gix::protocol::transport::client::blocking_io::http::Options as HttpOptions;
use gix::protocol::transport::client::blocking_io::http::reqwest::Options as ReqwestOptions;
use gix::remote::Direction;

use crate::git::GitError;
use crate::tls::UntrustedCertificate;

/// A bare repository that mirrors one branch of a remote.
pub struct Mirror {
    repo: gix::Repository,
    url: String,
    branch: String,
    extra_roots: Option<ExtraRoots>,
}

/// CA certificates an https remote's certificate may chain to, besides those the system
/// trusts: a company CA in front of an internal git server.
#[derive(Clone)]
pub struct ExtraRoots {
    certs: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraRoots")
            .field("certs", &self.certs.len())
            .finish()
    }
}

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {} as CA certificates: {reason}", path.display())]
pub struct CaFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl ExtraRoots {
    /// The certificates in a PEM file (one or more `BEGIN CERTIFICATE` blocks).
    pub fn from_pem_file(path: &Path) -> Result<ExtraRoots, CaFileError> {
        let error = |reason: String| CaFileError {
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| error(e.to_string()))?;
        if certs.is_empty() {
            return Err(error("no PEM certificate in it".to_string()));
        }
        Ok(ExtraRoots { certs })
    }
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("dir", &self.repo.git_dir())
            .field("url", &self.url)
            .field("branch", &self.branch)
            .finish()
    }
}

/// Why fetching from the remote failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The remote could not be reached or refused (network, authentication, no repository).
    #[error("cannot fetch {branch} from {url}")]
    Remote {
        /// The remote.
        url: String,
        /// The branch.
        branch: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The remote's https certificate was refused.
    #[error("cannot fetch {branch} from {url}: {}", certificate.advice("--git-ca-file"))]
    Untrusted {
        /// The remote.
        url: String,
        /// The branch.
        branch: String,
        /// What was wrong with the certificate.
        certificate: UntrustedCertificate,
    },
    /// The remote has no such branch.
    #[error("{url} has no branch {branch}")]
    NoBranch {
        /// The remote.
        url: String,
        /// The branch.
        branch: String,
    },
    /// The local mirror could not be read or written.
    #[error(transparent)]
    Local(#[from] GitError),
}

impl Mirror {
    /// Opens the bare mirror in `dir`, creating it if it does not exist yet. Nothing is fetched.
    pub fn open(dir: &Path, url: &str, branch: &str) -> Result<Mirror, GitError> {
        // gix's https transport (reqwest, built without a provider of its own) takes the
        // process's default rustls provider and panics without one; the one every TLS client
        // of cohort uses is ring. Installed already (by an earlier mirror) is fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let io = |what: &'static str| {
            let path = dir.to_owned();
            move |source| GitError::Io { what, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create directory"))?;
        let repo = match gix::open(dir) {
            Ok(repo) => repo,
            Err(_) if is_empty(dir) => gix::init_bare(dir).map_err(|e| GitError::Init {
                dir: dir.to_owned(),
                source: e,
            })?,
            Err(e) => {
                return Err(GitError::Open {
                    dir: dir.to_owned(),
                    source: e,
                });
            }
        };
        Ok(Mirror {
            repo,
            url: url.to_string(),
            branch: branch.to_string(),
            extra_roots: None,
        })
    }

    /// Also trusts these CA certificates when fetching over https.
    pub fn trust(&mut self, roots: ExtraRoots) {
        self.extra_roots = Some(roots);
    }

    /// The remote's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The mirror's directory.
    pub fn git_dir(&self) -> &Path {
        self.repo.git_dir()
    }

    /// The branch it follows.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The local reference the branch is fetched into.
    fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.branch)
    }

    /// The commit the branch pointed at when last fetched, if it ever was.
    pub fn fetched(&self) -> Option<String> {
        let reference = self
            .repo
            .try_find_reference(self.tracking_ref().as_str())
            .ok()??;
        reference.target().try_id().map(|id| id.to_string())
    }

    /// Fetches the branch and returns the commit it points at. The remote sends only the
    /// objects the mirror lacks.
    pub fn fetch(&mut self, interrupt: &AtomicBool) -> Result<String, FetchError> {
        let remote_err =
            |source: Box<dyn std::error::Error + Send + Sync>| match UntrustedCertificate::find(&*source) {
                Some(certificate) => FetchError::Untrusted {
                    url: self.url.clone(),
                    branch: self.branch.clone(),
                    certificate,
                },
                None => FetchError::Remote {
                    url: self.url.clone(),
                    branch: self.branch.clone(),
                    source,
                },
            };
        // All branches, so that a branch the remote lacks is told apart from an unreachable
        // remote without reading error text; the agent reads only its own.
        let remote = self
            .repo
            .remote_at(self.url.as_str())
            .map_err(|e| remote_err(Box::new(e)))?
            .with_fetch_tags(gix::remote::fetch::Tags::None)
            .with_refspecs(["+refs/heads/*:refs/remotes/origin/*"], Direction::Fetch)
            .map_err(|e| remote_err(Box::new(e)))?;
        let mut connection = remote
            .connect(Direction::Fetch)
            .map_err(|e| remote_err(Box::new(e)))?;
        if let Some(roots) = &self.extra_roots {
            // The repository's http settings (proxy, timeouts from git config) with our CA
            // certificates merged into the reqwest client's roots. Local and ssh remotes
            // have no http settings and need none.
            let options = self
                .repo
                .transport_options(self.url.as_str(), None)
                .map_err(|e| remote_err(Box::new(e)))?;
            if let Some(Ok(http)) = options.map(|o| o.downcast::<HttpOptions>()) {
                let mut http = *http;
                let certs = roots.certs.clone();
                let backend = ReqwestOptions {
                    configure_client: Some(Box::new(move |builder| {
                        Ok(builder.tls_certs_merge(certs.clone()))
                    })),
                    configure_request: None,
                };
                http.backend = Some(std::sync::Arc::new(std::sync::Mutex::new(backend)));
                connection = connection.with_transport_options(Box::new(http));
            }
        }
        let outcome = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| remote_err(Box::new(e)))?
            .receive(gix::progress::Discard, interrupt)
            .map_err(|e| remote_err(Box::new(e)))?;
        drop(outcome);
        // Refresh the reference store's view: the fetch wrote the tracking ref.
        self.repo = gix::open(self.repo.git_dir()).map_err(|e| GitError::Open {
            dir: self.repo.git_dir().to_owned(),
            source: e,
        })?;
        self.fetched().ok_or_else(|| FetchError::NoBranch {
            url: self.url.clone(),
            branch: self.branch.clone(),
        })
    }

    /// The release repo's files at `commit`, under `prefix` (where the release repo sits in
    /// the git repository; empty for the top).
    pub fn files_at(&self, commit: &str, prefix: &Path) -> Result<RepoFiles, GitError> {
        let id = ObjectId::from_hex(commit.as_bytes()).map_err(|e| GitError::Git {
            what: format!("read commit {commit}"),
            source: gix::Error::from_error(e),
        })?;
        crate::tree::tree_files(&self.repo, id, prefix)
    }
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::AtomicBool;

    use super::{ExtraRoots, FetchError, Mirror};
    use crate::git::ReleaseRepo;

    fn commit(repo: &ReleaseRepo, path: &str, text: &str) -> String {
        let lock = repo.lock().expect("lock");
        repo.commit_files(
            &lock,
            &[(PathBuf::from(path), text.as_bytes().to_vec())],
            "change",
        )
        .expect("commit")
    }

    #[test]
    fn a_mirror_fetches_a_branch_and_reads_files_at_each_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = ReleaseRepo::init(&dir.path().join("source"))
            .and_then(|r| r.with_fallback_identity("t", "t@example.com"))
            .expect("source repo");
        let first = commit(&source, "cohort.yaml", "one\n");
        commit(&source, "services/a.yaml", "a\n");
        let second = commit(&source, "services/b.yml", "b\n");
        assert_ne!(first, second);

        let url = source.root().display().to_string();
        let mut mirror = Mirror::open(&dir.path().join("mirror"), &url, "main").expect("mirror");
        assert_eq!(mirror.fetched(), None);
        let stop = AtomicBool::new(false);
        assert_eq!(mirror.fetch(&stop).expect("fetch"), second);
        let files = mirror.files_at(&second, Path::new("")).expect("files");
        assert_eq!(files.pipeline.as_deref(), Some("one\n"));
        let names: Vec<_> = files
            .services
            .iter()
            .map(|(p, t)| (p.display().to_string(), t.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("services/a.yaml".to_string(), "a\n"),
                ("services/b.yml".to_string(), "b\n")
            ]
        );
        let old = mirror.files_at(&first, Path::new("")).expect("files");
        assert!(old.services.is_empty());

        // Reopened, the mirror remembers what it fetched; a new commit arrives with the next fetch.
        let third = commit(&source, "cohort.yaml", "two\n");
        let mut mirror = Mirror::open(&dir.path().join("mirror"), &url, "main").expect("reopen");
        assert_eq!(mirror.fetched().as_deref(), Some(second.as_str()));
        assert_eq!(mirror.fetch(&stop).expect("fetch"), third);
        assert_eq!(
            mirror
                .files_at(&third, Path::new(""))
                .expect("files")
                .pipeline
                .as_deref(),
            Some("two\n")
        );
        // The same files through the worktree repo.
        assert_eq!(
            source.head_commit().expect("head").as_deref(),
            Some(third.as_str())
        );
        assert_eq!(
            source.files_at(&third, Path::new("")).expect("files"),
            mirror.files_at(&third, Path::new("")).expect("files")
        );
    }

    #[test]
    fn fetching_a_missing_branch_or_remote_says_which() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = ReleaseRepo::init(&dir.path().join("source"))
            .and_then(|r| r.with_fallback_identity("t", "t@example.com"))
            .expect("source repo");
        commit(&source, "cohort.yaml", "one\n");
        let stop = AtomicBool::new(false);
        let url = source.root().display().to_string();
        let mut mirror = Mirror::open(&dir.path().join("m1"), &url, "release").expect("mirror");
        let err = mirror.fetch(&stop).expect_err("no such branch");
        assert!(matches!(err, FetchError::NoBranch { .. }), "{err:?}");
        let gone = dir.path().join("gone").display().to_string();
        let mut mirror = Mirror::open(&dir.path().join("m2"), &gone, "main").expect("mirror");
        let err = mirror.fetch(&stop).expect_err("no remote");
        assert!(matches!(err, FetchError::Remote { .. }), "{err:?}");
        assert!(err.to_string().contains(&gone), "{err}");
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let error = ExtraRoots::from_pem_file(&missing).expect_err("missing");
        assert_eq!(error.path, missing);
        assert!(error.to_string().contains("missing.pem"), "{error}");

        let key_only = dir.path().join("key.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let error = ExtraRoots::from_pem_file(&key_only).expect_err("no certificate");
        assert_eq!(error.reason, "no PEM certificate in it");

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a certificate\n").expect("write");
        assert!(ExtraRoots::from_pem_file(&text).is_err());
    }
}
