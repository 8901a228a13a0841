//! Exact blocked inner-product top-k with exclusions and guards fused into the selection.
//!
//! Queries are cut into fixed blocks of `query_block` rows (block `b` always holds queries
//! `b·query_block ..`), candidates into blocks of `candidate_block` rows. For each pair of
//! blocks one GEMM (the `gemm` crate, AVX-512 kernels dispatched at run time) fills a
//! `query_block × candidate_block` score tile, and a selection pass folds the tile into one
//! bounded top-k per query:
//!
//! * a vectorised pre-check skips every run of scores that cannot enter the top-k (below the
//!   current k-th best, or below `min_score`);
//! * a score above the query's upper guard bound is never kept; if the candidate is not an
//!   excluded one (a positive, the anchor itself, …) it is counted against each guard it
//!   violates;
//! * otherwise exclusions are checked, and the candidate enters the top-k.
//!
//! Nothing is over-fetched: the k kept per query are exactly the k best admissible
//! candidates. Order is total — higher score first, then lower candidate id — so the result
//! does not depend on block sizes, thread count or scan order. Threads take query blocks from
//! an atomic counter; every block is computed the same way whichever thread takes it, so 1 or
//! N threads give identical output.
//!
//! # Memory
//! Per thread: one score tile (`query_block × candidate_block × 4` bytes), one gathered query
//! block and the block's heaps; plus the result (`queries × k` hits). Never a full
//! queries × candidates matrix.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Row-major embeddings: `data.len() == rows × dim`.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The values, one row after another.
    pub data: &'a [f32],
    /// Values per row.
    pub dim: usize,
}

impl<'a> Rows<'a> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Per-query rules the selection pass applies.
pub trait Rules: Sync {
    /// Whether candidate `c` may never be a negative of query `q` (a positive, the anchor,
    /// same label, equal payload…). Called only for candidates that would otherwise be kept
    /// or counted.
    fn excluded(&self, q: usize, c: usize) -> bool;

    /// Upper guard bounds of query `q`, one per guard ([`GUARDS`] order); `f32::INFINITY`
    /// where a guard is off. Scores strictly above a bound are rejected.
    fn upper(&self, q: usize) -> [f32; 3];
}

/// Names of the upper guards, in [`Rules::upper`] order.
pub const GUARDS: [&str; 3] = ["max_score", "absolute_margin", "relative_margin"];

/// Kernel tuning; none of it changes the result.
#[derive(Debug, Clone, Copy)]
pub struct KernelParams {
    /// Worker threads (at least 1).
    pub threads: usize,
    /// Query rows per block.
    pub query_block: usize,
    /// Candidate rows per block.
    pub candidate_block: usize,
}

impl Default for KernelParams {
    fn default() -> Self {
        KernelParams {
            threads: 1,
            query_block: 512,
            candidate_block: 4096,
        }
    }
}

/// One kept candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Inner product with the query.
    pub score: f32,
    /// Candidate row.
    pub cand: u32,
}

/// The top-k of every query.
#[derive(Debug, Clone, Default)]
pub struct TopK {
    /// `k` slots per query, best first; only the first `counts[q]` of a query's slots are set.
    pub hits: Vec<Hit>,
    /// Kept hits per query.
    pub counts: Vec<u32>,
    /// Slots per query.
    pub k: usize,
    /// Per guard ([`GUARDS`] order): non-excluded candidates rejected because they scored
    /// above that guard's bound, summed over queries.
    pub guard_drops: [u64; 3],
    /// Bytes of scratch the kernel allocated besides its result (score tiles, gathered query
    /// blocks, heaps): the memory bound, independent of the number of candidates.
    pub scratch_bytes: usize,
}

impl TopK {
    /// The kept hits of query `q`, best first.
    pub fn of(&self, q: usize) -> &[Hit] {
        &self.hits[q * self.k..q * self.k + self.counts[q] as usize]
    }
}

/// One query block's disjoint slices of the result: its hits and its per-query counts.
type BlockSlices<'a> = (&'a mut [Hit], &'a mut [u32]);

