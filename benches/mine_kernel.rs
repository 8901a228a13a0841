//! Benchmarks of the `mine` kernel (exact blocked inner-product top-k with fused exclusions).
//!
//! * `mine_kernel/topk10_self_excluded` — all-vs-all top-10 excluding self on N normalised
//!   384-d vectors (fixed seed), the same task as `scripts/bench-mine.py` gives faiss
//!   `IndexFlatIP` and numpy; throughput in query rows. N defaults to 20 000 for a criterion
//!   run; `MINE_BENCH_N=100000` reproduces the size.
//!
//! Run: `cargo bench --bench mine_kernel` (add `-- --quick` for a short run).
//!
//! With `MINE_BENCH_ONESHOT=<file.f32>` the binary instead loads `N × 384` little-endian f32
//! from that file, runs the kernel once, and prints `seconds`, `gflops` and the ids of the
//! first query's neighbours as one JSON line: the peer script uses it to time every tool on
//! the same vectors in the same run.

use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group};
use rand::{RngExt, SeedableRng};
use tripline::stages::mine::kernel::{self, KernelParams, Rows, Rules};

struct SelfExcluded;
impl Rules for SelfExcluded {
    fn excluded(&self, q: usize, c: usize) -> bool {
        q == c
    }
    fn upper(&self, _q: usize) -> [f32; 3] {
        [f32::INFINITY; 3]
    }
}

const DIM: usize = 384;

fn vectors(n: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut v: Vec<f32> = (0..n * DIM).map(|_| rng.random::<f32>() - 0.5).collect();
    for r in v.chunks_mut(DIM) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        r.iter_mut().for_each(|x| *x /= n);
    }
    v
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn run(v: &[f32], n: usize) -> kernel::TopK {
    let ids: Vec<i64> = (0..n as i64).collect();
    let rows = Rows { data: v, dim: DIM };
    kernel::topk(
        rows,
        None,
        rows,
        &ids,
        10,
        f32::NEG_INFINITY,
        &SelfExcluded,
        KernelParams {
            threads: threads(),
            query_block: 512,
            candidate_block: 4096,
        },
        None,
    )
    .expect("not cancelled")
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("MINE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let v = vectors(n);
    let mut g = c.benchmark_group("mine_kernel");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("topk10_self_excluded", |b| b.iter(|| run(&v, n)));
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(path) = std::env::var("MINE_BENCH_ONESHOT") {
        let bytes = std::fs::read(&path).expect("reading the vectors");
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let n = v.len() / DIM;
        let t = Instant::now();
        let top = run(&v, n);
        let secs = t.elapsed().as_secs_f64();
        let first: Vec<u32> = top.of(0).iter().map(|h| h.cand).collect();
        println!(
            "{{\"n\": {n}, \"threads\": {}, \"seconds\": {secs:.3}, \"gflops\": {:.1}, \"first\": {first:?}}}",
            threads(),
            2.0 * (n as f64) * (n as f64) * DIM as f64 / secs / 1e9
        );
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
