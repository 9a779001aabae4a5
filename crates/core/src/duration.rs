//! Durations as people write them in config: `2s`, `500ms`, `10m`, `1h30m`, `1d`.

use std::fmt;

/// A span of time with millisecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    millis: u64,
}

const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl Duration {
    /// Zero.
    pub const ZERO: Duration = Duration { millis: 0 };

    /// From whole seconds.
    pub const fn from_secs(s: u64) -> Duration {
        Duration { millis: s * 1000 }
    }

    /// From milliseconds.
    pub const fn from_millis(millis: u64) -> Duration {
        Duration { millis }
    }

    /// In milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    /// In whole seconds, rounded up (a 1.5 s pause is 2 s where Kubernetes wants seconds).
    pub const fn as_secs_ceil(self) -> u64 {
        self.millis.div_ceil(1000)
    }

    /// Reads `2s`, `500ms`, `10m`, `1h30m`, `1d`; `None` if it is not such a duration.
    pub fn parse(text: &str) -> Option<Duration> {
        let mut rest = text.trim();
        if rest.is_empty() {
            return None;
        }
        if rest == "0" {
            return Some(Duration::ZERO);
        }
        let mut millis: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let n: u64 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            let (_, scale) = UNITS.iter().find(|(u, _)| *u == unit)?;
            millis = millis.checked_add(n.checked_mul(*scale)?)?;
            rest = &rest[unit_len..];
        }
        Some(Duration { millis })
    }
}

impl fmt::Display for Duration {
    /// The shortest exact form: `2s`, `1h30m`, `1d`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis == 0 {
            return f.write_str("0s");
        }
        let mut left = self.millis;
        for (unit, scale) in UNITS {
            if left >= scale {
                write!(f, "{}{unit}", left / scale)?;
                left %= scale;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_back() {
        for (text, ms) in [
            ("2s", 2000),
            ("500ms", 500),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
            ("0", 0),
        ] {
            assert_eq!(Duration::parse(text), Some(Duration::from_millis(ms)), "{text}");
        }
        assert_eq!(Duration::from_millis(5_400_000).to_string(), "1h30m");
        assert_eq!(Duration::from_millis(1500).to_string(), "1s500ms");
        for bad in ["", "2", "s", "2x", "-1s", "1.5s", "2 s"] {
            assert_eq!(Duration::parse(bad), None, "{bad}");
        }
    }
}
