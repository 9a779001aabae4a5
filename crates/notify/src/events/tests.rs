use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

use jiff::Timestamp;
use proptest::prelude::*;

use super::{Damping, Event, Problem, Tracker};

/// The time of evaluation `cycle`, 30 s apart.
fn at(cycle: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + 30 * cycle).expect("in range")
}

fn damping(open_after: u32, resolve_after: u32) -> Damping {
    Damping {
        open_after: NonZeroU32::new(open_after).expect("non-zero"),
        resolve_after: NonZeroU32::new(resolve_after).expect("non-zero"),
    }
}

fn p(service: &str, key: &str) -> Problem {
    Problem::new(service, key, format!("{service} is {key}"))
}

fn canary() -> Problem {
    Problem::new(
        "account-service",
        "canary:too-few-endpoints",
        "canary has 1 ready endpoint (minimum 2)",
    )
}

/// Feeds `cycles` (the problems of each evaluation, one evaluation per element, 30 s apart
/// from cycle 0) and returns the events of each.
fn run(tracker: &mut Tracker, cycles: &[Vec<Problem>]) -> Vec<Vec<Event>> {
    cycles
        .iter()
        .enumerate()
        .map(|(i, problems)| tracker.observe(problems.clone(), at(i as i64)))
        .collect()
}

fn opened(problem: Problem, since: i64) -> Event {
    Event::Opened {
        problem,
        since: at(since),
    }
}

fn resolved(problem: Problem, since: i64, resolved_at: i64) -> Event {
    Event::Resolved {
        problem,
        since: at(since),
        resolved_at: at(resolved_at),
    }
}

#[test]
fn without_damping_a_problem_opens_and_resolves_on_the_evaluation_that_sees_it() {
    let mut t = Tracker::new(Damping::IMMEDIATE);
    let events = run(&mut t, &[vec![canary()], vec![canary()], vec![]]);
    assert_eq!(
        events,
        vec![vec![opened(canary(), 0)], vec![], vec![resolved(canary(), 0, 2)]]
    );
}

#[test]
fn the_default_is_two_cycles_each_way() {
    assert_eq!(Damping::default(), damping(2, 2));
    assert_eq!(Tracker::new(Damping::default()).damping(), damping(2, 2));
}

#[test]
fn a_problem_opens_after_open_after_consecutive_sightings_since_the_first() {
    let mut t = Tracker::new(damping(3, 1));
    let events = run(&mut t, &[vec![canary()], vec![canary()], vec![canary()]]);
    assert_eq!(events, vec![vec![], vec![], vec![opened(canary(), 0)]]);
    assert!(t.is_open("account-service", "canary:too-few-endpoints"));
}

#[test]
fn a_problem_that_persists_is_announced_once() {
    let mut t = Tracker::new(damping(2, 2));
    let cycles = vec![vec![canary()]; 50];
    let events: Vec<Event> = run(&mut t, &cycles).into_iter().flatten().collect();
    assert_eq!(events, vec![opened(canary(), 0)]);
}

#[test]
fn a_problem_gone_before_it_was_announced_is_dropped_silently() {
    let mut t = Tracker::new(damping(2, 2));
    let events = run(&mut t, &[vec![canary()], vec![], vec![], vec![]]);
    assert!(events.iter().all(Vec::is_empty), "{events:?}");
    assert_eq!(t.open().count(), 0);
}

#[test]
fn sightings_must_be_consecutive_and_a_gap_restarts_the_count_and_since() {
    let mut t = Tracker::new(damping(2, 2));
    let events = run(&mut t, &[vec![canary()], vec![], vec![canary()], vec![canary()]]);
    assert_eq!(events, vec![vec![], vec![], vec![], vec![opened(canary(), 2)]]);
}

#[test]
fn a_problem_resolves_after_resolve_after_consecutive_absences_at_the_first() {
    let mut t = Tracker::new(damping(1, 3));
    let events = run(&mut t, &[vec![canary()], vec![], vec![], vec![]]);
    assert_eq!(
        events,
        vec![
            vec![opened(canary(), 0)],
            vec![],
            vec![],
            vec![resolved(canary(), 0, 1)]
        ]
    );
    assert!(!t.is_open("account-service", "canary:too-few-endpoints"));
}

