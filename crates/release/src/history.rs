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
pub fn previous_version(history: &[Entry], service: &str, track: &str, version: &str) -> Option<String> {
    history
        .iter()
        .find(|e| sets_track(e, service, track) && e.change.to.as_deref() == Some(version))
        .and_then(|e| e.change.from.clone())
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
