//! What `cohort.yaml`'s `autopilot:` lets the autopilot do by itself: per stage, promote into
//! it, roll it back, ramp its share step by step; and when promotions and ramps may happen.
//! Rollbacks are never held back by a window, a freeze or a pause.

use std::collections::BTreeMap;

use crate::{Duration, TrackName, Weight};

/// The autopilot's policy for one stage: the stage a version is promoted into and runs on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StagePolicy {
    /// Promote a version into this stage by itself once the gate is open and the version's
    /// judgement on the stage before passes (default: only by hand).
    pub promote: bool,
    /// Roll this stage back by itself when its version's judgement fails (default: wherever
    /// `promote` is automatic).
    pub rollback: bool,
    /// The stage's share of each route grows through these steps (increasing; the last is the
    /// largest weight the routes give the stage). Empty: the configured weights at once.
    pub ramp: Vec<Weight>,
    /// Each ramp step lasts at least this long, with a passing judgement, before the next.
    pub step_time: Duration,
}

impl Default for StagePolicy {
    fn default() -> Self {
        StagePolicy {
            promote: false,
            rollback: false,
            ramp: vec![],
            step_time: DEFAULT_STEP_TIME,
        }
    }
}

/// How long a ramp step lasts when `step_time` is not given.
pub const DEFAULT_STEP_TIME: Duration = Duration::from_secs(600);

/// The whole `autopilot:` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AutopilotPolicy {
    /// Per stage; a stage that is absent is left to people.
    pub stages: BTreeMap<TrackName, StagePolicy>,
    /// Promotions and ramp steps happen only inside one of these (empty: at any time).
    pub windows: Vec<ChangeWindow>,
}

impl AutopilotPolicy {
    /// The policy of `stage` (the default, all by hand, when none is written).
    pub fn stage(&self, stage: &TrackName) -> StagePolicy {
        self.stages.get(stage).cloned().unwrap_or_default()
    }
}

/// Days of the week, Monday first.
pub const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A weekly window in a time zone, e.g. `Mon-Fri 09:00-17:00 Europe/Berlin`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChangeWindow {
    /// Which days it opens on, Monday first.
    pub days: [bool; 7],
    /// Opens at this minute of the day (local time).
    pub from_minute: u16,
    /// Closes at this minute of the day (local time), after `from_minute`.
    pub to_minute: u16,
    /// The IANA time zone its times are in.
    pub zone: String,
    /// As written, for messages.
    pub text: String,
}

/// Why a change window cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Not three parts.
    #[error(
        "`{0}` is not a window; write it like `Mon-Fri 09:00-17:00 Europe/Berlin` (days, hours, time zone)"
    )]
    Shape(String),
    /// A day that is not one of Mon..Sun, or a bad range.
    #[error("`{0}` is not a day or range of days; write e.g. `Mon-Fri`, `Sat,Sun` or `Tue`")]
    Days(String),
    /// A time that is not HH:MM, or an end not after the start.
    #[error(
        "`{0}` is not a time range within a day; write e.g. `09:00-17:00` (24-hour clock, end after start)"
    )]
    Hours(String),
}

impl ChangeWindow {
    /// Reads `DAYS HH:MM-HH:MM ZONE`; the zone is taken as written (the caller checks it names
    /// a known time zone).
    pub fn parse(text: &str) -> Result<ChangeWindow, WindowError> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [days, hours, zone] = parts[..] else {
            return Err(WindowError::Shape(text.to_string()));
        };
        ChangeWindow {
            days: parse_days(days)?,
            from_minute: 0,
            to_minute: 0,
            zone: zone.to_string(),
            text: text.to_string(),
        }
        .with_hours(hours)
    }

    fn with_hours(mut self, hours: &str) -> Result<ChangeWindow, WindowError> {
        let bad = || WindowError::Hours(hours.to_string());
        let (from, to) = hours.split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Option<u16> {
            let (h, m) = t.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
        };
        let (from, to) = (minute(from).ok_or_else(bad)?, minute(to).ok_or_else(bad)?);
        if to <= from {
            return Err(bad());
        }
        self.from_minute = from;
        self.to_minute = to;
        Ok(self)
    }

    /// Whether the window is open on weekday `day` (0 = Monday) at local minute `minute`.
    pub fn open_at(&self, day: usize, minute: u16) -> bool {
        self.days.get(day).copied().unwrap_or(false) && minute >= self.from_minute && minute < self.to_minute
    }
}

fn parse_days(text: &str) -> Result<[bool; 7], WindowError> {
    let bad = || WindowError::Days(text.to_string());
    let day = |d: &str| DAYS.iter().position(|x| x.eq_ignore_ascii_case(d));
    let mut out = [false; 7];
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?);
                if b < a {
                    return Err(bad());
                }
                for d in out.iter_mut().take(b + 1).skip(a) {
                    *d = true;
                }
            }
            None => out[day(part).ok_or_else(bad)?] = true,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reads_days_hours_and_zone() {
        let w = ChangeWindow::parse("Mon-Fri 09:00-17:30 Europe/Berlin").expect("valid");
        assert_eq!(w.days, [true, true, true, true, true, false, false]);
        assert_eq!((w.from_minute, w.to_minute), (540, 1050));
        assert_eq!(w.zone, "Europe/Berlin");
        assert!(w.open_at(0, 540) && w.open_at(4, 1049));
        assert!(!w.open_at(0, 1050) && !w.open_at(5, 600) && !w.open_at(2, 539));
        let weekend = ChangeWindow::parse("sat,Sun 00:00-24:00 UTC").expect("valid");
        assert_eq!(weekend.days, [false, false, false, false, false, true, true]);
        assert!(weekend.open_at(6, 1439));
    }

    #[test]
    fn a_bad_window_says_which_part_is_wrong() {
        assert!(matches!(
            ChangeWindow::parse("Mon-Fri 09:00-17:00"),
            Err(WindowError::Shape(_))
        ));
        assert!(matches!(
            ChangeWindow::parse("Fri-Mon 09:00-17:00 UTC"),
            Err(WindowError::Days(_))
        ));
        assert!(matches!(
            ChangeWindow::parse("Mon-Fry 09:00-17:00 UTC"),
            Err(WindowError::Days(_))
        ));
        assert!(matches!(
            ChangeWindow::parse("Mon 17:00-09:00 UTC"),
            Err(WindowError::Hours(_))
        ));
        assert!(matches!(
            ChangeWindow::parse("Mon 9:00-17:00 UTC"),
            Err(WindowError::Hours(_))
        ));
        assert!(matches!(
            ChangeWindow::parse("Mon 09:00-25:00 UTC"),
            Err(WindowError::Hours(_))
        ));
    }
}
