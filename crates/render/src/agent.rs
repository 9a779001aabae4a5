//! The in-cluster agent's objects (`cohort render --agent`, and deploy/install.yaml): its
//! ServiceAccount, a Role with what it uses in the pipeline's namespace and nothing
//! cluster-wide, the RoleBinding, and its Deployment, whose token comes from a Secret the
//! operator creates.

use std::collections::BTreeMap;

use cohort_core::Pipeline;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SecretVolumeSource, SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::objects::{LABEL_MANAGED_BY, RenderError, Rendered, rendered};

/// The name of the agent's ServiceAccount, Role, RoleBinding and Deployment.
pub const AGENT_NAME: &str = "cohort-agent";
/// The Secret the agent's control-API token is read from (key `token`).
pub const AGENT_TOKEN_SECRET: &str = "cohort-agent-token";
/// The agent's admin port (`/live`, `/ready`, `/metrics`).
pub const AGENT_ADMIN_PORT: i32 = 9102;
/// The ConfigMap the generic install reads its git remote (key `git`) and branch (key
/// `branch`) from; the operator creates it.
pub const AGENT_CONFIG_MAP: &str = "cohort-agent";

/// Where the agent pulls from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentSource {
    /// A cohort control API, as `cluster`.
    Control {
        /// `https://cohort.example.com`.
        url: String,
        /// The cluster's name in the server's tokens file.
        cluster: String,
    },
    /// A git remote of the release repo.
    Git {
        /// The remote's URL.
        url: String,
        /// The branch.
        branch: String,
    },
    /// A git remote and branch read when the pod starts from the keys `git` and `branch` of
    /// the ConfigMap [`AGENT_CONFIG_MAP`] in the agent's namespace: one manifest serves every
    /// remote, so it can be published as it is (deploy/install.yaml).
    GitFromConfigMap,
}

/// Where the agent runs, and from which image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentPlacement<'a> {
    /// The pipeline's namespace, written into every object. `None` leaves it out, so that
    /// `kubectl apply -n NS` places them; the RoleBinding's subject is then the ServiceAccount
    /// of the binding's own namespace, which is what the API server assumes when a
    /// RoleBinding's ServiceAccount subject names none.
    pub namespace: Option<&'a str>,
    /// The image, e.g. cohort.yaml's `router.image`: the agent is the same binary.
    pub image: &'a str,
}

impl<'a> AgentPlacement<'a> {
    /// In the pipeline's namespace, from its router image.
    pub fn of(pipeline: &'a Pipeline) -> AgentPlacement<'a> {
        AgentPlacement {
            namespace: Some(pipeline.namespace.as_str()),
            image: &pipeline.router.image,
        }
    }
}

/// The environment variables the generic install's container reads the ConfigMap into; its
/// arguments name them as `$(VAR)`, which the kubelet expands.
const GIT_ENV: &str = "COHORT_AGENT_GIT";
const BRANCH_ENV: &str = "COHORT_AGENT_BRANCH";

/// The metadata of one of the process's own objects (the agent's, the autopilot's): named
/// after it, labelled as managed by it so that no apply of the release repo prunes them.
pub(crate) fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(BTreeMap::from([
            (LABEL_MANAGED_BY.to_string(), name.to_string()),
            ("app".to_string(), name.to_string()),
        ])),
        ..ObjectMeta::default()
    }
}

/// A ServiceAccount `name`, a Role `name` with `rules` and the RoleBinding between them, in
/// `namespace` (or the one `kubectl apply -n` gives).
pub(crate) fn identity(
    name: &str,
    namespace: Option<&str>,
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
) -> Result<Vec<Rendered>, RenderError> {
    let account = ServiceAccount {
        metadata: meta(name, namespace),
        ..ServiceAccount::default()
    };
    let role = Role {
        metadata: meta(name, namespace),
        rules: Some(rules),
    };
    let binding = RoleBinding {
        metadata: meta(name, namespace),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: namespace.map(Into::into),
            ..Subject::default()
        }]),
    };
    Ok(vec![
        rendered("ServiceAccount", name, &account)?,
        rendered("Role", name, &role)?,
        rendered("RoleBinding", name, &binding)?,
    ])
}

/// The pod of one of cohort's own processes, as its Deployment runs it.
pub(crate) struct ProcessPod<'a> {
    /// The Deployment's, ServiceAccount's and app label's name.
    pub name: &'a str,
    /// The container's name.
    pub container: &'a str,
    pub namespace: Option<&'a str>,
    pub image: &'a str,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub mounts: Vec<VolumeMount>,
    pub volumes: Vec<Volume>,
    /// Its admin port, serving `/live` and `/ready`.
    pub admin_port: i32,
    pub replicas: i32,
    /// `Recreate` (never two at once) or `RollingUpdate`.
    pub strategy: &'a str,
    pub termination_grace_seconds: i64,
}

