//! Live batches to trainers: the in-process channel sink and the `flight` sink, through the
//! public API with a Rust Flight client. Every check compares what the trainers received with an
//! independent record of the same run (a `parquet_shards` sink on the same stream, or the input
//! file), by set and multiset equality of row ids.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::DecodedPayload;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tonic::Code;
use tripline::runtime::spawn::{TaskHandle, spawn};
use tripline::sinks::channel::{ChannelSinkOptions, Epochs, channel_sink, channel_sink_with};
use tripline::{Batch, BatchStream, Pipeline, RunOptions, RunSummary, Shutdown};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ids_of(b: &RecordBatch) -> Vec<i64> {
    b.column_by_name("id")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .to_vec()
}

/// YAML: parquet → (record: parquet_shards, trainer: flight).
fn tee_yaml(
    input: &std::path::Path,
    out: &std::path::Path,
    port: u16,
    flight_extra: &str,
) -> String {
    format!(
        "version: 1\nseed: 11\nsources:\n  docs:\n    type: parquet\n    path: {}\n    batch_rows: 1000\nsinks:\n  record:\n    type: parquet_shards\n    inputs: [docs]\n    path: {}\n  trainer:\n    type: flight\n    inputs: [docs]\n    address: 127.0.0.1:{port}\n    batch_size: 256\n{flight_extra}",
        input.display(),
        out.display()
    )
}

fn flight_only_yaml(input: &std::path::Path, port: u16, flight_extra: &str) -> String {
    format!(
        "version: 1\nseed: 11\nsources:\n  docs:\n    type: parquet\n    path: {}\n    batch_rows: 1000\nsinks:\n  trainer:\n    type: flight\n    inputs: [docs]\n    address: 127.0.0.1:{port}\n{flight_extra}",
        input.display()
    )
}

async fn connect(port: u16) -> FlightClient {
    connect_with(port, |ep| ep).await
}

/// Connects with the endpoint settings `f` applies, retrying until the server listens.
async fn connect_with(
    port: u16,
    f: impl Fn(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
) -> FlightClient {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ep = f(
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap(),
        );
        match ep.connect().await {
            Ok(ch) => return FlightClient::new(ch),
            // The pipeline task binds the port when it starts; retry until then.
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot connect to port {port}: {e}"),
        }
    }
}

fn ticket(v: Value) -> Ticket {
    Ticket::new(v.to_string())
}

fn status(e: FlightError) -> tonic::Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => panic!("expected a gRPC status, got {other}"),
    }
}

/// What one `DoGet` delivered: batches with their metadata, and the end marker.
#[derive(Debug, Default)]
struct Got {
    batches: Vec<(RecordBatch, Value)>,
    end: Option<String>,
}

impl Got {
    fn ids(&self) -> Vec<i64> {
        self.batches.iter().flat_map(|(b, _)| ids_of(b)).collect()
    }
    fn seqs(&self) -> Vec<u64> {
        self.batches
            .iter()
            .map(|(_, m)| m["seq"].as_u64().unwrap())
            .collect()
    }
}

/// Reads a whole stream, or up to `limit` batches (then drops the stream: a disconnect).
async fn fetch(
    client: &mut FlightClient,
    t: Value,
    limit: Option<usize>,
) -> Result<Got, tonic::Status> {
    let stream = client.do_get(ticket(t)).await.map_err(status)?;
    let mut decoder = stream.into_inner();
    let mut got = Got::default();
    while let Some(item) = decoder.next().await {
        let d = item.map_err(status)?;
        let meta: Option<Value> = (!d.inner.app_metadata.is_empty())
            .then(|| serde_json::from_slice(&d.inner.app_metadata).unwrap());
        match d.payload {
            DecodedPayload::RecordBatch(b) => {
                let meta = meta.expect("every batch carries metadata");
                if let Some(end) = meta["end"].as_str() {
                    assert_eq!(b.num_rows(), 0, "the end marker has no rows");
                    got.end = Some(end.to_string());
                    continue;
                }
                got.batches.push((b, meta));
                if limit == Some(got.batches.len()) {
                    return Ok(got);
                }
            }
            DecodedPayload::None | DecodedPayload::Schema(_) => {}
        }
    }
    Ok(got)
}

