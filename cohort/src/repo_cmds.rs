//! Commands that read the release repo: init, validate, render, tracks, history.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cohort_core::printable::{escape, escape_lines};
use cohort_release::git::ReleaseRepo;
use cohort_spec::{Diagnostic, Repo, Severity, load_repo};

use crate::cli::{Cli, RenderArgs, RenderFormat, TextOrJson, YamlOrJson};
use crate::{Reported, UsageError};

/// The directory the user pointed at, or the current one.
pub fn repo_dir(cli: &Cli) -> PathBuf {
    cli.repo.clone().unwrap_or_else(|| PathBuf::from("."))
}

/// Finds the release repo's root: the nearest directory at or above `dir` that holds a
/// cohort.yaml, without leaving the git worktree (a release repo may live in a subdirectory
/// of a larger repository). Without one, `dir` itself, so that validation says what is missing.
pub fn repo_root(dir: &Path) -> PathBuf {
    let start = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let top = ReleaseRepo::open(dir).ok().map(|r| r.root().to_path_buf());
    let mut at = start.as_path();
    loop {
        // Whatever is there, without following it: a cohort.yaml that is a link or a pipe is
        // this repo's (and refused when read), not a reason to climb to another one.
        if at.join("cohort.yaml").symlink_metadata().is_ok() {
            return at.to_path_buf();
        }
        match at.parent() {
            Some(parent) if top.as_deref().is_some_and(|t| at != t) => at = parent,
            _ => return start,
        }
    }
}

/// Where the release repo's files are inside the git worktree (empty when they are at its top).
pub fn prefix_in(git: &ReleaseRepo, root: &Path) -> PathBuf {
    let top = git
        .root()
        .canonicalize()
        .unwrap_or_else(|_| git.root().to_path_buf());
    root.strip_prefix(&top).map(Path::to_path_buf).unwrap_or_default()
}

/// Prints diagnostics to stderr, one block each.
pub fn print_diagnostics(diags: &[Diagnostic]) {
    let mut err = std::io::stderr().lock();
    for d in diags {
        let _ = writeln!(err, "{}", escape_lines(&d.to_string()));
    }
}

/// Loads and validates the repo whose root is `dir`; on errors, prints them all and fails
/// with exit status 1.
pub fn load_valid(dir: &Path) -> Result<Repo> {
    let (repo, diags) = load_repo(dir);
    valid_or_report(repo, diags)
}

/// The repo if it is valid; otherwise its errors are printed and the command fails with exit
/// status 1.
pub fn valid_or_report(repo: Option<Repo>, diags: Vec<Diagnostic>) -> Result<Repo> {
    // Warnings are for `cohort validate`; other commands show only what stops them.
    let errors: Vec<Diagnostic> = diags
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    print_diagnostics(&errors);
    match repo {
        Some(r) => Ok(r),
        None => {
            eout!(
                "{} in the release repo; `cohort validate` lists them",
                plural(errors.len(), "error")
            );
            Err(Reported.into())
        }
    }
}

/// `1 error`, `3 errors`.
fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// The services named, or all; an unknown name is a usage error that lists the known ones.
pub fn pick<'r>(repo: &'r Repo, names: &[String]) -> Result<Vec<&'r cohort_spec::Service>> {
    if names.is_empty() {
        return Ok(repo.services.iter().collect());
    }
    names.iter().map(|n| service(repo, n)).collect()
}

/// One service by name, or a usage error listing the known ones.
pub fn service<'r>(repo: &'r Repo, name: &str) -> Result<&'r cohort_spec::Service> {
    repo.service(name).ok_or_else(|| {
        let known: Vec<&str> = repo.services.iter().map(|s| s.spec.name.as_str()).collect();
        UsageError(format!(
            "there is no service `{name}` in this release repo (services: {}); add services/{name}.yaml to create it",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        ))
        .into()
    })
}

