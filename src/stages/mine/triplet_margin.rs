//! pytorch-metric-learning miners inside a scope: `TripletMarginMiner` (all / hard /
//! semihard / easy) and `BatchHardMiner`, with their exact boundary conventions.
//!
//! With a distance `d` (L2 between normalised embeddings, `d = √max(2 − 2s, 0)`) the triplet
//! margin is `m = d(a,n) − d(a,p)`; with the cosine similarity `s` it is `m = s(a,p) − s(a,n)`.
//! A triplet is kept when:
//!
//! | `triplets` | condition |
//! |---|---|
//! | `all` | `m ≤ margin` |
//! | `hard` | `m ≤ margin` and `m ≤ 0` |
//! | `semihard` | `0 < m ≤ margin` |
//! | `easy` | `m > margin` |
//!
//! Triplets come out in `(a, p, n)` lexicographic order, as `torch.where` enumerates them.

use super::config::{DistanceKind, TripletKind};

/// How two records of a scope relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// A positive of the anchor.
    Positive,
    /// A negative of the anchor.
    Negative,
    /// Neither (the anchor itself, or an excluded record).
    Neither,
}

/// One mined triplet: indices into the scope, and the similarities `s(a,p)`, `s(a,n)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Triplet {
    /// Anchor.
    pub a: u32,
    /// Positive.
    pub p: u32,
    /// Negative.
    pub n: u32,
    /// `s(a,p)`.
    pub ap: f32,
    /// `s(a,n)`.
    pub an: f32,
}

/// L2 distance between two unit vectors whose inner product is `s`.
#[inline]
pub fn unit_distance(s: f32) -> f32 {
    (2.0 - 2.0 * s).max(0.0).sqrt()
}

/// The triplet margin `m` for similarities `ap = s(a,p)`, `an = s(a,n)`.
#[inline]
pub fn triplet_margin_value(ap: f32, an: f32, distance: DistanceKind) -> f32 {
    match distance {
        DistanceKind::Euclidean => unit_distance(an) - unit_distance(ap),
        DistanceKind::Cosine => ap - an,
    }
}

/// Whether a triplet with margin value `m` is kept.
#[inline]
pub fn keeps(m: f32, margin: f32, kind: TripletKind) -> bool {
    match kind {
        TripletKind::Easy => m > margin,
        TripletKind::All => m <= margin,
        TripletKind::Hard => m <= margin && m <= 0.0,
        TripletKind::Semihard => m <= margin && m > 0.0,
    }
}

/// `TripletMarginMiner` over `anchors` (indices into the scope). `score(i, j)` is the
/// similarity of scope records `i` and `j`; `relation(a, j)` says what `j` is to anchor `a`.
pub fn triplet_margin(
    anchors: &[u32],
    scope_len: usize,
    score: &dyn Fn(u32, u32) -> f32,
    relation: &dyn Fn(u32, u32) -> Relation,
    margin: f32,
    kind: TripletKind,
    distance: DistanceKind,
) -> Vec<Triplet> {
    let mut out = Vec::new();
    for &a in anchors {
        let mut pos = Vec::new();
        let mut neg = Vec::new();
        for j in 0..scope_len as u32 {
            match relation(a, j) {
                Relation::Positive => pos.push((j, score(a, j))),
                Relation::Negative => neg.push((j, score(a, j))),
                Relation::Neither => {}
            }
        }
        for &(p, ap) in &pos {
            for &(n, an) in &neg {
                if keeps(triplet_margin_value(ap, an, distance), margin, kind) {
                    out.push(Triplet { a, p, n, ap, an });
                }
            }
        }
    }
    out
}

/// `BatchHardMiner`: per anchor the farthest positive and the closest negative (ties: the
/// lower scope index); anchors lacking either are skipped.
pub fn batch_hard(
    anchors: &[u32],
    scope_len: usize,
    score: &dyn Fn(u32, u32) -> f32,
    relation: &dyn Fn(u32, u32) -> Relation,
) -> Vec<Triplet> {
    let mut out = Vec::new();
    for &a in anchors {
        let mut hardest_pos: Option<(u32, f32)> = None;
        let mut hardest_neg: Option<(u32, f32)> = None;
        for j in 0..scope_len as u32 {
            match relation(a, j) {
                // Farthest positive = lowest similarity (monotone in distance for unit vectors).
                Relation::Positive => {
                    let s = score(a, j);
                    if hardest_pos.is_none_or(|(_, b)| s < b) {
                        hardest_pos = Some((j, s));
                    }
                }
                Relation::Negative => {
                    let s = score(a, j);
                    if hardest_neg.is_none_or(|(_, b)| s > b) {
                        hardest_neg = Some((j, s));
                    }
                }
                Relation::Neither => {}
            }
        }
        if let (Some((p, ap)), Some((n, an))) = (hardest_pos, hardest_neg) {
            out.push(Triplet { a, p, n, ap, an });
        }
    }
    out
}