/// Fetches with ticket `t`, expecting a refusal whose message contains `msg` (and, when
/// given, with status `code`).
async fn refused(c: &mut FlightClient, t: Value, code: Option<Code>, msg: &str) {
    let e = fetch(c, t, None).await.unwrap_err();
    if let Some(code) = code {
        assert_eq!(e.code(), code, "{}", e.message());
    }
    assert!(e.message().contains(msg), "{}", e.message());
}

fn start(p: Pipeline, opts: RunOptions) -> TaskHandle<tripline::Result<RunSummary>> {
    spawn(async move { p.run(opts).await })
}

#[test]
fn channel_sink_delivers_every_batch_in_order() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 2300, 500);
    let yaml = passthrough_yaml(&input, &d.path().join("unused"), "");
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let (sink, rx) = channel_sink(2);
    let run = std::thread::spawn(move || {
        p.run_blocking(RunOptions {
            sinks: HashMap::from([("shards".to_string(), sink)]),
            ..Default::default()
        })
    });
    let got: Vec<_> = rx.iter().collect();
    run.join().unwrap().unwrap();
    let ids: Vec<i64> = got.iter().flat_map(|tb| ids_of(&tb.batch)).collect();
    assert_eq!(ids, (0..2300).collect::<Vec<_>>());
    for (i, tb) in got.iter().enumerate() {
        assert_eq!((tb.epoch, tb.seq, tb.index), (0, i as u64, i as u64));
    }
    assert!(
        !d.path().join("unused").exists(),
        "the replaced sink must not write"
    );
}

/// A source that counts how many batches the pipeline has pulled from it.
fn counting_source(n: usize, rows: usize, pulled: Arc<AtomicU64>) -> BatchStream {
    let s = futures::stream::iter(0..n).map(move |i| {
        pulled.fetch_add(1, Ordering::SeqCst);
        Ok(Batch::new(
            docs_batch((i * rows) as i64, rows),
            i as u64,
            Arc::from("gen"),
            (i * rows) as u64,
        ))
    });
    Box::pin(s)
}

#[test]
fn channel_sink_backpressure_bounds_what_is_buffered() {
    // A receiver that waits until the channel is full before each receive: at every such moment
    // the batches pulled from the source minus those received are at least the channel capacity
    // and at most every buffer's capacity: channel + the one being handed over + the runtime's
    // source → sink channel.
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 100, 100);
    let yaml = passthrough_yaml(&input, &d.path().join("unused"), "")
        + "runtime:\n  channel_capacity: 2\n";
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let capacity = 3usize;
    let runtime_capacity = 2u64;
    let pulled = Arc::new(AtomicU64::new(0));
    let (sink, rx) = channel_sink(capacity);
    let src = counting_source(60, 10, pulled.clone());
    let run = std::thread::spawn(move || {
        p.run_blocking(RunOptions {
            sinks: HashMap::from([("shards".to_string(), sink)]),
            sources: HashMap::from([("docs".to_string(), src)]),
            ..Default::default()
        })
    });
    let mut received = 0u64;
    let mut checked = 0;
    loop {
        if received + (capacity as u64) <= 60 {
            // Wait (by condition, not time) until the channel is full.
            while !rx.is_full() {
                std::thread::yield_now();
            }
            let in_flight = pulled.load(Ordering::SeqCst) - received;
            assert!(in_flight >= capacity as u64, "{in_flight}");
            assert!(
                in_flight <= capacity as u64 + 1 + runtime_capacity + 1,
                "buffered {in_flight} batches beyond the bound"
            );
            checked += 1;
        }
        match rx.recv() {
            Ok(tb) => {
                assert_eq!(tb.seq, received);
                received += 1;
            }
            Err(_) => break,
        }
    }
    run.join().unwrap().unwrap();
    assert_eq!(received, 60);
    assert!(checked > 50);
}