pub fn init(dir: Option<PathBuf>) -> Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if dir.join("cohort.yaml").exists() {
        return Err(UsageError(format!(
            "{} already holds a release repo (cohort.yaml exists)",
            dir.display()
        ))
        .into());
    }
    let git = ReleaseRepo::init(&dir)?;
    let anonymous = !git.has_identity();
    let git = git.with_fallback_identity("cohort init", "cohort@localhost")?;
    if anonymous {
        eout!(
            "note: git does not know who you are; the first commit is authored by `cohort init <cohort@localhost>`.\n      \
             Set `git config --global user.name/user.email` before deploying: every change is a commit."
        );
    }
    let lock = git.lock()?;
    let files = cohort_spec::scaffold::files();
    let prefix = dir
        .canonicalize()
        .ok()
        .and_then(|d| {
            git.root()
                .canonicalize()
                .ok()
                .and_then(|root| d.strip_prefix(root).ok().map(Path::to_path_buf))
        })
        .unwrap_or_default();
    for (path, _) in &files {
        if dir.join(path).exists() {
            bail!(
                "{} already exists; init writes only into an empty release repo",
                dir.join(path).display()
            );
        }
    }
    let (repo, diags) = load_scaffold();
    print_diagnostics(&diags);
    let repo = repo.context("the built-in scaffold does not validate")?;
    let mut set = vec![];
    for svc in &repo.services {
        for (track, version) in &svc.state.tracks {
            set.push((svc.spec.name.to_string(), track.to_string(), version.to_string()));
        }
    }
    let contents: Vec<(PathBuf, Vec<u8>)> = files
        .iter()
        .map(|(p, text)| (prefix.join(p), text.as_bytes().to_vec()))
        .collect();
    let paths: Vec<&Path> = contents.iter().map(|(p, _)| p.as_path()).collect();
    git.check_clean(&paths)?;
    let id = git.commit_files(&lock, &contents, &cohort_release::record::init_message(&set))?;
    out!(
        "Created a release repo in {} (commit {}):",
        dir.display(),
        &id[..id.len().min(12)]
    );
    for (p, _) in &files {
        out!("  {}", p.display());
    }
    out!("\nNext: `cohort validate`, `cohort render`, `cohort deploy account-service 1.19.0`.");
    Ok(())
}

fn load_scaffold() -> (Option<Repo>, Vec<Diagnostic>) {
    cohort_spec::repo::validate(&cohort_spec::scaffold::repo_files())
}

pub fn validate(cli: &Cli, output: TextOrJson) -> Result<()> {
    let (repo, diags) = load_repo(&repo_root(&repo_dir(cli)));
    let errors = diags.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = diags.len() - errors;
    match output {
        TextOrJson::Json => {
            let doc = serde_json::json!({
                "valid": repo.is_some(),
                "errors": errors,
                "warnings": warnings,
                "services": repo.as_ref().map(|r| r.services.len()),
                "diagnostics": diags,
            });
            out_exact!("{}", serde_json::to_string_pretty(&doc)?);
        }
        TextOrJson::Text => {
            print_diagnostics(&diags);
            match &repo {
                Some(r) if warnings > 0 => out!(
                    "ok: cohort.yaml and {} are valid ({})",
                    plural(r.services.len(), "service"),
                    plural(warnings, "warning")
                ),
                Some(r) => out!(
                    "ok: cohort.yaml and {} are valid",
                    plural(r.services.len(), "service")
                ),
                None if warnings > 0 => {
                    eout!(
                        "{} and {} found",
                        plural(errors, "error"),
                        plural(warnings, "warning")
                    )
                }
                None => eout!("{} found", plural(errors, "error")),
            }
        }
    }
    if repo.is_some() {
        Ok(())
    } else {
        Err(Reported.into())
    }
}