impl ProcessPod<'_> {
    /// Its Deployment: non-root, read-only root filesystem with an emptyDir for its cache,
    /// probes on the admin port, modest requests.
    pub(crate) fn deployment(self) -> Result<Rendered, RenderError> {
        let mut mounts = self.mounts;
        let mut volumes = self.volumes;
        mounts.push(VolumeMount {
            name: "cache".into(),
            mount_path: "/var/cache/cohort".into(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "cache".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        let probe = |path: &str| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(self.admin_port),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(10),
            ..Probe::default()
        };
        let labels = BTreeMap::from([("app".to_string(), self.name.to_string())]);
        let deployment = Deployment {
            metadata: meta(self.name, self.namespace),
            spec: Some(DeploymentSpec {
                replicas: Some(self.replicas),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..LabelSelector::default()
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some(self.strategy.into()),
                    ..DeploymentStrategy::default()
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(self.name.into()),
                        termination_grace_period_seconds: Some(self.termination_grace_seconds),
                        security_context: Some(PodSecurityContext {
                            run_as_non_root: Some(true),
                            run_as_user: Some(65532),
                            ..PodSecurityContext::default()
                        }),
                        containers: vec![Container {
                            name: self.container.into(),
                            image: Some(self.image.into()),
                            args: Some(self.args),
                            env: (!self.env.is_empty()).then_some(self.env),
                            ports: Some(vec![ContainerPort {
                                name: Some("admin".into()),
                                container_port: self.admin_port,
                                ..ContainerPort::default()
                            }]),
                            liveness_probe: Some(probe("/live")),
                            readiness_probe: Some(probe("/ready")),
                            resources: Some(ResourceRequirements {
                                requests: Some(BTreeMap::from([
                                    ("cpu".to_string(), Quantity("50m".into())),
                                    ("memory".to_string(), Quantity("64Mi".into())),
                                ])),
                                limits: Some(BTreeMap::from([(
                                    "memory".to_string(),
                                    Quantity("256Mi".into()),
                                )])),
                                ..ResourceRequirements::default()
                            }),
                            security_context: Some(SecurityContext {
                                allow_privilege_escalation: Some(false),
                                read_only_root_filesystem: Some(true),
                                ..SecurityContext::default()
                            }),
                            volume_mounts: Some(mounts),
                            ..Container::default()
                        }],
                        volumes: Some(volumes),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        };
        rendered("Deployment", self.name, &deployment)
    }
}

/// Mounts the CA certificates under key `ca.crt` of the ConfigMap `name` at [`AGENT_CA_FILE`].
pub(crate) fn ca_volume(name: &str, mounts: &mut Vec<VolumeMount>, volumes: &mut Vec<Volume>) {
    mounts.push(VolumeMount {
        name: "ca".into(),
        mount_path: "/etc/cohort/ca".into(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    volumes.push(Volume {
        name: "ca".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: name.into(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
}

/// Where the agent finds the CA certificates in the ConfigMap `--ca-configmap` names.
pub const AGENT_CA_FILE: &str = "/etc/cohort/ca/ca.crt";

/// The agent's objects, in the order `kubectl apply` should create them. With `ca_config_map`,
/// the agent also trusts the CA certificates under key `ca.crt` of that ConfigMap (a company
/// CA in front of the control API or the git server).
pub fn agent(
    place: AgentPlacement<'_>,
    source: &AgentSource,
    ca_config_map: Option<&str>,
) -> Result<Vec<Rendered>, RenderError> {
    let ns = place.namespace;
    let mut args = vec!["agent".to_string()];
    let mut env = vec![];
    let mut mounts = vec![];
    let mut volumes = vec![];
    match source {
        AgentSource::Control { url, cluster } => {
            args.extend([
                "--control".into(),
                url.clone(),
                "--cluster".into(),
                cluster.clone(),
                "--token-file".into(),
                "/var/run/secrets/cohort/token".into(),
            ]);
            mounts.push(VolumeMount {
                name: "token".into(),
                mount_path: "/var/run/secrets/cohort".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
            volumes.push(Volume {
                name: "token".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(AGENT_TOKEN_SECRET.into()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
        AgentSource::Git { url, branch } => {
            args.extend([
                "--git".into(),
                url.clone(),
                "--branch".into(),
                branch.clone(),
                "--mirror-dir".into(),
                "/var/cache/cohort/mirror".into(),
            ]);
        }
        AgentSource::GitFromConfigMap => {
            args.extend([
                "--git".into(),
                format!("$({GIT_ENV})"),
                "--branch".into(),
                format!("$({BRANCH_ENV})"),
                "--mirror-dir".into(),
                "/var/cache/cohort/mirror".into(),
            ]);
            // Both keys required: a reference to a variable that is not set would reach the
            // agent as the literal `$(VAR)`, whereas a missing key stops the pod with
            // CreateContainerConfigError naming it.
            for (var, key) in [(GIT_ENV, "git"), (BRANCH_ENV, "branch")] {
                env.push(EnvVar {
                    name: var.into(),
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: AGENT_CONFIG_MAP.into(),
                            key: key.into(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                    ..EnvVar::default()
                });
            }
        }
    }
    if let Some(name) = ca_config_map {
        let flag = match source {
            AgentSource::Control { .. } => "--ca-file",
            AgentSource::Git { .. } | AgentSource::GitFromConfigMap => "--git-ca-file",
        };
        args.extend([flag.into(), AGENT_CA_FILE.into()]);
        ca_volume(name, &mut mounts, &mut volumes);
    }
    args.extend(["--admin".into(), format!("0.0.0.0:{AGENT_ADMIN_PORT}")]);
    let mut objects = identity(AGENT_NAME, ns, crate::rbac::agent_rules())?;
    objects.push(
        ProcessPod {
            name: AGENT_NAME,
            container: "agent",
            namespace: ns,
            image: place.image,
            args,
            env,
            mounts,
            volumes,
            admin_port: AGENT_ADMIN_PORT,
            // One agent per cluster: two would apply the same revision twice over.
            replicas: 1,
            strategy: "Recreate",
            // Room for an apply under way to finish its rollout wait on shutdown.
            termination_grace_seconds: 330,
        }
        .deployment()?,
    );
    Ok(objects)
}

#[cfg(test)]
mod tests;