#[test]
fn channel_sink_epochs_replay_the_same_batches_reshuffled() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 1000, 300);
    let yaml = passthrough_yaml(&input, &d.path().join("unused"), "");
    let collect = || {
        let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
        let seed = p.config().seed;
        let (sink, rx) = channel_sink_with(ChannelSinkOptions {
            capacity: 4,
            batch_size: Some(64),
            epochs: Epochs::Count(3),
            seed,
            spool_dir: Some(d.path().join("spool")),
        });
        let run = std::thread::spawn(move || {
            p.run_blocking(RunOptions {
                sinks: HashMap::from([("shards".to_string(), sink)]),
                ..Default::default()
            })
        });
        let got: Vec<_> = rx.iter().collect();
        run.join().unwrap().unwrap();
        got
    };
    let got = collect();
    let n = 1000usize.div_ceil(64);
    assert_eq!(got.len(), 3 * n);
    let first: Vec<_> = got.iter().filter(|t| t.epoch == 0).collect();
    // Epoch 0: pipeline order, 64-row batches, the last one shorter.
    assert_eq!(
        first
            .iter()
            .flat_map(|t| ids_of(&t.batch))
            .collect::<Vec<_>>(),
        (0..1000).collect::<Vec<_>>()
    );
    assert!(first[..n - 1].iter().all(|t| t.batch.num_rows() == 64));
    let mut orders = Vec::new();
    for e in 1..3u64 {
        let ep: Vec<_> = got.iter().filter(|t| t.epoch == e).collect();
        assert_eq!(ep.len(), n);
        // Same batches (by first-pass index, identical content), new order.
        for (s, t) in ep.iter().enumerate() {
            assert_eq!(t.seq, s as u64);
            assert_eq!(t.batch, first[t.index as usize].batch);
        }
        let order: Vec<u64> = ep.iter().map(|t| t.index).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..n as u64).collect::<Vec<_>>());
        orders.push(order);
    }
    assert_ne!(orders[0], orders[1], "each epoch reshuffles");
    assert_ne!(orders[0], (0..n as u64).collect::<Vec<_>>());
    // Deterministic: a second run gives the same orders; the spool is removed.
    let again = collect();
    let idx = |g: &[tripline::sinks::channel::TrainingBatch]| {
        g.iter().map(|t| (t.epoch, t.index)).collect::<Vec<_>>()
    };
    assert_eq!(idx(&got), idx(&again));
    let left: Vec<_> = std::fs::read_dir(d.path().join("spool")).unwrap().collect();
    assert!(left.is_empty(), "spool files left behind: {left:?}");
}

#[test]
fn flight_two_ranks_partition_the_shards_exactly_every_epoch() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 5000, 1000);
    let out = d.path().join("record");
    let port = free_port();
    let yaml = tee_yaml(
        &input,
        &out,
        port,
        &format!(
            "    epochs: 2\n    max_buffered_batches: 3\n    spool_dir: {}\n",
            d.path().join("spool").display()
        ),
    );
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let rt = runtime();
    let (got, summary) = rt.block_on(async {
        let run = start(p, RunOptions::default());
        let ranks: Vec<_> = (0..2u32)
            .map(|rank| {
                spawn(async move {
                    let mut c = connect(port).await;
                    let mut per_epoch = Vec::new();
                    for epoch in 0..2 {
                        let t = json!({"rank": rank, "world_size": 2, "epoch": epoch});
                        per_epoch.push(fetch(&mut c, t, None).await.unwrap());
                    }
                    per_epoch
                })
            })
            .collect();
        let mut got = Vec::new();
        for r in ranks {
            got.push(r.join().await.unwrap());
        }
        (got, run.join().await.unwrap().unwrap())
    });
    let record = read_output(&out);
    let mut want: Vec<i64> = ids(&record);
    want.sort();
    assert_eq!(want, (0..5000).collect::<Vec<_>>());
    for epoch in 0..2 {
        let mut all = Vec::new();
        for (rank, per_epoch) in got.iter().enumerate() {
            let g = &per_epoch[epoch];
            assert_eq!(g.end.as_deref(), Some("epoch"));
            assert!(g.seqs().iter().all(|s| s % 2 == rank as u64));
            assert!(g.batches.iter().all(|(_, m)| m["epoch"] == epoch));
            all.extend(g.ids());
        }
        let n = all.len();
        all.sort();
        assert_eq!(n, 5000, "epoch {epoch}: every row once");
        assert_eq!(all, want, "epoch {epoch}: the union is the recorded output");
    }
    // 5000 rows / 256 = 20 batches: 19 full, the last 136 rows; 10 per rank.
    let sizes: Vec<usize> = got[0][0]
        .batches
        .iter()
        .chain(&got[1][0].batches)
        .map(|(b, _)| b.num_rows())
        .collect();
    assert_eq!(sizes.iter().filter(|&&s| s == 256).count(), 19);
    assert!(sizes.contains(&136));
    // Epoch 1 serves the same batches (by index) in another order.
    let order = |e: usize| {
        let mut v: Vec<(u64, u64)> = got
            .iter()
            .flat_map(|g| {
                g[e].batches
                    .iter()
                    .map(|(_, m)| (m["seq"].as_u64().unwrap(), m["index"].as_u64().unwrap()))
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, i)| i).collect::<Vec<_>>()
    };
    assert_eq!(order(0), (0..20).collect::<Vec<_>>());
    assert_ne!(order(1), order(0));
    let trainer = summary
        .components
        .iter()
        .find(|c| c.name == "trainer")
        .unwrap();
    assert_eq!(trainer.details["batches_per_epoch"], 20);
    assert_eq!(trainer.details["epochs_routed"], 2);
}

