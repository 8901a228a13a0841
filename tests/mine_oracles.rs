//! The `mine` stage's miners against brute-force oracles (set equality, as
//! pytorch-metric-learning's own miner tests), hand-built guard cases with known keep/drop
//! decisions, sampler invariants, and the blocked kernel against a naive full-matrix reference.

use std::collections::{BTreeSet, HashMap, HashSet};

use tripline::stages::mine::guards::{Guards, Rejection};
use tripline::stages::mine::kernel::{self, KernelParams, Rows, Rules};
use tripline::stages::mine::sampler;
use tripline::stages::mine::triplet_margin::{self, Relation};
use tripline::stages::mine::{DistanceKind, MPerClassConfig, TripletKind, Weighting};

/// Points on the unit circle at `angles` degrees.
fn circle(angles: &[f64]) -> Vec<[f64; 2]> {
    angles
        .iter()
        .map(|a| [a.to_radians().cos(), a.to_radians().sin()])
        .collect()
}

fn flat32(p: &[[f64; 2]]) -> Vec<f32> {
    p.iter().flat_map(|x| [x[0] as f32, x[1] as f32]).collect()
}

#[test]
fn triplet_margin_miner_matches_brute_force_for_every_margin_and_measure() {
    // 24 points, 4 classes, angles chosen irregularly so margins rarely coincide.
    let angles: Vec<f64> = (0..24)
        .map(|i| i as f64 * 13.7 + (i % 5) as f64 * 2.3)
        .collect();
    let labels: Vec<u32> = (0..24).map(|i| (i * 7 % 4) as u32).collect();
    let pts = circle(&angles);
    let emb = flat32(&pts);
    let rows = Rows { data: &emb, dim: 2 };
    let score = |i: u32, j: u32| kernel::dot(rows.row(i as usize), rows.row(j as usize));
    let relation = |a: u32, j: u32| {
        if a == j {
            Relation::Neither
        } else if labels[a as usize] == labels[j as usize] {
            Relation::Positive
        } else {
            Relation::Negative
        }
    };
    let anchors: Vec<u32> = (0..24).collect();
    let mut checked = 0;
    for distance in [DistanceKind::Euclidean, DistanceKind::Cosine] {
        for kind in [
            TripletKind::All,
            TripletKind::Hard,
            TripletKind::Semihard,
            TripletKind::Easy,
        ] {
            for step in 0..=20 {
                let margin = step as f64 * 0.1 - 0.5;
                // Oracle: enumerate every (a, p, n) in f64 from the coordinates.
                let mut want = BTreeSet::new();
                let mut ambiguous = false;
                for a in 0..24 {
                    for p in 0..24 {
                        if p == a || labels[p] != labels[a] {
                            continue;
                        }
                        for n in 0..24 {
                            if labels[n] == labels[a] {
                                continue;
                            }
                            let m = match distance {
                                DistanceKind::Euclidean => {
                                    let d = |x: [f64; 2], y: [f64; 2]| {
                                        ((x[0] - y[0]).powi(2) + (x[1] - y[1]).powi(2)).sqrt()
                                    };
                                    d(pts[a], pts[n]) - d(pts[a], pts[p])
                                }
                                DistanceKind::Cosine => {
                                    let s = |x: [f64; 2], y: [f64; 2]| x[0] * y[0] + x[1] * y[1];
                                    s(pts[a], pts[p]) - s(pts[a], pts[n])
                                }
                            };
                            if (m - margin).abs() < 1e-4 || m.abs() < 1e-4 {
                                ambiguous = true;
                            }
                            let keep = match kind {
                                TripletKind::All => m <= margin,
                                TripletKind::Hard => m <= margin && m <= 0.0,
                                TripletKind::Semihard => m > 0.0 && m <= margin,
                                TripletKind::Easy => m > margin,
                            };
                            if keep {
                                want.insert((a as u32, p as u32, n as u32));
                            }
                        }
                    }
                }
                if ambiguous {
                    continue; // float ties at a boundary: either answer is right
                }
                let got: BTreeSet<(u32, u32, u32)> = triplet_margin::triplet_margin(
                    &anchors,
                    24,
                    &score,
                    &relation,
                    margin as f32,
                    kind,
                    distance,
                )
                .iter()
                .map(|t| (t.a, t.p, t.n))
                .collect();
                assert_eq!(got, want, "{distance:?} {kind:?} margin {margin}");
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} unambiguous cases checked");
}

#[test]
fn batch_hard_takes_the_farthest_positive_and_the_closest_negative() {
    let angles = [0.0, 10.0, 50.0, 20.0, 35.0, 180.0, 90.0];
    let labels = [0u32, 0, 0, 1, 1, 1, 2];
    let emb = flat32(&circle(&angles));
    let rows = Rows { data: &emb, dim: 2 };
    let score = |i: u32, j: u32| kernel::dot(rows.row(i as usize), rows.row(j as usize));
    let relation = |a: u32, j: u32| {
        if a == j {
            Relation::Neither
        } else if labels[a as usize] == labels[j as usize] {
            Relation::Positive
        } else {
            Relation::Negative
        }
    };
    let anchors: Vec<u32> = (0..7).collect();
    let got: Vec<(u32, u32, u32)> = triplet_margin::batch_hard(&anchors, 7, &score, &relation)
        .iter()
        .map(|t| (t.a, t.p, t.n))
        .collect();
    // Brute force by angle: farthest positive = largest angular gap, closest negative = smallest.
    let gap = |a: usize, b: usize| {
        let d = (angles[a] - angles[b]).abs() % 360.0;
        d.min(360.0 - d)
    };
    let mut want = Vec::new();
    for a in 0..7 {
        let p = (0..7)
            .filter(|&j| j != a && labels[j] == labels[a])
            .max_by(|&x, &y| gap(a, x).partial_cmp(&gap(a, y)).unwrap().then(y.cmp(&x)));
        let n = (0..7)
            .filter(|&j| labels[j] != labels[a])
            .min_by(|&x, &y| gap(a, x).partial_cmp(&gap(a, y)).unwrap().then(x.cmp(&y)));
        if let (Some(p), Some(n)) = (p, n) {
            want.push((a as u32, p as u32, n as u32));
        }
    }
    assert_eq!(got, want);
    // Class 2 has a single member: its anchor has no positive and is skipped.
    assert!(got.iter().all(|t| t.0 != 6));
}

/// Unit vector at `deg` degrees.
fn at(deg: f64) -> [f32; 2] {
    [deg.to_radians().cos() as f32, deg.to_radians().sin() as f32]
}

struct OneQuery {
    positive: HashSet<usize>,
    upper: [f32; 3],
}
impl Rules for OneQuery {
    fn excluded(&self, _q: usize, c: usize) -> bool {
        self.positive.contains(&c)
    }
    fn upper(&self, _q: usize) -> [f32; 3] {
        self.upper
    }
}

/// Runs the kernel for one anchor at 0° against candidates at `degs` (candidate 0 is the
/// positive), returning the kept candidates and the guard drop counts.
fn keep(degs: &[f64], g: Guards) -> (BTreeSet<usize>, [u64; 3]) {
    let q = at(0.0);
    let cands: Vec<f32> = degs.iter().flat_map(|&d| at(d)).collect();
    let ids: Vec<i64> = (0..degs.len() as i64).collect();
    let p = kernel::dot(&q, &cands[0..2]);
    let rules = OneQuery {
        positive: HashSet::from([0]),
        upper: g.upper(p),
    };
    let top = kernel::topk(
        Rows { data: &q, dim: 2 },
        None,
        Rows {
            data: &cands,
            dim: 2,
        },
        &ids,
        degs.len(),
        g.lower(),
        &rules,
        KernelParams::default(),
        None,
    )
    .unwrap();
    (
        top.of(0).iter().map(|h| h.cand as usize).collect(),
        top.guard_drops,
    )
}

#[test]
fn guards_keep_exactly_the_candidates_they_should() {
    // Positive at 30° (s = 0.866); candidates at 10° (0.985), 40° (0.766), 60° (0.5),
    // 100° (-0.174), 150° (-0.866).
    let degs = [30.0, 10.0, 40.0, 60.0, 100.0, 150.0];
    let none = Guards::default();
    assert_eq!(keep(&degs, none).0, BTreeSet::from([1, 2, 3, 4, 5]));
    let max = Guards {
        max_score: Some(0.6),
        ..none
    };
    assert_eq!(keep(&degs, max), (BTreeSet::from([3, 4, 5]), [2, 0, 0]));
    let min = Guards {
        min_score: Some(0.0),
        ..none
    };
    assert_eq!(keep(&degs, min).0, BTreeSet::from([1, 2, 3]));
    // absolute 0.2: keep s ≤ 0.666 → 60°, 100°, 150°.
    let abs = Guards {
        absolute_margin: Some(0.2),
        ..none
    };
    assert_eq!(keep(&degs, abs), (BTreeSet::from([3, 4, 5]), [0, 2, 0]));
    // relative 0.1: keep s ≤ 0.866 − 0.0866 = 0.779 → 40° (0.766) stays.
    let rel = Guards {
        relative_margin: Some(0.1),
        ..none
    };
    assert_eq!(keep(&degs, rel), (BTreeSet::from([2, 3, 4, 5]), [0, 0, 1]));
}

#[test]
fn relative_margin_with_a_negative_positive_score_is_sign_safe() {
    // Positive at 120° (s = −0.5); relative 0.2 → bound −0.5 − 0.1 = −0.6.
    // Candidates: 110° (−0.342, harder than the positive), 125° (−0.574, within margin),
    // 130° (−0.643, kept), 170° (−0.985, kept).
    let degs = [120.0, 110.0, 125.0, 130.0, 170.0];
    let rel = Guards {
        relative_margin: Some(0.2),
        ..Guards::default()
    };
    assert_eq!(keep(&degs, rel), (BTreeSet::from([3, 4]), [0, 0, 2]));
    // The naive bound p·(1 − m) = −0.4 lies above p: it would keep 125° (−0.574), which is
    // within the margin of the positive; the sign-safe bound drops it.
    assert_eq!(rel.check(-0.574, -0.5), Err(Rejection::RelativeMargin));
    assert_eq!(rel.check(-0.643, -0.5), Ok(()));
}

#[test]
fn m_per_class_batches_are_exact_and_cover_every_record() {
    // Skewed classes: sizes 1, 2, 3, 7, 40, 100.
    let sizes = [1usize, 2, 3, 7, 40, 100];
    let class_of: Vec<u32> = sizes
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| std::iter::repeat_n(c as u32, n))
        .collect();
    for weighting in [Weighting::None, Weighting::InverseFrequency] {
        let cfg = MPerClassConfig {
            m: 4,
            classes_per_batch: 3,
            max_per_class: None,
            weighting,
            epochs: 1,
        };
        let batches = sampler::epoch(&class_of, sizes.len(), &cfg, 7, 0).unwrap();
        let mut seen = HashSet::new();
        let mut groups_per_class = vec![0usize; sizes.len()];
        for b in &batches {
            assert_eq!(b.records.len(), 12);
            assert_eq!(
                b.classes.iter().collect::<HashSet<_>>().len(),
                3,
                "distinct classes per batch"
            );
            for (g, &c) in b.classes.iter().enumerate() {
                groups_per_class[c as usize] += 1;
                let group = &b.records[g * 4..g * 4 + 4];
                assert!(
                    group.iter().all(|&r| class_of[r as usize] == c),
                    "exactly m per class"
                );
                if sizes[c as usize] >= 4 {
                    assert_eq!(
                        group.iter().collect::<HashSet<_>>().len(),
                        4,
                        "no repeats in a group of a big class"
                    );
                }
                seen.extend(group.iter().copied());
            }
        }
        assert_eq!(
            seen.len(),
            class_of.len(),
            "every record is an anchor in the epoch"
        );
        if weighting == Weighting::InverseFrequency {
            let max = *groups_per_class.iter().max().unwrap();
            let min = *groups_per_class.iter().min().unwrap();
            assert!(
                max - min <= 3,
                "balanced after sampling: {groups_per_class:?}"
            );
        }
        // Seeded: same seed, same epoch.
        assert_eq!(
            batches,
            sampler::epoch(&class_of, sizes.len(), &cfg, 7, 0).unwrap()
        );
        assert_ne!(
            batches,
            sampler::epoch(&class_of, sizes.len(), &cfg, 8, 0).unwrap()
        );
    }
    // Caps limit the records used per class.
    let capped = MPerClassConfig {
        m: 2,
        classes_per_batch: 2,
        max_per_class: Some(4),
        weighting: Weighting::None,
        epochs: 1,
    };
    let batches = sampler::epoch(&class_of, sizes.len(), &capped, 1, 0).unwrap();
    let mut per_class: HashMap<u32, HashSet<u32>> = HashMap::new();
    for b in &batches {
        for &r in &b.records {
            per_class.entry(class_of[r as usize]).or_default().insert(r);
        }
    }
    assert!(per_class.values().all(|s| s.len() <= 4));
    assert!(
        sampler::epoch(
            &class_of,
            sizes.len(),
            &MPerClassConfig {
                classes_per_batch: 7,
                ..capped
            },
            1,
            0
        )
        .is_err()
    );
}

struct LabelRules<'a> {
    labels: &'a [u32],
    upper: Vec<[f32; 3]>,
}
impl Rules for LabelRules<'_> {
    fn excluded(&self, q: usize, c: usize) -> bool {
        self.labels[q] == self.labels[c]
    }
    fn upper(&self, q: usize) -> [f32; 3] {
        self.upper[q]
    }
}

