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

use crate::git::{GitError, git, parse_commit_id};
use crate::tls::UntrustedCertificate;

/// A bare repository that mirrors one branch of a remote.
pub struct Mirror {
    repo: gix::Repository,
    url: String,
    branch: String,
    extra_roots: Option<ExtraRoots>,
    credentials: Option<Credentials>,
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
            credentials: None,
        })
    }

    /// Also trusts these CA certificates when fetching or pushing over https.
    pub fn trust(&mut self, roots: ExtraRoots) {
        self.extra_roots = Some(roots);
    }

    /// Signs in with these credentials when fetching or pushing over https (never over plain
    /// http, where they would be readable on the way).
    pub fn authenticate(&mut self, credentials: Credentials) {
        self.credentials = Some(credentials);
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
                    url: shown(&self.url),
                    branch: self.branch.clone(),
                    certificate,
                },
                None => FetchError::Remote {
                    url: shown(&self.url),
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
        if let Some(credentials) = self.credentials.clone() {
            // Ours, not git's credential helpers: an unattended process has no one to ask.
            // Given only to the remote itself over https: a redirect elsewhere gets nothing.
            let origin_of_remote = origin(&self.url);
            connection = connection.with_credentials(move |action| match action {
                gix::credentials::helper::Action::Get(context)
                    if origin_of_remote.is_some()
                        && context
                            .url
                            .as_ref()
                            .and_then(|u| origin(&gix::bstr::ByteSlice::to_str_lossy(u.as_slice())))
                            == origin_of_remote =>
                {
                    Ok(Some(gix::credentials::protocol::Outcome {
                        identity: gix::sec::identity::Account {
                            username: credentials.user.clone(),
                            password: credentials.secret.clone(),
                            oauth_refresh_token: None,
                        },
                        next: context.into(),
                    }))
                }
                _ => Ok(None),
            });
        }
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
            url: shown(&self.url),
            branch: self.branch.clone(),
        })
    }

    /// The release repo's files at `commit`, under `prefix` (where the release repo sits in
    /// the git repository; empty for the top).
    pub fn files_at(&self, commit: &str, prefix: &Path) -> Result<RepoFiles, GitError> {
        crate::tree::tree_files(&self.repo, parse_commit_id(commit)?, prefix)
    }

    /// The commits reachable from `commit`, newest first (as [`crate::git::ReleaseRepo::log`]).
    pub fn log_at(&self, commit: &str) -> Result<Vec<crate::git::CommitInfo>, GitError> {
        crate::git::log_from(&self.repo, parse_commit_id(commit)?)
    }

    /// Writes a commit with `files` changed on top of `parent` by `who` (name, email), in the
    /// mirror only: nothing refers to it until [`Mirror::push`] has moved the remote's branch.
    pub fn commit_on(
        &self,
        parent: &str,
        files: &[(PathBuf, Vec<u8>)],
        message: &str,
        who: (&str, &str),
    ) -> Result<String, GitError> {
        let rela = files
            .iter()
            .map(|(path, _)| crate::git::rela_path(path))
            .collect::<Result<Vec<_>, _>>()?;
        let signature = gix::actor::Signature {
            name: who.0.into(),
            email: who.1.into(),
            time: gix::date::Time::now_utc(),
        };
        let (commit, _, _) = crate::git::write_commit(
            &self.repo,
            Some(parse_commit_id(parent)?),
            files,
            &rela,
            message,
            signature.clone(),
            signature,
        )?;
        Ok(commit.to_string())
    }

    /// Moves the remote's branch from `old` (where it was fetched) to `new` (a descendant made
    /// with [`Mirror::commit_on`]), sending the objects it lacks. Never forced: a branch that
    /// moved in the meantime is [`PushError::Moved`], and the caller fetches and decides again.
    pub fn push(&self, old: &str, new: &str) -> Result<(), PushError> {
        let (old_id, new_id) = (parse_commit_id(old)?, parse_commit_id(new)?);
        let objects = self.objects_between(old_id, new_id)?;
        let transport = self.push_transport()?;
        let advertised = transport.advertise(self)?;
        self.check_tip(&advertised, old_id)?;
        // Without it the remote would not say whether it took the branch.
        if !advertised.offers("report-status") {
            return Err(PushError::Remote {
                url: shown(&self.url),
                source: "it does not offer report-status, so a push's outcome could not be known".into(),
            });
        }
        let pack = crate::push::pack(&objects).map_err(|e| self.push_error(Box::new(e)))?;
        let body = crate::push::request(old_id, new_id, &self.branch, &advertised, &pack);
        let report = transport.send(self, body)?;
        if let Some(why) = report.unpack_error {
            return Err(PushError::Rejected {
                url: shown(&self.url),
                branch: self.branch.clone(),
                reason: format!("it could not take the objects: {why}"),
            });
        }
        let name = format!("refs/heads/{}", self.branch);
        match report.refs.iter().find(|(n, _)| *n == name) {
            Some((_, None)) => {}
            Some((_, Some(why))) => {
                // Refused: because the branch moved since the advertisement (a race lost by
                // a hair), or for a reason of the remote's own (a protected branch, a hook).
                self.check_tip(&transport.advertise(self)?, old_id)?;
                return Err(PushError::Rejected {
                    url: shown(&self.url),
                    branch: self.branch.clone(),
                    reason: why.clone(),
                });
            }
            None => {
                return Err(PushError::Rejected {
                    url: shown(&self.url),
                    branch: self.branch.clone(),
                    reason: "it did not say whether it took the branch".to_string(),
                });
            }
        }
        // The mirror now knows where the branch is without fetching again.
        let tracking = self.tracking_ref();
        self.repo
            .reference(
                tracking.as_str(),
                new_id,
                gix::refs::transaction::PreviousValue::Any,
                "push",
            )
            .map_err(|e| {
                PushError::Local(GitError::Git {
                    what: format!("update {tracking}"),
                    source: gix::Error::from_error(e),
                })
            })?;
        Ok(())
    }

    fn check_tip(&self, advertised: &crate::push::Advertised, expected: ObjectId) -> Result<(), PushError> {
        let found = advertised.tip(&format!("refs/heads/{}", self.branch));
        match found == Some(expected) {
            true => Ok(()),
            false => Err(PushError::Moved {
                url: shown(&self.url),
                branch: self.branch.clone(),
                expected: expected.to_string(),
                found: found.map_or_else(|| "no branch".to_string(), |id| id.to_string()),
            }),
        }
    }

    fn push_error(&self, source: Box<dyn std::error::Error + Send + Sync>) -> PushError {
        match UntrustedCertificate::find(&*source) {
            Some(certificate) => PushError::Untrusted {
                url: shown(&self.url),
                certificate,
            },
            None => PushError::Remote {
                url: shown(&self.url),
                source,
            },
        }
    }

    /// The objects `new` has that `old` lacks: the commits between them, and of each commit's
    /// tree what differs from its parent's (commits made on top of a fetched branch, so the
    /// remote has everything else).
    fn objects_between(&self, old: ObjectId, new: ObjectId) -> Result<Vec<crate::push::Object>, GitError> {
        let mut out = vec![];
        let mut seen = std::collections::HashSet::new();
        let mut at = new;
        for _ in 0..MAX_COMMITS_PUSHED {
            if at == old {
                return Ok(out);
            }
            let what = || format!("read commit {at}");
            let commit = self.repo.find_commit(at).map_err(git(what()))?;
            let parents: Vec<ObjectId> = commit.parent_ids().map(|p| p.detach()).collect();
            let [parent] = parents.as_slice() else {
                return Err(GitError::Git {
                    what: format!("push commit {at}, which has {} parents", parents.len()),
                    source: gix::Error::from_error(std::io::Error::other("only linear history is pushed")),
                });
            };
            let tree = commit.tree_id().map_err(git(what()))?.detach();
            let parent_tree = crate::git::commit_tree(&self.repo, *parent)?.id;
            out.push((gix::objs::Kind::Commit, commit.data.clone()));
            self.tree_changes(tree, Some(parent_tree), &mut seen, &mut out)?;
            at = *parent;
        }
        Err(GitError::Git {
            what: format!("push {new} onto {old}"),
            source: gix::Error::from_error(std::io::Error::other(format!(
                "it is not within {MAX_COMMITS_PUSHED} commits of {old}"
            ))),
        })
    }

    /// `tree` and what in it differs from `before` (the same place in the parent's tree).
    fn tree_changes(
        &self,
        tree: ObjectId,
        before: Option<ObjectId>,
        seen: &mut std::collections::HashSet<ObjectId>,
        out: &mut Vec<crate::push::Object>,
    ) -> Result<(), GitError> {
        if Some(tree) == before || !seen.insert(tree) {
            return Ok(());
        }
        let read = |id: ObjectId| -> Result<gix::Object<'_>, GitError> {
            self.repo
                .find_object(id)
                .map_err(git(format!("read object {id}")))
        };
        let object = read(tree)?;
        out.push((gix::objs::Kind::Tree, object.data.clone()));
        let entries = object
            .into_tree()
            .decode()
            .map_err(git(format!("read tree {tree}")))?
            .entries
            .iter()
            .map(|e| (e.filename.to_owned(), e.mode, e.oid.to_owned()))
            .collect::<Vec<_>>();
        let old_entries = match before {
            Some(id) => read(id)?
                .into_tree()
                .decode()
                .map_err(git(format!("read tree {id}")))?
                .entries
                .iter()
                .map(|e| (e.filename.to_owned(), (e.mode, e.oid.to_owned())))
                .collect::<std::collections::HashMap<_, _>>(),
            None => Default::default(),
        };
        for (name, mode, id) in entries {
            let old = old_entries.get(&name);
            if old.is_some_and(|(_, old_id)| *old_id == id) {
                continue;
            }
            if mode.is_tree() {
                let before = old.filter(|(m, _)| m.is_tree()).map(|(_, id)| *id);
                self.tree_changes(id, before, seen, out)?;
            } else if (mode.is_blob() || mode.is_link()) && seen.insert(id) {
                out.push((gix::objs::Kind::Blob, read(id)?.data.clone()));
            }
            // A submodule's commit lives in another repository: nothing to send.
        }
        Ok(())
    }

    fn push_transport(&self) -> Result<PushTransport, PushError> {
        let url = self.url.as_str();
        if url.starts_with("https://") || url.starts_with("http://") {
            return Ok(PushTransport::Http(self.http_client()?));
        }
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(PushTransport::Process(PathBuf::from(path)));
        }
        // ssh://, git://, and scp-like `host:path`.
        if !can_push_to(url) {
            return Err(PushError::Unsupported { url: shown(url) });
        }
        Ok(PushTransport::Process(PathBuf::from(url)))
    }

    fn http_client(&self) -> Result<reqwest::blocking::Client, PushError> {
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(PUSH_TIMEOUT)
            // Some git hosts speak smart HTTP only to agents that say they are git.
            .user_agent(concat!("git/cohort-", env!("CARGO_PKG_VERSION")));
        if let Some(roots) = &self.extra_roots {
            builder = builder.tls_certs_merge(roots.certs.clone());
        }
        builder.build().map_err(|e| self.push_error(Box::new(e)))
    }

    fn http_request(
        &self,
        request: reqwest::blocking::RequestBuilder,
        content_type: &str,
        limit: u64,
    ) -> Result<Vec<u8>, PushError> {
        use std::io::Read;
        // Never in clear text, as gix's fetch does not either.
        let request = match &self.credentials {
            Some(c) if self.url.starts_with("https://") => request.basic_auth(&c.user, Some(&c.secret)),
            _ => request,
        };
        let response = request.send().map_err(|e| self.push_error(Box::new(e)))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(PushError::Unauthorized {
                url: shown(&self.url),
                status: status.as_u16(),
                signed_in: self.credentials.is_some(),
            });
        }
        if !status.is_success() {
            return Err(PushError::Remote {
                url: shown(&self.url),
                source: format!("it answered {status}").into(),
            });
        }
        let got = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if got != content_type {
            return Err(PushError::Remote {
                url: shown(&self.url),
                source: format!(
                    "it answered with {got:?}, not {content_type}: it does not take pushes over smart HTTP"
                )
                .into(),
            });
        }
        let mut body = vec![];
        response
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.push_error(Box::new(e)))?;
        if body.len() as u64 > limit {
            return Err(PushError::Remote {
                url: shown(&self.url),
                source: format!("its answer is longer than {limit} bytes").into(),
            });
        }
        Ok(body)
    }
}

