//! Applying a service's rendered objects in the order of [`crate::plan`]: server-side apply
//! with one field manager, waits on rollouts with progress, pruning only after everything else
//! succeeded. `cohort apply` and the in-cluster agent both run this.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cohort_health::rollout::{self, Rollout};
use cohort_render::Rendered;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PropagationPolicy,
};
use serde_json::Value;

use crate::applied;
use crate::compare::{self, Change};
use crate::plan::{self, Step};
use crate::{Cluster, KubeError};

/// How often an unchanged wait is reported again.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// The field manager cohort applies with (and the `managed-by` label's value).
pub const FIELD_MANAGER: &str = cohort_render::MANAGER;

/// How to apply.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Server-side dry run: the server checks and defaults everything, nothing is stored, no
    /// wait, nothing deleted.
    pub dry_run: bool,
    /// Take over fields another field manager owns (kubectl's `--force-conflicts`).
    pub force_conflicts: bool,
    /// How long one step may wait for its rollouts.
    pub timeout: Duration,
    /// How often a wait looks again.
    pub poll: Duration,
    /// Who is applying, as the service's apply lease records it.
    pub holder: String,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            dry_run: false,
            force_conflicts: false,
            timeout: Duration::from_secs(300),
            poll: Duration::from_secs(1),
            holder: crate::lease::identity("cohort"),
        }
    }
}

/// What happened, as it happens (for progress lines or structured logs).
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// A step of the plan begins.
    Step {
        /// `track Deployments`, `router`, ...
        what: &'static str,
    },
    /// One object was applied (or, in a dry run, would be).
    Applied {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Created, configured or unchanged.
        change: Change,
    },
    /// A Deployment being waited for moved on.
    Waiting {
        /// Its name.
        deployment: String,
        /// `1/4 ready, 4/4 updated`.
        progress: String,
    },
    /// A Deployment finished rolling out.
    Ready {
        /// Its name.
        deployment: String,
        /// How long it took.
        after: Duration,
    },
    /// Every ready router runs the router config just applied.
    Reloaded {
        /// How many router pods were asked.
        routers: usize,
        /// How long it took from the router step's end.
        after: Duration,
    },
    /// The router pods could not be annotated, so the kubelet brings them the new config on
    /// its own sync period (up to a minute or so) rather than at once.
    NotNudged {
        /// Why.
        why: String,
    },
    /// These router pods could not be asked which config they run (pod, why); the kubelet
    /// brings it to them within its sync period.
    ReloadUnconfirmed {
        /// Pod and why.
        pods: Vec<(String, String)>,
    },
    /// A managed Deployment the repo no longer names was deleted (or, dry run, would be).
    Pruned {
        /// Its name.
        deployment: String,
    },
}

/// An object in the cluster labelled as cohort's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedObject {
    /// Its kind.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// The service it belongs to (`part-of`; empty if unlabelled).
    pub service: String,
    /// `service` for track objects, `router` for the router's.
    pub tier: Option<String>,
}

impl ManagedObject {
    /// Whether `cohort apply` prunes it when the repo no longer renders it: a track Deployment.
    pub fn is_prunable(&self) -> bool {
        self.kind == "Deployment" && self.tier.as_deref() == Some("service")
    }
}

/// A Deployment that did not become ready, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NotReady {
    /// Its name.
    pub deployment: String,
    /// `1/4 ready, 4/4 updated`.
    pub progress: String,
    /// What it was waiting for, or why the controller gave up.
    pub state: String,
    /// Why its pods are not ready (pod conditions, waiting containers, Warning events).
    pub reasons: Vec<String>,
}