fn random_unit(n: usize, d: usize, seed: u64) -> Vec<f32> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..n * d).map(|_| rng.random::<f32>() - 0.5).collect();
    for r in v.chunks_mut(d) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        r.iter_mut().for_each(|x| *x /= n);
    }
    v
}

#[test]
fn blocked_kernel_equals_a_naive_full_matrix_on_5k_records() {
    let (n, d, k) = (5000, 24, 10);
    let emb = random_unit(n, d, 3);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 50).collect();
    let ids: Vec<i64> = (0..n as i64).collect();
    let g = Guards {
        max_score: Some(0.8),
        ..Guards::default()
    };
    let rules = LabelRules {
        labels: &labels,
        upper: vec![g.upper(0.0); n],
    };
    let rows = Rows { data: &emb, dim: d };
    let top = kernel::topk(
        rows,
        None,
        rows,
        &ids,
        k,
        f32::NEG_INFINITY,
        &rules,
        KernelParams {
            threads: 2,
            query_block: 300,
            candidate_block: 700,
        },
        None,
    )
    .unwrap();
    let mut mismatches = 0;
    for q in 0..n {
        // Naive: the whole row in f64, exclusions, guard, sort by (score desc, id asc).
        let mut all: Vec<(f64, usize)> = (0..n)
            .filter(|&c| labels[c] != labels[q])
            .map(|c| {
                let s: f64 = (0..d)
                    .map(|i| f64::from(emb[q * d + i]) * f64::from(emb[c * d + i]))
                    .sum();
                (s, c)
            })
            .filter(|&(s, _)| s <= 0.8)
            .collect();
        all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
        let got = top.of(q);
        assert_eq!(got.len(), k);
        for (j, h) in got.iter().enumerate() {
            if h.cand as usize != all[j].1 {
                // Only a float tie (f32 vs f64 rounding) may reorder.
                assert!(
                    (f64::from(h.score) - all[j].0).abs() < 1e-5,
                    "query {q} rank {j}"
                );
                mismatches += 1;
            }
        }
    }
    assert!(mismatches < 50, "{mismatches} tie reorders");
}

#[test]
fn kernel_output_is_identical_for_1_and_n_threads_and_any_block_size() {
    let (n, d) = (1500, 16);
    let emb = random_unit(n, d, 9);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 7).collect();
    let ids: Vec<i64> = (0..n as i64).collect();
    let rules = LabelRules {
        labels: &labels,
        upper: vec![[f32::INFINITY; 3]; n],
    };
    let rows = Rows { data: &emb, dim: d };
    let run = |threads, cb| {
        kernel::topk(
            rows,
            None,
            rows,
            &ids,
            7,
            -0.5,
            &rules,
            KernelParams {
                threads,
                query_block: 128,
                candidate_block: cb,
            },
            None,
        )
        .unwrap()
    };
    let one = run(1, 512);
    for (t, cb) in [(2, 512), (3, 512), (4, 512)] {
        let other = run(t, cb);
        assert_eq!(one.hits, other.hits);
        assert_eq!(one.counts, other.counts);
    }
}