fn marked_schema() -> Arc<Schema> {
    let mut md = std::collections::HashMap::new();
    md.insert(
        tripline::sinks::flight::TRAINING_BATCH_KEY.to_string(),
        "true".to_string(),
    );
    Arc::new(docs_schema().as_ref().clone().with_metadata(md))
}

#[test]
fn flight_serves_training_batches_intact() {
    // Batches marked `tripline.training_batch` keep their sizes, including one above the 2 MB
    // message size at which Flight encoders usually split.
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 10, 10);
    let port = free_port();
    let yaml = flight_only_yaml(&input, port, "    batch_size: 256\n");
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let sizes = [7usize, 300, 1, 256, 40_000];
    let schema = marked_schema();
    let mut start_id = 0i64;
    let mut batches = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let ids: Vec<i64> = (start_id..start_id + n as i64).collect();
        let texts: Vec<String> = ids.iter().map(|i| format!("{i:>60}")).collect();
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)) as ArrayRef,
                Arc::new(arrow::array::Int32Array::from(vec![0; n])),
                Arc::new(StringArray::from(texts)),
            ],
        )
        .unwrap();
        batches.push(Ok(Batch::new(
            b,
            i as u64,
            Arc::from("mine"),
            start_id as u64,
        )));
        start_id += n as i64;
    }
    let src: BatchStream = Box::pin(futures::stream::iter(batches));
    let rt = runtime();
    let got = rt.block_on(async {
        let run = start(
            p,
            RunOptions {
                sources: HashMap::from([("docs".to_string(), src)]),
                ..Default::default()
            },
        );
        let mut c = connect(port).await;
        let got = fetch(
            &mut c,
            json!({"rank": 0, "world_size": 1, "epoch": 0}),
            None,
        )
        .await
        .unwrap();
        run.join().await.unwrap().unwrap();
        got
    });
    let got_sizes: Vec<usize> = got.batches.iter().map(|(b, _)| b.num_rows()).collect();
    assert_eq!(got_sizes, sizes);
    assert_eq!(got.ids(), (0..start_id).collect::<Vec<_>>());
    assert!(got.batches[4].0.get_array_memory_size() > 2 << 20);
    assert_eq!(
        got.batches[0].0.schema().metadata()[tripline::sinks::flight::TRAINING_BATCH_KEY],
        "true"
    );
}

