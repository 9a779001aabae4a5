//! Promotion gates: may a version enter a stage now?

use crate::{Duration, Gate};

/// Everything a gate decision needs, gathered by the caller from the repo and its history.
#[derive(Clone, Debug)]
pub struct GateInput<'a> {
    /// The gate of the stage being entered.
    pub gate: &'a Gate,
    /// When the version entered the previous stage (unix seconds), if the history says.
    pub entered_previous_at: Option<i64>,
    /// Now (unix seconds).
    pub now: i64,
    /// Checks recorded for the version.
    pub recorded_checks: Vec<&'a str>,
    /// Whether a passing canary judgement is on record.
    pub judgement_passed: bool,
}

/// One reason a gate is closed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GateBlock {
    /// The version has not spent long enough in the previous stage.
    TooSoon {
        /// The minimum.
        needed: Duration,
        /// Time spent so far.
        waited: Duration,
    },
    /// The history does not say when the version entered the previous stage.
    UnknownEntry,
    /// A required check has not been recorded.
    MissingCheck {
        /// The check's name.
        check: String,
    },
    /// A passing canary judgement is required and none is on record.
    JudgementRequired,
}

impl std::fmt::Display for GateBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateBlock::TooSoon { needed, waited } => {
                let left = Duration::from_millis(needed.as_millis() - waited.as_millis());
                write!(
                    f,
                    "it has been in the previous stage for {waited}; the gate needs {needed} ({left} to go)"
                )
            }
            GateBlock::UnknownEntry => {
                write!(
                    f,
                    "the history does not show when it entered the previous stage, so time in stage cannot be checked"
                )
            }
            GateBlock::MissingCheck { check } => write!(f, "check `{check}` has not been recorded"),
            GateBlock::JudgementRequired => write!(f, "a passing canary judgement is required"),
        }
    }
}

/// Returns every reason the gate is closed; empty means the version may pass.
pub fn check_gate(input: &GateInput<'_>) -> Vec<GateBlock> {
    let mut blocks = Vec::new();
    let needed = input.gate.min_time_in_previous;
    if needed > Duration::ZERO {
        match input.entered_previous_at {
            None => blocks.push(GateBlock::UnknownEntry),
            Some(at) => {
                let waited_ms = (input.now - at).max(0) as u64 * 1000;
                if waited_ms < needed.as_millis() {
                    blocks.push(GateBlock::TooSoon {
                        needed,
                        waited: Duration::from_millis(waited_ms),
                    });
                }
            }
        }
    }
    for check in &input.gate.checks {
        if !input.recorded_checks.contains(&check.as_str()) {
            blocks.push(GateBlock::MissingCheck { check: check.clone() });
        }
    }
    if input.gate.require_judgement && !input.judgement_passed {
        blocks.push(GateBlock::JudgementRequired);
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        Gate {
            min_time_in_previous: Duration::parse("1h").expect("duration"),
            checks: vec!["qa".into(), "integration-tests".into()],
            require_judgement: true,
        }
    }

    #[test]
    fn every_reason_is_listed() {
        let g = gate();
        let blocks = check_gate(&GateInput {
            gate: &g,
            entered_previous_at: Some(1000),
            now: 1000 + 600,
            recorded_checks: vec!["qa"],
            judgement_passed: false,
        });
        assert_eq!(
            blocks,
            vec![
                GateBlock::TooSoon {
                    needed: Duration::from_secs(3600),
                    waited: Duration::from_secs(600)
                },
                GateBlock::MissingCheck {
                    check: "integration-tests".into()
                },
                GateBlock::JudgementRequired,
            ]
        );
        assert_eq!(
            blocks[0].to_string(),
            "it has been in the previous stage for 10m; the gate needs 1h (50m to go)"
        );
    }

    #[test]
    fn an_open_gate_has_no_blocks() {
        let g = gate();
        let input = GateInput {
            gate: &g,
            entered_previous_at: Some(0),
            now: 3600,
            recorded_checks: vec!["integration-tests", "qa"],
            judgement_passed: true,
        };
        assert!(check_gate(&input).is_empty());
        let open = Gate::default();
        let input = GateInput {
            gate: &open,
            entered_previous_at: None,
            now: 0,
            recorded_checks: vec![],
            judgement_passed: false,
        };
        assert!(check_gate(&input).is_empty());
    }

    #[test]
    fn unknown_entry_time_blocks_a_timed_gate() {
        let g = Gate {
            min_time_in_previous: Duration::from_secs(1),
            ..Gate::default()
        };
        let input = GateInput {
            gate: &g,
            entered_previous_at: None,
            now: 0,
            recorded_checks: vec![],
            judgement_passed: false,
        };
        assert_eq!(check_gate(&input), vec![GateBlock::UnknownEntry]);
    }
}
