//! `[risk.points]`: the default points of each reason, overridable by the lender.

use super::Reason;
use std::collections::BTreeMap;

/// Points per reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Points([u32; Reason::ALL.len()]);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PointsError {
    #[error("risk.points.{0}: unknown reason (known: {known})", known = known())]
    Unknown(String),
    #[error("risk.points.{0}: must be between 0 and 100, got {1}")]
    Range(String, i64),
}

fn known() -> String {
    Reason::ALL
        .iter()
        .map(|r| r.code())
        .collect::<Vec<_>>()
        .join(", ")
}

impl PointsError {
    pub fn key(&self) -> String {
        match self {
            PointsError::Unknown(k) | PointsError::Range(k, _) => format!("risk.points.{k}"),
        }
    }
}

impl Default for Points {
    fn default() -> Self {
        Points(Reason::ALL.map(Reason::default_points))
    }
}

impl Points {
    /// The defaults with the config's overrides; an unknown key or a value out of range is an
    /// error naming the key.
    pub fn with_overrides(overrides: &BTreeMap<String, i64>) -> Result<Points, PointsError> {
        let mut p = Points::default();
        for (k, &v) in overrides {
            let r = Reason::parse(k).ok_or_else(|| PointsError::Unknown(k.clone()))?;
            if !(0..=100).contains(&v) {
                return Err(PointsError::Range(k.clone(), v));
            }
            p.0[r as usize] = v as u32;
        }
        Ok(p)
    }

    pub fn of(&self, r: Reason) -> u32 {
        self.0[r as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_defaults_and_bad_keys_are_named() {
        let mut m = BTreeMap::new();
        m.insert("silent_overdue".to_string(), 50);
        let p = Points::with_overrides(&m).unwrap();
        assert_eq!(p.of(Reason::SilentOverdue), 50);
        assert_eq!(p.of(Reason::AllSilent), 35);
        m.insert("silence".to_string(), 5);
        let e = Points::with_overrides(&m).unwrap_err();
        assert_eq!(e.key(), "risk.points.silence");
        let mut m = BTreeMap::new();
        m.insert("all_silent".to_string(), 101);
        assert_eq!(
            Points::with_overrides(&m).unwrap_err().key(),
            "risk.points.all_silent"
        );
    }
}