#[test]
fn flight_faults_get_clear_errors_and_the_server_keeps_serving() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 3000, 1000);
    let port = free_port();
    let yaml = flight_only_yaml(&input, port, "    max_buffered_batches: 2\n");
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let run = start(p, RunOptions::default());
        let mut c = connect(port).await;
        let bad = |t: &str| Ticket::new(t.to_string());
        let s = status(c.do_get(bad("not json")).await.err().unwrap());
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("malformed ticket"), "{}", s.message());
        let s = status(
            c.do_get(bad(r#"{"rank": 0, "epoch": 0}"#))
                .await
                .err()
                .unwrap(),
        );
        assert!(s.message().contains("world_size"), "{}", s.message());
        refused(
            &mut c,
            json!({"rank": 2, "world_size": 2, "epoch": 0}),
            Some(Code::InvalidArgument),
            "rank 2 is outside a world of size 2",
        )
        .await;
        refused(
            &mut c,
            json!({"rank": 0, "world_size": 2, "epoch": 1}),
            None,
            "epoch 1 is not served",
        )
        .await;

        // Rank 0 reads 2 batches and keeps its stream open: a second client claiming rank 0 is
        // refused, rank 1 is served.
        let mut a = connect(port).await;
        let open = a
            .do_get(ticket(json!({"rank": 0, "world_size": 2, "epoch": 0})))
            .await
            .unwrap();
        let mut open = open.into_inner();
        let mut first_two = Vec::new();
        while first_two.len() < 2 {
            let d = open.next().await.unwrap().unwrap();
            if let DecodedPayload::RecordBatch(b) = d.payload {
                first_two.push(b);
            }
        }
        refused(
            &mut c,
            json!({"rank": 0, "world_size": 2, "epoch": 0}),
            Some(Code::AlreadyExists),
            "rank 0 is already being served",
        )
        .await;
        refused(
            &mut c,
            json!({"rank": 0, "world_size": 3, "epoch": 0}),
            None,
            "world_size 3 does not match this run's world size 2",
        )
        .await;
        let r1 = spawn(async move {
            let mut c = connect(port).await;
            fetch(
                &mut c,
                json!({"rank": 1, "world_size": 2, "epoch": 0}),
                None,
            )
            .await
        });
        let mut rest = Vec::new();
        while let Some(d) = open.next().await {
            if let DecodedPayload::RecordBatch(b) = d.unwrap().payload {
                rest.push(b);
            }
        }
        let r1 = r1.join().await.unwrap().unwrap();
        run.join().await.unwrap().unwrap();
        let mut all: Vec<i64> = first_two
            .iter()
            .chain(&rest)
            .flat_map(ids_of)
            .chain(r1.ids())
            .collect();
        all.sort();
        assert_eq!(all, (0..3000).collect::<Vec<_>>());
    });
}

#[test]
fn flight_resume_continues_without_loss_or_duplication() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 60_000, 10_000);
    let port = free_port();
    // 120 batches of ~25 KB; the transport holds at most ~500 KB (HTTP/2 send buffer and the
    // client's window), so 50 batches cover what is in flight.
    let yaml = flight_only_yaml(
        &input,
        port,
        "    batch_size: 500\n    max_buffered_batches: 2\n    replay_buffer: 50\n",
    );
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let run = start(p, RunOptions::default());
        let t = |after: Option<u64>| {
            let mut v = json!({"rank": 0, "world_size": 1, "epoch": 0});
            if let Some(a) = after {
                v["after"] = json!(a);
            }
            v
        };
        // Retry while the server has not yet noticed that the previous stream was dropped.
        async fn claim(
            c: &mut FlightClient,
            t: Value,
            limit: Option<usize>,
        ) -> Result<Got, tonic::Status> {
            loop {
                match fetch(c, t.clone(), limit).await {
                    Err(e) if e.code() == Code::AlreadyExists => tokio::task::yield_now().await,
                    r => return r,
                }
            }
        }
        let mut received: Vec<i64> = Vec::new();
        // Disconnect after 5 batches: the server has sent more than that (into its transport
        // buffers); they are kept in the replay buffer.
        let mut c = connect(port).await;
        let g = fetch(&mut c, t(None), Some(5)).await.unwrap();
        assert_eq!(g.seqs(), (0..5).collect::<Vec<_>>());
        received.extend(g.ids());
        drop(c);
        let mut c = connect(port).await;
        let g = claim(&mut c, t(Some(4)), Some(60)).await.unwrap();
        assert_eq!(g.seqs(), (5..65).collect::<Vec<_>>());
        received.extend(g.ids());
        // Resuming far behind, or after a batch never sent, is refused with a clear error.
        let e = claim(&mut c, t(Some(0)), None).await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange);
        assert!(
            e.message().contains("no longer in the replay buffer"),
            "{}",
            e.message()
        );
        let e = claim(&mut c, t(Some(5000)), None).await.unwrap_err();
        assert!(e.message().contains("never sent"), "{}", e.message());
        // A ticket without `after` would replay the epoch from its start: refused too.
        let e = claim(&mut c, t(None), None).await.unwrap_err();
        assert!(
            e.message().contains("beyond the replay buffer"),
            "{}",
            e.message()
        );
        let g = claim(&mut c, t(Some(64)), None).await.unwrap();
        assert_eq!(g.end.as_deref(), Some("epoch"));
        received.extend(g.ids());
        run.join().await.unwrap().unwrap();
        assert_eq!(received, (0..60_000).collect::<Vec<_>>());
    });
}

