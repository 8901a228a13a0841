//! Running the stage: look-ahead windows, a preparation thread, inference workers.
//!
//! ```text
//!  input ─► async stream ──window──► prep thread ──model batches──► worker 1..N (one session each)
//!              ▲  (≤ 2 windows in flight)   (tokenise, sort,        │
//!              └──────── window result (oneshot, input order) ◄─────┘ last batch of a window
//! ```
//!
//! The async stream gathers whole input batches into a window of at least `lookahead_rows`
//! rows and hands it to the preparation thread, which tokenises (or decodes) every row,
//! sorts rows by token length, and cuts model batches of at most `batch_size` rows padded to
//! their longest row. Model batches go through a bounded channel to the inference workers.
//! The worker finishing a window's last model batch assembles the window's output batches (in
//! input order, bad rows handled per `on_error`) and sends them back through the window's
//! oneshot channel; the async stream yields windows in input order. At most two windows are in
//! flight, so memory is bounded by `2 × lookahead_rows` rows plus one input batch.
//!
//! Dropping the stream drops the window channel: the preparation thread exits, which closes the
//! model-batch channel, and the workers exit after skipping what is queued.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeListArray, Float32Array, GenericListArray,
    OffsetSizeTrait,
};
use arrow::datatypes::{DataType, Field, Float32Type};
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::oneshot;

use super::EmbedStageConfig;
use super::image::preprocess;
use super::plan::{self, ColumnKind, IntType, StagePlan};
use super::pooling::{l2_normalize, pool};
use super::session::{self, InputData, Runner};
use crate::batch::Batch;
use crate::config::OnError;
use crate::error::{Error, Result};
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::runtime::quarantine::Quarantine;
use crate::stream::BatchStream;

/// Windows in flight: one being prepared while the previous one is inferred.
const WINDOWS_IN_FLIGHT: usize = 2;

/// Counters reported as details.
#[derive(Debug, Default)]
struct Stats {
    rows_truncated: AtomicU64,
    rows_reused: AtomicU64,
    rows_embedded: AtomicU64,
    padding_tokens: AtomicU64,
    padding_tokens_unsorted: AtomicU64,
    tokens: AtomicU64,
}

/// What every thread of one stage shares.
struct Stage {
    name: Arc<str>,
    cfg: EmbedStageConfig,
    plan: StagePlan,
    quarantine: Arc<Quarantine>,
    metrics: Arc<ComponentMetrics>,
    stats: Stats,
    cancelled: AtomicBool,
}

/// A window of whole input batches on its way to the preparation thread.
struct Window {
    batches: Vec<Batch>,
    reply: oneshot::Sender<Result<Vec<Batch>>>,
}

/// Results of one window, filled in by the workers.
struct Acc {
    /// Per embedded column, `rows × dim` values.
    vectors: Vec<Vec<f32>>,
    /// Per row, why it cannot be embedded (first reason).
    bad: Vec<Option<String>>,
    error: Option<Error>,
}

struct WindowState {
    stage: Arc<Stage>,
    batches: Vec<Batch>,
    /// Window row index of each batch's first row.
    starts: Vec<usize>,
    acc: Mutex<Acc>,
    remaining: AtomicUsize,
    reply: Mutex<Option<oneshot::Sender<Result<Vec<Batch>>>>>,
}

/// One model batch.
struct Chunk {
    window: Arc<WindowState>,
    column: usize,
    /// Window row indices, in the order of the batch.
    rows: Vec<usize>,
    inputs: Vec<(String, Vec<i64>, InputData)>,
    /// Attention mask (`rows × tokens`) for text.
    mask: Option<Vec<i64>>,
    tokens: usize,
}

/// A model batch before it is tied to its window.
struct ChunkSpec {
    column: usize,
    rows: Vec<usize>,
    inputs: Vec<(String, Vec<i64>, InputData)>,
    mask: Option<Vec<i64>>,
    tokens: usize,
}

/// Sets `cancelled` when the stream is dropped.
struct CancelOnDrop(Arc<Stage>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::Relaxed);
    }
}