pub fn render(cli: &Cli, args: &RenderArgs) -> Result<()> {
    if args.autopilot {
        return render_autopilot(cli, args);
    }
    if args.agent {
        return render_agent(cli, args);
    }
    let repo = load_valid(&repo_root(&repo_dir(cli)))?;
    if args.rbac {
        let objects = cohort_render::rbac(&repo.pipeline)?;
        let text = match args.output {
            YamlOrJson::Yaml => cohort_render::to_yaml(&objects),
            YamlOrJson::Json => cohort_render::to_json(&objects),
        };
        std::io::stdout().lock().write_all(text.as_bytes())?;
        return Ok(());
    }
    let services = pick(&repo, &args.services)?;
    if args.format == RenderFormat::Haproxy && args.services.len() != 1 {
        return Err(UsageError(
            "--format haproxy renders one service at a time: name it, e.g. `cohort render --format haproxy account-service`"
                .into(),
        )
        .into());
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    // A JSON List must hold every item; everything else is written service by service, so
    // memory stays flat however many services the repo has.
    let mut json_items = vec![];
    for (i, svc) in services.iter().enumerate() {
        let (name, text) = match args.format {
            RenderFormat::Haproxy => (
                format!("{}.haproxy.cfg", svc.spec.name),
                cohort_render::haproxy_cfg(&repo.pipeline, svc)
                    .with_context(|| format!("cannot render {} as haproxy.cfg", svc.spec.name))?,
            ),
            RenderFormat::Kubernetes => {
                let objects = cohort_render::render_service(&repo.pipeline, svc)?;
                match (args.output, &args.out) {
                    (YamlOrJson::Json, None) => {
                        json_items.extend(objects);
                        continue;
                    }
                    (YamlOrJson::Json, Some(_)) => (
                        format!("{}.json", svc.spec.name),
                        cohort_render::to_json(&objects),
                    ),
                    (YamlOrJson::Yaml, _) => (
                        format!("{}.yaml", svc.spec.name),
                        cohort_render::to_yaml(&objects),
                    ),
                }
            }
        };
        match &args.out {
            Some(dir) => {
                let path = dir.join(&name);
                write_replacing(dir, &path, text.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eout!("wrote {}", path.display());
            }
            None => {
                if i > 0 {
                    stdout.write_all(b"---\n")?;
                }
                stdout.write_all(text.as_bytes())?;
            }
        }
    }
    if args.output == YamlOrJson::Json && args.out.is_none() && args.format == RenderFormat::Kubernetes {
        stdout.write_all(cohort_render::to_json(&json_items).as_bytes())?;
    }
    Ok(())
}

/// What deploy/install.yaml says about itself; `render --agent --install` prints it first, so
/// that the committed file is exactly the command's output.
const INSTALL_HEADER: &str = "\
# cohort's in-cluster agent, for any namespace and git remote.
# Generated by `cohort render --agent --install`.
#
# Install it in the namespace of your release repo's pipeline (`namespace` in cohort.yaml):
#   kubectl -n NAMESPACE create configmap cohort-agent \\
#       --from-literal=git=https://git.example.com/release.git --from-literal=branch=main
#   kubectl -n NAMESPACE apply -f install.yaml
# It runs as the ServiceAccount cohort-agent, with a Role in that namespace and nothing
# cluster-wide. To pull from a control API instead, or to trust a company CA, see
# `cohort render --help` (--agent).
";

/// `render --agent`: the agent's objects, placed by the release repo when there is one.
fn render_agent(cli: &Cli, args: &RenderArgs) -> Result<()> {
    use cohort_render::AgentSource;
    let source = match (&args.control, &args.cluster, &args.git, args.install) {
        (None, None, None, true) => AgentSource::GitFromConfigMap,
        (Some(url), Some(cluster), None, false) => AgentSource::Control {
            url: url.clone(),
            cluster: cluster.clone(),
        },
        (None, None, Some(url), false) => AgentSource::Git {
            url: url.clone(),
            branch: args.branch.clone(),
        },
        _ => {
            return Err(UsageError(
                "--agent needs where the agent pulls from: --control URL --cluster NAME, --git URL, \
                 or --install (the git remote read from the ConfigMap cohort-agent)"
                    .into(),
            )
            .into());
        }
    };
    if let (AgentSource::Control { url, .. } | AgentSource::Git { url, .. }, Some(_)) =
        (&source, &args.ca_configmap)
        && !url.starts_with("https://")
    {
        return Err(UsageError(format!(
            "--ca-configmap is for an https source; {url} is not one (drop the flag, or give the https:// URL)"
        ))
        .into());
    }
    let (namespace, image) = placement(cli, args, "agent")?;
    let place = cohort_render::AgentPlacement {
        namespace: namespace.as_deref(),
        image: &image,
    };
    let objects = cohort_render::agent(place, &source, args.ca_configmap.as_deref())?;
    let text = match args.output {
        YamlOrJson::Yaml if args.install => format!("{INSTALL_HEADER}{}", cohort_render::to_yaml(&objects)),
        YamlOrJson::Yaml => cohort_render::to_yaml(&objects),
        YamlOrJson::Json => cohort_render::to_json(&objects),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    let ns = namespace.as_deref().unwrap_or("NAMESPACE");
    match source {
        AgentSource::Control { .. } => eout!(
            "note: the agent reads its token from the Secret {secret}; create it first:\n  \
             kubectl -n {ns} create secret generic {secret} --from-file=token=TOKEN_FILE",
            secret = cohort_render::AGENT_TOKEN_SECRET,
        ),
        AgentSource::GitFromConfigMap => eout!(
            "note: the agent reads its git remote and branch from the ConfigMap {cm}; create it \
             in the namespace you apply this to:\n  \
             kubectl -n {ns} create configmap {cm} --from-literal=git=URL --from-literal=branch=main",
            cm = cohort_render::AGENT_CONFIG_MAP,
        ),
        AgentSource::Git { .. } => {}
    }
    if let Some(name) = &args.ca_configmap {
        eout!(
            "note: the agent trusts the CA certificates in the ConfigMap {name} (key ca.crt); create it first:\n  \
             kubectl -n {ns} create configmap {name} --from-file=ca.crt=CA_PEM_FILE"
        );
    }
    Ok(())
}

/// Where `render --agent` or `--autopilot` places the process: the release repo's namespace
/// (or --namespace, which may only repeat it) and image (or --image).
fn placement(cli: &Cli, args: &RenderArgs, what: &str) -> Result<(Option<String>, String)> {
    if let Some(image) = &args.image {
        cohort_core::image::check_reference(image)
            .map_err(|e| UsageError(format!("--image `{image}` {e}")))?;
    }
    if let Some(ns) = &args.namespace {
        cohort_core::names::check_dns_label("namespace", ns, false).map_err(crate::usage)?;
    }
    // The generic install is the same bytes wherever it is made, so it reads no repo.
    let repo = match args.install {
        true => None,
        false => agent_repo(cli)?,
    };
    let namespace = match (&repo, &args.namespace) {
        (Some(repo), Some(ns)) if *ns != repo.pipeline.namespace => {
            return Err(UsageError(format!(
                "--namespace {ns}: the release repo's namespace is {repo_ns} (cohort.yaml), and the {what} \
                 must run in it: {does} there with a Role of that namespace; drop --namespace, or give \
                 -C DIR for another release repo",
                repo_ns = repo.pipeline.namespace,
                does = match what {
                    "agent" => "it applies the repo's objects",
                    _ => "it reads the routers",
                }
            ))
            .into());
        }
        (Some(repo), _) => Some(repo.pipeline.namespace.clone()),
        (None, Some(ns)) => Some(ns.clone()),
        (None, None) if args.install => None,
        (None, None) => {
            return Err(UsageError(format!(
                "no release repo in {} or above (no cohort.yaml) to take the {what}'s namespace from: \
                 give --namespace NAME (the pipeline's), -C DIR{install}",
                repo_dir(cli).display(),
                install = match what {
                    "agent" => ", or --install for the manifest that takes kubectl's -n",
                    _ => "",
                }
            ))
            .into());
        }
    };
    let image = args
        .image
        .as_deref()
        .or(repo.as_ref().map(|r| r.pipeline.router.image.as_str()))
        .unwrap_or(cohort_spec::DEFAULT_ROUTER_IMAGE);
    Ok((namespace, image.to_string()))
}

/// `render --autopilot`: the autopilot's objects, placed as the agent's are.
fn render_autopilot(cli: &Cli, args: &RenderArgs) -> Result<()> {
    let Some(git) = args.git.as_deref() else {
        return Err(
            UsageError("--autopilot needs --git URL, the remote it fetches and pushes to".into()).into(),
        );
    };
    if !cohort_release::mirror::can_push_to(git) || git.trim().is_empty() {
        return Err(UsageError(format!(
            "--git {git:?}: the autopilot pushes its decisions there, and it pushes over https (or http, or to a \
             path), not ssh or git://; give the repository's https URL"
        ))
        .into());
    }
    if args.branch.trim().is_empty() {
        return Err(UsageError("--branch is empty; name the release branch (default: main)".into()).into());
    }
    if args.ca_configmap.is_some() && !git.starts_with("https://") {
        return Err(UsageError(format!(
            "--ca-configmap is for an https remote; {git} is not one (drop the flag, or give the https:// URL)"
        ))
        .into());
    }
    let (namespace, image) = placement(cli, args, "autopilot")?;
    let setup = cohort_render::AutopilotSetup {
        place: cohort_render::AgentPlacement {
            namespace: namespace.as_deref(),
            image: &image,
        },
        git,
        branch: &args.branch,
        path: args.path.as_deref(),
        ca_config_map: args.ca_configmap.as_deref(),
        replicas: args.replicas,
    };
    let objects = cohort_render::autopilot(&setup)?;
    let text = match args.output {
        YamlOrJson::Yaml => cohort_render::to_yaml(&objects),
        YamlOrJson::Json => cohort_render::to_json(&objects),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    let ns = namespace.as_deref().unwrap_or("NAMESPACE");
    match git.starts_with("https://") {
        true => eout!(
            "note: the autopilot pushes with the credentials in the Secret {secret} (key credentials, one line \
             USER:TOKEN with write access to {git}); create it first:\n  \
             kubectl -n {ns} create secret generic {secret} --from-literal=credentials=USER:TOKEN",
            secret = cohort_render::AUTOPILOT_GIT_SECRET,
        ),
        false => eout!(
            "note: {git} is not https, so the autopilot sends it no credentials (cohort never sends them in \
             clear text): the server must take its pushes without them"
        ),
    }
    if let Some(name) = &args.ca_configmap {
        eout!(
            "note: the autopilot trusts the CA certificates in the ConfigMap {name} (key ca.crt); create it first:\n  \
             kubectl -n {ns} create configmap {name} --from-file=ca.crt=CA_PEM_FILE"
        );
    }
    Ok(())
}

/// The release repo `render --agent` takes the namespace and image from: the one -C names,
/// else the one the current directory is in, else none.
fn agent_repo(cli: &Cli) -> Result<Option<Repo>> {
    let root = repo_root(&repo_dir(cli));
    if cli.repo.is_none() && root.join("cohort.yaml").symlink_metadata().is_err() {
        return Ok(None);
    }
    load_valid(&root).map(Some)
}

/// Writes `path` (in `dir`) as a new file put in place by rename: whatever was at `path` (a
/// symbolic link to a file elsewhere, a named pipe) is replaced, never written through, and a
/// reader never sees half a file.
pub fn write_replacing(dir: &Path, path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".cohort-render-").suffix(".tmp");
    // As `std::fs::write` would create it: 0666 minus the umask, not tempfile's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(content)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

pub fn tracks(cli: &Cli, names: &[String], output: TextOrJson) -> Result<()> {
    let repo = load_valid(&repo_root(&repo_dir(cli)))?;
    let services = pick(&repo, names)?;
    let stages = &repo.pipeline.stages;
    if output == TextOrJson::Json {
        let doc: Vec<_> = services
            .iter()
            .map(|s| serde_json::json!({"service": s.spec.name, "tracks": s.state.tracks, "approvals": s.state.approvals}))
            .collect();
        out_exact!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let mut rows = vec![
        std::iter::once("SERVICE".to_string())
            .chain(stages.iter().map(|t| t.as_str().to_uppercase()))
            .collect::<Vec<_>>(),
    ];
    for s in services {
        let mut row = vec![s.spec.name.to_string()];
        row.extend(
            stages
                .iter()
                .map(|t| s.state.version(t).map_or("-".to_string(), ToString::to_string)),
        );
        rows.push(row);
    }
    print_table(&rows)?;
    Ok(())
}

/// Prints `rows` as columns. Cells are escaped one by one (a line break in a reason or a name
/// cannot start a row of its own) before their widths are taken.
pub fn print_table(rows: &[Vec<String>]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|cell| escape(cell).into_owned()).collect())
        .collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == r.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        writeln!(out, "{}", line.join("  "))?;
    }
    Ok(())
}

pub fn history(
    cli: &Cli,
    service: Option<&str>,
    track: Option<&str>,
    limit: Option<usize>,
    output: TextOrJson,
) -> Result<()> {
    let git = ReleaseRepo::open(&repo_dir(cli))?;
    let entries: Vec<_> = cohort_release::history::entries(&git.log()?)
        .into_iter()
        .filter(|e| service.is_none_or(|s| e.change.service == s))
        .filter(|e| track.is_none_or(|t| e.change.track.as_deref() == Some(t)))
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    if output == TextOrJson::Json {
        out_exact!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        out!(
            "no recorded changes{}",
            service.map(|s| format!(" for {s}")).unwrap_or_default()
        );
        return Ok(());
    }
    let mut rows = vec![
        // The change column can be long (reasons), so it goes last and the others stay aligned.
        ["TIME", "AUTHOR", "ACTION", "SERVICE", "TRACK", "COMMIT", "CHANGE"]
            .map(String::from)
            .to_vec(),
    ];
    for e in &entries {
        let c = &e.change;
        use cohort_release::record::Action;
        let what = match c.action {
            Action::Pause => "autopilot paused".to_string(),
            Action::Resume => "autopilot resumed".to_string(),
            Action::Freeze => "promotions and ramps frozen".to_string(),
            Action::Unfreeze => "promotions and ramps unfrozen".to_string(),
            Action::Approve => {
                format!(
                    "{} passed {}",
                    c.to.as_deref().unwrap_or("?"),
                    c.check.as_deref().unwrap_or("?")
                )
            }
            _ => format!(
                "{} → {}",
                c.from.as_deref().unwrap_or("-"),
                c.to.as_deref().unwrap_or("-")
            ),
        };
        let mut what = what;
        if c.forced {
            what.push_str(" (gate forced)");
        }
        if let Some(r) = &c.reason {
            what.push_str(&format!(" — {r}"));
        }
        rows.push(vec![
            format_time(e.time, e.offset_secs),
            e.author.split(" <").next().unwrap_or_default().to_string(),
            c.action.as_str().to_string(),
            c.service.clone(),
            c.track.clone().unwrap_or_else(|| "-".into()),
            e.commit.chars().take(9).collect(),
            what,
        ]);
    }
    print_table(&rows)?;
    Ok(())
}

fn format_time(secs: i64, offset: i32) -> String {
    let Ok(ts) = jiff::Timestamp::from_second(secs) else {
        return secs.to_string();
    };
    let Ok(off) = jiff::tz::Offset::from_seconds(offset) else {
        return ts.to_string();
    };
    ts.to_zoned(jiff::tz::TimeZone::fixed(off))
        .strftime("%Y-%m-%d %H:%M %:z")
        .to_string()
}
