//! Exact traffic weights in basis points (1/100 of a percent).

use std::fmt;

/// Basis points in a whole route: 100% = 10,000.
pub const WHOLE: u32 = 10_000;

/// A share of traffic, exact to the basis point: 5% is `Weight(500)`, 0.01% is `Weight(1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weight(u16);

/// Why a weight could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightError {
    /// The text is not a percentage such as `5%`, `95` or `0.25%`.
    #[error("`{text}` is not a percentage; write it like `5%`, `95%` or `0.25%`")]
    NotAPercentage {
        /// What was written.
        text: String,
    },
    /// More than two decimals: finer than a basis point.
    #[error("`{text}` is finer than cohort's precision of 0.01%; round it to two decimals")]
    TooPrecise {
        /// What was written.
        text: String,
    },
    /// Above 100%.
    #[error("`{text}` is more than 100%")]
    OverWhole {
        /// What was written.
        text: String,
    },
}

impl Weight {
    /// 100%.
    pub const WHOLE: Weight = Weight(WHOLE as u16);

    /// A weight from basis points; `None` above 10,000.
    pub fn from_basis_points(bp: u32) -> Option<Weight> {
        (bp <= WHOLE).then_some(Weight(bp as u16))
    }

    /// The weight in basis points.
    pub fn basis_points(self) -> u32 {
        u32::from(self.0)
    }

    /// Reads a percentage written as `5%`, `5`, `0.25%` or `12.5`; the `%` is optional and
    /// at most two decimals are allowed, so the value is always exact.
    pub fn parse_percent(text: &str) -> Result<Weight, WeightError> {
        let t = text.trim();
        let t = t.strip_suffix('%').unwrap_or(t).trim_end();
        let not_pct = || WeightError::NotAPercentage {
            text: text.to_string(),
        };
        let (whole, frac) = match t.split_once('.') {
            Some((w, f)) => (w, f),
            None => (t, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(not_pct());
        }
        if !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (whole.is_empty() && t.starts_with('.') && frac.is_empty())
        {
            return Err(not_pct());
        }
        let frac_trimmed = frac.trim_end_matches('0');
        if frac_trimmed.len() > 2 {
            return Err(WeightError::TooPrecise {
                text: text.to_string(),
            });
        }
        let whole: u32 = if whole.is_empty() {
            0
        } else if whole.len() > 3 {
            return Err(WeightError::OverWhole {
                text: text.to_string(),
            });
        } else {
            whole.parse().map_err(|_| not_pct())?
        };
        let mut hundredths: u32 = 0;
        for (i, b) in frac_trimmed.bytes().enumerate() {
            let digit = u32::from(b - b'0');
            hundredths += if i == 0 { digit * 10 } else { digit };
        }
        let bp = whole * 100 + hundredths;
        Weight::from_basis_points(bp).ok_or_else(|| WeightError::OverWhole {
            text: text.to_string(),
        })
    }
}

/// Basis points as the shortest exact percentage: `5%`, `0.1%`, `12.34%`, `101%`.
pub fn percent(bp: u32) -> String {
    let (whole, frac) = (bp / 100, bp % 100);
    if frac == 0 {
        format!("{whole}%")
    } else if frac.is_multiple_of(10) {
        format!("{whole}.{}%", frac / 10)
    } else {
        format!("{whole}.{frac:02}%")
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&percent(self.basis_points()))
    }
}

impl serde::Serialize for Weight {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_forms_people_write() {
        for (text, bp) in [
            ("5%", 500),
            ("5", 500),
            ("95 %", 9500),
            ("0.1%", 10),
            ("0.25", 25),
            ("12.50%", 1250),
            ("100%", 10_000),
            ("0", 0),
            (".5%", 50),
        ] {
            assert_eq!(
                Weight::parse_percent(text).map(Weight::basis_points),
                Ok(bp),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_exact_or_not_a_percentage() {
        assert!(matches!(
            Weight::parse_percent("0.125%"),
            Err(WeightError::TooPrecise { .. })
        ));
        assert!(matches!(
            Weight::parse_percent("100.01%"),
            Err(WeightError::OverWhole { .. })
        ));
        assert!(matches!(
            Weight::parse_percent("1000"),
            Err(WeightError::OverWhole { .. })
        ));
        for bad in ["", "%", "five", "-5%", "5%%", "1e2", "5.", "."] {
            if bad == "5." {
                // "5." is an unusual but exact spelling of 5%.
                assert_eq!(Weight::parse_percent(bad).map(Weight::basis_points), Ok(500));
                continue;
            }
            assert!(
                matches!(
                    Weight::parse_percent(bad),
                    Err(WeightError::NotAPercentage { .. })
                ),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn display_reads_back_exactly(bp in 0u32..=10_000) {
            let w = Weight::from_basis_points(bp).expect("in range");
            prop_assert_eq!(Weight::parse_percent(&w.to_string()), Ok(w));
        }
    }
}