/// Why applying a service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused or could not be reached.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// A rollout failed or did not finish in time; nothing was pruned.
    #[error("{}", not_ready_message(.not_ready, .timeout, .failed))]
    NotReady {
        /// The Deployments that are not ready.
        not_ready: Vec<NotReady>,
        /// The wait's limit.
        timeout: Duration,
        /// Whether the controller gave up (rather than time running out).
        failed: bool,
    },
    /// Router pods still ran another config when the wait ended; nothing after was changed.
    #[error(
        "router pods of {service} still run another config after {}s: {}; a router keeps the config \
         in force when it cannot use a new one and says why in its log (kubectl -n {namespace} logs \
         POD); they should run {digest}",
        timeout.as_secs(),
        stale.iter().map(|(pod, runs)| match runs.is_empty() {
            true => pod.clone(),
            false => format!("{pod} ({runs})"),
        }).collect::<Vec<_>>().join(", ")
    )]
    NotReloaded {
        /// The service.
        service: String,
        /// Its namespace.
        namespace: String,
        /// The digest of the config applied.
        digest: String,
        /// The pods, with the digest each runs (empty: not known).
        stale: Vec<(String, String)>,
        /// The wait's limit.
        timeout: Duration,
    },
    /// The rendered objects use something this API server does not know.
    #[error("the cluster runs Kubernetes {server}, which has no {feature} (it needs {needs}); {fix}")]
    Unsupported {
        /// The server's version, `1.28`.
        server: String,
        /// What is missing.
        feature: &'static str,
        /// The version that has it.
        needs: &'static str,
        /// How to do without.
        fix: &'static str,
    },
    /// Another process is applying the service.
    #[error(
        "another apply of {service} is under way: {} holds lease {lease}{} until {}; wait for it to finish, \
         or if that process is gone: kubectl -n {namespace} delete lease {lease}",
        held.holder,
        held.since.map(|s| format!(" since {s}")).unwrap_or_default(),
        held.until
    )]
    Busy {
        /// The service.
        service: String,
        /// The lease.
        lease: String,
        /// Its namespace.
        namespace: String,
        /// Who holds it.
        held: Box<crate::lease::Held>,
    },
    /// cohort does not know how to apply this kind (a bug in render).
    #[error("cannot apply {kind} {name}: cohort does not know its API group")]
    UnknownKind {
        /// The kind.
        kind: String,
        /// The name.
        name: String,
    },
}

fn not_ready_message(not_ready: &[NotReady], timeout: &Duration, failed: &bool) -> String {
    let names: Vec<&str> = not_ready.iter().map(|n| n.deployment.as_str()).collect();
    match failed {
        true => format!("rollout failed: {}", names.join(", ")),
        false => format!("not ready after {}s: {}", timeout.as_secs(), names.join(", ")),
    }
}