/// Computes, for every query, its `k` best admissible candidates by inner product.
///
/// `query_rows` selects (and may repeat) rows of `queries`; `None` means every row in order.
/// `cand_ids` breaks ties (lower id wins); `min_score` is the lower bound of admissible
/// scores (`f32::NEG_INFINITY` for none). Returns `None` when `cancel` was set.
///
/// # Panics
/// When dimensions disagree or `cand_ids` does not have one id per candidate.
#[allow(clippy::too_many_arguments)]
pub fn topk<R: Rules>(
    queries: Rows<'_>,
    query_rows: Option<&[u32]>,
    candidates: Rows<'_>,
    cand_ids: &[i64],
    k: usize,
    min_score: f32,
    rules: &R,
    params: KernelParams,
    cancel: Option<&AtomicBool>,
) -> Option<TopK> {
    assert_eq!(
        queries.dim, candidates.dim,
        "query and candidate dimensions"
    );
    assert_eq!(cand_ids.len(), candidates.len(), "one id per candidate");
    let nq = query_rows.map_or(queries.len(), <[u32]>::len);
    let nc = candidates.len();
    let dim = queries.dim;
    let qb = params.query_block.max(1);
    let cb = params.candidate_block.max(1);
    let mut out = TopK {
        hits: vec![
            Hit {
                score: f32::NEG_INFINITY,
                cand: 0
            };
            nq * k
        ],
        counts: vec![0; nq],
        k,
        guard_drops: [0; 3],
        scratch_bytes: 0,
    };
    if nq == 0 || k == 0 || nc == 0 {
        return Some(out);
    }
    let blocks = nq.div_ceil(qb);
    let threads = params.threads.max(1).min(blocks);
    let tile_rows = qb.min(nq);
    let tile_cols = cb.min(nc);
    out.scratch_bytes = threads
        * (tile_rows * tile_cols * 4
            + if query_rows.is_some() {
                tile_rows * dim * 4
            } else {
                0
            }
            + tile_rows * k * std::mem::size_of::<Entry>());

    // Hand each block its own disjoint slices of the result.
    let slots: Vec<Mutex<Option<BlockSlices<'_>>>> = out
        .hits
        .chunks_mut(qb * k)
        .zip(out.counts.chunks_mut(qb))
        .map(|(h, c)| Mutex::new(Some((h, c))))
        .collect();
    let next = AtomicUsize::new(0);
    let drops = Mutex::new([0u64; 3]);
    let cancelled = AtomicBool::new(false);

    let work = || {
        let mut tile = vec![0f32; tile_rows * tile_cols];
        let mut gathered = if query_rows.is_some() {
            vec![0f32; tile_rows * dim]
        } else {
            Vec::new()
        };
        let mut heaps: Vec<Heap> = (0..tile_rows).map(|_| Heap::new(k)).collect();
        let mut my_drops = [0u64; 3];
        loop {
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= blocks {
                break;
            }
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                cancelled.store(true, Ordering::Relaxed);
                break;
            }
            let q0 = b * qb;
            let q1 = (q0 + qb).min(nq);
            let rows = q1 - q0;
            let qdata: &[f32] = match query_rows {
                Some(sel) => {
                    for (i, &r) in sel[q0..q1].iter().enumerate() {
                        gathered[i * dim..(i + 1) * dim].copy_from_slice(queries.row(r as usize));
                    }
                    &gathered[..rows * dim]
                }
                None => &queries.data[q0 * dim..q1 * dim],
            };
            let uppers: Vec<[f32; 3]> = (q0..q1).map(|q| rules.upper(q)).collect();
            for h in heaps.iter_mut().take(rows) {
                h.clear();
            }
            let mut c0 = 0;
            while c0 < nc {
                let c1 = (c0 + cb).min(nc);
                let cols = c1 - c0;
                let t = &mut tile[..rows * cols];
                inner_products(
                    qdata,
                    &candidates.data[c0 * dim..c1 * dim],
                    rows,
                    cols,
                    dim,
                    t,
                );
                for i in 0..rows {
                    scan_row(
                        &t[i * cols..(i + 1) * cols],
                        c0,
                        q0 + i,
                        &mut heaps[i],
                        min_score,
                        &uppers[i],
                        rules,
                        cand_ids,
                        &mut my_drops,
                    );
                }
                c0 = c1;
            }
            let (hits, counts) = slots[b]
                .lock()
                .expect("result slot")
                .take()
                .expect("each block is taken once");
            for i in 0..rows {
                let sorted = heaps[i].sorted();
                counts[i] = sorted.len() as u32;
                for (j, e) in sorted.iter().enumerate() {
                    hits[i * k + j] = Hit {
                        score: e.score,
                        cand: e.cand,
                    };
                }
            }
        }
        let mut d = drops.lock().expect("drop counters");
        for (d, m) in d.iter_mut().zip(my_drops) {
            *d += m;
        }
    };
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    drop(slots);
    if cancelled.load(Ordering::Relaxed) {
        return None;
    }
    out.guard_drops = drops.into_inner().expect("drop counters");
    Some(out)
}