#[test]
fn flight_port_in_use_is_reported_before_running() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 100, 100);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = d.path().join("record");
    let p = Pipeline::from_yaml(&tee_yaml(&input, &out, port, ""), &[]).unwrap();
    let e = p
        .run_blocking(RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("trainer"), "{e}");
    assert!(
        e.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{e}"
    );
    assert!(e.contains("already in use"), "{e}");
    assert!(!out.join("manifest.json").exists(), "nothing ran");
}

#[test]
fn flight_validation_requires_auth_off_loopback() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 10, 10);
    let yaml = flight_only_yaml(&input, 0, "").replace("127.0.0.1:0", "0.0.0.0:0");
    let e = Pipeline::from_yaml(&yaml, &[]).unwrap_err().to_string();
    assert!(e.contains("reachable from other machines"), "{e}");
    assert!(e.contains("line 12:"), "located at the address key: {e}");
    let ok = |extra: &str| Pipeline::from_yaml(&(yaml.clone() + extra), &[]).map(|_| ());
    ok("    allow_unauthenticated: true\n").unwrap();
    ok("    token: s3cret\n").unwrap();
    let e = ok("    token: ''\n").unwrap_err().to_string();
    assert!(e.contains("token"), "{e}");
    let e = Pipeline::from_yaml(
        &flight_only_yaml(&input, 0, "    batch_size: 0\n    epochs: 0\n")
            .replace("127.0.0.1:0", "localhost"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("3 problems"), "{e}");
    assert!(
        e.contains("line 12:14: sink `trainer`: `localhost` is not an `IP:port` address"),
        "{e}"
    );
    assert!(
        e.contains("line 13:17: sink `trainer`: must be at least 1"),
        "batch_size: {e}"
    );
    assert!(
        e.contains("must be at least 1 (or `unbounded`)"),
        "epochs: {e}"
    );
    let e = Pipeline::from_yaml(&flight_only_yaml(&input, 0, "    epochs: forever\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 13:13"), "{e}");
    assert!(
        e.contains("a number of epochs (at least 1) or `unbounded`"),
        "{e}"
    );
    let unbounded = flight_only_yaml(&input, 0, "    epochs: unbounded\n");
    let p = Pipeline::from_yaml(&unbounded, &[]).unwrap();
    match &p.config().sinks["trainer"] {
        tripline::config::SinkConfig::Flight(f) => assert_eq!(f.epochs.count(), None),
        _ => unreachable!(),
    }
}

#[test]
fn flight_token_is_checked_on_every_call() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 500, 500);
    let port = free_port();
    let yaml = flight_only_yaml(&input, port, "    token: s3cret\n");
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let run = start(p, RunOptions::default());
        let mut c = connect(port).await;
        let t = json!({"rank": 0, "world_size": 1, "epoch": 0});
        let e = fetch(&mut c, t.clone(), None).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let e = status(
            c.get_flight_info(FlightDescriptor::new_cmd("{}"))
                .await
                .unwrap_err(),
        );
        assert_eq!(e.code(), Code::Unauthenticated);
        c.add_header("authorization", "Bearer wrong").unwrap();
        let e = fetch(&mut c, t.clone(), None).await.unwrap_err();
        assert!(e.message().contains("wrong token"), "{}", e.message());
        let mut c = connect(port).await;
        c.add_header("authorization", "Bearer s3cret").unwrap();
        let g = fetch(&mut c, t, None).await.unwrap();
        assert_eq!(g.ids(), (0..500).collect::<Vec<_>>());
        run.join().await.unwrap().unwrap();
    });
}