#[test]
fn a_problem_back_before_its_resolution_was_announced_stays_open_without_events() {
    let mut t = Tracker::new(damping(1, 2));
    let events = run(
        &mut t,
        &[
            vec![canary()],
            vec![],
            vec![canary()],
            vec![],
            vec![canary()],
            vec![],
        ],
    );
    assert_eq!(
        events,
        vec![vec![opened(canary(), 0)], vec![], vec![], vec![], vec![], vec![]]
    );
    assert!(t.is_open("account-service", "canary:too-few-endpoints"));
    // The absences before it came back do not count: two fresh ones are needed, and the
    // resolution dates from the first of them.
    assert_eq!(t.observe([], at(6)), vec![resolved(canary(), 0, 5)]);
}

#[test]
fn a_resolved_problem_that_comes_back_opens_again_with_a_new_since() {
    let mut t = Tracker::new(damping(2, 1));
    let events = run(
        &mut t,
        &[
            vec![canary()],
            vec![canary()],
            vec![],
            vec![canary()],
            vec![canary()],
        ],
    );
    assert_eq!(
        events,
        vec![
            vec![],
            vec![opened(canary(), 0)],
            vec![resolved(canary(), 0, 2)],
            vec![],
            vec![opened(canary(), 3)],
        ]
    );
}

#[test]
fn the_same_key_in_two_services_is_two_problems() {
    let mut t = Tracker::new(Damping::IMMEDIATE);
    let a = p("account-service", "canary:too-few-endpoints");
    let b = p("billing", "canary:too-few-endpoints");
    assert_eq!(
        t.observe([a.clone(), b.clone()], at(0)),
        vec![opened(a.clone(), 0), opened(b.clone(), 0)]
    );
    assert_eq!(t.observe([b.clone()], at(1)), vec![resolved(a, 0, 1)]);
    assert!(t.is_open("billing", "canary:too-few-endpoints"));
}

#[test]
fn a_problem_listed_twice_counts_once_with_the_first_summary() {
    let mut t = Tracker::new(Damping::IMMEDIATE);
    let first = canary();
    let second = Problem {
        summary: "canary has 0 ready endpoints (minimum 2)".into(),
        ..canary()
    };
    assert_eq!(t.observe([first.clone(), second], at(0)), vec![opened(first, 0)]);
}

#[test]
fn opened_carries_the_latest_summary_and_resolved_the_announced_one() {
    let mut t = Tracker::new(damping(2, 1));
    let one = canary();
    let zero = Problem {
        summary: "canary has 0 ready endpoints (minimum 2)".into(),
        ..canary()
    };
    assert_eq!(t.observe([one.clone()], at(0)), vec![]);
    assert_eq!(t.observe([zero.clone()], at(1)), vec![opened(zero.clone(), 0)]);
    // A changed summary while open is not news.
    assert_eq!(t.observe([one], at(2)), vec![]);
    assert_eq!(t.observe([], at(3)), vec![resolved(zero, 0, 3)]);
}

