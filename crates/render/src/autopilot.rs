//! The autopilot's objects (`cohort render --autopilot`): its ServiceAccount, a Role with
//! only what it reads, its checks' Jobs and its Lease, the RoleBinding, and a Deployment of replicas of which
//! the Lease's holder acts. Its decisions are commits pushed to the release repo's remote,
//! with credentials from a Secret the operator creates.

use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume, VolumeMount};

use crate::agent::{AGENT_CA_FILE, AgentPlacement, ProcessPod, ca_volume, identity};
use crate::objects::{RenderError, Rendered};

/// The name of the autopilot's ServiceAccount, Role, RoleBinding, Deployment and Lease.
pub const AUTOPILOT_NAME: &str = "cohort-autopilot";
/// The Secret holding its git credentials: key `credentials`, one line `USER:TOKEN`.
pub const AUTOPILOT_GIT_SECRET: &str = "cohort-autopilot-git";
/// Its admin port (`/live`, `/ready`, `/metrics`).
pub const AUTOPILOT_ADMIN_PORT: i32 = 9103;

/// Where the credentials file is mounted.
const CREDENTIALS_DIR: &str = "/var/run/secrets/cohort-git";

/// How the autopilot is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutopilotSetup<'a> {
    /// Its namespace (the pipeline's) and image.
    pub place: AgentPlacement<'a>,
    /// The release repo's git remote, which it fetches and pushes to.
    pub git: &'a str,
    /// The branch.
    pub branch: &'a str,
    /// Where the release repo sits in the git repository, if not at the top.
    pub path: Option<&'a str>,
    /// A ConfigMap whose key `ca.crt` holds CA certificates to trust for the remote.
    pub ca_config_map: Option<&'a str>,
    /// How many replicas (one acts; the others take over within three intervals).
    pub replicas: i32,
}