/// The API resource of a kind render makes.
fn resource(kind: &str) -> Option<ApiResource> {
    let (group, version, plural) = match kind {
        "Deployment" => ("apps", "v1", "deployments"),
        "Service" => ("", "v1", "services"),
        "ConfigMap" => ("", "v1", "configmaps"),
        "PodDisruptionBudget" => ("policy", "v1", "poddisruptionbudgets"),
        "ServiceAccount" => ("", "v1", "serviceaccounts"),
        "Role" => ("rbac.authorization.k8s.io", "v1", "roles"),
        "RoleBinding" => ("rbac.authorization.k8s.io", "v1", "rolebindings"),
        _ => return None,
    };
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

/// Whether a server of version `major.minor` knows everything the objects use; the kubelet's
/// `preStop.sleep` came in 1.30 (beta, on by default), and older servers reject it as an
/// unknown field.
pub fn check_server_supports(objects: &[Rendered], major: u32, minor: u32) -> Result<(), ApplyError> {
    let uses_sleep = objects.iter().any(|o| {
        o.value["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| !c["lifecycle"]["preStop"]["sleep"].is_null())
    });
    if uses_sleep && (major, minor) < (1, 30) {
        return Err(ApplyError::Unsupported {
            server: format!("{major}.{minor}"),
            feature: "lifecycle.preStop.sleep",
            needs: "1.30",
            fix: "set `defaults.pre_stop.exec: true` in cohort.yaml to pause with `sleep` from \
                  the image instead (the image then needs a sleep binary), or upgrade the cluster",
        });
    }
    Ok(())
}

/// A version number from the server's version info (`"28+"` on some providers reads as 28);
/// `None` when there is none to read.
fn version_number(text: &str) -> Option<u32> {
    text.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// A service's objects in the cluster, by kind and name, as the API server returns them.
pub type LiveObjects = BTreeMap<(&'static str, String), Value>;

/// The track Deployments among a service's live objects (what pruning looks at).
fn track_deployments(live: &LiveObjects) -> Vec<String> {
    live.iter()
        .filter(|((kind, _), v)| *kind == "Deployment" && v["metadata"]["labels"]["tier"] == "service")
        .map(|((_, name), _)| name.clone())
        .collect()
}

/// Whether a Deployment, as the API server returned it, has rolled out.
fn rolled_out(deployment: &Value) -> bool {
    serde_json::from_value::<Deployment>(deployment.clone())
        .is_ok_and(|d| matches!(rollout::rollout(&d), Rollout::Done))
}

/// What applying `objects` would say if every one of them is already as the repo renders it,
/// every Deployment among them rolled out and nothing to prune; `None` when there is
/// something to do.
pub fn nothing_to_do(objects: &[Rendered], live: &LiveObjects) -> Option<Vec<Progress>> {
    let mut said = vec![];
    for step in plan::plan(objects, &track_deployments(live)) {
        let (what, objects, wait) = match step {
            Step::Apply { what, objects, wait } => (what, objects, wait),
            // An unchanged router config needs no reload.
            Step::ReloadRouters { .. } => continue,
            Step::Prune { .. } => return None,
        };
        said.push(Progress::Step { what });
        let mut ready = vec![];
        for o in objects {
            let l = live.get(&(o.kind, o.name.clone()))?;
            if !applied::up_to_date(l, &o.value) {
                return None;
            }
            said.push(Progress::Applied {
                kind: o.kind,
                name: o.name.clone(),
                change: Change::Unchanged,
            });
            if o.kind == "Deployment" {
                if !rolled_out(l) {
                    return None;
                }
                if wait {
                    ready.push(Progress::Ready {
                        deployment: o.name.clone(),
                        after: Duration::ZERO,
                    });
                }
            }
        }
        said.extend(ready);
    }
    Some(said)
}

impl Cluster {
    /// The API server's `major.minor`, when it says one that reads as numbers.
    pub async fn server_version(&self) -> Result<Option<(u32, u32)>, KubeError> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| KubeError::from_kube("read the server version".into(), e))?;
        Ok(version_number(&info.major).zip(version_number(&info.minor)))
    }

    fn dynamic(&self, o: &Rendered) -> Result<Api<DynamicObject>, ApplyError> {
        let ar = resource(o.kind).ok_or_else(|| ApplyError::UnknownKind {
            kind: o.kind.to_string(),
            name: o.name.clone(),
        })?;
        Ok(Api::namespaced_with(self.client.clone(), &self.namespace, &ar))
    }

    /// The object as the cluster holds it, if it exists.
    pub async fn live(&self, o: &Rendered) -> Result<Option<Value>, ApplyError> {
        let found = self
            .dynamic(o)?
            .get_opt(&o.name)
            .await
            .map_err(|e| self.error(format!("get {} {}", o.kind, o.name), e))?;
        Ok(found.map(|d| serde_json::to_value(d).unwrap_or(Value::Null)))
    }

    /// Server-side applies `o` as field manager `cohort`; returns the object as stored (or, in
    /// a dry run, as it would be).
    pub async fn server_side_apply(
        &self,
        o: &Rendered,
        dry_run: bool,
        force: bool,
    ) -> Result<Value, ApplyError> {
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = force;
        params.dry_run = dry_run;
        let stored = self
            .dynamic(o)?
            .patch(&o.name, &params, &Patch::Apply(&applied::marked(&o.value)))
            .await
            .map_err(|e| self.error(format!("apply {} {}", o.kind, o.name), e))?;
        Ok(serde_json::to_value(stored).unwrap_or(Value::Null))
    }

    fn error(&self, doing: String, e: kube::Error) -> KubeError {
        KubeError::from_kube(format!("{doing} in namespace {}", self.namespace), e)
    }

    /// The objects of every kind render makes whose labels match `selector`: one LIST a kind.
    async fn list_rendered_kinds(
        &self,
        selector: &str,
    ) -> Result<Vec<(&'static str, DynamicObject)>, KubeError> {
        let mut out = vec![];
        for kind in cohort_render::SERVICE_KINDS {
            let Some(ar) = resource(kind) else { continue };
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &self.namespace, &ar);
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| self.error(format!("list {}", ar.plural), e))?;
            out.extend(list.items.into_iter().map(|o| (kind, o)));
        }
        Ok(out)
    }

    /// The objects of `service` that cohort manages in the cluster, by kind and name: one LIST
    /// a kind, in place of a GET an object.
    pub async fn service_objects(&self, service: &str) -> Result<LiveObjects, KubeError> {
        let selector = format!(
            "{}={FIELD_MANAGER},{}={service}",
            cohort_render::LABEL_MANAGED_BY,
            cohort_render::LABEL_PART_OF
        );
        let mut out = LiveObjects::new();
        for (kind, o) in self.list_rendered_kinds(&selector).await? {
            let name = o.metadata.name.clone().unwrap_or_default();
            let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
            // A LIST's items leave out what the list itself says; a GET has them.
            if let Some(ar) = resource(kind) {
                v["apiVersion"] = Value::String(ar.api_version);
            }
            v["kind"] = Value::String(kind.to_string());
            out.insert((kind, name), v);
        }
        Ok(out)
    }

    /// Every object of the kinds render makes that carries cohort's `managed-by` label.
    pub async fn managed_objects(&self) -> Result<Vec<ManagedObject>, KubeError> {
        let selector = format!("{}={FIELD_MANAGER}", cohort_render::LABEL_MANAGED_BY);
        let listed = self.list_rendered_kinds(&selector).await?;
        Ok(listed
            .into_iter()
            .map(|(kind, o)| {
                let label = |key: &str| o.metadata.labels.as_ref().and_then(|l| l.get(key).cloned());
                ManagedObject {
                    kind,
                    service: label(cohort_render::LABEL_PART_OF).unwrap_or_default(),
                    tier: label("tier"),
                    name: o.metadata.name.clone().unwrap_or_default(),
                }
            })
            .collect())
    }

    async fn delete_deployment(&self, name: &str, dry_run: bool) -> Result<(), KubeError> {
        let params = DeleteParams {
            dry_run,
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match self.api::<Deployment>().delete(name, &params).await {
            Ok(_) => Ok(()),
            // Gone already: what pruning wanted.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.error(format!("delete deployment {name}"), e)),
        }
    }

    /// Why the Deployments named are not ready: pods and Warning events, one LIST each.
    async fn not_ready(&self, deployments: &[Deployment]) -> Vec<NotReady> {
        // What could not be read is said in place of the reasons: explaining a failed rollout
        // must not replace it with another error.
        let mut unreadable = vec![];
        let pods = match self.api::<Pod>().list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                unreadable.push(format!(
                    "(pods could not be read: {})",
                    self.error("list pods".into(), e)
                ));
                vec![]
            }
        };
        let events = match self
            .api::<Event>()
            .list(&ListParams::default().fields("type=Warning"))
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                unreadable.push(format!(
                    "(events could not be read: {})",
                    self.error("list events".into(), e)
                ));
                vec![]
            }
        };
        deployments
            .iter()
            .filter_map(|d| {
                let state = match rollout::rollout(d) {
                    Rollout::Done => return None,
                    Rollout::Waiting(s) | Rollout::Failed(s) => s,
                };
                let mut reasons = rollout::not_ready_reasons(d, &pods, &events);
                reasons.extend(unreadable.iter().cloned());
                Some(NotReady {
                    deployment: d.metadata.name.clone().unwrap_or_default(),
                    progress: rollout::progress(d),
                    state,
                    reasons,
                })
            })
            .collect()
    }

    /// Waits until every named Deployment has rolled out; fails at once if the controller
    /// gives up, and after `timeout` otherwise, saying why each is not ready.
    async fn wait_for_rollouts(
        &self,
        names: &[String],
        options: &ApplyOptions,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), ApplyError> {
        let started = Instant::now();
        let mut last: BTreeMap<String, (String, Instant)> = BTreeMap::new();
        let mut pending: Vec<String> = names.to_vec();
        loop {
            let mut current = vec![];
            let mut failed = false;
            for name in &pending {
                let d = self
                    .api::<Deployment>()
                    .get(name)
                    .await
                    .map_err(|e| self.error(format!("get deployment {name}"), e))?;
                match rollout::rollout(&d) {
                    Rollout::Done => progress(Progress::Ready {
                        deployment: name.clone(),
                        after: started.elapsed(),
                    }),
                    state => {
                        failed |= matches!(state, Rollout::Failed(_));
                        let line = rollout::progress(&d);
                        // Said again when it changes, and every 10 s when it does not, so a
                        // long wait never looks hung.
                        let stale = last
                            .get(name)
                            .is_none_or(|(said, at)| said != &line || at.elapsed() >= HEARTBEAT);
                        if stale {
                            progress(Progress::Waiting {
                                deployment: name.clone(),
                                progress: line.clone(),
                            });
                            last.insert(name.clone(), (line, Instant::now()));
                        }
                        current.push(d);
                    }
                }
            }
            pending = current.iter().filter_map(|d| d.metadata.name.clone()).collect();
            if pending.is_empty() {
                return Ok(());
            }
            if failed || started.elapsed() >= options.timeout {
                return Err(ApplyError::NotReady {
                    not_ready: self.not_ready(&current).await,
                    timeout: options.timeout,
                    failed,
                });
            }
            tokio::time::sleep(options.poll).await;
        }
    }

    /// Applies one service's rendered objects in the plan's order, holding the service's apply
    /// lease (not in a dry run) so no other cohort applies it meanwhile: each step's objects by
    /// server-side apply, then (unless a dry run) a wait for the step's rollouts; managed
    /// track Deployments the objects no longer name are deleted last, and only if every step
    /// before succeeded.
    pub async fn apply_service(
        &self,
        service: &str,
        objects: &[Rendered],
        options: &ApplyOptions,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), ApplyError> {
        if options.dry_run {
            return self
                .apply_service_steps(service, objects, options, progress)
                .await;
        }
        // Where everything already is as the repo says, nothing is written, so no lease is
        // needed: what was seen is said as an apply would say it.
        if !options.force_conflicts {
            let live = self.service_objects(service).await?;
            if let Some(said) = nothing_to_do(objects, &live) {
                for p in said {
                    progress(p);
                }
                return Ok(());
            }
        }
        // Every wait at most (tracks, router, the routers' reload), and a minute for the rest:
        // a holder that died frees it by then.
        let hold = options.timeout.saturating_mul(3) + Duration::from_secs(60);
        let lease = self.take_apply_lease(service, &options.holder, hold).await?;
        let result = self
            .apply_service_steps(service, objects, options, progress)
            .await;
        let released = self.release_apply_lease(lease, &options.holder).await;
        result?;
        released.map_err(ApplyError::from)
    }

    async fn apply_service_steps(
        &self,
        service: &str,
        objects: &[Rendered],
        options: &ApplyOptions,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), ApplyError> {
        let mut live = self.service_objects(service).await?;
        // Whether the router's ConfigMap was changed by this apply.
        let mut config_changed = false;
        for step in plan::plan(objects, &track_deployments(&live)) {
            match step {
                Step::Apply { what, objects, wait } => {
                    progress(Progress::Step { what });
                    let started = Instant::now();
                    let mut rollouts = vec![];
                    for o in objects {
                        let before = match live.get(&(o.kind, o.name.clone())) {
                            Some(v) => Some(v.clone()),
                            // Not labelled as cohort's (made by hand, say): looked up by name.
                            None => self.live(o).await?,
                        };
                        let unchanged = !options.dry_run
                            && !options.force_conflicts
                            && before.as_ref().is_some_and(|b| applied::up_to_date(b, &o.value));
                        let after = match (unchanged, &before) {
                            (true, Some(b)) => b.clone(),
                            _ => {
                                self.server_side_apply(o, options.dry_run, options.force_conflicts)
                                    .await?
                            }
                        };
                        let change = match unchanged {
                            true => Change::Unchanged,
                            false => compare::change(before.as_ref(), &after),
                        };
                        if o.kind == "ConfigMap" {
                            config_changed = change != Change::Unchanged;
                        }
                        progress(Progress::Applied {
                            kind: o.kind,
                            name: o.name.clone(),
                            change,
                        });
                        if o.kind == "Deployment" {
                            rollouts.push((o.name.clone(), after));
                        }
                    }
                    if wait && !options.dry_run && !rollouts.is_empty() {
                        // What the apply's answer already shows rolled out is not asked again.
                        let mut pending = vec![];
                        for (name, after) in rollouts {
                            match rolled_out(&after) {
                                true => progress(Progress::Ready {
                                    deployment: name,
                                    after: started.elapsed(),
                                }),
                                false => pending.push(name),
                            }
                        }
                        if !pending.is_empty() {
                            self.wait_for_rollouts(&pending, options, progress).await?;
                            // A wait may take minutes: the next steps judge what is live then.
                            live = self.service_objects(service).await?;
                        }
                    }
                }
                Step::ReloadRouters { config } => {
                    if !config_changed || options.dry_run {
                        continue;
                    }
                    let text = config.value["data"][cohort_render::ROUTER_CONFIG_KEY]
                        .as_str()
                        .unwrap_or_default();
                    progress(Progress::Step {
                        what: "routers reload",
                    });
                    let digest = cohort_spec::router_config::digest(text.as_bytes());
                    self.reload_routers(service, &digest, options, progress).await?;
                }
                Step::Prune { deployments } => {
                    progress(Progress::Step { what: "prune" });
                    for name in deployments {
                        self.delete_deployment(&name, options.dry_run).await?;
                        progress(Progress::Pruned { deployment: name });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{
        ApplyError, LiveObjects, Progress, check_server_supports, nothing_to_do, resource, version_number,
    };
    use crate::applied::marked;
    use crate::compare::Change;
    use serde_json::json;

    fn seed(exec: bool) -> Vec<cohort_render::Rendered> {
        let mut files = cohort_spec::scaffold::repo_files();
        if exec {
            files.pipeline = files
                .pipeline
                .map(|text| text.replace("  pre_stop:\n", "  pre_stop:\n    exec: true\n"));
        }
        let (repo, diags) = cohort_spec::repo::validate(&files);
        assert!(diags.is_empty(), "{diags:?}");
        let repo = repo.expect("valid");
        cohort_render::render_service(&repo.pipeline, &repo.services[0]).expect("renders")
    }

    #[test]
    fn the_sleep_action_is_refused_before_1_30_with_the_way_around_it() {
        let objects = seed(false);
        let err = check_server_supports(&objects, 1, 28).expect_err("1.28 lacks preStop.sleep");
        assert!(matches!(err, ApplyError::Unsupported { .. }));
        let text = err.to_string();
        assert!(text.contains("Kubernetes 1.28"), "{text}");
        assert!(text.contains("defaults.pre_stop.exec: true"), "{text}");
        assert!(check_server_supports(&objects, 1, 30).is_ok());
        assert!(check_server_supports(&seed(true), 1, 28).is_ok());
    }

    #[test]
    fn every_kind_render_makes_has_an_api_resource() {
        for o in seed(false) {
            assert!(resource(o.kind).is_some(), "{}", o.kind);
        }
        assert_eq!(version_number("28+"), Some(28));
        assert_eq!(version_number(""), None);
    }

    /// The seed's objects as the API server returns them once applied and rolled out.
    fn applied_and_rolled_out(objects: &[cohort_render::Rendered]) -> LiveObjects {
        objects
            .iter()
            .map(|o| {
                let mut v = marked(&o.value);
                v["metadata"]["managedFields"] = json!([{"manager": "cohort", "operation": "Apply"}]);
                v["metadata"]["generation"] = json!(2);
                v["metadata"]["resourceVersion"] = json!("812");
                if o.kind == "Deployment" {
                    let replicas = v["spec"]["replicas"].clone();
                    v["spec"]["progressDeadlineSeconds"] = json!(600);
                    v["status"] = json!({
                        "observedGeneration": 2, "replicas": replicas, "updatedReplicas": replicas,
                        "readyReplicas": replicas, "availableReplicas": replicas,
                        "conditions": [{"type": "Available", "status": "True"},
                                       {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]
                    });
                }
                ((o.kind, o.name.clone()), v)
            })
            .collect()
    }

    #[test]
    fn a_service_as_the_repo_says_and_rolled_out_needs_no_apply_and_is_said_unchanged() {
        let objects = seed(false);
        let said = nothing_to_do(&objects, &applied_and_rolled_out(&objects)).expect("nothing to do");
        let unchanged = said
            .iter()
            .filter(|p| {
                matches!(
                    p,
                    Progress::Applied {
                        change: Change::Unchanged,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(unchanged, objects.len());
        let deployments = objects.iter().filter(|o| o.kind == "Deployment").count();
        let ready = said
            .iter()
            .filter(|p| matches!(p, Progress::Ready { .. }))
            .count();
        assert_eq!(ready, deployments);
    }

    #[test]
    fn a_changed_missing_unrolled_or_prunable_object_means_an_apply() {
        let objects = seed(false);
        let deployment = objects
            .iter()
            .find(|o| o.kind == "Deployment" && o.label("tier") == Some("service"))
            .expect("a track Deployment");
        let key = (deployment.kind, deployment.name.clone());

        let mut scaled = applied_and_rolled_out(&objects);
        scaled.get_mut(&key).expect("live")["spec"]["replicas"] = json!(1);
        assert!(nothing_to_do(&objects, &scaled).is_none());

        let mut missing = applied_and_rolled_out(&objects);
        missing.remove(&key);
        assert!(nothing_to_do(&objects, &missing).is_none());

        let mut rolling = applied_and_rolled_out(&objects);
        rolling.get_mut(&key).expect("live")["status"]["observedGeneration"] = json!(1);
        assert!(nothing_to_do(&objects, &rolling).is_none());

        let mut old_version = applied_and_rolled_out(&objects);
        let mut leftover = old_version[&key].clone();
        leftover["metadata"]["name"] = json!("account-service-internal-v1-17-0");
        old_version.insert(
            ("Deployment", "account-service-internal-v1-17-0".into()),
            leftover,
        );
        assert!(nothing_to_do(&objects, &old_version).is_none());
    }
}