#[test]
fn events_of_one_evaluation_are_ordered_by_service_then_key() {
    let mut t = Tracker::new(Damping::IMMEDIATE);
    t.observe([p("b", "x")], at(0));
    let events = t.observe([p("c", "y"), p("a", "z"), p("a", "b")], at(1));
    let order: Vec<(&str, &str, bool)> = events
        .iter()
        .map(|e| {
            (
                e.problem().service.as_str(),
                e.problem().key.as_str(),
                e.is_resolved(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("a", "b", false),
            ("a", "z", false),
            ("b", "x", true),
            ("c", "y", false)
        ]
    );
}

#[test]
fn open_lists_announced_problems_only() {
    let mut t = Tracker::new(damping(2, 2));
    t.observe([p("a", "x"), p("b", "y")], at(0));
    t.observe([p("a", "x")], at(1));
    t.observe([p("c", "z")], at(2));
    let open: Vec<(String, Timestamp)> = t.open().map(|(p, since)| (p.service.clone(), since)).collect();
    // `a` is open (absent once of two), `c` is only pending, `b` was dropped.
    assert_eq!(open, vec![("a".to_string(), at(0))]);
}

#[test]
fn damping_counts_evaluations_so_a_clock_step_changes_nothing_but_the_times() {
    let mut t = Tracker::new(damping(2, 2));
    assert_eq!(t.observe([canary()], at(100)), vec![]);
    // The clock stepped back an hour between two evaluations.
    assert_eq!(t.observe([canary()], at(-20)), vec![opened(canary(), 100)]);
}

#[test]
fn event_accessors() {
    let e = resolved(canary(), 1, 2);
    assert_eq!(e.problem(), &canary());
    assert_eq!(e.since(), at(1));
    assert!(e.is_resolved());
    assert!(!opened(canary(), 1).is_resolved());
}

/// Up to five problems over two services, as a bit mask per evaluation.
fn problem_of(bit: usize) -> Problem {
    let service = if bit.is_multiple_of(2) {
        "account-service"
    } else {
        "billing"
    };
    Problem::new(service, format!("k{}", bit / 2), format!("summary {bit}"))
}

fn cycles_of(masks: &[u8]) -> Vec<Vec<Problem>> {
    masks
        .iter()
        .map(|mask| {
            (0..5)
                .filter(|bit| mask & (1 << bit) != 0)
                .map(problem_of)
                .collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// For any sequence of problem sets, the events of each problem alternate Opened, Resolved,
    /// Opened, ... starting with Opened; each event is backed by the evaluations the damping
    /// asks for; and at the end a problem seen in the last `open_after` evaluations is open and
    /// one absent from the last `resolve_after` is not.
    #[test]
    fn events_alternate_and_follow_the_damping(
        masks in prop::collection::vec(0u8..32, 0..60),
        open_after in 1u32..5,
        resolve_after in 1u32..5,
    ) {
        let cycles = cycles_of(&masks);
        let mut t = Tracker::new(damping(open_after, resolve_after));
        let per_cycle = run(&mut t, &cycles);

        let present = |cycle: usize, problem: &Problem| cycles[cycle].iter().any(|q| q.key == problem.key && q.service == problem.service);
        let (open_n, resolve_n) = (open_after as usize, resolve_after as usize);
        let mut last: BTreeMap<(String, String), Event> = BTreeMap::new();
        for (cycle, events) in per_cycle.iter().enumerate() {
            let mut ids = BTreeSet::new();
            for event in events {
                let problem = event.problem();
                let id = (problem.service.clone(), problem.key.clone());
                prop_assert!(ids.insert(id.clone()), "two events for {id:?} in one evaluation");
                match event {
                    Event::Opened { since, .. } => {
                        prop_assert!(!matches!(last.get(&id), Some(Event::Opened { .. })), "two Opened in a row for {id:?}");
                        prop_assert!(cycle + 1 >= open_n);
                        let first = cycle + 1 - open_n;
                        prop_assert!((first..=cycle).all(|c| present(c, problem)));
                        prop_assert_eq!(*since, at(first as i64));
                    }
                    Event::Resolved { since, resolved_at, .. } => {
                        let Some(Event::Opened { since: opened_since, .. }) = last.get(&id) else {
                            return Err(TestCaseError::fail(format!("Resolved without Opened for {id:?}")));
                        };
                        prop_assert_eq!(since, opened_since);
                        prop_assert!(cycle + 1 >= resolve_n);
                        let first = cycle + 1 - resolve_n;
                        prop_assert!((first..=cycle).all(|c| !present(c, problem)));
                        prop_assert_eq!(*resolved_at, at(first as i64));
                    }
                    Event::Decided { .. } => {
                        return Err(TestCaseError::fail("the tracker made an autopilot decision"));
                    }
                }
                last.insert(id, event.clone());
            }
        }

        let n = cycles.len();
        for bit in 0..5 {
            let problem = problem_of(bit);
            let is_open = t.is_open(&problem.service, &problem.key);
            let announced_open = matches!(last.get(&(problem.service.clone(), problem.key.clone())), Some(Event::Opened { .. }));
            prop_assert_eq!(is_open, announced_open);
            if n >= open_n && (n - open_n..n).all(|c| present(c, &problem)) {
                prop_assert!(is_open, "{problem:?} seen in the last {open_n} evaluations is not open");
            }
            if n >= resolve_n && (n - resolve_n..n).all(|c| !present(c, &problem)) {
                prop_assert!(!is_open, "{problem:?} absent from the last {resolve_n} evaluations is open");
            }
        }
    }
}
