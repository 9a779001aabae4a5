//! Kubernetes objects per service, with the names and labels people already use.

use std::collections::BTreeMap;

use cohort_core::model::Protocol;
use cohort_core::router_config::{
    EndpointsRef, RouterConfig, RouterHealthCheck, RouterMirror, RouterRoute, RouterTrack, TrackWeight,
};
use cohort_core::{Duration, Pipeline, Route, TrackName, Version};
use cohort_spec::Service;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, ExecAction, GRPCAction,
    HTTPGetAction, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecurityContext, Service as KubeService, ServiceAccount, ServicePort,
    ServiceSpec as KubeServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// Label that marks an object as cohort's, so inventory and pruning find it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label naming the service an object belongs to.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// The value of `managed-by`, and the server-side apply field manager.
pub const MANAGER: &str = "cohort";
/// The router config's key in the `<svc>-router` ConfigMap.
pub const ROUTER_CONFIG_KEY: &str = "router.yaml";
const VERSION_ANNOTATION: &str = "cohort.dev/version";
/// On router pods: the tracks their config routes to.
const TRACKS_ANNOTATION: &str = "cohort.dev/tracks";
const CONFIG_DIR: &str = "/etc/cohort";

/// The kinds cohort renders for a service, and so the only ones `apply` lists and an agent
/// applies.
pub const SERVICE_KINDS: [&str; 7] = [
    "Deployment",
    "Service",
    "ConfigMap",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Role",
    "RoleBinding",
];

/// One rendered object.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// `Deployment`, `Service`, ...
    pub kind: &'static str,
    /// `metadata.name`.
    pub name: String,
    /// The object as the API server takes it.
    pub value: Value,
}

impl Rendered {
    /// The value of label `key` in its metadata, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.value["metadata"]["labels"][key].as_str()
    }
}

