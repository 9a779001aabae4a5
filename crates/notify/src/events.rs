//! Successive problem sets → `Opened`/`Resolved` events, damped against flapping. Pure: no
//! I/O and no clock; the caller passes the time of each evaluation.
//!
//! # The damping rule: consecutive evaluation cycles, not durations
//!
//! A problem is announced once it has been seen in `open_after` consecutive evaluations, and
//! announced resolved once it has been absent from `resolve_after` consecutive evaluations.
//! Counting cycles rather than measuring time keeps the rule about evidence: with a duration,
//! a watch interval longer than the duration (or one slow API call) would let a single
//! observation open a problem, and a clock that steps would open or resolve things nobody
//! observed. The cost is that the delay scales with the watch interval (2 cycles at a 30 s
//! interval announce a problem 30–60 s after it appears), which is the interval the operator
//! chose for how fast `status --watch` reacts.
//!
//! An evaluation that failed (the API server was unreachable, say) is not an empty problem
//! set: do not call [`Tracker::observe`] for it, or every open problem counts one cycle
//! towards being resolved.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use jiff::Timestamp;

/// One thing wrong with one service, as a single evaluation saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The service it concerns, e.g. `account-service`.
    pub service: String,
    /// Stable identity within the service across evaluations, e.g. `canary:too-few-endpoints`.
    pub key: String,
    /// What is wrong, for people, e.g. `canary has 1 ready endpoint (minimum 2)`. It may change
    /// from one evaluation to the next without making it a different problem.
    pub summary: String,
}

impl Problem {
    /// A problem of `service`, identified by `key`, described by `summary`.
    pub fn new(service: impl Into<String>, key: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            key: key.into(),
            summary: summary.into(),
        }
    }

    fn id(&self) -> ProblemId {
        ProblemId {
            service: self.service.clone(),
            key: self.key.clone(),
        }
    }
}

/// What identifies a problem across evaluations: its service and its key. Two services can
/// have the same kind of problem (`canary:too-few-endpoints`) at once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProblemId {
    /// The service.
    pub service: String,
    /// The key within the service.
    pub key: String,
}

/// A change worth telling people about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A problem has been present for `open_after` consecutive evaluations.
    Opened {
        /// The problem as the evaluation that announced it saw it.
        problem: Problem,
        /// When it was first seen in the run of evaluations that announced it.
        since: Timestamp,
    },
    /// The autopilot acted (or a due action was held back): told once, when it happens.
    /// `problem.key` is the action (`rollback`, `promote`, `ramp`, `held`), `problem.summary`
    /// what was done in one line.
    Decided {
        /// The service, the action and what was done.
        problem: Problem,
        /// The evidence and the commit, one item a line.
        detail: Vec<String>,
        /// When.
        at: Timestamp,
    },
    /// An announced problem has been absent for `resolve_after` consecutive evaluations.
    Resolved {
        /// The problem as it was announced, so the two messages read as a pair.
        problem: Problem,
        /// When it was first seen (the `since` of its `Opened`).
        since: Timestamp,
        /// The first evaluation that no longer saw it.
        resolved_at: Timestamp,
    },
}

impl Event {
    /// The problem this event is about.
    pub fn problem(&self) -> &Problem {
        match self {
            Event::Opened { problem, .. }
            | Event::Resolved { problem, .. }
            | Event::Decided { problem, .. } => problem,
        }
    }

    /// When the problem was first seen.
    pub fn since(&self) -> Timestamp {
        match self {
            Event::Opened { since, .. } | Event::Resolved { since, .. } => *since,
            Event::Decided { at, .. } => *at,
        }
    }

    /// Whether this event announces a resolution.
    pub fn is_resolved(&self) -> bool {
        matches!(self, Event::Resolved { .. })
    }
}

/// How many consecutive evaluations it takes to open and to resolve a problem. Zero cycles is
/// not a rule (a problem cannot be announced before it is seen), hence `NonZeroU32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damping {
    /// Consecutive evaluations a problem must be present in before `Opened`; 1 announces at
    /// once.
    pub open_after: NonZeroU32,
    /// Consecutive evaluations an announced problem must be absent from before `Resolved`.
    pub resolve_after: NonZeroU32,
}

impl Damping {
    /// Announce on the first sighting and the first absence: no damping at all.
    pub const IMMEDIATE: Damping = Damping {
        open_after: NonZeroU32::MIN,
        resolve_after: NonZeroU32::MIN,
    };
}

