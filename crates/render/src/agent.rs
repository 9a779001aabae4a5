//! The in-cluster agent's objects (`cohort render --agent`): its ServiceAccount, a Role with
//! what it uses in the pipeline's namespace and nothing cluster-wide, the RoleBinding, and
//! its Deployment, whose token comes from a Secret the operator creates.

use std::collections::BTreeMap;

use cohort_core::Pipeline;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecretVolumeSource, SecurityContext,
    ServiceAccount, Volume, VolumeMount,
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
/// The label value marking the agent's own objects (not the release repo's).
pub const AGENT_MANAGER: &str = "cohort-agent";

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
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(BTreeMap::from([
            (LABEL_MANAGED_BY.to_string(), AGENT_MANAGER.to_string()),
            ("app".to_string(), AGENT_NAME.to_string()),
        ])),
        ..ObjectMeta::default()
    }
}

/// Where the agent finds the CA certificates in the ConfigMap `--ca-configmap` names.
pub const AGENT_CA_FILE: &str = "/etc/cohort/ca/ca.crt";

/// The agent's objects, in the order `kubectl apply` should create them. With `ca_config_map`,
/// the agent also trusts the CA certificates under key `ca.crt` of that ConfigMap (a company
/// CA in front of the control API or the git server).
pub fn agent(
    pipeline: &Pipeline,
    source: &AgentSource,
    ca_config_map: Option<&str>,
) -> Result<Vec<Rendered>, RenderError> {
    let ns = pipeline.namespace.as_str();
    let account = ServiceAccount {
        metadata: meta(AGENT_NAME, ns),
        ..ServiceAccount::default()
    };
    let role = Role {
        metadata: meta(AGENT_NAME, ns),
        rules: Some(crate::rbac::agent_rules()),
    };
    let binding = RoleBinding {
        metadata: meta(AGENT_NAME, ns),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: AGENT_NAME.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: AGENT_NAME.into(),
            namespace: Some(ns.into()),
            ..Subject::default()
        }]),
    };
    let mut args = vec!["agent".to_string()];
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
    }
    if let Some(name) = ca_config_map {
        let flag = match source {
            AgentSource::Control { .. } => "--ca-file",
            AgentSource::Git { .. } => "--git-ca-file",
        };
        args.extend([flag.into(), AGENT_CA_FILE.into()]);
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
    args.extend(["--admin".into(), format!("0.0.0.0:{AGENT_ADMIN_PORT}")]);
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
            port: IntOrString::Int(AGENT_ADMIN_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    };
    let labels = BTreeMap::from([("app".to_string(), AGENT_NAME.to_string())]);
    let deployment = Deployment {
        metadata: meta(AGENT_NAME, ns),
        spec: Some(DeploymentSpec {
            // One agent per cluster: two would apply the same revision twice over.
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(AGENT_NAME.into()),
                    // Room for an apply under way to finish its rollout wait on shutdown.
                    termination_grace_period_seconds: Some(330),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![Container {
                        name: "agent".into(),
                        image: Some(pipeline.router.image.clone()),
                        args: Some(args),
                        ports: Some(vec![ContainerPort {
                            name: Some("admin".into()),
                            container_port: AGENT_ADMIN_PORT,
                            ..ContainerPort::default()
                        }]),
                        liveness_probe: Some(probe("/live")),
                        readiness_probe: Some(probe("/ready")),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([
                                ("cpu".to_string(), Quantity("50m".into())),
                                ("memory".to_string(), Quantity("64Mi".into())),
                            ])),
                            limits: Some(BTreeMap::from([("memory".to_string(), Quantity("256Mi".into()))])),
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
    Ok(vec![
        rendered("ServiceAccount", AGENT_NAME, &account)?,
        rendered("Role", AGENT_NAME, &role)?,
        rendered("RoleBinding", AGENT_NAME, &binding)?,
        rendered("Deployment", AGENT_NAME, &deployment)?,
    ])
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{AgentSource, agent};

    fn control() -> AgentSource {
        AgentSource::Control {
            url: "https://cohort.example.com".into(),
            cluster: "eu-west".into(),
        }
    }

    fn git() -> AgentSource {
        AgentSource::Git {
            url: "https://git.example.com/release.git".into(),
            branch: "main".into(),
        }
    }

    fn container_args(pod: &Value) -> Vec<&str> {
        pod["containers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect()
    }

    fn seed() -> cohort_core::Pipeline {
        let (repo, diags) = cohort_spec::repo::validate(&cohort_spec::scaffold::repo_files());
        assert!(diags.is_empty(), "{diags:?}");
        repo.expect("valid").pipeline
    }

    #[test]
    fn the_agent_gets_a_namespaced_role_its_token_from_a_secret_and_probes() {
        let pipeline = seed();
        let objects = agent(&pipeline, &control(), None).expect("renders");
        let kinds: Vec<&str> = objects.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding", "Deployment"]);
        for o in &objects {
            assert_eq!(
                o.value["metadata"]["namespace"],
                pipeline.namespace.as_str(),
                "{}",
                o.kind
            );
            assert_eq!(
                o.value["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "cohort-agent"
            );
        }
        let role = &objects[1].value;
        let text = role.to_string();
        assert!(
            !text.contains("pods/proxy") && !text.contains('*') && !text.contains("secrets"),
            "{text}"
        );
        let configmaps = role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .find(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|x| x == "configmaps"))
            })
            .expect("configmaps rule");
        assert!(
            configmaps["verbs"]
                .as_array()
                .expect("verbs")
                .iter()
                .any(|v| v == "patch")
        );
        let binding = &objects[2].value;
        assert_eq!(binding["subjects"][0]["name"], "cohort-agent");
        assert_eq!(binding["roleRef"]["kind"], "Role");
        let pod = &objects[3].value["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "cohort-agent");
        let args = container_args(pod);
        assert_eq!(
            args,
            [
                "agent",
                "--control",
                "https://cohort.example.com",
                "--cluster",
                "eu-west",
                "--token-file",
                "/var/run/secrets/cohort/token",
                "--admin",
                "0.0.0.0:9102"
            ]
        );
        assert_eq!(pod["volumes"][0]["secret"]["secretName"], "cohort-agent-token");
        assert_eq!(
            pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
            "/ready"
        );
        assert_eq!(pod["containers"][0]["image"], pipeline.router.image.as_str());

        let objects = agent(&pipeline, &git(), None).expect("renders");
        let pod = &objects[3].value["spec"]["template"]["spec"];
        let args = pod["containers"][0]["args"].to_string();
        assert!(args.contains("--git") && args.contains("--mirror-dir"), "{args}");
        assert!(!pod.to_string().contains("cohort-agent-token"));
        assert!(!pod.to_string().contains("ca.crt"), "no CA unless asked");
    }

    #[test]
    fn a_ca_config_map_is_mounted_and_given_to_the_sources_ca_flag() {
        let pipeline = seed();
        for (source, flag) in [(control(), "--ca-file"), (git(), "--git-ca-file")] {
            let objects = agent(&pipeline, &source, Some("company-ca")).expect("renders");
            let pod = &objects[3].value["spec"]["template"]["spec"];
            let args = container_args(pod);
            let at = args.iter().position(|a| *a == flag).expect("the CA flag");
            assert_eq!(args[at + 1], "/etc/cohort/ca/ca.crt");
            let volume = pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| v["name"] == "ca")
                .expect("the CA volume");
            assert_eq!(volume["configMap"]["name"], "company-ca");
            let mount = pod["containers"][0]["volumeMounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .find(|m| m["name"] == "ca")
                .expect("the CA mount");
            assert_eq!(mount["mountPath"], "/etc/cohort/ca");
            assert_eq!(mount["readOnly"], true);
        }
    }
}