/// The most commits one push carries (the autopilot pushes one at a time).
const MAX_COMMITS_PUSHED: usize = 64;

/// How long one request of a push, or a `git receive-pack` process, may take.
const PUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How a push reaches the remote.
enum PushTransport {
    /// git's smart HTTP protocol.
    Http(reqwest::blocking::Client),
    /// A `git receive-pack` process on a repository that is a path.
    Process(PathBuf),
}

impl PushTransport {
    /// Where the remote's references point now.
    fn advertise(&self, mirror: &Mirror) -> Result<crate::push::Advertised, PushError> {
        let bytes = match self {
            PushTransport::Http(client) => mirror.http_request(
                client.get(format!(
                    "{}/info/refs?service=git-receive-pack",
                    mirror.url.trim_end_matches('/')
                )),
                "application/x-git-receive-pack-advertisement",
                crate::push::MAX_ADVERTISEMENT,
            )?,
            // Nothing sent after the references: receive-pack ends without a change.
            PushTransport::Process(path) => receive_pack(mirror, path, crate::push::FLUSH.to_vec())?.0,
        };
        crate::push::parse_advertisement(&bytes).map_err(|e| mirror.push_error(Box::new(e)))
    }

    /// Sends a push request and reads the report.
    fn send(&self, mirror: &Mirror, body: Vec<u8>) -> Result<crate::push::Report, PushError> {
        let bytes = match self {
            PushTransport::Http(client) => mirror.http_request(
                client
                    .post(format!("{}/git-receive-pack", mirror.url.trim_end_matches('/')))
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-git-receive-pack-request",
                    )
                    .header(reqwest::header::ACCEPT, "application/x-git-receive-pack-result")
                    .body(body),
                "application/x-git-receive-pack-result",
                crate::push::MAX_REPORT,
            )?,
            PushTransport::Process(path) => receive_pack(mirror, path, body)?.1,
        };
        crate::push::parse_report(&bytes).map_err(|e| mirror.push_error(Box::new(e)))
    }
}

