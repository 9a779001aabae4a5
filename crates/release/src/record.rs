//! A change as recorded in a commit: a readable subject, and trailers that machines read back.

use std::fmt::Write;

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The repo was created with these versions.
    Init,
    /// A build entered the first stage.
    Deploy,
    /// A version moved one stage on.
    Promote,
    /// A track went back to an earlier version.
    Rollback,
    /// A check was recorded for a version.
    Approve,
    /// A track's share grew one step of its ramp (`from`/`to` hold the weights).
    Ramp,
    /// The autopilot leaves the service alone (`reason` says why).
    Pause,
    /// The autopilot takes the service up again.
    Resume,
    /// Promotions and ramps of the service stop; rollbacks go on (`reason` says why).
    Freeze,
    /// Promotions and ramps of the service may go on.
    Unfreeze,
}

impl Action {
    /// The trailer value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Init => "init",
            Action::Deploy => "deploy",
            Action::Promote => "promote",
            Action::Rollback => "rollback",
            Action::Approve => "approve",
            Action::Ramp => "ramp",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Freeze => "freeze",
            Action::Unfreeze => "unfreeze",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        [
            Action::Init,
            Action::Deploy,
            Action::Promote,
            Action::Rollback,
            Action::Approve,
            Action::Ramp,
            Action::Pause,
            Action::Resume,
            Action::Freeze,
            Action::Unfreeze,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// One change to one service's release state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// What was done.
    pub action: Action,
    /// The service.
    pub service: String,
    /// The track changed (for approvals: none).
    pub track: Option<String>,
    /// For a promotion: the stage the version came from.
    pub from_track: Option<String>,
    /// The track's version before.
    pub from: Option<String>,
    /// The track's version after (for approvals: the version approved).
    pub to: Option<String>,
    /// For approvals: the check recorded.
    pub check: Option<String>,
    /// Why: a rollback's reason, a forced gate's reason, an approval's note.
    pub reason: Option<String>,
    /// Whether a closed gate was overridden with `--force`.
    pub forced: bool,
    /// The canary judgement the change rests on: its verdict and evidence, one line.
    pub judgement: Option<String>,
}

impl Change {
    /// A change with only action and service set.
    pub fn new(action: Action, service: &str) -> Change {
        Change {
            action,
            service: service.to_string(),
            track: None,
            from_track: None,
            from: None,
            to: None,
            check: None,
            reason: None,
            forced: false,
            judgement: None,
        }
    }

    /// The commit subject, e.g. `promote account-service 1.17.0: canary → paid`.
    pub fn subject(&self) -> String {
        let s = &self.service;
        let none = || "nothing".to_string();
        let to = self.to.clone().unwrap_or_else(none);
        let track = self.track.clone().unwrap_or_default();
        match self.action {
            Action::Init => "init: cohort release repo".to_string(),
            Action::Deploy => match &self.from {
                Some(from) => format!("deploy {s} {to} to {track} (was {from})"),
                None => format!("deploy {s} {to} to {track}"),
            },
            Action::Promote => {
                format!(
                    "promote {s} {to}: {} → {track}",
                    self.from_track.clone().unwrap_or_default()
                )
            }
            Action::Rollback => format!(
                "rollback {s} {track}: {} → {to}",
                self.from.clone().unwrap_or_else(none)
            ),
            Action::Approve => format!("approve {s} {to}: {}", self.check.clone().unwrap_or_default()),
            Action::Ramp => format!(
                "ramp {s} {track}: {} → {to}",
                self.from.clone().unwrap_or_else(none)
            ),
            Action::Pause => format!("pause {s}"),
            Action::Resume => format!("resume {s}"),
            Action::Freeze => format!("freeze {s}"),
            Action::Unfreeze => format!("unfreeze {s}"),
        }
    }

