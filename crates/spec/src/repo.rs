//! A whole release repo: reading its files and checking them together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cohort_core::{Pipeline, ReleaseState, ServiceName, ServiceSpec, names::check_dns_label};
use cohort_yaml::Pos;

use crate::diag::{Diagnostic, Kind, Sink, has_errors};
use crate::entry::{self, Expect, Refusal};

/// A release repo that passed validation.
#[derive(Clone, Debug)]
pub struct Repo {
    /// `cohort.yaml`.
    pub pipeline: Pipeline,
    /// Every service, sorted by name.
    pub services: Vec<Service>,
}

/// One service: its spec and its release state.
#[derive(Clone, Debug)]
pub struct Service {
    /// `services/<name>.yaml`.
    pub spec: ServiceSpec,
    /// `releases/<name>.yaml` (empty when the service has never been deployed).
    pub state: ReleaseState,
}

/// The text of a repo's files, as read from a worktree or a commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoFiles {
    /// `cohort.yaml`, if present.
    pub pipeline: Option<String>,
    /// `(path, text)` of each `services/*.yaml`.
    pub services: Vec<(PathBuf, String)>,
    /// `(path, text)` of each `releases/*.yaml`.
    pub releases: Vec<(PathBuf, String)>,
    /// What was not read, and why: each is an error of the repo, whichever reader found it.
    pub refused: Vec<Refusal>,
}

/// Where a service's release state lives, relative to the repo root.
pub fn state_path(service: &ServiceName) -> PathBuf {
    PathBuf::from("releases").join(format!("{service}.yaml"))
}

impl Repo {
    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.spec.name.as_str() == name)
    }
}

/// Reads the files of the repo at `root` (no git involved: what is on disk now). Files cohort
/// will not read (symbolic links, pipes, devices, oversized or non-UTF-8 files: see
/// [`crate::entry`]) are listed in [`RepoFiles::refused`], as the git readers list them.
pub fn read_files(root: &Path) -> Result<RepoFiles, Vec<Diagnostic>> {
    let mut diags = vec![];
    let mut files = RepoFiles::default();
    let pipeline = Path::new("cohort.yaml");
    match entry::read_disk_file(&root.join(pipeline), pipeline) {
        Ok(text) => files.pipeline = text,
        Err(refusal) => files.refused.push(refusal),
    }
    for (dir, out) in [
        ("services", &mut files.services),
        ("releases", &mut files.releases),
    ] {
        let full = root.join(dir);
        match entry::disk_entry(&full, Path::new(dir), Expect::Directory) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(refusal) => {
                files.refused.push(refusal);
                continue;
            }
        }
        let entries = match std::fs::read_dir(&full) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                Sink::new(dir, &mut diags).error(
                    Pos { line: 1, col: 1 },
                    Kind::Unreadable,
                    format!("cannot list: {e}"),
                    None,
                );
                continue;
            }
        };
        // Named as the git reader names them (lossily, were a name not UTF-8), opened by the
        // name on disk.
        let mut names: Vec<(String, std::ffi::OsString)> = entries
            .filter_map(Result::ok)
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.file_name()))
            .filter(|(name, _)| entry::is_spec_file_name(name))
            .collect();
        names.sort();
        for (name, on_disk) in names {
            let rel = Path::new(dir).join(&name);
            match entry::read_disk_file(&full.join(on_disk), &rel) {
                Ok(Some(text)) => out.push((rel, text)),
                // Removed since it was listed.
                Ok(None) => {}
                Err(refusal) => files.refused.push(refusal),
            }
        }
    }
    if diags.is_empty() { Ok(files) } else { Err(diags) }
}

/// Reads and validates the repo at `root`. The repo is returned only if there is no error;
/// warnings come back either way.
pub fn load_repo(root: &Path) -> (Option<Repo>, Vec<Diagnostic>) {
    match read_files(root) {
        Ok(files) => validate(&files),
        Err(diags) => (None, diags),
    }
}

fn parse_file(path: &Path, text: &str, diags: &mut Vec<Diagnostic>) -> Option<cohort_yaml::Node> {
    match cohort_yaml::parse(text) {
        Ok(n) => Some(n),
        Err(e) => {
            Sink::new(path, diags).error(
                e.pos,
                Kind::Syntax,
                format!("this is not valid YAML: {}", e.message),
                None,
            );
            None
        }
    }
}