/// `tile[i, j] = <q_i, c_j>` for a `rows × cols` tile (row-major, stride `cols`).
fn inner_products(q: &[f32], c: &[f32], rows: usize, cols: usize, dim: usize, tile: &mut [f32]) {
    debug_assert_eq!(tile.len(), rows * cols);
    // SAFETY: the pointers cover `rows × dim`, `cols × dim` and `rows × cols` f32 values with
    // the strides given (asserted by the slice lengths), and `tile` does not alias the inputs.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            dim,
            tile.as_mut_ptr(),
            1,
            cols as isize,
            false,
            q.as_ptr(),
            1,
            dim as isize,
            c.as_ptr(),
            dim as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

const CHUNK: usize = 32;

#[allow(clippy::too_many_arguments)]
#[inline]
fn scan_row<R: Rules>(
    row: &[f32],
    c0: usize,
    q: usize,
    heap: &mut Heap,
    min_score: f32,
    upper: &[f32; 3],
    rules: &R,
    cand_ids: &[i64],
    drops: &mut [u64; 3],
) {
    let hi = upper[0].min(upper[1]).min(upper[2]);
    let mut t = heap.threshold(min_score);
    let mut base = 0;
    for chunk in row.chunks(CHUNK) {
        // Branch-free pre-check (vectorises): does anything in the chunk reach the threshold?
        let mut any = false;
        for &s in chunk {
            any |= s >= t;
        }
        if any {
            for (j, &s) in chunk.iter().enumerate() {
                if s >= t {
                    let c = c0 + base + j;
                    if s > hi {
                        if !rules.excluded(q, c) {
                            for (d, u) in drops.iter_mut().zip(upper) {
                                *d += u64::from(s > *u);
                            }
                        }
                        continue;
                    }
                    if rules.excluded(q, c) {
                        continue;
                    }
                    heap.push(Entry {
                        score: s,
                        id: cand_ids[c],
                        cand: c as u32,
                    });
                    t = heap.threshold(min_score);
                }
            }
        }
        base += chunk.len();
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f32,
    id: i64,
    cand: u32,
}

/// `a` ranks before `b`: higher score, then lower id.
#[inline]
fn better(a: &Entry, b: &Entry) -> bool {
    a.score > b.score || (a.score == b.score && a.id < b.id)
}

/// A bounded heap whose root is the worst kept entry.
#[derive(Debug)]
struct Heap {
    k: usize,
    items: Vec<Entry>,
}

impl Heap {
    fn new(k: usize) -> Heap {
        Heap {
            k,
            items: Vec::with_capacity(k),
        }
    }

    fn clear(&mut self) {
        self.items.clear();
    }

    /// Scores below this cannot enter.
    #[inline]
    fn threshold(&self, floor: f32) -> f32 {
        if self.items.len() < self.k {
            floor
        } else {
            self.items[0].score
        }
    }

    fn push(&mut self, e: Entry) {
        if self.items.len() < self.k {
            self.items.push(e);
            let mut i = self.items.len() - 1;
            while i > 0 {
                let p = (i - 1) / 2;
                if better(&self.items[p], &self.items[i]) {
                    self.items.swap(p, i);
                    i = p;
                } else {
                    break;
                }
            }
        } else if better(&e, &self.items[0]) {
            self.items[0] = e;
            let n = self.items.len();
            let mut i = 0;
            loop {
                let l = 2 * i + 1;
                let r = l + 1;
                let mut worst = i;
                if l < n && better(&self.items[worst], &self.items[l]) {
                    worst = l;
                }
                if r < n && better(&self.items[worst], &self.items[r]) {
                    worst = r;
                }
                if worst == i {
                    break;
                }
                self.items.swap(i, worst);
                i = worst;
            }
        }
    }

    fn sorted(&self) -> Vec<Entry> {
        let mut v = self.items.clone();
        v.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        v
    }
}

/// Inner product of two equal-length vectors (used outside the blocked path, e.g. for
/// positive scores and random negatives).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators: vectorises and is deterministic.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for l in 0..8 {
            acc[l] += a[i * 8 + l] * b[i * 8 + l];
        }
    }
    let mut s = 0f32;
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + s
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoRules;
    impl Rules for NoRules {
        fn excluded(&self, q: usize, c: usize) -> bool {
            q == c
        }
        fn upper(&self, _q: usize) -> [f32; 3] {
            [f32::INFINITY; 3]
        }
    }

    #[test]
    fn ties_prefer_lower_ids_whatever_the_blocking() {
        // Every candidate scores 1.0 against the query: the k lowest ids (self excluded) win.
        let data = vec![1.0f32; 40];
        let rows = Rows {
            data: &data,
            dim: 1,
        };
        let ids: Vec<i64> = (0..40).rev().collect();
        for cb in [1, 3, 7, 64] {
            let r = topk(
                rows,
                Some(&[5]),
                rows,
                &ids,
                3,
                f32::NEG_INFINITY,
                &NoRules,
                KernelParams {
                    threads: 2,
                    query_block: 2,
                    candidate_block: cb,
                },
                None,
            )
            .unwrap();
            let got: Vec<u32> = r.of(0).iter().map(|h| h.cand).collect();
            // ids are reversed: candidate 39 has id 0.
            assert_eq!(got, vec![39, 38, 37], "candidate_block {cb}");
        }
    }
}