/// The autopilot's objects, in the order `kubectl apply` should create them. An https remote
/// gets its credentials from the Secret [`AUTOPILOT_GIT_SECRET`]; cohort never sends them over
/// plain http, so another remote gets none.
pub fn autopilot(setup: &AutopilotSetup<'_>) -> Result<Vec<Rendered>, RenderError> {
    let ns = setup.place.namespace;
    let mut args: Vec<String> = vec![
        "autopilot".into(),
        "--git".into(),
        setup.git.into(),
        "--branch".into(),
        setup.branch.into(),
        "--mirror-dir".into(),
        "/var/cache/cohort/mirror".into(),
        "--lease".into(),
        AUTOPILOT_NAME.into(),
        "--admin".into(),
        format!("0.0.0.0:{AUTOPILOT_ADMIN_PORT}"),
    ];
    if let Some(path) = setup.path {
        args.extend(["--path".into(), path.into()]);
    }
    let (mut mounts, mut volumes) = (vec![], vec![]);
    if setup.git.starts_with("https://") {
        args.extend([
            "--git-credentials-file".into(),
            format!("{CREDENTIALS_DIR}/credentials"),
        ]);
        mounts.push(VolumeMount {
            name: "git-credentials".into(),
            mount_path: CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "git-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(AUTOPILOT_GIT_SECRET.into()),
                // Only the key it reads; the file is readable by its user alone.
                items: Some(vec![KeyToPath {
                    key: "credentials".into(),
                    path: "credentials".into(),
                    mode: None,
                }]),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(name) = setup.ca_config_map {
        args.extend(["--git-ca-file".into(), AGENT_CA_FILE.into()]);
        ca_volume(name, &mut mounts, &mut volumes);
    }
    let mut objects = identity(AUTOPILOT_NAME, ns, crate::rbac::autopilot_rules(AUTOPILOT_NAME))?;
    objects.push(
        ProcessPod {
            name: AUTOPILOT_NAME,
            container: "autopilot",
            namespace: ns,
            image: setup.place.image,
            args,
            env: vec![],
            mounts,
            volumes,
            admin_port: AUTOPILOT_ADMIN_PORT,
            replicas: setup.replicas,
            // Replicas may overlap: the Lease lets one act, and the push is the last guard.
            strategy: "RollingUpdate",
            termination_grace_seconds: 30,
        }
        .deployment()?,
    );
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn setup(git: &str) -> AutopilotSetup<'_> {
        AutopilotSetup {
            place: AgentPlacement {
                namespace: Some("shop"),
                image: "ghcr.io/cohort-dev/cohort:1.0.0",
            },
            git,
            branch: "main",
            path: None,
            ca_config_map: None,
            replicas: 2,
        }
    }

    fn pod(objects: &[Rendered]) -> &Value {
        &objects[3].value["spec"]["template"]["spec"]
    }

    fn args(objects: &[Rendered]) -> Vec<&str> {
        pod(objects)["containers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect()
    }

    #[test]
    fn the_autopilot_reads_routers_runs_job_checks_holds_its_lease_and_changes_nothing_else() {
        let objects = autopilot(&setup("https://git.example.com/releases.git")).expect("renders");
        let kinds: Vec<&str> = objects.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding", "Deployment"]);
        for o in &objects {
            assert_eq!(o.value["metadata"]["namespace"], "shop");
            assert_eq!(o.value["metadata"]["name"], AUTOPILOT_NAME);
        }
        let rules = objects[1].value["rules"].as_array().expect("rules");
        let verbs = |group: &str, resource: &str| -> Vec<(String, bool)> {
            rules
                .iter()
                .filter(|r| r["apiGroups"][0] == group && r["resources"][0] == resource)
                .flat_map(|r| {
                    let named = r["resourceNames"].is_array();
                    r["verbs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(move |v| (v.to_string(), named))
                })
                .collect()
        };
        let plain = |v: &str| (v.to_string(), false);
        let named = |v: &str| (v.to_string(), true);
        assert_eq!(verbs("", "pods"), [plain("list")]);
        assert_eq!(verbs("", "pods/proxy"), [plain("get")]);
        assert_eq!(verbs("apps", "deployments"), [plain("list")]);
        assert_eq!(
            verbs("coordination.k8s.io", "leases"),
            [plain("create"), named("get"), named("update"), named("delete")]
        );
        // Job checks: started and read, their pods' logs read for the evidence.
        assert_eq!(verbs("batch", "jobs"), [plain("get"), plain("create")]);
        assert_eq!(verbs("", "pods/log"), [plain("get")]);
        assert_eq!(rules.len(), 7, "nothing else: {rules:?}");
        let lease_rule = rules
            .iter()
            .find(|r| r["resourceNames"].is_array())
            .expect("named");
        assert_eq!(lease_rule["resourceNames"][0], AUTOPILOT_NAME);

        let deployment = &objects[3].value;
        assert_eq!(deployment["spec"]["replicas"], 2);
        let pod = pod(&objects);
        assert_eq!(pod["serviceAccountName"], AUTOPILOT_NAME);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/live");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(
            container["readinessProbe"]["httpGet"]["port"],
            AUTOPILOT_ADMIN_PORT
        );
        let a = args(&objects);
        for pair in [
            ["--git", "https://git.example.com/releases.git"],
            ["--lease", AUTOPILOT_NAME],
            [
                "--git-credentials-file",
                "/var/run/secrets/cohort-git/credentials",
            ],
            ["--mirror-dir", "/var/cache/cohort/mirror"],
        ] {
            assert!(a.windows(2).any(|w| w == pair), "{pair:?} in {a:?}");
        }
        let secret = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "git-credentials")
            .expect("the credentials volume");
        assert_eq!(secret["secret"]["secretName"], AUTOPILOT_GIT_SECRET);
        assert_eq!(secret["secret"]["items"][0]["key"], "credentials");
    }

    #[test]
    fn a_plain_http_remote_gets_no_credentials_and_a_company_ca_is_mounted() {
        let objects = autopilot(&setup("http://git.lab:8080/releases.git")).expect("renders");
        assert!(!args(&objects).contains(&"--git-credentials-file"));
        let with_ca = AutopilotSetup {
            ca_config_map: Some("company-ca"),
            path: Some("deploy/releases"),
            ..setup("https://git.example.com/r.git")
        };
        let objects = autopilot(&with_ca).expect("renders");
        let a = args(&objects);
        assert!(
            a.windows(2).any(|w| w == ["--git-ca-file", AGENT_CA_FILE]),
            "{a:?}"
        );
        assert!(a.windows(2).any(|w| w == ["--path", "deploy/releases"]), "{a:?}");
    }
}
