//! False-negative guards: bounds on a negative's score, relative to the anchor's positive
//! score `p = s(a,p)` (with several positives, the smallest).
//!
//! | guard | keeps a candidate scoring `s` when |
//! |---|---|
//! | `max_score` | `s ≤ max_score` |
//! | `min_score` | `s ≥ min_score` |
//! | `absolute_margin` | `s ≤ p − absolute_margin` |
//! | `relative_margin` | `s ≤ p − |p|·relative_margin` (sign-safe) |
//!
//! The relative bound is computed as `p − |p|·m`, the same arithmetic as sentence-transformers
//! 6.2 (after its fix of the sign bug, where `p·(1 − m)` lay *above* a negative `p` and let
//! harder-than-positive candidates in), so boundary cases agree bit for bit. The absolute bound
//! is `p − m`; sentence-transformers tests `s + m > p`, which can differ in the last bit.

use super::config::NegativesConfig;

/// The guards of a stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Guards {
    /// `max_score`.
    pub max_score: Option<f32>,
    /// `min_score`.
    pub min_score: Option<f32>,
    /// `absolute_margin`.
    pub absolute_margin: Option<f32>,
    /// `relative_margin`.
    pub relative_margin: Option<f32>,
}

/// Why a candidate was rejected (first failing guard in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Above `max_score`.
    MaxScore,
    /// Within `absolute_margin` of the positive score.
    AbsoluteMargin,
    /// Within `relative_margin` of the positive score.
    RelativeMargin,
    /// Below `min_score`.
    MinScore,
}

impl Guards {
    /// The guards set in `cfg`.
    pub fn from_config(cfg: &NegativesConfig) -> Guards {
        Guards {
            max_score: cfg.max_score,
            min_score: cfg.min_score,
            absolute_margin: cfg.absolute_margin,
            relative_margin: cfg.relative_margin,
        }
    }

    /// Whether any guard needs the positive score.
    pub fn needs_positive_score(&self) -> bool {
        self.absolute_margin.is_some() || self.relative_margin.is_some()
    }

    /// Upper bounds `[max_score, absolute, relative]` for a positive score `p`
    /// (`f32::INFINITY` where a guard is off); a score strictly above a bound is rejected.
    pub fn upper(&self, p: f32) -> [f32; 3] {
        [
            self.max_score.unwrap_or(f32::INFINITY),
            self.absolute_margin.map_or(f32::INFINITY, |m| p - m),
            self.relative_margin
                .map_or(f32::INFINITY, |m| p - p.abs() * m),
        ]
    }

    /// The lower bound (`f32::NEG_INFINITY` when `min_score` is off).
    pub fn lower(&self) -> f32 {
        self.min_score.unwrap_or(f32::NEG_INFINITY)
    }

    /// Checks one candidate score `s` against positive score `p`.
    ///
    /// # Errors
    /// The first guard (in [`Rejection`] order) that rejects it.
    pub fn check(&self, s: f32, p: f32) -> Result<(), Rejection> {
        let [max, abs, rel] = self.upper(p);
        if s > max {
            Err(Rejection::MaxScore)
        } else if s > abs {
            Err(Rejection::AbsoluteMargin)
        } else if s > rel {
            Err(Rejection::RelativeMargin)
        } else if s < self.lower() {
            Err(Rejection::MinScore)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_margin_is_sign_safe() {
        let g = Guards {
            relative_margin: Some(0.5),
            ..Guards::default()
        };
        // p = -0.4: bound = -0.6; -0.5 is harder than allowed, -0.7 is fine.
        assert_eq!(g.check(-0.5, -0.4), Err(Rejection::RelativeMargin));
        assert_eq!(g.check(-0.7, -0.4), Ok(()));
        // The naive p·(1−m) would give -0.2 and keep -0.3, which is *harder* than p.
        assert_eq!(g.check(-0.3, -0.4), Err(Rejection::RelativeMargin));
        // p = 0.8: bound = 0.4.
        assert_eq!(g.check(0.4, 0.8), Ok(()));
        assert_eq!(g.check(0.41, 0.8), Err(Rejection::RelativeMargin));
    }
}