/// Validates a repo's files all together; every problem is reported.
pub fn validate(files: &RepoFiles) -> (Option<Repo>, Vec<Diagnostic>) {
    // A refused file is an error like any other; what depends on it is not checked further,
    // so that its absence adds no misleading errors of its own.
    let mut diags: Vec<Diagnostic> = files.refused.iter().map(Refusal::diagnostic).collect();
    let refused = |path: &str| files.refused.iter().any(|r| r.path() == Path::new(path));
    let Some(text) = &files.pipeline else {
        if refused("cohort.yaml") {
            return (None, diags);
        }
        Sink::new("cohort.yaml", &mut diags).error(
            Pos { line: 1, col: 1 },
            Kind::MissingFile,
            "there is no cohort.yaml here",
            Some(
                "run cohort inside a release repo, pass `--repo DIR`, or create one with `cohort init`"
                    .into(),
            ),
        );
        return (None, diags);
    };
    let pipeline = parse_file(Path::new("cohort.yaml"), text, &mut diags)
        .and_then(|n| crate::read_pipeline(&n, &mut Sink::new("cohort.yaml", &mut diags)));

    // Keyed by name: repos of thousands of services stay linear, and come out sorted.
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let services_refused = refused("services");
    for r in &files.refused {
        if let Some(stem) = stem_in(r.path(), "services") {
            seen.insert(stem, r.path().to_owned());
        }
    }
    // Every object name a service makes whatever its versions, to catch `a` and `a-internal`.
    let mut owners: BTreeMap<(&'static str, String), String> = BTreeMap::new();
    for (path, text) in &files.services {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if let Some(first) = seen.get(&stem) {
            Sink::new(path, &mut diags).error(
                Pos { line: 1, col: 1 },
                Kind::Duplicate,
                format!(
                    "service `{stem}` is defined twice: here and in {}",
                    first.display()
                ),
                Some("keep one file per service".into()),
            );
            continue;
        }
        seen.insert(stem.clone(), path.clone());
        let Some(node) = parse_file(path, text, &mut diags) else {
            continue;
        };
        let Some(pipeline) = &pipeline else { continue };
        let mut sink = Sink::new(path, &mut diags);
        let Some(spec) = crate::read_service(&node, &stem, pipeline, &mut sink) else {
            continue;
        };
        let name_pos = key_pos(&node, "name");
        check_object_names(&spec, pipeline, name_pos, &mut sink);
        for (kind, object) in fixed_objects(&spec, pipeline) {
            match owners.get(&(kind, object.clone())) {
                Some(owner) => sink.error(
                    name_pos,
                    Kind::Duplicate,
                    format!(
                        "service `{}` would make {kind} `{object}`, which service `{owner}` makes too",
                        spec.name
                    ),
                    Some("rename one of the services so their objects cannot collide".into()),
                ),
                None => {
                    owners.insert((kind, object), spec.name.to_string());
                }
            }
        }
        services.insert(
            stem,
            Service {
                spec,
                state: ReleaseState::default(),
            },
        );
    }

    // Services whose state could not be read are not checked further: an empty state would
    // only add misleading warnings on top of the real error.
    let mut unreadable_state: BTreeSet<ServiceName> = BTreeSet::new();
    for r in &files.refused {
        if let Some(name) = stem_in(r.path(), "releases").and_then(|s| ServiceName::new(&s).ok()) {
            unreadable_state.insert(name);
        }
    }
    for (path, text) in &files.releases {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let Some(node) = parse_file(path, text, &mut diags) else {
            if let Ok(name) = ServiceName::new(stem) {
                unreadable_state.insert(name);
            }
            continue;
        };
        let Some(pipeline) = &pipeline else { continue };
        let mut sink = Sink::new(path, &mut diags);
        let Some(svc) = services.get_mut(stem) else {
            if !seen.contains_key(stem) && !services_refused {
                sink.error(
                    Pos { line: 1, col: 1 },
                    Kind::Mismatch,
                    format!("there is release state for `{stem}` but no services/{stem}.yaml"),
                    Some(format!(
                        "restore services/{stem}.yaml, or delete {} if the service is gone",
                        path.display()
                    )),
                );
            }
            continue;
        };
        match crate::read_state(&node, &svc.spec.name, pipeline, &mut sink) {
            Some(state) => svc.state = state,
            None => {
                unreadable_state.insert(svc.spec.name.clone());
            }
        }
    }

    let Some(pipeline) = pipeline else {
        return (None, diags);
    };
    for svc in services
        .values()
        .filter(|s| !unreadable_state.contains(&s.spec.name))
    {
        diags.extend(check_service(&pipeline, svc));
    }
    if has_errors(&diags) {
        return (None, diags);
    }
    (
        Some(Repo {
            pipeline,
            services: services.into_values().collect(),
        }),
        diags,
    )
}

/// The service name of `path` if it is a file directly in `dir`.
fn stem_in(path: &Path, dir: &str) -> Option<String> {
    (path.parent() == Some(Path::new(dir)))
        .then(|| path.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .flatten()
}

/// Where `key`'s value starts in a mapping (the mapping's own start if absent).
fn key_pos(node: &cohort_yaml::Node, key: &str) -> Pos {
    match &node.kind {
        cohort_yaml::NodeKind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some(key))
            .map_or(node.pos, |(_, v)| v.pos),
        _ => node.pos,
    }
}

/// The objects a service makes whatever versions it runs, as (kind, name).
fn fixed_objects(spec: &ServiceSpec, pipeline: &Pipeline) -> Vec<(&'static str, String)> {
    let name = &spec.name;
    let mut out = vec![
        ("Service", name.to_string()),
        ("ConfigMap", format!("{name}-router")),
        ("Deployment", format!("{name}-router")),
        ("PodDisruptionBudget", format!("{name}-router")),
        ("ServiceAccount", format!("{name}-router")),
        ("Role", format!("{name}-router")),
        ("RoleBinding", format!("{name}-router")),
    ];
    out.extend(pipeline.stages.iter().map(|t| ("Service", format!("{name}-{t}"))));
    if let Some(last) = pipeline.stages.last() {
        out.push(("PodDisruptionBudget", format!("{name}-{last}")));
    }
    out
}

/// Object names that do not depend on versions: `<svc>-router` and `<svc>-<track>`.
fn check_object_names(spec: &ServiceSpec, pipeline: &Pipeline, pos: Pos, sink: &mut Sink<'_>) {
    let mut names = vec![format!("{}-router", spec.name)];
    names.extend(pipeline.stages.iter().map(|t| format!("{}-{t}", spec.name)));
    for name in names {
        if let Err(e) = check_dns_label("object name", &name, true) {
            sink.error(
                pos,
                Kind::BadName,
                format!("service `{}` would make an object named `{name}`: {e}", spec.name),
                Some("shorten the service or track name".into()),
            );
        }
    }
}

/// Checks one service's state against its spec: versioned object names fit, and each route
/// still has a track once tracks with nothing deployed are taken out. Used both when loading
/// and before any change is committed.
pub fn check_service(pipeline: &Pipeline, svc: &Service) -> Vec<Diagnostic> {
    let mut diags = vec![];
    let path = state_path(&svc.spec.name);
    let mut sink = Sink::new(&path, &mut diags);
    let origin = Pos { line: 1, col: 1 };
    for (track, version) in &svc.state.tracks {
        let name = format!("{}-{track}-v{}", svc.spec.name, version.name_slug());
        if let Err(e) = check_dns_label("Deployment name", &name, true) {
            sink.error(
                origin,
                Kind::BadName,
                format!("version {version} on `{track}` makes {e}"),
                Some("use a shorter version string".into()),
            );
        }
    }
    let launched = pipeline
        .stages
        .last()
        .is_some_and(|last| svc.state.tracks.contains_key(last));
    let cohorts = svc.spec.cohorts.iter().map(|(n, r)| (format!("`{n}`"), r));
    let routes = cohorts.chain(std::iter::once((
        "everyone else".to_string(),
        &svc.spec.default_route,
    )));
    let mut unserved = vec![];
    for (who, route) in routes {
        if route.redistribute(|t| svc.state.tracks.contains_key(t)).is_ok() {
            continue;
        }
        if launched {
            let tracks: Vec<&str> = route.legs().iter().map(|(t, _)| t.as_str()).collect();
            sink.error(
                origin,
                Kind::RouteLeftEmpty,
                format!(
                    "for `{}`, no track of the route of {who} ({}) has a version",
                    svc.spec.name,
                    tracks.join(", ")
                ),
                Some("every route needs a track with a version; route the cohort to a deployed track".into()),
            );
        } else {
            unserved.push(who);
        }
    }
    if !unserved.is_empty() {
        // Normal for a service on its way to its first release: one line, not one per cohort.
        let last = pipeline.stages.last().map(|t| t.as_str()).unwrap_or_default();
        sink.warning(
            origin,
            Kind::RouteLeftEmpty,
            format!(
                "`{}` is not launched yet: cohorts {} get 503 until a version reaches `{last}`",
                svc.spec.name,
                match unserved.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
                    _ => unserved.join(""),
                }
            ),
            None,
        );
    }
    diags
}

/// The seed release repo (`cohort init`'s) with `section` appended to its cohort.yaml,
/// validated: how the tests of one cohort.yaml section read it in context.
#[cfg(test)]
pub(crate) fn seed_with(section: &str) -> (Option<Repo>, Vec<Diagnostic>) {
    let mut files = crate::scaffold::repo_files();
    files.pipeline = files.pipeline.map(|p| format!("{p}\n{section}"));
    validate(&files)
}

#[cfg(test)]
mod tests;
