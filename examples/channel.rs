//! A Rust trainer fed in-process: runs a pipeline with one of its sinks replaced by a bounded
//! channel and consumes training batches from it, epoch after epoch.
//!
//! ```text
//! cargo run --release --example channel -- [PIPELINE] [SINK] [EPOCHS]
//! cargo run --release --example channel -- pipelines/serve.yaml trainer 2
//! ```
//!
//! The pipeline runs on its own thread; this thread plays the trainer. The channel holds at
//! most 4 batches: when the "training step" is slower than the pipeline, the pipeline waits
//! (backpressure) instead of buffering. Other sinks of the pipeline (here the Parquet record of
//! `pipelines/serve.yaml`) run as configured, so the run also leaves a reproducible record.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tripline::sinks::channel::{ChannelSinkOptions, Epochs, channel_sink_with};
use tripline::{Pipeline, RunOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = args.next().unwrap_or_else(|| "pipelines/serve.yaml".into());
    let sink_name = args.next().unwrap_or_else(|| "trainer".into());
    let epochs: u64 = args.next().map_or(Ok(2), |s| s.parse())?;

    let pipeline = Pipeline::load(file.as_ref(), &[])?;
    if !pipeline.config().sinks.contains_key(&sink_name) {
        return Err(format!("{file} has no sink named `{sink_name}`").into());
    }
    let (sink, batches) = channel_sink_with(ChannelSinkOptions {
        capacity: 4,
        batch_size: Some(256),
        epochs: Epochs::Count(epochs),
        seed: pipeline.config().seed,
        spool_dir: None,
    });
    let run = std::thread::spawn(move || {
        pipeline.run_blocking(RunOptions {
            overwrite: true,
            sinks: HashMap::from([(sink_name, sink)]),
            ..Default::default()
        })
    });

    // The "trainer": one step per batch; waiting time is what a GPU would spend idle.
    let mut waited = Duration::ZERO;
    let started = Instant::now();
    let mut per_epoch: Vec<(u64, u64)> = Vec::new();
    loop {
        let t = Instant::now();
        let Ok(tb) = batches.recv() else { break };
        waited += t.elapsed();
        if per_epoch.len() as u64 <= tb.epoch {
            per_epoch.push((0, 0));
        }
        let e = &mut per_epoch[tb.epoch as usize];
        e.0 += 1;
        e.1 += tb.batch.num_rows() as u64;
        std::thread::sleep(Duration::from_micros(200)); // stands in for forward + backward
    }
    let summary = run.join().expect("pipeline thread")?;
    for (e, (n, rows)) in per_epoch.iter().enumerate() {
        println!("epoch {e}: {n} batches, {rows} rows");
    }
    let total = started.elapsed();
    println!(
        "trainer waited {:.1}% of {:.2} s for data",
        100.0 * waited.as_secs_f64() / total.as_secs_f64(),
        total.as_secs_f64()
    );
    eprint!("{}", summary.render());
    Ok(())
}
