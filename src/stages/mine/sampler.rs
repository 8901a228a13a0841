//! The `m_per_class` sampler: training batches of `classes_per_batch × m` records, exactly `m`
//! of each of `classes_per_batch` distinct classes, with a defined epoch.
//!
//! # The epoch
//! 1. Each class's records are shuffled (seeded) and capped at `max_per_class`.
//! 2. A class of `n` (capped) records gets `⌈n / m⌉` groups of `m` (with
//!    `weighting: inverse_frequency`, every class gets as many groups as the largest one).
//!    Group `i` holds shuffled records `i·m … i·m + m − 1`; positions past the class's end are
//!    filled by draws from the class — without repeating a record inside the group when the
//!    class has at least `m` records, with replacement when it is smaller (as
//!    pytorch-metric-learning's `MPerClassSampler`). So every (capped) record is in at least
//!    one group: every record is an anchor at least once per epoch.
//! 3. Batches take one group from each of `classes_per_batch` distinct classes, drawn with
//!    probability proportional to the groups a class has left, so large classes spread over
//!    the epoch. When fewer classes than `classes_per_batch` have groups left, the batch is
//!    completed with extra groups of other classes (drawn as in step 2), so every batch is full.
//!
//! Everything is drawn from a ChaCha8 stream seeded by `(pipeline seed, epoch)`.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::{MPerClassConfig, Weighting};

/// One training batch: `classes_per_batch` groups of `m` record indices, group by group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingBatch {
    /// Record indices, `m` per class, classes in draw order.
    pub records: Vec<u32>,
    /// The class of each group.
    pub classes: Vec<u32>,
}

/// Builds one epoch. `class_of[r]` is record `r`'s class (`0..n_classes`).
///
/// # Errors
/// When fewer than `classes_per_batch` classes have records, or `m` / `classes_per_batch`
/// is 0.
pub fn epoch(
    class_of: &[u32],
    n_classes: usize,
    cfg: &MPerClassConfig,
    seed: u64,
    epoch: u64,
) -> Result<Vec<TrainingBatch>, String> {
    let m = cfg.m;
    let cpb = cfg.classes_per_batch;
    if m == 0 || cpb == 0 {
        return Err("sampler.m and sampler.classes_per_batch must be at least 1".into());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d70_6572_636c_6173u64.wrapping_add(epoch));
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); n_classes];
    for (r, &c) in class_of.iter().enumerate() {
        members[c as usize].push(r as u32);
    }
    let present: Vec<u32> = (0..n_classes as u32)
        .filter(|&c| !members[c as usize].is_empty())
        .collect();
    if present.len() < cpb {
        return Err(format!(
            "sampler needs at least classes_per_batch = {cpb} classes with records, the input has {}",
            present.len()
        ));
    }
    for list in &mut members {
        shuffle(list, &mut rng);
        if let Some(cap) = cfg.max_per_class {
            list.truncate(cap.max(1));
        }
    }
    let mut groups_left: Vec<usize> = members.iter().map(|l| l.len().div_ceil(m)).collect();
    if cfg.weighting == Weighting::InverseFrequency {
        let g = groups_left.iter().copied().max().unwrap_or(0);
        for &c in &present {
            groups_left[c as usize] = g;
        }
    }
    let mut next_group = vec![0usize; n_classes];
    let mut batches = Vec::new();
    loop {
        let eligible: Vec<u32> = present
            .iter()
            .copied()
            .filter(|&c| groups_left[c as usize] > 0)
            .collect();
        if eligible.is_empty() {
            break;
        }
        let mut chosen: Vec<u32> = Vec::with_capacity(cpb);
        if eligible.len() >= cpb {
            // Weighted draw without replacement, weight = groups left.
            let mut pool: Vec<(u32, usize)> = eligible
                .iter()
                .map(|&c| (c, groups_left[c as usize]))
                .collect();
            for _ in 0..cpb {
                let total: usize = pool.iter().map(|p| p.1).sum();
                let mut x = rng.random_range(0..total);
                let mut pick = 0;
                for (i, p) in pool.iter().enumerate() {
                    if x < p.1 {
                        pick = i;
                        break;
                    }
                    x -= p.1;
                }
                chosen.push(pool.remove(pick).0);
            }
        } else {
            chosen.extend(&eligible);
            let mut others: Vec<u32> = present
                .iter()
                .copied()
                .filter(|c| !eligible.contains(c))
                .collect();
            for _ in eligible.len()..cpb {
                let i = rng.random_range(0..others.len());
                chosen.push(others.remove(i));
            }
        }
        let mut records = Vec::with_capacity(cpb * m);
        for &c in &chosen {
            let list = &members[c as usize];
            let g = next_group[c as usize];
            next_group[c as usize] += 1;
            groups_left[c as usize] = groups_left[c as usize].saturating_sub(1);
            let start = records.len();
            for j in 0..m {
                let pos = g * m + j;
                let r = if pos < list.len() {
                    list[pos]
                } else if list.len() >= m {
                    loop {
                        let r = list[rng.random_range(0..list.len())];
                        if !records[start..].contains(&r) {
                            break r;
                        }
                    }
                } else {
                    list[rng.random_range(0..list.len())]
                };
                records.push(r);
            }
        }
        batches.push(TrainingBatch {
            records,
            classes: chosen,
        });
    }
    Ok(batches)
}

fn shuffle(v: &mut [u32], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}
