//! The shared CPU worker pool.
//!
//! A fixed set of OS threads takes jobs from one bounded crossbeam channel. Function stages
//! submit one job per batch through [`map_batches`], which keeps at most `window` batches in
//! flight per stage and, by default, yields results in input order, so the output does not
//! depend on how many workers there are or how they were scheduled.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use tokio::sync::oneshot;

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::runtime::metrics::ComponentMetrics;
use crate::stream::BatchStream;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs that may wait in the pool's queue at once. Every stage's window counts against it
/// (checked when a stage is built), so submitting never blocks the async runtime.
pub const POOL_QUEUE_CAPACITY: usize = 4096;

/// A fixed pool of worker threads fed by a bounded crossbeam channel.
#[derive(Debug)]
pub struct WorkerPool {
    tx: Option<crossbeam_channel::Sender<Job>>,
    threads: usize,
    reserved: std::sync::atomic::AtomicUsize,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for WorkerPool {
    /// Closes the queue and waits for the workers, which finish the job in hand and exit.
    fn drop(&mut self) {
        drop(self.tx.take());
        let me = std::thread::current().id();
        for h in self.handles.drain(..) {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

impl WorkerPool {
    /// Starts `threads` workers (at least one). Threads exit when the pool is dropped.
    pub fn new(threads: usize) -> Arc<WorkerPool> {
        let threads = threads.max(1);
        let (tx, rx) = crossbeam_channel::bounded::<Job>(POOL_QUEUE_CAPACITY);
        let handles = (0..threads)
            .map(|i| {
                let rx = rx.clone();
                crate::runtime::spawn::thread(format!("tripline-worker-{i}"), move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })
            })
            .collect();
        Arc::new(WorkerPool {
            tx: Some(tx),
            threads,
            reserved: std::sync::atomic::AtomicUsize::new(0),
            handles,
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Reserves room for `window` in-flight jobs.
    ///
    /// # Errors
    /// When the sum of every stage's window would exceed [`POOL_QUEUE_CAPACITY`].
    pub fn reserve(&self, window: usize) -> Result<()> {
        let before = self.reserved.fetch_add(window, Ordering::SeqCst);
        if before + window > POOL_QUEUE_CAPACITY {
            self.reserved.fetch_sub(window, Ordering::SeqCst);
            return Err(Error::Other(format!(
                "worker pool: stages ask for {} batches in flight, more than the queue's {POOL_QUEUE_CAPACITY}",
                before + window
            )));
        }
        Ok(())
    }

    /// Runs `f` on a worker; the result arrives on the returned channel. Callers must keep
    /// their in-flight jobs within what they [`reserve`](Self::reserve)d.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        // Cannot be full: callers reserve their window first (see `reserve`).
        if let Some(Err(e)) = self.tx.as_ref().map(|tx| tx.try_send(job)) {
            // Only reachable if the pool is shutting down; the receiver then reports it.
            drop(e);
        }
        rx
    }
}

/// Applies `f` to every batch of `input` on the pool, with at most `window` batches in flight.
///
/// `ordered: true` yields results in input order; `false` yields them as they finish. The
/// stream is lazy and stops at the first error. A panic in `f` becomes an error naming it.
pub fn map_batches<F>(
    pool: Arc<WorkerPool>,
    mut input: BatchStream,
    window: usize,
    ordered: bool,
    metrics: Arc<ComponentMetrics>,
    f: Arc<F>,
) -> BatchStream
where
    F: Fn(Batch) -> Result<Batch> + Send + Sync + 'static,
{
    let window = window.max(1);
    Box::pin(async_stream::try_stream! {
        let mut ordered_q = FuturesOrdered::new();
        let mut unordered_q = FuturesUnordered::new();
        let mut input_done = false;
        loop {
            while ordered_q.len() + unordered_q.len() < window && !input_done {
                match input.next().await {
                    Some(b) => {
                        let b = b?;
                        metrics.rows_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                        let f = f.clone();
                        let m = metrics.clone();
                        let rx = pool.submit(move || {
                            let t = Instant::now();
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(b)))
                                .unwrap_or_else(|p| Err(Error::Other(format!("worker panicked: {}", panic_text(&p)))));
                            m.busy_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            r
                        });
                        let fut = async move {
                            rx.await.unwrap_or_else(|_| Err(Error::Other("worker pool shut down".into())))
                        };
                        if ordered { ordered_q.push_back(fut) } else { unordered_q.push(fut) }
                    }
                    None => input_done = true,
                }
            }
            let next = if ordered { ordered_q.next().await } else { unordered_q.next().await };
            match next {
                Some(r) => yield r?,
                None => break,
            }
        }
    })
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