pub(crate) fn build(
    name: &str,
    cfg: &EmbedStageConfig,
    input: BatchStream,
    ctx: &Ctx,
    metrics: Arc<ComponentMetrics>,
) -> Result<BatchStream> {
    let cfg = cfg.clone();
    let name: Arc<str> = Arc::from(name);
    let quarantine = ctx.quarantine.clone();
    Ok(Box::pin(async_stream::try_stream! {
        let mut input = input;
        let mut pending: Option<Batch> = None;
        if let Some(first) = input.next().await {
            pending = Some(first?);
        }
        if let Some(first) = pending.take() {
            let plan = plan::analyse(&cfg, &first.data.schema()).map_err(|problems| {
                Error::Other(
                    problems
                        .into_iter()
                        .map(|(k, m)| if k.is_empty() { m } else { format!("{}: {m}", k.join(".")) })
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
            let stage = Arc::new(Stage {
                name: name.clone(),
                cfg: cfg.clone(),
                plan,
                quarantine: quarantine.clone(),
                metrics: metrics.clone(),
                stats: Stats::default(),
                cancelled: AtomicBool::new(false),
            });
            let _cancel = CancelOnDrop(stage.clone());
            let prep_tx = start(&stage).await?;
            let lookahead = cfg.lookahead_rows.unwrap_or(64 * cfg.batch_size).max(1);
            let mut in_flight = FuturesOrdered::new();
            let mut carry = Some(first);
            let mut input_done = false;
            loop {
                while in_flight.len() < WINDOWS_IN_FLIGHT && !input_done {
                    let mut batches = Vec::new();
                    let mut rows = 0usize;
                    while rows < lookahead {
                        let next = match carry.take() {
                            Some(b) => Some(b),
                            None => match input.next().await {
                                Some(b) => Some(b?),
                                None => None,
                            },
                        };
                        let Some(b) = next else {
                            input_done = true;
                            break;
                        };
                        metrics.rows_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                        rows += b.num_rows();
                        batches.push(b);
                    }
                    if batches.is_empty() {
                        break;
                    }
                    let (tx, rx) = oneshot::channel();
                    // Never full: the channel holds WINDOWS_IN_FLIGHT windows and at most that
                    // many are in flight.
                    prep_tx
                        .try_send(Window { batches, reply: tx })
                        .map_err(|_| Error::Other("the embedding preparation thread stopped".into()))?;
                    in_flight.push_back(async move {
                        rx.await.unwrap_or_else(|_| {
                            Err(Error::Other("an embedding worker stopped unexpectedly".into()))
                        })
                    });
                }
                match in_flight.next().await {
                    Some(result) => {
                        let batches = result?;
                        report(&stage);
                        for b in batches {
                            yield b;
                        }
                    }
                    None => break,
                }
            }
            report(&stage);
        }
    }))
}

/// Starts the workers (each builds its session and reports) and the preparation thread.
async fn start(stage: &Arc<Stage>) -> Result<crossbeam_channel::Sender<Window>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (workers, threads) = session::parallelism(
        stage.cfg.workers,
        stage.cfg.threads,
        stage.plan.device,
        cores,
    );
    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<Chunk>(2 * workers);
    let mut ready = Vec::new();
    for w in 0..workers {
        let (tx, rx) = oneshot::channel::<Result<(&'static str, String, Option<String>)>>();
        ready.push(rx);
        let stage = stage.clone();
        let rx_chunks = chunk_rx.clone();
        crate::runtime::spawn::thread(format!("tripline-embed-{w}"), move || {
            let model = std::path::Path::new(&stage.cfg.model);
            let mut runner = match session::build(model, stage.plan.device, threads) {
                Ok(r) => {
                    let _ = tx.send(Ok((r.provider, r.device.clone(), r.fallback.clone())));
                    r
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            worker_loop(&stage, &mut runner, rx_chunks);
        });
    }
    drop(chunk_rx);
    let mut first: Option<(&'static str, String, Option<String>)> = None;
    for rx in ready {
        let r = rx
            .await
            .unwrap_or_else(|_| Err(Error::Other("an embedding worker failed to start".into())))?;
        first.get_or_insert(r);
    }
    let (provider, device, fallback) = first.expect("at least one worker");
    let m = &stage.metrics;
    m.set_detail("execution_provider", provider);
    m.set_detail("device", device.clone());
    m.set_detail("model", stage.cfg.model.clone());
    m.set_detail("dim", stage.plan.dim as u64);
    m.set_detail("workers", workers as u64);
    m.set_detail("threads_per_worker", threads as u64);
    if let Some(why) = fallback {
        tracing::warn!(
            "embed stage `{}`: device auto: CUDA not used ({why}); running on the CPU",
            stage.name
        );
        m.set_detail("device_fallback", why);
    } else {
        tracing::info!(
            "embed stage `{}`: running on {device} ({provider})",
            stage.name
        );
    }
    if let Some(lib) = super::ort_env::library_path() {
        m.set_detail("onnxruntime_library", lib.display().to_string());
    }
    let (prep_tx, prep_rx) = crossbeam_channel::bounded::<Window>(WINDOWS_IN_FLIGHT);
    let stage = stage.clone();
    crate::runtime::spawn::thread("tripline-embed-prep".into(), move || {
        while let Ok(window) = prep_rx.recv() {
            let t = Instant::now();
            let prepared =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(&stage, window)));
            stage
                .metrics
                .busy_ns
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let (state, chunks) = match prepared {
                Ok(p) => p,
                // The window's reply sender was dropped with it: the stream reports the failure.
                Err(_) => continue,
            };
            if chunks.is_empty() {
                finish(&state);
                continue;
            }
            for chunk in chunks {
                if let Err(e) = chunk_tx.send(chunk) {
                    // Every worker is gone.
                    let chunk = e.into_inner();
                    chunk.window.complete(
                        chunk.column,
                        &chunk.rows,
                        Err("no embedding worker is running".into()),
                    );
                }
            }
        }
    });
    Ok(prep_tx)
}

fn report(stage: &Stage) {
    let s = &stage.stats;
    let m = &stage.metrics;
    let padded = s.padding_tokens.load(Ordering::Relaxed);
    let unsorted = s.padding_tokens_unsorted.load(Ordering::Relaxed);
    m.set_detail("rows_embedded", s.rows_embedded.load(Ordering::Relaxed));
    m.set_detail("rows_reused", s.rows_reused.load(Ordering::Relaxed));
    if stage.plan.text.is_some() {
        m.set_detail("rows_truncated", s.rows_truncated.load(Ordering::Relaxed));
        m.set_detail("tokens", s.tokens.load(Ordering::Relaxed));
        m.set_detail("padding_tokens", padded);
        m.set_detail("padding_tokens_unsorted", unsorted);
        let saved = if unsorted > 0 {
            1.0 - padded as f64 / unsorted as f64
        } else {
            0.0
        };
        m.set_detail("padding_saved", (saved * 1000.0).round() / 1000.0);
    }
}

fn worker_loop(stage: &Stage, runner: &mut Runner, rx: crossbeam_channel::Receiver<Chunk>) {
    while let Ok(chunk) = rx.recv() {
        if stage.cancelled.load(Ordering::Relaxed) {
            continue;
        }
        let Chunk {
            window,
            column,
            rows,
            inputs,
            mask,
            tokens,
        } = chunk;
        let t = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            infer(stage, runner, inputs, mask.as_deref(), tokens, rows.len())
        }))
        .unwrap_or_else(|_| Err("inference panicked".into()));
        stage
            .metrics
            .busy_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        window.complete(column, &rows, result);
    }
}

/// Runs one model batch of `rows` rows and returns `rows × dim` pooled (and normalised)
/// values. `mask` (`rows × tokens`) is the attention mask of a text batch.
fn infer(
    stage: &Stage,
    runner: &mut Runner,
    inputs: Vec<(String, Vec<i64>, InputData)>,
    mask: Option<&[i64]>,
    input_tokens: usize,
    rows: usize,
) -> std::result::Result<Vec<f32>, String> {
    let plan = &stage.plan;
    let dim = plan.dim;
    let pooling = stage.cfg.pooling;
    let mut out = vec![0.0f32; rows * dim];
    session::run(runner, inputs, &plan.output, |shape, data| {
        let ok = if plan.output_has_tokens {
            shape.len() == 3 && shape[0] as usize == rows && shape[2] as usize == dim
        } else {
            shape.len() == 2 && shape[0] as usize == rows && shape[1] as usize == dim
        };
        if !ok {
            return Err(format!(
                "model output `{}` has shape {shape:?} for a batch of {rows}, expected {}",
                plan.output,
                if plan.output_has_tokens {
                    format!("[{rows}, tokens, {dim}]")
                } else {
                    format!("[{rows}, {dim}]")
                }
            ));
        }
        let tokens = if plan.output_has_tokens {
            shape[1] as usize
        } else {
            1
        };
        let mask = mask.filter(|_| tokens == input_tokens);
        pool(pooling, data, mask, rows, tokens, dim, &mut out);
        Ok(())
    })??;
    if stage.cfg.normalize {
        l2_normalize(&mut out, dim);
    }
    Ok(out)
}

impl WindowState {
    /// Records a model batch's result; the last one finishes the window.
    fn complete(
        &self,
        column: usize,
        rows: &[usize],
        result: std::result::Result<Vec<f32>, String>,
    ) {
        {
            let mut acc = self.acc.lock().expect("window lock");
            match result {
                Ok(values) => {
                    let dim = self.stage.plan.dim;
                    let col = &self.stage.plan.columns[column].name;
                    for (i, &r) in rows.iter().enumerate() {
                        let v = &values[i * dim..(i + 1) * dim];
                        if v.iter().any(|x| !x.is_finite()) {
                            acc.bad[r].get_or_insert_with(|| {
                                format!(
                                    "the model produced a non-finite embedding for column `{col}`"
                                )
                            });
                        }
                        acc.vectors[column][r * dim..(r + 1) * dim].copy_from_slice(v);
                    }
                }
                Err(e) => {
                    if acc.error.is_none() {
                        acc.error = Some(Error::Other(format!(
                            "embedding column `{}`: {e}",
                            self.stage.plan.columns[column].name
                        )));
                    }
                }
            }
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            finish(self);
        }
    }
}

/// Assembles the window's output batches and sends them back.
fn finish(state: &WindowState) {
    let Some(reply) = state.reply.lock().expect("reply lock").take() else {
        return;
    };
    let result = assemble(state);
    let _ = reply.send(result);
}

fn assemble(state: &WindowState) -> Result<Vec<Batch>> {
    let stage = &state.stage;
    let mut acc = state.acc.lock().expect("window lock");
    if let Some(e) = acc.error.take() {
        return Err(e);
    }
    let dim = stage.plan.dim;
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let mut out = Vec::with_capacity(state.batches.len());
    for (bi, b) in state.batches.iter().enumerate() {
        let start = state.starts[bi];
        let n = b.num_rows();
        let bad = &acc.bad[start..start + n];
        let skipped = bad.iter().filter(|r| r.is_some()).count();
        if skipped > 0 {
            for (r, why) in bad.iter().enumerate() {
                let Some(why) = why else { continue };
                let row = b.meta.first_row + r as u64;
                match stage.cfg.on_error {
                    OnError::Fail => {
                        return Err(Error::BadRow {
                            origin: b.meta.origin.to_string(),
                            row,
                            reason: why.clone(),
                        });
                    }
                    OnError::Skip => {
                        stage
                            .quarantine
                            .write(&stage.name, &b.meta.origin, row, &b.data, r, why)?
                    }
                }
            }
            stage
                .metrics
                .rows_skipped
                .fetch_add(skipped as u64, Ordering::Relaxed);
        }
        let mut cols: Vec<ArrayRef> = b.data.columns().to_vec();
        for (ci, c) in stage.plan.columns.iter().enumerate() {
            let values =
                Float32Array::from(acc.vectors[ci][start * dim..(start + n) * dim].to_vec());
            let arr: ArrayRef = Arc::new(
                FixedSizeListArray::try_new(item.clone(), dim as i32, Arc::new(values), None)
                    .map_err(|e| Error::arrow("building the embedding column", e))?,
            );
            match c.reuse_index {
                Some(j) => cols[j] = arr,
                None => cols.push(arr),
            }
        }
        let mut data = RecordBatch::try_new(stage.plan.output_schema.clone(), cols)
            .map_err(|e| Error::arrow("building the embed output", e))?;
        if skipped > 0 {
            let keep = BooleanArray::from(bad.iter().map(|r| r.is_none()).collect::<Vec<_>>());
            data = arrow::compute::filter_record_batch(&data, &keep)
                .map_err(|e| Error::arrow("dropping skipped rows", e))?;
        }
        out.push(b.with_data(data));
    }
    // Free the window's buffers before the batches travel on.
    acc.vectors = Vec::new();
    Ok(out)
}

/// A float vector read from a list cell, or why it is unusable.
fn float_row(col: &dyn Array, row: usize, want: usize) -> std::result::Result<Vec<f32>, String> {
    fn from_list<O: OffsetSizeTrait>(
        l: &GenericListArray<O>,
        row: usize,
    ) -> std::result::Result<Vec<f32>, String> {
        let v = l.value(row);
        let f = v.as_primitive_opt::<Float32Type>().ok_or("not float32")?;
        if f.null_count() > 0 {
            return Err("it contains null values".into());
        }
        Ok(f.values().to_vec())
    }
    if col.is_null(row) {
        return Err("is null".into());
    }
    let v = match col.data_type() {
        DataType::FixedSizeList(..) => {
            let l = col.as_fixed_size_list();
            let v = l.value(row);
            let f = v.as_primitive_opt::<Float32Type>().ok_or("not float32")?;
            if f.null_count() > 0 {
                return Err("contains null values".into());
            }
            f.values().to_vec()
        }
        DataType::List(_) => from_list(col.as_list::<i32>(), row)?,
        DataType::LargeList(_) => from_list(col.as_list::<i64>(), row)?,
        t => return Err(format!("has unsupported type {t}")),
    };
    if v.len() != want {
        return Err(format!("holds {} floats, expected {want}", v.len()));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!(
            "holds a non-finite value ({}) at position {i}",
            v[i]
        ));
    }
    Ok(v)
}