#[test]
fn flight_info_describes_schema_epochs_and_counts() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 1000, 1000);
    let port = free_port();
    let yaml = flight_only_yaml(&input, port, "    batch_size: 300\n    world_size: 3\n");
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let run = start(p, RunOptions::default());
        let mut c = connect(port).await;
        let info = c
            .get_flight_info(FlightDescriptor::new_cmd("{}"))
            .await
            .unwrap();
        let schema = info.clone().try_decode_schema().unwrap();
        assert_eq!(
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>(),
            ["id", "label", "text"]
        );
        assert_eq!(info.endpoint.len(), 3, "one endpoint (ticket) per rank");
        let tickets: Vec<Value> = info
            .endpoint
            .iter()
            .map(|e| serde_json::from_slice(&e.ticket.as_ref().unwrap().ticket).unwrap())
            .collect();
        assert_eq!(tickets[2], json!({"rank": 2, "world_size": 3, "epoch": 0}));
        let meta: Value = serde_json::from_slice(&info.app_metadata).unwrap();
        assert_eq!(meta["epochs"], 1);
        assert_eq!(meta["world_size"], 3);
        // Consume everything through the advertised tickets, then ask again: the counts are
        // known once the first pass is complete.
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        for e in &info.endpoint {
            let s = c.do_get(e.ticket.clone().unwrap()).await.unwrap();
            let batches: Vec<RecordBatch> = s
                .map(|b| b.unwrap())
                .filter(|b| futures::future::ready(b.num_rows() > 0)) // the end marker
                .collect()
                .await;
            sizes.push(batches.len());
            all.extend(batches.iter().flat_map(ids_of));
            if sizes.len() == 1 {
                let info = c
                    .get_flight_info(FlightDescriptor::new_cmd("{}"))
                    .await
                    .unwrap();
                let meta: Value = serde_json::from_slice(&info.app_metadata).unwrap();
                assert_eq!(meta["batches_per_epoch"], 4);
                assert_eq!(meta["rows_per_epoch"], 1000);
                assert_eq!(meta["rank_batches"], json!([2, 1, 1]));
                assert_eq!(info.total_records, 1000);
            }
        }
        assert_eq!(sizes, [2, 1, 1]);
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        run.join().await.unwrap().unwrap();
    });
}

#[test]
fn flight_drain_ends_streams_cleanly() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 10_000, 1000);
    let port = free_port();
    let yaml = flight_only_yaml(
        &input,
        port,
        &format!(
            "    epochs: unbounded\n    max_buffered_batches: 2\n    spool_dir: {}\n",
            d.path().join("spool").display()
        ),
    );
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (shutdown, signal) = Shutdown::new();
        let run = start(
            p,
            RunOptions {
                shutdown: Some(signal),
                ..Default::default()
            },
        );
        // A 64 KiB flow-control window: the server can be at most that far ahead of what this
        // client has read, far less than an epoch (40 batches of about 14 KB), so the drain
        // below lands mid-epoch however fast the server is.
        let window = 64 << 10;
        let mut c = connect_with(port, |ep| {
            ep.initial_stream_window_size(Some(window))
                .initial_connection_window_size(Some(window))
        })
        .await;
        let t = |e: u64| json!({"rank": 0, "world_size": 1, "epoch": e});
        for e in 0..3 {
            let g = fetch(&mut c, t(e), None).await.unwrap();
            assert_eq!(g.end.as_deref(), Some("epoch"));
            let mut ids = g.ids();
            ids.sort();
            assert_eq!(ids, (0..10_000).collect::<Vec<_>>(), "epoch {e}");
        }
        // Mid-epoch: read two batches, then stop the server.
        let s = c.do_get(ticket(t(3))).await.unwrap();
        let mut s = s.into_inner();
        let mut n = 0;
        while n < 2 {
            if let DecodedPayload::RecordBatch(_) = s.next().await.unwrap().unwrap().payload {
                n += 1;
            }
        }
        shutdown.drain();
        let mut end = None;
        while let Some(d) = s.next().await {
            let d = d.expect("the stream ends without an error");
            if let DecodedPayload::RecordBatch(b) = d.payload {
                let m: Value = serde_json::from_slice(&d.inner.app_metadata).unwrap();
                if let Some(e) = m["end"].as_str() {
                    assert_eq!(b.num_rows(), 0);
                    end = Some(e.to_string());
                }
            }
        }
        assert_eq!(end.as_deref(), Some("shutdown"));
        let summary = run.join().await.unwrap().unwrap();
        let trainer = summary
            .components
            .iter()
            .find(|c| c.name == "trainer")
            .unwrap();
        assert!(trainer.details["epochs_routed"].as_u64().unwrap() >= 3);
    });
    let left: Vec<_> = std::fs::read_dir(d.path().join("spool")).unwrap().collect();
    assert!(left.is_empty(), "the spool is removed: {left:?}");
}