    fn trailers(&self, out: &mut String) {
        let mut t = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                // Trailers are one line each; a multi-line reason keeps its words.
                let _ = writeln!(
                    out,
                    "Cohort-{k}: {}",
                    v.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
        };
        t("Action", Some(self.action.as_str()));
        t("Service", Some(&self.service));
        t("Track", self.track.as_deref());
        t("From-Track", self.from_track.as_deref());
        t("From", self.from.as_deref());
        t("To", self.to.as_deref());
        t("Check", self.check.as_deref());
        t("Reason", self.reason.as_deref());
        t("Judgement", self.judgement.as_deref());
        if self.forced {
            t("Forced", Some("true"));
        }
    }
}

/// The whole commit message for one change: subject, the reason and the judgement's evidence
/// as the body, then trailers.
pub fn commit_message(change: &Change) -> String {
    let mut msg = change.subject();
    msg.push_str("\n\n");
    if let Some(reason) = &change.reason {
        msg.push_str(reason.trim());
        msg.push_str("\n\n");
    }
    if let Some(judgement) = &change.judgement {
        msg.push_str("Canary judgement: ");
        msg.push_str(judgement.trim());
        msg.push_str("\n\n");
    }
    change.trailers(&mut msg);
    msg
}

/// The message of `cohort init`: one `Cohort-Init` trailer per service and track it set.
pub fn init_message(tracks: &[(String, String, String)]) -> String {
    let mut msg = String::from("init: cohort release repo\n\nCohort-Action: init\n");
    for (service, track, version) in tracks {
        let _ = writeln!(msg, "Cohort-Init: {service} {track} {version}");
    }
    msg
}

/// The changes a commit message records; empty for commits cohort did not make.
pub fn parse_message(message: &str) -> Vec<Change> {
    // Only the last paragraph holds trailers: a reason in the body cannot pose as one.
    let block = message.trim_end().rsplit("\n\n").next().unwrap_or_default();
    let trailers: Vec<(&str, &str)> = block
        .lines()
        .filter_map(|l| l.strip_prefix("Cohort-"))
        .filter_map(|l| l.split_once(": "))
        .collect();
    let get = |k: &str| {
        trailers
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_string())
    };
    let Some(action) = get("Action").as_deref().and_then(Action::parse) else {
        return vec![];
    };
    if action == Action::Init {
        return trailers
            .iter()
            .filter(|(k, _)| *k == "Init")
            .filter_map(|(_, v)| {
                let mut parts = v.split_whitespace();
                let (service, track, version) = (parts.next()?, parts.next()?, parts.next()?);
                let mut c = Change::new(Action::Init, service);
                c.track = Some(track.to_string());
                c.to = Some(version.to_string());
                Some(c)
            })
            .collect();
    }
    let Some(service) = get("Service") else {
        return vec![];
    };
    vec![Change {
        action,
        service,
        track: get("Track"),
        from_track: get("From-Track"),
        from: get("From"),
        to: get("To"),
        check: get("Check"),
        reason: get("Reason"),
        forced: get("Forced").as_deref() == Some("true"),
        judgement: get("Judgement"),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promotion_reads_well_and_reads_back() {
        let mut c = Change::new(Action::Promote, "account-service");
        c.track = Some("paid".into());
        c.from_track = Some("canary".into());
        c.from = Some("1.15.0".into());
        c.to = Some("1.17.0".into());
        c.reason = Some("QA signed off\nafter the soak".into());
        c.forced = true;
        c.judgement = Some("pass: canary 1.17.0 against production 1.15.0, last 10m".into());
        let msg = commit_message(&c);
        assert!(
            msg.starts_with(
                "promote account-service 1.17.0: canary → paid\n\nQA signed off\nafter the soak\n\n\
                 Canary judgement: pass: canary 1.17.0 against production 1.15.0, last 10m\n\n"
            ),
            "{msg}"
        );
        assert!(msg.contains("Cohort-Reason: QA signed off after the soak\n"));
        let back = parse_message(&msg);
        let mut expected = c.clone();
        expected.reason = Some("QA signed off after the soak".into());
        assert_eq!(back, vec![expected]);
    }

    #[test]
    fn init_records_every_track() {
        let msg = init_message(&[
            ("a".into(), "internal".into(), "1.0.0".into()),
            ("a".into(), "production".into(), "0.9.0".into()),
        ]);
        let changes = parse_message(&msg);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1].track.as_deref(), Some("production"));
        assert_eq!(changes[1].to.as_deref(), Some("0.9.0"));
    }

    #[test]
    fn a_reason_cannot_forge_trailers() {
        let mut c = Change::new(Action::Rollback, "account-service");
        c.track = Some("paid".into());
        c.to = Some("1.0.0".into());
        c.reason = Some("oops\n\nCohort-Action: deploy\nCohort-Service: billing".into());
        let back = parse_message(&commit_message(&c));
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].action, Action::Rollback);
        assert_eq!(back[0].service, "account-service");
    }

    #[test]
    fn other_commits_record_nothing() {
        assert!(parse_message("Fix typo in README\n").is_empty());
        assert!(parse_message("x\n\nCohort-Action: explode\nCohort-Service: a\n").is_empty());
    }
}
