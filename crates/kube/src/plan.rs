//! The order `cohort apply` changes a service in, decided without I/O: nothing that carries
//! traffic is changed before what it sends traffic to is ready, and nothing is removed until
//! everything else has succeeded.

use cohort_render::Rendered;

/// One step of applying a service.
#[derive(Debug, PartialEq)]
pub enum Step<'r> {
    /// Server-side apply these objects; then, if `wait`, wait until every Deployment among
    /// them is available with all replicas updated and ready.
    Apply {
        /// What this step is, for progress lines (`track Deployments`, ...).
        what: &'static str,
        /// The objects, in order.
        objects: Vec<&'r Rendered>,
        /// Whether to wait for the Deployments among them.
        wait: bool,
    },
    /// Wait until the routers run the router config applied before (if it changed).
    ReloadRouters {
        /// The router's ConfigMap.
        config: &'r Rendered,
    },
    /// Delete these managed Deployments: versions the release repo no longer names.
    Prune {
        /// Their names.
        deployments: Vec<String>,
    },
}

/// The steps for one service's rendered objects, given the names of the Deployments of that
/// service that cohort manages in the cluster now: versioned track Deployments first (and
/// waited for), then the track Services, the router's ConfigMap, the router Deployment
/// (waited for), the routers' reload of their config, the front Service, and only then the
/// pruning of track Deployments the repo no longer names. Empty steps are left out.
pub fn plan<'r>(rendered: &'r [Rendered], live_track_deployments: &[String]) -> Vec<Step<'r>> {
    let pick =
        |f: &dyn Fn(&Rendered) -> bool| -> Vec<&'r Rendered> { rendered.iter().filter(|o| f(o)).collect() };
    let tier = |o: &Rendered, t: &str| o.label("tier") == Some(t);
    let on_track = |o: &Rendered| o.label("track").is_some();

    let tracks = pick(&|o| {
        (o.kind == "Deployment" && tier(o, "service")) || (o.kind == "PodDisruptionBudget" && on_track(o))
    });
    let router = pick(&|o| {
        (o.kind == "Deployment" && tier(o, "router")) || (o.kind == "PodDisruptionBudget" && !on_track(o))
    });

    let keep: Vec<&str> = rendered
        .iter()
        .filter(|o| o.kind == "Deployment")
        .map(|o| o.name.as_str())
        .collect();
    let mut prune: Vec<String> = live_track_deployments
        .iter()
        .filter(|d| !keep.contains(&d.as_str()))
        .cloned()
        .collect();
    prune.sort();

    let steps = [
        ("track Deployments", tracks, true),
        (
            "track Services",
            pick(&|o| o.kind == "Service" && on_track(o)),
            false,
        ),
        (
            "router access",
            pick(&|o| matches!(o.kind, "ServiceAccount" | "Role" | "RoleBinding")),
            false,
        ),
        ("router config", pick(&|o| o.kind == "ConfigMap"), false),
        ("router", router, true),
        (
            "front Service",
            pick(&|o| o.kind == "Service" && !on_track(o)),
            false,
        ),
    ];
    let mut out: Vec<Step<'r>> = vec![];
    for (what, objects, wait) in steps {
        if objects.is_empty() {
            continue;
        }
        let router = what == "router";
        out.push(Step::Apply { what, objects, wait });
        if router && let Some(config) = rendered.iter().find(|o| o.kind == "ConfigMap") {
            out.push(Step::ReloadRouters { config });
        }
    }
    if !prune.is_empty() {
        out.push(Step::Prune { deployments: prune });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Step, plan};

    fn seed() -> Vec<cohort_render::Rendered> {
        let (repo, diags) = cohort_spec::repo::validate(&cohort_spec::scaffold::repo_files());
        assert!(diags.is_empty(), "{diags:?}");
        let repo = repo.expect("valid");
        cohort_render::render_service(&repo.pipeline, &repo.services[0]).expect("renders")
    }

    fn names(step: &Step<'_>) -> (String, Vec<String>) {
        match step {
            Step::Apply { what, objects, wait } => (
                format!("{what}{}", if *wait { " (wait)" } else { "" }),
                objects.iter().map(|o| format!("{} {}", o.kind, o.name)).collect(),
            ),
            Step::ReloadRouters { config } => ("reload".into(), vec![format!("ConfigMap {}", config.name)]),
            Step::Prune { deployments } => ("prune".into(), deployments.clone()),
        }
    }

    #[test]
    fn what_carries_traffic_changes_only_after_what_it_sends_to_is_ready() {
        let objects = seed();
        let live = vec![
            "account-service-production-v1-15-0".to_string(),
            "account-service-production-v1-14-0".to_string(),
            "account-service-canary-v1-16-0".to_string(),
        ];
        let steps: Vec<(String, Vec<String>)> = plan(&objects, &live).iter().map(names).collect();
        let order: Vec<&str> = steps.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(
            order,
            [
                "track Deployments (wait)",
                "track Services",
                "router access",
                "router config",
                "router (wait)",
                "reload",
                "front Service",
                "prune"
            ]
        );
        assert_eq!(
            steps[2].1,
            [
                "ServiceAccount account-service-router",
                "Role account-service-router",
                "RoleBinding account-service-router"
            ]
        );
        assert!(
            steps[0]
                .1
                .iter()
                .all(|o| o.starts_with("Deployment ") || o.starts_with("PodDisruptionBudget "))
        );
        assert!(
            steps[0]
                .1
                .contains(&"Deployment account-service-production-v1-15-0".to_string())
        );
        assert_eq!(steps[4].1[0], "Deployment account-service-router");
        assert_eq!(steps[5].1, ["ConfigMap account-service-router"]);
        assert_eq!(steps[6].1, ["Service account-service"]);
        // Only versions the repo no longer names go, and only at the end.
        assert_eq!(
            steps[7].1,
            [
                "account-service-canary-v1-16-0",
                "account-service-production-v1-14-0"
            ]
        );
        // Every rendered object is applied exactly once.
        let applied: usize = steps[..7]
            .iter()
            .filter(|(w, _)| w != "reload")
            .map(|(_, o)| o.len())
            .sum();
        assert_eq!(applied, objects.len());
    }

    #[test]
    fn nothing_is_pruned_when_the_cluster_runs_only_what_the_repo_names() {
        let objects = seed();
        let live: Vec<String> = objects
            .iter()
            .filter(|o| o.kind == "Deployment" && o.name != "account-service-router")
            .map(|o| o.name.clone())
            .collect();
        assert!(
            !plan(&objects, &live)
                .iter()
                .any(|s| matches!(s, Step::Prune { .. }))
        );
    }
}
