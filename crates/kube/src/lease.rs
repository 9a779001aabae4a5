//! One apply of a service at a time: a Lease (`cohort-apply-<service>`) held while a service
//! is applied, so that an agent's apply and a person's `cohort apply` never interleave their
//! steps (one could prune what the other has just routed to). A holder that died frees it
//! when the lease runs out.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{DeleteParams, PostParams, Preconditions};

use crate::apply::ApplyError;
use crate::{Cluster, KubeError};

/// The Lease's name for `service`.
pub fn lease_name(service: &str) -> String {
    format!("cohort-apply-{service}")
}

/// Who holds a lease, when it may be taken over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The holder's identity (`cohort apply on laptop, pid 4242`).
    pub holder: String,
    /// Since when.
    pub since: Option<Timestamp>,
    /// When it runs out if not released.
    pub until: Timestamp,
}

/// Whether `me` may take `lease` at `now`: it is free, ours, or ran out. Otherwise who holds it.
pub fn may_take(lease: &Lease, me: &str, now: Timestamp) -> Result<(), Held> {
    let Some(spec) = &lease.spec else { return Ok(()) };
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    if holder == me {
        return Ok(());
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let Some(until) = renewed.and_then(|r| r.checked_add(jiff::SignedDuration::from_secs(seconds)).ok())
    else {
        return Ok(());
    };
    if until <= now {
        return Ok(());
    }
    Err(Held {
        holder: holder.to_string(),
        since: spec.acquire_time.as_ref().map(|t| t.0),
        until,
    })
}

/// Who this process is, for a lease: what it is, the host (a pod's name in a cluster) and pid.
pub fn identity(what: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| "unknown host".into());
    format!("{what} on {host}, pid {}", std::process::id())
}

/// A held lease; [`Cluster::release_apply_lease`] gives it back.
#[derive(Debug)]
#[must_use = "release the lease when the apply is done"]
pub struct ApplyLease {
    name: String,
}

impl Cluster {
    /// Takes lease `name` for `duration` from now, or renews it if `me` holds it already (its
    /// acquire time kept); `Ok(Err(held))` when another holder has it and it has not run out.
    /// `part_of` labels a lease it creates (the service it guards).
    pub async fn take_lease(
        &self,
        name: &str,
        me: &str,
        duration: Duration,
        part_of: &str,
    ) -> Result<Result<(), Held>, KubeError> {
        let api = self.api::<Lease>();
        let err = |doing: &str, e: kube::Error| {
            KubeError::from_kube(format!("{doing} lease {name} in namespace {}", self.namespace), e)
        };
        // Create it, or take it over by resourceVersion; losing a race (409) to another cohort
        // means reading again: it now holds the lease, or let it go already.
        for _ in 0..3 {
            let now = Timestamp::now();
            let mut spec = LeaseSpec {
                holder_identity: Some(me.to_string()),
                lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                ..LeaseSpec::default()
            };
            let taken = match api.get_opt(name).await.map_err(|e| err("get", e))? {
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.to_string()),
                            namespace: Some(self.namespace.clone()),
                            labels: Some(
                                [(cohort_render::LABEL_PART_OF.to_string(), part_of.to_string())].into(),
                            ),
                            ..ObjectMeta::default()
                        },
                        spec: Some(spec),
                    };
                    api.create(&PostParams::default(), &lease).await
                }
                Some(mut lease) => {
                    if let Err(held) = may_take(&lease, me, now) {
                        return Ok(Err(held));
                    }
                    let ours = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(me);
                    if ours {
                        spec.acquire_time = lease.spec.as_ref().and_then(|s| s.acquire_time.clone());
                    }
                    lease.spec = Some(spec);
                    api.replace(name, &PostParams::default(), &lease).await
                }
            };
            match taken {
                Ok(_) => return Ok(Ok(())),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(err("take", e)),
            }
        }
        Ok(Err(Held {
            holder: "another cohort (the lease kept changing hands)".into(),
            since: None,
            until: Timestamp::now(),
        }))
    }

    /// Gives lease `name` back if `me` holds it (deletes it, unless someone took it meanwhile).
    pub async fn release_lease(&self, name: &str, me: &str) -> Result<(), KubeError> {
        self.release_apply_lease(
            ApplyLease {
                name: name.to_string(),
            },
            me,
        )
        .await
    }

    /// Takes the apply lease of `service` for at most `duration`, or says who holds it.
    pub async fn take_apply_lease(
        &self,
        service: &str,
        me: &str,
        duration: Duration,
    ) -> Result<ApplyLease, ApplyError> {
        let name = lease_name(service);
        match self.take_lease(&name, me, duration, service).await? {
            Ok(()) => Ok(ApplyLease { name }),
            Err(held) => Err(ApplyError::Busy {
                service: service.to_string(),
                lease: name,
                namespace: self.namespace.clone(),
                held: Box::new(held),
            }),
        }
    }

    /// Gives the lease back (deletes it, unless someone else took it meanwhile).
    pub async fn release_apply_lease(&self, lease: ApplyLease, me: &str) -> Result<(), KubeError> {
        let api = self.api::<Lease>();
        let doing = || format!("release lease {} in namespace {}", lease.name, self.namespace);
        let Some(current) = api
            .get_opt(&lease.name)
            .await
            .map_err(|e| KubeError::from_kube(doing(), e))?
        else {
            return Ok(());
        };
        if current.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(me) {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: current.metadata.resource_version.clone(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&lease.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(KubeError::from_kube(doing(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use k8s_openapi::api::coordination::v1::Lease;

    use super::{Held, may_take};

    fn lease(json: serde_json::Value) -> Lease {
        serde_json::from_value(json).expect("a Lease as the API server returns it")
    }

    #[test]
    fn a_lease_is_free_when_unheld_ours_or_run_out_and_otherwise_names_its_holder() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().expect("time");
        let held = |renew: &str, seconds: i32| {
            lease(serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "cohort-apply-account-service", "namespace": "shop", "resourceVersion": "7"},
                "spec": {"holderIdentity": "cohort agent on cohort-agent-7d9, pid 1",
                         "leaseDurationSeconds": seconds,
                         "acquireTime": "2026-11-22T11:58:00.000000Z",
                         "renewTime": renew}
            }))
        };
        assert_eq!(
            may_take(&lease(serde_json::json!({"metadata": {"name": "x"}})), "me", now),
            Ok(())
        );
        assert_eq!(
            may_take(
                &held("2026-11-22T11:58:00.000000Z", 600),
                "cohort agent on cohort-agent-7d9, pid 1",
                now
            ),
            Ok(())
        );
        assert_eq!(
            may_take(&held("2026-11-22T11:49:59.000000Z", 600), "me", now),
            Ok(()),
            "ran out"
        );
        let err = may_take(&held("2026-11-22T11:58:00.000000Z", 600), "me", now).expect_err("held");
        assert_eq!(
            err,
            Held {
                holder: "cohort agent on cohort-agent-7d9, pid 1".into(),
                since: Some("2026-11-22T11:58:00Z".parse().expect("time")),
                until: "2026-11-22T12:08:00Z".parse().expect("time"),
            }
        );
    }
}
