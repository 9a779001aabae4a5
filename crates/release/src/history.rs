//! The release history, read back from commit trailers.

use crate::git::CommitInfo;
use crate::record::{Action, Change, parse_message};

/// One recorded change and the commit it came in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Commit id (hex).
    pub commit: String,
    /// Committer time, unix seconds.
    pub time: i64,
    /// Committer's UTC offset in seconds.
    pub offset_secs: i32,
    /// `Name <email>` of the author.
    pub author: String,
    /// What changed.
    #[serde(flatten)]
    pub change: Change,
}

/// Every change cohort recorded, newest first, from commits in log order (newest first).
pub fn entries(log: &[CommitInfo]) -> Vec<Entry> {
    log.iter()
        .flat_map(|c| {
            parse_message(&c.message).into_iter().map(move |change| Entry {
                commit: c.id.clone(),
                time: c.time,
                offset_secs: c.offset_secs,
                author: format!("{} <{}>", c.author_name, c.author_email),
                change,
            })
        })
        .collect()
}

fn sets_track(e: &Entry, service: &str, track: &str) -> bool {
    e.change.service == service
        && e.change.track.as_deref() == Some(track)
        && matches!(
            e.change.action,
            Action::Init | Action::Deploy | Action::Promote | Action::Rollback
        )
}

/// When `version` last arrived on `track` of `service` (unix seconds), if the history says.
pub fn arrived_at(history: &[Entry], service: &str, track: &str, version: &str) -> Option<i64> {
    history
        .iter()
        .find(|e| sets_track(e, service, track))
        .filter(|e| e.change.to.as_deref() == Some(version))
        .map(|e| e.time)
}

/// The version `track` ran before its current `version`, if the history says.
///
/// The track's records are replayed oldest first as a stack: a deploy or promotion pushes its
/// version, a rollback pops back down to the version it returned to. So after rolling back
/// from a bad build, rolling back again goes further back, never forward to the bad build.
pub fn previous_version(history: &[Entry], service: &str, track: &str, version: &str) -> Option<String> {
    let mut stack: Vec<&str> = vec![];
    for e in history.iter().rev().filter(|e| sets_track(e, service, track)) {
        let Some(to) = e.change.to.as_deref() else {
            continue;
        };
        if e.change.action == Action::Rollback
            && let Some(at) = stack.iter().rposition(|v| *v == to)
        {
            stack.truncate(at + 1);
            continue;
        }
        if stack.last() != Some(&to) {
            stack.push(to);
        }
    }
    match stack.as_slice() {
        [.., previous, current] if *current == version => Some(previous.to_string()),
        _ => None,
    }
}

/// Every version `track` of `service` has run, newest first, without repeats.
pub fn versions_seen(history: &[Entry], service: &str, track: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for e in history.iter().filter(|e| sets_track(e, service, track)) {
        for v in [&e.change.to, &e.change.from].into_iter().flatten() {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: Action, to: &str) -> Entry {
        let mut change = Change::new(action, "svc");
        change.track = Some("internal".into());
        change.to = Some(to.into());
        Entry {
            commit: String::new(),
            time: 0,
            offset_secs: 0,
            author: String::new(),
            change,
        }
    }

    /// Newest first, as the log gives them.
    fn history(steps: &[(Action, &str)]) -> Vec<Entry> {
        steps.iter().rev().map(|(a, v)| entry(*a, v)).collect()
    }

    #[test]
    fn a_second_rollback_goes_further_back_not_forward() {
        let h = history(&[
            (Action::Init, "1"),
            (Action::Deploy, "2"),
            (Action::Deploy, "3"),
            (Action::Rollback, "2"),
        ]);
        assert_eq!(previous_version(&h, "svc", "internal", "2").as_deref(), Some("1"));
        let h = history(&[
            (Action::Deploy, "2"),
            (Action::Deploy, "3"),
            (Action::Rollback, "2"),
        ]);
        assert_eq!(
            previous_version(&h, "svc", "internal", "2"),
            None,
            "nothing before 2"
        );
    }

    #[test]
    fn rolling_back_to_a_named_newer_version_is_a_step_of_its_own() {
        let h = history(&[
            (Action::Deploy, "1"),
            (Action::Deploy, "2"),
            (Action::Rollback, "1"),
            (Action::Rollback, "2"),
        ]);
        assert_eq!(previous_version(&h, "svc", "internal", "2").as_deref(), Some("1"));
        assert_eq!(
            previous_version(&h, "svc", "internal", "1"),
            None,
            "1 is not current"
        );
    }
}
