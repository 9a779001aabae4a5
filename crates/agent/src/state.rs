//! What the agent has applied, per service, and how that is kept in its ConfigMap: one key
//! per service, so `kubectl get configmap cohort-agent-state -o yaml` reads as a table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One service as last applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The revision whose objects these are (moved on, without applying, when a newer
    /// revision renders the service the same).
    pub revision: String,
    /// [`cohort_control::digest`] of the objects applied.
    pub digest: String,
    /// When they were applied (seconds since the Unix epoch).
    pub at: i64,
}

/// Every service the agent has applied.
pub type AppliedState = BTreeMap<String, Applied>;

/// The ConfigMap data for `state`.
pub fn to_data(state: &AppliedState) -> BTreeMap<String, String> {
    state
        .iter()
        .filter_map(|(service, applied)| Some((service.clone(), serde_json::to_string(applied).ok()?)))
        .collect()
}

/// The state in ConfigMap data, and the keys that could not be read (those services are
/// applied again, which is harmless).
pub fn from_data(data: &BTreeMap<String, String>) -> (AppliedState, Vec<String>) {
    let mut state = AppliedState::new();
    let mut unreadable = vec![];
    for (service, text) in data {
        match serde_json::from_str::<Applied>(text) {
            Ok(applied) => {
                state.insert(service.clone(), applied);
            }
            Err(_) => unreadable.push(service.clone()),
        }
    }
    (state, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_survives_its_configmap_and_a_garbled_key_is_named() {
        let mut state = AppliedState::new();
        state.insert(
            "account-service".into(),
            Applied {
                revision: "abc".into(),
                digest: "d1".into(),
                at: 7,
            },
        );
        let mut data = to_data(&state);
        assert_eq!(
            data["account-service"],
            r#"{"revision":"abc","digest":"d1","at":7}"#
        );
        data.insert("billing".into(), "not json".into());
        let (back, unreadable) = from_data(&data);
        assert_eq!(back, state);
        assert_eq!(unreadable, ["billing"]);
    }
}
