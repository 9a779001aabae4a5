//! The release repo rendered: Kubernetes objects for each service (typed with k8s-openapi),
//! the router's config, and an equivalent haproxy.cfg.
//!
//! Rendering is a pure function of the validated repo: the same repo gives byte-identical
//! output on every run and machine.
#![forbid(unsafe_code)]

mod agent;
mod autopilot;
mod haproxy;
mod objects;
mod rbac;

pub use agent::{
    AGENT_ADMIN_PORT, AGENT_CONFIG_MAP, AGENT_NAME, AGENT_TOKEN_SECRET, AgentPlacement, AgentSource, agent,
};
pub use autopilot::{AUTOPILOT_ADMIN_PORT, AUTOPILOT_GIT_SECRET, AUTOPILOT_NAME, AutopilotSetup, autopilot};
pub use haproxy::{HaproxyError, haproxy_cfg};
pub use objects::{
    LABEL_MANAGED_BY, LABEL_PART_OF, MANAGER, ROUTER_CONFIG_KEY, RenderError, Rendered, SERVICE_KINDS,
    deployment_name, render_service, router_access, router_config,
};
pub use rbac::{APPLY_ROLE, STATUS_ROLE, rbac};

/// Objects as one YAML stream (documents separated by `---`).
pub fn to_yaml(objects: &[Rendered]) -> String {
    cohort_yaml::to_yaml_stream(objects.iter().map(|o| &o.value))
}

/// Objects as a Kubernetes `List`, pretty-printed JSON with a final newline.
pub fn to_json(objects: &[Rendered]) -> String {
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": objects.iter().map(|o| &o.value).collect::<Vec<_>>(),
    });
    let mut text = serde_json::to_string_pretty(&list).unwrap_or_default();
    text.push('\n');
    text
}