/// Runs `git receive-pack` on `path`: reads its reference advertisement, sends `input`, and
/// returns the advertisement and whatever it answered, killing it past [`PUSH_TIMEOUT`].
fn receive_pack(mirror: &Mirror, path: &Path, input: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), PushError> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let failed = |e: std::io::Error| mirror.push_error(Box::new(e));
    let mut child = Command::new("git")
        .arg("receive-pack")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(failed)?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        return Err(failed(std::io::Error::other("git receive-pack has no pipes")));
    };
    let child = std::sync::Arc::new(std::sync::Mutex::new(child));
    let done = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let watchdog = {
        let (child, done) = (std::sync::Arc::clone(&child), std::sync::Arc::clone(&done));
        std::thread::spawn(move || {
            let (lock, wake) = &*done;
            let Ok(guard) = lock.lock() else { return };
            if let Ok((finished, timeout)) = wake.wait_timeout_while(guard, PUSH_TIMEOUT, |d| !*d)
                && !*finished
                && timeout.timed_out()
                && let Ok(mut child) = child.lock()
            {
                let _ = child.kill();
            }
        })
    };
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = (&mut stderr).take(64 << 10).read_to_string(&mut text);
        // The rest is read and dropped: git must never block on a full stderr pipe.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        text
    });
    let result = (|| -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        let advertisement = read_until_flush(&mut stdout, crate::push::MAX_ADVERTISEMENT)?;
        stdin.write_all(&input)?;
        drop(stdin);
        let mut answer = vec![];
        (&mut stdout)
            .take(crate::push::MAX_REPORT)
            .read_to_end(&mut answer)?;
        Ok((advertisement, answer))
    })();
    // Whatever went wrong, git must not sit blocked on a pipe nobody reads.
    drop(stdout);
    if result.is_err()
        && let Ok(mut c) = child.lock()
    {
        let _ = c.kill();
    }
    // Polled, not waited on under the lock: the watchdog must be able to kill it meanwhile.
    let status = loop {
        match child.lock().map(|mut c| c.try_wait()) {
            Ok(Ok(Some(status))) => break Some(status),
            Ok(Ok(None)) => std::thread::sleep(std::time::Duration::from_millis(10)),
            _ => break None,
        }
    };
    {
        let (lock, wake) = &*done;
        if let Ok(mut d) = lock.lock() {
            *d = true;
        }
        wake.notify_all();
    }
    let _ = watchdog.join();
    let errors = stderr_reader.join().unwrap_or_default();
    match (result, status) {
        (Ok(out), Some(status)) if status.success() => Ok(out),
        (result, status) => Err(PushError::Remote {
            url: shown(&mirror.url),
            source: format!(
                "git receive-pack {} failed ({}): {}",
                path.display(),
                match (&result, status) {
                    (Err(e), _) => e.to_string(),
                    (Ok(_), Some(s)) => s.to_string(),
                    (Ok(_), None) => "it could not be waited for".to_string(),
                },
                errors.trim()
            )
            .into(),
        }),
    }
}