fn text_at(col: &dyn Array, row: usize) -> Option<&str> {
    if col.is_null(row) {
        return None;
    }
    Some(match col.data_type() {
        DataType::LargeUtf8 => col.as_string::<i64>().value(row),
        DataType::Utf8View => col.as_string_view().value(row),
        _ => col.as_string::<i32>().value(row),
    })
}

fn bytes_at(col: &dyn Array, row: usize) -> Option<&[u8]> {
    if col.is_null(row) {
        return None;
    }
    Some(match col.data_type() {
        DataType::LargeBinary => col.as_binary::<i64>().value(row),
        DataType::BinaryView => col.as_binary_view().value(row),
        _ => col.as_binary::<i32>().value(row),
    })
}

/// Padding tokens when `lens` are cut into batches of `batch` in the given order.
fn padding_of(lens: impl Iterator<Item = usize>, batch: usize) -> u64 {
    let lens: Vec<usize> = lens.collect();
    lens.chunks(batch)
        .map(|c| {
            let max = c.iter().copied().max().unwrap_or(0);
            c.iter().map(|l| (max - l) as u64).sum::<u64>()
        })
        .sum()
}

/// Reads the window's rows, marks bad ones, and cuts model batches.
fn prepare(stage: &Arc<Stage>, window: Window) -> (Arc<WindowState>, Vec<Chunk>) {
    let plan = &stage.plan;
    let dim = plan.dim;
    let mut starts = Vec::with_capacity(window.batches.len());
    let mut rows = 0;
    for b in &window.batches {
        starts.push(rows);
        rows += b.num_rows();
    }
    let mut acc = Acc {
        vectors: vec![vec![0.0; rows * dim]; plan.columns.len()],
        bad: vec![None; rows],
        error: None,
    };
    let batch_size = stage.cfg.batch_size.max(1);
    // Per column: the rows that need the model, in window order.
    let mut todo: Vec<Vec<usize>> = vec![Vec::new(); plan.columns.len()];
    for (ci, c) in plan.columns.iter().enumerate() {
        for (bi, b) in window.batches.iter().enumerate() {
            let col = b.data.column(c.input_index);
            let reuse = c.reuse_index.map(|j| b.data.column(j));
            for r in 0..b.num_rows() {
                let g = starts[bi] + r;
                if let Some(existing) = reuse
                    && let Ok(v) = float_row(existing.as_ref(), r, dim)
                {
                    acc.vectors[ci][g * dim..(g + 1) * dim].copy_from_slice(&v);
                    stage.stats.rows_reused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if col.is_null(r) {
                    acc.bad[g].get_or_insert_with(|| format!("column `{}` is null", c.name));
                    continue;
                }
                todo[ci].push(g);
            }
        }
    }
    let locate = |g: usize| -> (usize, usize) {
        let bi = starts.partition_point(|s| *s <= g) - 1;
        (bi, g - starts[bi])
    };
    let mut chunks_spec: Vec<ChunkSpec> = Vec::new();
    for (ci, c) in plan.columns.iter().enumerate() {
        match c.kind {
            ColumnKind::Text => {
                let (Some(enc), Some(ti)) = (&plan.encoder, &plan.text) else {
                    continue;
                };
                let mut rows_ok = Vec::with_capacity(todo[ci].len());
                let mut texts = Vec::with_capacity(todo[ci].len());
                for &g in &todo[ci] {
                    let (bi, r) = locate(g);
                    let t = text_at(window.batches[bi].data.column(c.input_index).as_ref(), r)
                        .unwrap_or("");
                    if t.trim().is_empty() {
                        acc.bad[g].get_or_insert_with(|| format!("column `{}` is empty", c.name));
                        continue;
                    }
                    rows_ok.push(g);
                    texts.push(t);
                }
                let encoded = match enc.encode(&texts) {
                    Ok(e) => e,
                    Err(e) => {
                        acc.error = Some(Error::Other(format!("column `{}`: {e}", c.name)));
                        break;
                    }
                };
                let truncated = encoded.iter().filter(|e| e.truncated).count();
                stage
                    .stats
                    .rows_truncated
                    .fetch_add(truncated as u64, Ordering::Relaxed);
                let lens: Vec<usize> = encoded.iter().map(|e| e.ids.len()).collect();
                stage
                    .stats
                    .tokens
                    .fetch_add(lens.iter().sum::<usize>() as u64, Ordering::Relaxed);
                let mut order: Vec<usize> = (0..encoded.len()).collect();
                // Longest first; ties keep input order (stable), so batches are deterministic.
                order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
                stage.stats.padding_tokens_unsorted.fetch_add(
                    padding_of(lens.iter().copied(), batch_size),
                    Ordering::Relaxed,
                );
                stage.stats.padding_tokens.fetch_add(
                    padding_of(order.iter().map(|&i| lens[i]), batch_size),
                    Ordering::Relaxed,
                );
                for part in order.chunks(batch_size) {
                    let seq = part.iter().map(|&i| lens[i]).max().unwrap_or(0);
                    let n = part.len();
                    let pad = enc.pad_id() as i64;
                    let mut ids = vec![pad; n * seq];
                    let mut mask = vec![0i64; n * seq];
                    let mut types = vec![0i64; n * seq];
                    for (k, &i) in part.iter().enumerate() {
                        let e = &encoded[i];
                        for (t, (&id, &ty)) in e.ids.iter().zip(&e.type_ids).enumerate() {
                            ids[k * seq + t] = id as i64;
                            types[k * seq + t] = ty as i64;
                            mask[k * seq + t] = 1;
                        }
                    }
                    let shape = vec![n as i64, seq as i64];
                    let as_input = |ty: IntType, v: &[i64]| match ty {
                        IntType::I64 => InputData::I64(v.to_vec()),
                        IntType::I32 => InputData::I32(v.iter().map(|x| *x as i32).collect()),
                    };
                    let mut inputs = vec![(
                        ti.ids.name.clone(),
                        shape.clone(),
                        as_input(ti.ids.ty, &ids),
                    )];
                    if let Some(m) = &ti.mask {
                        inputs.push((m.name.clone(), shape.clone(), as_input(m.ty, &mask)));
                    }
                    if let Some(t) = &ti.type_ids {
                        inputs.push((t.name.clone(), shape.clone(), as_input(t.ty, &types)));
                    }
                    let rows: Vec<usize> = part.iter().map(|&i| rows_ok[i]).collect();
                    chunks_spec.push(ChunkSpec {
                        column: ci,
                        rows,
                        inputs,
                        mask: Some(mask),
                        tokens: seq,
                    });
                }
            }
            ColumnKind::Image | ColumnKind::Dense(_) => {
                let Some(d) = &plan.dense else { continue };
                let elems = d.elems();
                let mut ready: Vec<(usize, Vec<f32>)> = Vec::with_capacity(todo[ci].len());
                for &g in &todo[ci] {
                    let (bi, r) = locate(g);
                    let col = window.batches[bi].data.column(c.input_index);
                    let v = if let Some((layout, h, w)) = d.image {
                        let mut v = vec![0.0; elems];
                        bytes_at(col.as_ref(), r)
                            .ok_or_else(|| "is null".to_string())
                            .and_then(|bytes| {
                                preprocess(bytes, &stage.cfg.image, h, w, layout, &mut v)
                                    .map_err(|e| format!("holds an unusable image: {e}"))
                            })
                            .map(|_| v)
                    } else {
                        float_row(col.as_ref(), r, elems)
                    };
                    match v {
                        Ok(v) => ready.push((g, v)),
                        Err(e) => {
                            acc.bad[g].get_or_insert_with(|| format!("column `{}` {e}", c.name));
                        }
                    }
                }
                for part in ready.chunks(batch_size) {
                    let n = part.len();
                    let mut data = Vec::with_capacity(n * elems);
                    for (_, v) in part {
                        data.extend_from_slice(v);
                    }
                    let mut shape = vec![n as i64];
                    shape.extend(d.tail.iter().map(|x| *x as i64));
                    let rows = part.iter().map(|(g, _)| *g).collect();
                    chunks_spec.push(ChunkSpec {
                        column: ci,
                        rows,
                        inputs: vec![(d.name.clone(), shape, InputData::F32(data))],
                        mask: None,
                        tokens: 1,
                    });
                }
            }
        }
    }
    let fail_early = stage.cfg.on_error == OnError::Fail && acc.bad.iter().any(Option::is_some);
    if fail_early || acc.error.is_some() {
        chunks_spec.clear();
    }
    stage.stats.rows_embedded.fetch_add(
        chunks_spec.iter().map(|c| c.rows.len() as u64).sum(),
        Ordering::Relaxed,
    );
    let state = Arc::new(WindowState {
        stage: stage.clone(),
        batches: window.batches,
        starts,
        acc: Mutex::new(acc),
        remaining: AtomicUsize::new(chunks_spec.len()),
        reply: Mutex::new(Some(window.reply)),
    });
    let chunks = chunks_spec
        .into_iter()
        .map(
            |ChunkSpec {
                 column,
                 rows,
                 inputs,
                 mask,
                 tokens,
             }| Chunk {
                window: state.clone(),
                column,
                rows,
                inputs,
                mask,
                tokens,
            },
        )
        .collect();
    (state, chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_counted_per_batch() {
        // Batches of 2: [3, 1] pads 2, [2, 2] pads 0, [5] pads 0.
        assert_eq!(padding_of([3, 1, 2, 2, 5].into_iter(), 2), 2);
        // Sorted longest first: [5, 3], [2, 2], [1]: pads 2.
        assert_eq!(padding_of([5, 3, 2, 2, 1].into_iter(), 2), 2);
        assert_eq!(padding_of([1, 9, 1, 9].into_iter(), 2), 16);
        assert_eq!(padding_of([9, 9, 1, 1].into_iter(), 2), 0);
        assert_eq!(padding_of(std::iter::empty(), 4), 0);
    }
}