#[test]
fn flight_same_seed_same_batches_per_rank() {
    // Two runs with the same config: every rank receives byte-identical batches in the same
    // order in every epoch.
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 2000, 700);
    let run_once = || {
        let port = free_port();
        let yaml = flight_only_yaml(&input, port, "    epochs: 2\n    batch_size: 128\n");
        let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
        let rt = runtime();
        rt.block_on(async {
            let run = start(p, RunOptions::default());
            let mut out: BTreeMap<(u32, u64), Vec<RecordBatch>> = BTreeMap::new();
            let ranks: Vec<_> = (0..3u32)
                .map(|rank| {
                    spawn(async move {
                        let mut c = connect(port).await;
                        let mut v = Vec::new();
                        for e in 0..2u64 {
                            let t = json!({"rank": rank, "world_size": 3, "epoch": e});
                            let g = fetch(&mut c, t, None).await.unwrap();
                            v.push(((rank, e), g.batches.into_iter().map(|(b, _)| b).collect()));
                        }
                        v
                    })
                })
                .collect();
            for r in ranks {
                out.extend(r.join().await.unwrap());
            }
            run.join().await.unwrap().unwrap();
            out
        })
    };
    let a = run_once();
    let b = run_once();
    assert_eq!(a, b);
    let union: BTreeSet<i64> = a
        .iter()
        .filter(|((_, e), _)| *e == 1)
        .flat_map(|(_, v)| v.iter().flat_map(ids_of))
        .collect();
    assert_eq!(union.len(), 2000);
}

#[test]
fn flight_upstream_failure_reaches_the_trainer_as_an_error() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 10, 10);
    let port = free_port();
    let p = Pipeline::from_yaml(&flight_only_yaml(&input, port, ""), &[]).unwrap();
    // Two batches, then (once the trainer has its first batch) an error.
    let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<()>();
    let src: BatchStream = Box::pin(async_stream::stream! {
        yield Ok(Batch::new(docs_batch(0, 300), 0, Arc::from("gen"), 0));
        yield Ok(Batch::new(docs_batch(300, 300), 1, Arc::from("gen"), 300));
        let _ = fail_rx.await;
        yield Err(tripline::Error::Other("boom: the source broke".into()));
    });
    let rt = runtime();
    rt.block_on(async {
        let run = start(
            p,
            RunOptions {
                sources: HashMap::from([("docs".to_string(), src)]),
                ..Default::default()
            },
        );
        let mut c = connect(port).await;
        let s = c
            .do_get(ticket(json!({"rank": 0, "world_size": 1, "epoch": 0})))
            .await
            .unwrap();
        let mut s = s.into_inner();
        let mut fail_tx = Some(fail_tx);
        let mut rows = 0;
        let mut outcome = None;
        while let Some(d) = s.next().await {
            match d {
                Ok(d) => {
                    if let DecodedPayload::RecordBatch(b) = d.payload {
                        let m: Value = serde_json::from_slice(&d.inner.app_metadata).unwrap();
                        assert!(
                            m.get("end").is_none(),
                            "clean end of an incomplete epoch: {m}"
                        );
                        rows += b.num_rows();
                        if let Some(tx) = fail_tx.take() {
                            tx.send(()).unwrap();
                        }
                    }
                }
                Err(e) => {
                    outcome = Some(e);
                    break;
                }
            }
        }
        assert!(
            outcome.is_some(),
            "the stream must end with an error, got {rows} rows"
        );
        let e = run.join().await.unwrap().unwrap_err().to_string();
        assert!(e.contains("boom: the source broke"), "{e}");
    });
}