/// Reads pkt-lines up to and including the first flush, at most `limit` bytes.
fn read_until_flush(from: &mut impl std::io::Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = vec![];
    loop {
        let mut head = [0u8; 4];
        from.read_exact(&mut head)?;
        out.extend_from_slice(&head);
        let len = std::str::from_utf8(&head)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| std::io::Error::other("a bad pkt-line length"))?;
        if len == 0 {
            return Ok(out);
        }
        let mut payload = vec![0u8; len.saturating_sub(4)];
        from.read_exact(&mut payload)?;
        out.extend_from_slice(&payload);
        if out.len() as u64 > limit {
            return Err(std::io::Error::other(format!(
                "more than {limit} bytes of references"
            )));
        }
    }
}

/// A user and a secret (a password or an access token) for an http(s) git remote.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// Why a credentials file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {} as git credentials: {reason}", path.display())]
pub struct CredentialsError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl Credentials {
    /// The credentials in `path`: one line `USER:SECRET` (e.g. `x-access-token:ghp_...` on
    /// GitHub, `oauth2:glpat-...` on GitLab, or your user and a token on Gitea).
    pub fn from_file(path: &Path) -> Result<Credentials, CredentialsError> {
        let error = |reason: String| CredentialsError {
            path: path.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
        if meta.len() > 64 << 10 {
            return Err(error(format!(
                "it is {} bytes; one line USER:SECRET is expected",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(line) = lines.next() else {
            return Err(error("it is empty; write one line USER:SECRET".to_string()));
        };
        if lines.next().is_some() {
            return Err(error(
                "it has more than one line; write one line USER:SECRET".to_string(),
            ));
        }
        let Some((user, secret)) = line.trim().split_once(':') else {
            return Err(error(
                "its line has no `:`; write USER:SECRET (e.g. x-access-token:TOKEN)".to_string(),
            ));
        };
        if user.is_empty() || secret.is_empty() {
            return Err(error(
                "the user or the secret before or after `:` is empty".to_string(),
            ));
        }
        Ok(Credentials {
            user: user.to_string(),
            secret: secret.to_string(),
        })
    }
}

/// Why a push did not move the remote's branch.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The branch is no longer where it was fetched: someone else pushed first. Fetch, decide
    /// again on what is there now, and push that.
    #[error("{branch} of {url} moved to {found} since it was fetched at {expected}")]
    Moved {
        /// The remote.
        url: String,
        /// The branch.
        branch: String,
        /// Where it was fetched.
        expected: String,
        /// Where it is now.
        found: String,
    },
    /// The remote refused the push for a reason of its own (a protected branch, a hook).
    #[error("{url} refused to move {branch}: {reason}")]
    Rejected {
        /// The remote.
        url: String,
        /// The branch.
        branch: String,
        /// What it said.
        reason: String,
    },
    /// The remote wants (other) credentials.
    #[error("{url} refused the push ({status}): {}", match signed_in {
        true => "the credentials given may not push; check the user and token in --git-credentials-file",
        false => "it needs credentials; give --git-credentials-file with one line USER:TOKEN",
    })]
    Unauthorized {
        /// The remote.
        url: String,
        /// 401 or 403.
        status: u16,
        /// Whether credentials were given.
        signed_in: bool,
    },
    /// The remote's https certificate was refused.
    #[error("cannot push to {url}: {}", certificate.advice("--git-ca-file"))]
    Untrusted {
        /// The remote.
        url: String,
        /// What was wrong with the certificate.
        certificate: UntrustedCertificate,
    },
    /// The remote could not be reached, or answered what is not git's protocol.
    #[error("cannot push to {url}")]
    Remote {
        /// The remote.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A remote cohort cannot push to.
    #[error(
        "cannot push to {url}: only https://, http://, file:// and path remotes can be pushed to; give the https URL of the repository"
    )]
    Unsupported {
        /// The remote.
        url: String,
    },
    /// The mirror could not be read.
    #[error(transparent)]
    Local(#[from] GitError),
}

/// Whether [`Mirror::push`] can push to `url`: http(s), file:// and paths, not ssh or git://.
pub fn can_push_to(url: &str) -> bool {
    let scp_like = url.split_once(':').is_some_and(|(host, _)| !host.contains('/'));
    ["https://", "http://", "file://"]
        .iter()
        .any(|p| url.starts_with(p))
        || !(url.contains("://") || scp_like)
}

/// An https URL's scheme, host and port: where credentials may go.
fn origin(url: &str) -> Option<(String, String, Option<u16>)> {
    let parsed = gix::url::parse(gix::bstr::BStr::new(url)).ok()?;
    (parsed.scheme == gix::url::Scheme::Https)
        .then(|| {
            Some((
                "https".to_string(),
                parsed.host()?.to_string(),
                parsed.port_or_default(),
            ))
        })
        .flatten()
}

/// `url` as it may be shown: without a user and password written into it.
pub fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            match path.is_empty() && !rest.contains('/') {
                true => format!("{scheme}://{host}"),
                false => format!("{scheme}://{host}/{path}"),
            }
        }
        None => url.to_string(),
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

    use super::{Credentials, ExtraRoots, FetchError, Mirror, PushError};
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

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A bare remote holding one commit of `source`, as a release repo's remote would be.
    fn bare_remote(dir: &Path) -> (ReleaseRepo, PathBuf) {
        let source = ReleaseRepo::init(&dir.join("source"))
            .and_then(|r| r.with_fallback_identity("t", "t@example.com"))
            .expect("source repo");
        commit(&source, "cohort.yaml", "one\n");
        commit(&source, "services/a.yaml", "a\n");
        let bare = dir.join("remote.git");
        git(
            dir,
            &[
                "clone",
                "--bare",
                "-q",
                &source.root().display().to_string(),
                &bare.display().to_string(),
            ],
        );
        (source, bare)
    }

    #[test]
    fn a_commit_made_in_the_mirror_is_pushed_and_the_remote_holds_every_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, bare) = bare_remote(dir.path());
        let stop = AtomicBool::new(false);
        let mut mirror =
            Mirror::open(&dir.path().join("mirror"), &bare.display().to_string(), "main").expect("mirror");
        let tip = mirror.fetch(&stop).expect("fetch");
        let files = [
            (PathBuf::from("services/a.yaml"), b"a2\n".to_vec()),
            (PathBuf::from("releases/deep/a.yaml"), b"state\n".to_vec()),
        ];
        let new = mirror
            .commit_on(
                &tip,
                &files,
                "cohort: promote a",
                ("cohort autopilot", "autopilot@cohort.invalid"),
            )
            .expect("commit");
        mirror.push(&tip, &new).expect("push");
        assert_eq!(git(&bare, &["rev-parse", "main"]), new);
        // Every object arrived whole: git itself finds nothing missing or corrupt.
        git(&bare, &["fsck", "--strict", "--no-dangling"]);
        assert_eq!(git(&bare, &["show", "main:releases/deep/a.yaml"]), "state");
        assert_eq!(git(&bare, &["show", "main:cohort.yaml"]), "one");
        assert_eq!(
            git(&bare, &["log", "-1", "--format=%an <%ae>|%s", "main"]),
            "cohort autopilot <autopilot@cohort.invalid>|cohort: promote a"
        );
        assert_eq!(mirror.fetched().as_deref(), Some(new.as_str()));
        let log = mirror.log_at(&new).expect("log");
        assert_eq!(log.len(), 3);
        assert_eq!(log[0].author_name, "cohort autopilot");
        // A second commit on top goes too, carrying only what changed.
        let next = mirror
            .commit_on(
                &new,
                &[(PathBuf::from("services/a.yaml"), b"a3\n".to_vec())],
                "again",
                ("x", "x@example.com"),
            )
            .expect("commit");
        mirror.push(&new, &next).expect("push");
        assert_eq!(git(&bare, &["show", "main:services/a.yaml"]), "a3");
        git(&bare, &["fsck", "--strict", "--no-dangling"]);
    }

    #[test]
    fn a_push_that_lost_a_race_is_moved_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, bare) = bare_remote(dir.path());
        let url = bare.display().to_string();
        let stop = AtomicBool::new(false);
        let mut ours = Mirror::open(&dir.path().join("ours"), &url, "main").expect("mirror");
        let mut theirs = Mirror::open(&dir.path().join("theirs"), &url, "main").expect("mirror");
        let tip = ours.fetch(&stop).expect("fetch");
        assert_eq!(theirs.fetch(&stop).expect("fetch"), tip);
        let person = theirs
            .commit_on(
                &tip,
                &[(PathBuf::from("services/a.yaml"), b"theirs\n".to_vec())],
                "a person's",
                ("p", "p@example.com"),
            )
            .expect("commit");
        theirs.push(&tip, &person).expect("their push");
        let mine = ours
            .commit_on(
                &tip,
                &[(PathBuf::from("services/a.yaml"), b"mine\n".to_vec())],
                "mine",
                ("q", "q@example.com"),
            )
            .expect("commit");
        let err = ours.push(&tip, &mine).expect_err("lost the race");
        match &err {
            PushError::Moved { expected, found, .. } => {
                assert_eq!(expected, &tip);
                assert_eq!(found, &person);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            git(&bare, &["rev-parse", "main"]),
            person,
            "the person's commit is kept"
        );
        // Fetched again, the mirror builds on theirs and gets through.
        let tip = ours.fetch(&stop).expect("fetch");
        let mine = ours
            .commit_on(
                &tip,
                &[(PathBuf::from("services/b.yaml"), b"b\n".to_vec())],
                "mine again",
                ("q", "q@example.com"),
            )
            .expect("commit");
        ours.push(&tip, &mine).expect("push");
        assert_eq!(git(&bare, &["show", "main:services/a.yaml"]), "theirs");
        assert_eq!(git(&bare, &["show", "main:services/b.yaml"]), "b");
    }

    #[test]
    fn a_remote_that_refuses_the_push_says_why() {
        // A repository with a worktree refuses a push to its checked-out branch.
        let dir = tempfile::tempdir().expect("tempdir");
        let (source, _) = bare_remote(dir.path());
        let url = source.root().display().to_string();
        let mut mirror = Mirror::open(&dir.path().join("mirror"), &url, "main").expect("mirror");
        let tip = mirror.fetch(&AtomicBool::new(false)).expect("fetch");
        let new = mirror
            .commit_on(
                &tip,
                &[(PathBuf::from("x"), b"x\n".to_vec())],
                "x",
                ("q", "q@example.com"),
            )
            .expect("commit");
        let err = mirror.push(&tip, &new).expect_err("refused");
        assert!(matches!(err, PushError::Rejected { .. }), "{err:?}");
        assert_eq!(source.head_commit().expect("head"), Some(tip));
    }

    #[test]
    fn ssh_remotes_are_refused_for_pushing_with_the_way_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, bare) = bare_remote(dir.path());
        let mut mirror =
            Mirror::open(&dir.path().join("mirror"), &bare.display().to_string(), "main").expect("mirror");
        let tip = mirror.fetch(&AtomicBool::new(false)).expect("fetch");
        for url in [
            "git@example.com:team/releases.git",
            "ssh://git@example.com/team/releases.git",
        ] {
            let other = Mirror::open(mirror.git_dir(), url, "main").expect("mirror");
            let err = other.push(&tip, &tip).expect_err("unsupported");
            assert!(matches!(err, PushError::Unsupported { .. }), "{err:?}");
            assert!(err.to_string().contains("https"), "{err}");
        }
    }

    #[test]
    fn credentials_go_only_to_the_remote_s_own_https_origin_and_never_show() {
        use super::{origin, shown};
        let remote = origin("https://git.example.com/team/releases.git");
        assert!(remote.is_some());
        assert_eq!(origin("https://git.example.com:443/other.git"), remote);
        assert_ne!(origin("https://evil.example.net/team/releases.git"), remote);
        assert_ne!(origin("https://git.example.com:8443/team/releases.git"), remote);
        assert_eq!(origin("http://git.example.com/team/releases.git"), None);
        assert_eq!(origin("/srv/git/releases.git"), None);
        assert_eq!(
            shown("https://x-access-token:ghp_s3cret@git.example.com:8443/team/r.git"),
            "https://git.example.com:8443/team/r.git"
        );
        assert_eq!(shown("https://git.example.com"), "https://git.example.com");
        assert_eq!(shown("/srv/git/releases.git"), "/srv/git/releases.git");
    }

    #[test]
    fn a_credentials_file_must_hold_one_user_and_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("creds");
        std::fs::write(&file, "x-access-token:s3cret\n").expect("write");
        let creds = Credentials::from_file(&file).expect("credentials");
        assert!(!format!("{creds:?}").contains("s3cret"), "Debug hides the secret");
        for (text, says) in [
            ("", "empty"),
            ("token-only\n", "no `:`"),
            (":secret\n", "empty"),
            ("a:b\nc:d\n", "more than one line"),
        ] {
            std::fs::write(&file, text).expect("write");
            let err = Credentials::from_file(&file).expect_err(text);
            assert!(err.to_string().contains(says), "{text:?}: {err}");
            assert!(err.to_string().contains("creds"), "{err}");
        }
        assert!(Credentials::from_file(&dir.path().join("missing")).is_err());
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