/// Why a service could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// An object did not serialize (a bug: typed objects always should).
    #[error("cannot serialize {kind} {name}")]
    Serialize {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

pub(crate) fn rendered<T: serde::Serialize>(
    kind: &'static str,
    name: &str,
    obj: &T,
) -> Result<Rendered, RenderError> {
    let value = serde_json::to_value(obj).map_err(|source| RenderError::Serialize {
        kind,
        name: name.to_string(),
        source,
    })?;
    Ok(Rendered {
        kind,
        name: name.to_string(),
        value,
    })
}

/// `extra` plus the labels that mark an object as cohort's and as part of `service`.
fn owned_labels(service: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut l = labels(extra);
    l.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
    l.insert(LABEL_PART_OF.into(), service.into());
    l
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

fn http_probe(path: &str, port: &str, period_secs: u64) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_secs.max(1) as i32),
        timeout_seconds: Some(1),
        failure_threshold: Some(3),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

/// A probe of the service's pods: gRPC's health service for a gRPC service (its pods need not
/// speak HTTP/1.1, which the kubelet's HTTP probes do), else `GET path`.
fn app_probe(svc: &Service, path: &str, period_secs: u64) -> Probe {
    let mut probe = http_probe(path, "http", period_secs);
    if svc.spec.protocol == Protocol::Grpc {
        probe.http_get = None;
        probe.grpc = Some(GRPCAction {
            port: i32::from(svc.spec.port),
            service: None,
        });
    }
    probe
}

fn rolling(max_surge: IntOrString) -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(max_surge),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

/// The router's config for one service: the tracks that have a version, and each cohort's
/// route with the shares of versionless tracks handed to the rest, said explicitly.
pub fn router_config(pipeline: &Pipeline, svc: &Service) -> RouterConfig {
    let name = &svc.spec.name;
    let tracks = pipeline
        .stages
        .iter()
        .filter_map(|t| {
            let version = svc.state.version(t)?;
            Some(RouterTrack {
                name: t.clone(),
                version: version.clone(),
                backends: vec![format!("{name}-{t}.{}.svc:{}", pipeline.namespace, svc.spec.port)],
                endpoints: Some(EndpointsRef {
                    service: format!("{name}-{t}"),
                    port: "http".into(),
                }),
            })
        })
        .collect();
    let route = |cohort: Option<&str>, r: &Route| {
        let r = &ramped(pipeline, svc, r);
        let present = |t: &TrackName| svc.state.tracks.contains_key(t);
        let (weights, redistributed) = match r.redistribute(present) {
            Ok(out) => (out.route.legs().to_vec(), out.gave_up),
            Err(_) => (vec![], r.legs().to_vec()),
        };
        let tw = |legs: Vec<(TrackName, cohort_core::Weight)>| {
            legs.into_iter()
                .map(|(track, weight)| TrackWeight { track, weight })
                .collect()
        };
        RouterRoute {
            cohort: cohort.map(str::to_string),
            weights: tw(weights),
            redistributed: tw(redistributed),
        }
    };
    RouterConfig {
        service: name.to_string(),
        cohort_header: pipeline.cohort_header.clone(),
        protocol: svc.spec.protocol,
        trusted_peers: pipeline.trusted_peers.clone(),
        sticky: pipeline.sticky.clone(),
        health_check: RouterHealthCheck {
            path: svc.spec.readiness.path.clone(),
            interval: svc.spec.readiness.interval,
            rise: 2,
            fall: 3,
        },
        tracks,
        cohorts: svc.spec.cohorts.iter().map(|(c, r)| route(Some(c), r)).collect(),
        default_route: route(None, &svc.spec.default_route),
        // A mirror works while both of its tracks run a version.
        mirrors: svc
            .spec
            .mirrors
            .iter()
            .filter(|m| svc.state.version(&m.from).is_some() && svc.state.version(&m.to).is_some())
            .map(|m| RouterMirror {
                cohort: m.cohort.clone(),
                from: m.from.clone(),
                to: m.to.clone(),
                share: m.share,
                max_body: m.max_body,
            })
            .collect(),
    }
}

/// `r` with each track part-way through its ramp held to its current step; what it gives up
/// stays with the route's most promoted other track (the one its traffic came from).
fn ramped(pipeline: &Pipeline, svc: &Service, r: &Route) -> Route {
    let mut out = r.clone();
    for (track, step) in &svc.state.ramp {
        let Some(max) = pipeline.autopilot.stage(track).ramp.get(*step).copied() else {
            continue;
        };
        let receiver = r
            .legs()
            .iter()
            .map(|(t, _)| t)
            .filter(|t| *t != track)
            .max_by_key(|t| pipeline.stages.iter().position(|s| s == *t));
        if let Some(receiver) = receiver {
            out = out.cap(track, max, receiver);
        }
    }
    out
}

/// Renders one service, in the order objects should be applied: the router's front door
/// first, then each track with a version.
pub fn render_service(pipeline: &Pipeline, svc: &Service) -> Result<Vec<Rendered>, RenderError> {
    let name = svc.spec.name.as_str();
    let ns = pipeline.namespace.as_str();
    let mut out = vec![];

    let owner = |extra: &[(&str, &str)]| owned_labels(name, extra);

    let router_name = format!("{name}-router");
    let router_selector = labels(&[("app", name), ("tier", "router")]);
    let http_port = |port: u16| ServicePort {
        name: Some("http".into()),
        port: i32::from(port),
        target_port: Some(IntOrString::String("http".into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };

    let front = KubeService {
        metadata: meta(name, ns, owner(&[("app", name), ("tier", "service")])),
        spec: Some(KubeServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(router_selector.clone()),
            ports: Some(vec![http_port(pipeline.router.port)]),
            ..KubeServiceSpec::default()
        }),
        ..KubeService::default()
    };
    out.push(rendered("Service", name, &front)?);

    let config_text = format!(
        "# Generated by cohort from the release repo; change the repo, not this.\n{}",
        cohort_yaml::to_yaml(
            &serde_json::to_value(router_config(pipeline, svc)).map_err(|source| RenderError::Serialize {
                kind: "ConfigMap",
                name: router_name.clone(),
                source,
            })?
        )
    );
    let cm = ConfigMap {
        metadata: meta(&router_name, ns, owner(&[("app", name), ("tier", "router")])),
        data: Some(BTreeMap::from([(ROUTER_CONFIG_KEY.to_string(), config_text)])),
        ..ConfigMap::default()
    };
    out.push(rendered("ConfigMap", &router_name, &cm)?);

    out.extend(router_access(ns, name)?);

    let r = &pipeline.router;
    let router_container = Container {
        name: "router".into(),
        image: Some(r.image.clone()),
        args: Some(vec![
            "router".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{ROUTER_CONFIG_KEY}"),
            "--listen".into(),
            format!("0.0.0.0:{}", r.port),
            "--admin".into(),
            format!("0.0.0.0:{}", r.admin_port),
            // Requests are balanced over the tracks' ready pods, found in their EndpointSlices.
            "--discovery".into(),
            "kubernetes".into(),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: i32::from(r.port),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: i32::from(r.admin_port),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(http_probe("/ready", "admin", 2)),
        liveness_probe: Some(http_probe("/live", "admin", 10)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("100m".into())),
                ("memory".into(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("256Mi".into()))])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let router = Deployment {
        metadata: meta(&router_name, ns, owner(&[("app", name), ("tier", "router")])),
        spec: Some(DeploymentSpec {
            replicas: Some(r.replicas as i32),
            selector: LabelSelector {
                match_labels: Some(router_selector.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(rolling(IntOrString::Int(1))),
            revision_history_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(owner(&[("app", name), ("tier", "router")])),
                    // Routers reload a changed config by themselves, but the kubelet may take a
                    // minute to update the mounted file. When the set of tracks changes, the
                    // routers roll instead, so `cohort apply` has waited for routers on the new
                    // config before it deletes a Deployment the old config still sends to.
                    annotations: Some(BTreeMap::from([(
                        TRACKS_ANNOTATION.to_string(),
                        pipeline
                            .stages
                            .iter()
                            .filter(|t| svc.state.version(t).is_some())
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(" "),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![router_container],
                    service_account_name: Some(router_name.clone()),
                    // The router drains itself on SIGTERM (ready turns 503, then it stops accepting).
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        // A whole-directory mount (not subPath) so ConfigMap updates reach running pods.
                        config_map: Some(ConfigMapVolumeSource {
                            name: router_name.clone(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    out.push(rendered("Deployment", &router_name, &router)?);
    out.push(rendered(
        "PodDisruptionBudget",
        &router_name,
        &pdb(
            &router_name,
            ns,
            owner(&[("app", name), ("tier", "router")]),
            router_selector,
            IntOrString::Int(1),
        ),
    )?);

    for track in &pipeline.stages {
        let Some(version) = svc.state.version(track) else {
            continue;
        };
        let svc_name = format!("{name}-{track}");
        let selector = labels(&[("app", name), ("tier", "service"), ("track", track.as_str())]);
        let track_service = KubeService {
            metadata: meta(
                &svc_name,
                ns,
                owner(&[("app", &svc_name), ("tier", "service"), ("track", track.as_str())]),
            ),
            spec: Some(KubeServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(selector.clone()),
                ports: Some(vec![ServicePort {
                    // Says what the pods speak to whatever reads Services (meshes, gateways).
                    app_protocol: svc
                        .spec
                        .protocol
                        .is_http2()
                        .then(|| "kubernetes.io/h2c".to_string()),
                    ..http_port(svc.spec.port)
                }]),
                ..KubeServiceSpec::default()
            }),
            ..KubeService::default()
        };
        out.push(rendered("Service", &svc_name, &track_service)?);
        let deployment = track_deployment(pipeline, svc, track, version);
        out.push(rendered(
            "Deployment",
            &deployment_name(name, track, version),
            &deployment,
        )?);
        if pipeline.stages.last() == Some(track) {
            out.push(rendered(
                "PodDisruptionBudget",
                &svc_name,
                &pdb(
                    &svc_name,
                    ns,
                    owner(&[("app", &svc_name), ("tier", "service"), ("track", track.as_str())]),
                    selector,
                    IntOrString::String("10%".into()),
                ),
            )?);
        }
    }
    Ok(out)
}

/// The router's identity, all named `<svc>-router`: a ServiceAccount, a Role that may list and
/// watch the namespace's EndpointSlices (where its tracks' pods are) and nothing else, and the
/// RoleBinding between them. An agent applies these only exactly as rendered here.
pub fn router_access(namespace: &str, service: &str) -> Result<Vec<Rendered>, RenderError> {
    let name = format!("{service}-router");
    let labels = owned_labels(service, &[("app", service), ("tier", "router")]);
    let account = ServiceAccount {
        metadata: meta(&name, namespace, labels.clone()),
        ..ServiceAccount::default()
    };
    let role = Role {
        metadata: meta(&name, namespace, labels.clone()),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".into()]),
            resources: Some(vec!["endpointslices".into()]),
            verbs: vec!["list".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta(&name, namespace, labels),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.clone(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        }]),
    };
    Ok(vec![
        rendered("ServiceAccount", &name, &account)?,
        rendered("Role", &name, &role)?,
        rendered("RoleBinding", &name, &binding)?,
    ])
}

fn pdb(
    name: &str,
    ns: &str,
    l: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
    max_unavailable: IntOrString,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(name, ns, l),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(max_unavailable),
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// `<svc>-<track>-v<version with dashes>`, e.g. `account-service-internal-v1-18-0`.
pub fn deployment_name(service: &str, track: &TrackName, version: &Version) -> String {
    format!("{service}-{track}-v{}", version.name_slug())
}

fn track_deployment(pipeline: &Pipeline, svc: &Service, track: &TrackName, version: &Version) -> Deployment {
    let name = svc.spec.name.as_str();
    let selector = labels(&[
        ("app", name),
        ("tier", "service"),
        ("track", track.as_str()),
        ("version", version.as_str()),
    ]);
    let pod_labels = owned_labels(
        name,
        &[
            ("app", name),
            ("tier", "service"),
            ("track", track.as_str()),
            ("version", version.as_str()),
        ],
    );
    let mut metadata = meta(
        &deployment_name(name, track, version),
        &pipeline.namespace,
        pod_labels.clone(),
    );
    metadata.annotations = Some(BTreeMap::from([(
        VERSION_ANNOTATION.to_string(),
        version.to_string(),
    )]));
    let pause = pipeline.defaults.pre_stop.pause;
    let pre_stop = if pipeline.defaults.pre_stop.exec {
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["sleep".into(), pause.as_secs_ceil().to_string()]),
            }),
            ..LifecycleHandler::default()
        }
    } else {
        LifecycleHandler {
            sleep: Some(SleepAction {
                seconds: pause.as_secs_ceil() as i64,
            }),
            ..LifecycleHandler::default()
        }
    };
    let quantities = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect())
    };
    let container = Container {
        name: "app".into(),
        image: Some(format!("{}:{version}", svc.spec.image)),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(svc.spec.port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: (!svc.spec.env.is_empty()).then(|| {
            svc.spec
                .env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    ..EnvVar::default()
                })
                .collect()
        }),
        readiness_probe: Some(app_probe(
            svc,
            &svc.spec.readiness.path,
            svc.spec.readiness.interval.as_secs_ceil(),
        )),
        liveness_probe: svc
            .spec
            .liveness
            .as_ref()
            .map(|l| app_probe(svc, &l.path, l.interval.as_secs_ceil())),
        resources: Some(ResourceRequirements {
            requests: quantities(&svc.spec.requests),
            limits: quantities(&svc.spec.limits),
            ..ResourceRequirements::default()
        }),
        // A zero pause means no preStop at all: API servers before 1.33 refuse `sleep: 0`.
        lifecycle: (pause > Duration::ZERO).then(|| Lifecycle {
            pre_stop: Some(pre_stop),
            ..Lifecycle::default()
        }),
        ..Container::default()
    };
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(svc.spec.replicas.get(track).copied().unwrap_or(1) as i32),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            strategy: Some(rolling(IntOrString::String("25%".into()))),
            revision_history_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // Room for the preStop pause and then the app's own shutdown.
                    termination_grace_period_seconds: Some(pause.as_secs_ceil() as i64 + 30),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