impl Default for Damping {
    /// Two cycles each way: one bad (or good) evaluation, such as a pod caught mid-restart, is
    /// never announced, and at the usual watch intervals people still hear within a minute.
    fn default() -> Self {
        let two = NonZeroU32::MIN.saturating_add(1);
        Damping {
            open_after: two,
            resolve_after: two,
        }
    }
}

/// Where one problem stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Seen in the last `seen` consecutive evaluations, not yet announced.
    Pending {
        problem: Problem,
        since: Timestamp,
        seen: u32,
    },
    /// Announced; absent from the last `absent` consecutive evaluations (0 while present).
    Open {
        announced: Problem,
        since: Timestamp,
        absent: u32,
        absent_since: Option<Timestamp>,
    },
}

/// Turns the problem set of each evaluation into the events to send. Feed it every completed
/// evaluation, in order, with [`observe`](Tracker::observe).
#[derive(Debug, Clone)]
pub struct Tracker {
    damping: Damping,
    states: BTreeMap<ProblemId, State>,
}

impl Tracker {
    /// A tracker that has seen nothing yet.
    pub fn new(damping: Damping) -> Self {
        Self {
            damping,
            states: BTreeMap::new(),
        }
    }

    /// The damping this tracker applies.
    pub fn damping(&self) -> Damping {
        self.damping
    }

    /// Takes the problems of one evaluation made at `now` and returns the events it causes,
    /// ordered by service then key. A problem listed twice (same service and key) counts once,
    /// with the first listing's summary.
    pub fn observe(&mut self, problems: impl IntoIterator<Item = Problem>, now: Timestamp) -> Vec<Event> {
        let mut current: BTreeMap<ProblemId, Problem> = BTreeMap::new();
        for problem in problems {
            current.entry(problem.id()).or_insert(problem);
        }
        let open_after = self.damping.open_after.get();
        let resolve_after = self.damping.resolve_after.get();
        let mut events = Vec::new();

        // Problems tracked before this evaluation: advance them, drop the ones that are done.
        self.states.retain(|id, state| {
            let present = current.remove(id);
            match state {
                State::Pending { problem, since, seen } => {
                    // Gone before anybody was told: nothing to retract.
                    let Some(seen_now) = present else {
                        return false;
                    };
                    *seen = seen.saturating_add(1);
                    *problem = seen_now;
                    if *seen >= open_after {
                        let (announced, since) = (problem.clone(), *since);
                        events.push(Event::Opened {
                            problem: announced.clone(),
                            since,
                        });
                        *state = State::Open {
                            announced,
                            since,
                            absent: 0,
                            absent_since: None,
                        };
                    }
                    true
                }
                State::Open {
                    announced,
                    since,
                    absent,
                    absent_since,
                } => {
                    if present.is_some() {
                        // Back before its resolution was announced: still the same problem.
                        *absent = 0;
                        *absent_since = None;
                        return true;
                    }
                    *absent = absent.saturating_add(1);
                    let resolved_at = *absent_since.get_or_insert(now);
                    if *absent < resolve_after {
                        return true;
                    }
                    events.push(Event::Resolved {
                        problem: announced.clone(),
                        since: *since,
                        resolved_at,
                    });
                    false
                }
            }
        });

        // Problems seen for the first time (or again after being resolved or dropped).
        for (id, problem) in current {
            let state = if open_after <= 1 {
                events.push(Event::Opened {
                    problem: problem.clone(),
                    since: now,
                });
                State::Open {
                    announced: problem,
                    since: now,
                    absent: 0,
                    absent_since: None,
                }
            } else {
                State::Pending {
                    problem,
                    since: now,
                    seen: 1,
                }
            };
            self.states.insert(id, state);
        }

        events.sort_by(|a, b| {
            let (a, b) = (a.problem(), b.problem());
            (&a.service, &a.key).cmp(&(&b.service, &b.key))
        });
        events
    }

    /// The announced problems that have not been announced resolved, with when each was first
    /// seen, ordered by service then key.
    pub fn open(&self) -> impl Iterator<Item = (&Problem, Timestamp)> {
        self.states.values().filter_map(|state| match state {
            State::Open { announced, since, .. } => Some((announced, *since)),
            State::Pending { .. } => None,
        })
    }

    /// Whether the problem `service`/`key` has been announced and not announced resolved.
    pub fn is_open(&self, service: &str, key: &str) -> bool {
        let id = ProblemId {
            service: service.to_owned(),
            key: key.to_owned(),
        };
        matches!(self.states.get(&id), Some(State::Open { .. }))
    }
}

#[cfg(test)]
mod tests;
