//! Memory of the `global` scope's kernel stays bounded as the corpus grows: with 10k and with
//! 200k candidates, the kernel's own scratch (score tiles, heaps) is the same, and the peak heap
//! growth during the call (measured by a counting allocator) exceeds its inputs and result by
//! no more than that scratch — never anything proportional to queries × candidates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tripline::stages::mine::kernel::{self, KernelParams, Rows, Rules};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = NOW.fetch_add(l.size(), Ordering::SeqCst) + l.size();
        PEAK.fetch_max(n, Ordering::SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Ordering::SeqCst);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

struct SelfExcluded;
impl Rules for SelfExcluded {
    fn excluded(&self, q: usize, c: usize) -> bool {
        q == c
    }
    fn upper(&self, _q: usize) -> [f32; 3] {
        [f32::INFINITY; 3]
    }
}

/// Peak bytes allocated during one kernel call beyond what was live before it, and the
/// kernel's reported scratch.
fn measure(candidates: usize) -> (usize, usize, usize) {
    let d = 32;
    let queries = 256;
    let v: Vec<f32> = (0..candidates * d)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let ids: Vec<i64> = (0..candidates as i64).collect();
    let rows = Rows { data: &v, dim: d };
    let sel: Vec<u32> = (0..queries as u32).collect();
    let before = NOW.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let top = kernel::topk(
        rows,
        Some(&sel),
        rows,
        &ids,
        10,
        f32::NEG_INFINITY,
        &SelfExcluded,
        KernelParams {
            threads: 2,
            query_block: 64,
            candidate_block: 1024,
        },
        None,
    )
    .unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - before;
    let result = top.hits.len() * std::mem::size_of::<kernel::Hit>() + top.counts.len() * 4;
    (peak, top.scratch_bytes, result)
}

#[test]
fn global_kernel_memory_does_not_grow_with_the_corpus() {
    let (small_peak, small_scratch, small_result) = measure(10_000);
    let (big_peak, big_scratch, big_result) = measure(200_000);
    assert_eq!(
        small_scratch, big_scratch,
        "scratch is set by block sizes only"
    );
    assert_eq!(small_result, big_result, "the result is queries × k");
    // 2 threads × (64 × 1024 × 4 tile + gathered queries + heaps) ≈ 0.55 MB, plus the GEMM's
    // own packing buffers (sized by its cache blocking, not by N); a full 256 × 200k score
    // matrix would be 205 MB.
    let bound = big_scratch + big_result + 8 * 1024 * 1024;
    assert!(small_peak <= bound, "10k: peak {small_peak} > {bound}");
    assert!(big_peak <= bound, "200k: peak {big_peak} > {bound}");
    assert!(
        big_peak < small_peak + 64 * 1024,
        "peak grew with N: {small_peak} → {big_peak}"
    );
}
