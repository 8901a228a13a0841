#!/usr/bin/env python3
"""Benchmark: tripline's Flight sink feeding a pyarrow consumer on loopback.

Cases (256-row batches, fixed seed, data generated once into bench-data/flight/):
  text       triplets with text payloads (anchor / positive / negative, ~60-250 chars each)
  embedding  triplet ids + a 384-float embedding per row (FixedSizeList<Float32, 384>)
  sleep      text triplets to a consumer that sleeps STEP ms per batch (a training step):
             the fraction of its time spent waiting for data, reading with read_chunk in the
             training loop, and reading through examples/torch_consumer.py's Prefetcher (2
             batches received ahead on a thread, as FlightIterableDataset does by default)

For text and embedding it reports batches/s, MB/s (Arrow buffer bytes received) and the
per-batch latency (time from asking for the next batch to having it: p50 / p99), for epoch 0
(served live while the pipeline reads the IPC file) and epoch 1 (replayed from the spool), and
the same numbers for the peer: a pyarrow.flight server in Python serving the same batches
from memory to the same consumer. It prints the ratio tripline / peer.

Usage:
  cargo build --release --bin tripline
  scripts/setup-python.sh                        # the venv with pyarrow
  .venv/bin/python scripts/bench-flight.py [--batches 600] [--step-ms 5] [--repeat 3]

Needs only pyarrow + numpy (the project venv). Medians over --repeat runs. TRIPLINE_BIN
overrides the binary (default target/release/tripline).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.ipc as ipc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))
from torch_consumer import Prefetcher  # noqa: E402
DATA = REPO / "bench-data" / "flight"
ROWS_PER_BATCH = 256


def make_text(n_rows: int, path: Path) -> None:
    rng = np.random.default_rng(7)
    words = np.array("the of and to in a is that for it as was with be by on not he i this are "
                     "or his from at which but have an they you were her she there one all we "
                     "their can been has more if no so what out up said about into than them "
                     "only other time new some could these two may first then do any like my "
                     "now over such our man me even most made after also did many before must "
                     "through back years where much your way well down should because each just "
                     "those people how too little state good very make world still own see men "
                     "work long get here between both life being under never day same another "
                     "know while last might us great old year off come since against go came "
                     "right used take three".split())

    def texts(n):
        lens = rng.integers(10, 45, n)
        return [" ".join(words[rng.integers(0, len(words), k)]) for k in lens]

    schema = pa.schema([("anchor_id", pa.int64()), ("positive_id", pa.int64()),
                        ("negative_id", pa.int64()), ("label", pa.int32()),
                        ("anchor", pa.string()), ("positive", pa.string()),
                        ("negative", pa.string())])
    with ipc.new_file(path, schema) as w:
        for start in range(0, n_rows, 8192):
            n = min(8192, n_rows - start)
            ids = np.arange(start, start + n, dtype=np.int64)
            w.write_batch(pa.record_batch([
                pa.array(ids), pa.array(rng.integers(0, 1 << 40, n)),
                pa.array(rng.integers(0, 1 << 40, n)),
                pa.array(rng.integers(0, 66, n).astype(np.int32)),
                pa.array(texts(n)), pa.array(texts(n)), pa.array(texts(n))], schema=schema))


def make_embedding(n_rows: int, path: Path) -> None:
    rng = np.random.default_rng(11)
    schema = pa.schema([("anchor_id", pa.int64()), ("positive_id", pa.int64()),
                        ("negative_id", pa.int64()),
                        ("embedding", pa.list_(pa.float32(), 384))])
    with ipc.new_file(path, schema) as w:
        for start in range(0, n_rows, 8192):
            n = min(8192, n_rows - start)
            emb = rng.standard_normal((n, 384), dtype=np.float32)
            w.write_batch(pa.record_batch([
                pa.array(np.arange(start, start + n, dtype=np.int64)),
                pa.array(rng.integers(0, 1 << 40, n)), pa.array(rng.integers(0, 1 << 40, n)),
                pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), 384)],
                schema=schema))


def consume(address: str, epoch: int, step_s: float = 0.0, token=None, prefetch: int = 0) -> dict:
    """Reads one rank-0-of-1 epoch; per-batch latency = time blocked waiting for the next batch
    (in read_chunk, or with `prefetch` in the queue of examples/torch_consumer.py's
    Prefetcher, which calls read_chunk on a background thread)."""
    client = flight.connect(f"grpc://{address}")
    ticket = flight.Ticket(json.dumps({"rank": 0, "world_size": 1, "epoch": epoch}).encode())
    t_start = time.perf_counter()
    reader = client.do_get(ticket)

    def chunks():
        while True:
            try:
                yield reader.read_chunk()
            except StopIteration:
                return

    source = iter(Prefetcher(chunks(), prefetch)) if prefetch else chunks()
    lat = []
    nbytes = 0
    batches = 0
    waited = 0.0
    first_wait = None
    while True:
        t0 = time.perf_counter()
        chunk = next(source, None)
        if chunk is None:
            break
        dt = time.perf_counter() - t0
        if chunk.data is None or chunk.data.num_rows == 0:
            continue  # end marker
        if first_wait is None:
            first_wait = dt + (t0 - t_start)
        else:
            waited += dt
        lat.append(dt)
        batches += 1
        nbytes += chunk.data.nbytes
        if step_s:
            time.sleep(step_s)
    total = time.perf_counter() - t_start
    lat_ms = sorted(x * 1e3 for x in lat)
    return {
        "batches": batches,
        "seconds": total,
        "batches_per_s": batches / total,
        "mb_per_s": nbytes / total / 1e6,
        "p50_ms": lat_ms[len(lat_ms) // 2] if lat_ms else 0.0,
        "p99_ms": lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))] if lat_ms else 0.0,
        # Waiting after the first batch (steady state) and including the start-up.
        "wait_fraction": waited / total,
        "wait_fraction_with_startup": (waited + (first_wait or 0.0)) / total,
    }


def serve_tripline(data: Path, epochs: int) -> tuple[subprocess.Popen, str, list[str]]:
    spool = DATA / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    yaml = DATA / f"serve-{data.stem}.yaml"
    yaml.write_text(
        "version: 1\nseed: 7\nsources:\n  triplets:\n    type: arrow_ipc\n"
        f"    path: {data}\n    batch_rows: 8192\n"
        "sinks:\n  trainer:\n    type: flight\n    inputs: [triplets]\n"
        f"    address: 127.0.0.1:0\n    batch_size: {ROWS_PER_BATCH}\n    epochs: {epochs}\n"
        f"    max_buffered_batches: 16\n    spool_dir: {spool}\n")
    exe = Path(os.environ.get("TRIPLINE_BIN", REPO / "target" / "release" / "tripline"))
    if not exe.exists():
        sys.exit(f"{exe} is missing: run `cargo build --release --bin tripline`")
    p = subprocess.Popen([str(exe), "serve", str(yaml)], stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "NO_COLOR": "1"})
    log: list[str] = []
    for line in p.stderr:
        log.append(line)
        if "serving on " in line:
            addr = line.split("serving on ")[1].split()[0]
            threading.Thread(target=lambda: log.extend(p.stderr), daemon=True).start()
            return p, addr, log
    sys.exit("tripline serve did not start:\n" + "".join(log))


class PeerServer(flight.FlightServerBase):
    """The peer: pyarrow's own Flight server, serving the same 256-row batches from memory."""

    def __init__(self, table: pa.Table):
        super().__init__("grpc://127.0.0.1:0")
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(
            pa.Table.from_batches(self.table.to_batches(max_chunksize=ROWS_PER_BATCH)))


def run_case(name: str, data: Path, repeat: int) -> dict:
    table = ipc.open_file(data).read_all().combine_chunks()
    results = {"tripline_epoch0": [], "tripline_epoch1": [], "pyarrow_server": []}
    for _ in range(repeat):
        p, addr, log = serve_tripline(data, epochs=2)
        results["tripline_epoch0"].append(consume(addr, 0))
        results["tripline_epoch1"].append(consume(addr, 1))
        if p.wait(timeout=60) != 0:
            sys.exit("tripline serve failed:\n" + "".join(log))
        peer = PeerServer(table)
        results["pyarrow_server"].append(consume(f"127.0.0.1:{peer.port}", 0))
        peer.shutdown()
    summary = {}
    for k, runs in results.items():
        summary[k] = {m: statistics.median(r[m] for r in runs)
                      for m in ("batches_per_s", "mb_per_s", "p50_ms", "p99_ms", "batches")}
    print(f"\n== {name}: {summary['tripline_epoch0']['batches']:.0f} batches of "
          f"{ROWS_PER_BATCH} rows, {table.nbytes / 1e6:.0f} MB, medians of {repeat}")
    print(f"{'server':<22}{'batches/s':>12}{'MB/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for k, s in summary.items():
        print(f"{k:<22}{s['batches_per_s']:>12.0f}{s['mb_per_s']:>10.0f}"
              f"{s['p50_ms']:>9.3f}{s['p99_ms']:>9.3f}")
    for k in ("tripline_epoch0", "tripline_epoch1"):
        print(f"ratio {k} / pyarrow_server (MB/s): "
              f"{summary[k]['mb_per_s'] / summary['pyarrow_server']['mb_per_s']:.2f}")
    return summary


def run_sleep(data: Path, step_ms: float, repeat: int) -> dict:
    runs, pre_runs = [], []
    for _ in range(repeat):
        for prefetch, out in ((0, runs), (2, pre_runs)):
            p, addr, log = serve_tripline(data, epochs=1)
            out.append(consume(addr, 0, step_s=step_ms / 1e3, prefetch=prefetch))
            if p.wait(timeout=120) != 0:
                sys.exit("tripline serve failed:\n" + "".join(log))
    # The peer: the same consumer against pyarrow's server holding every batch in memory, so
    # the data is always there: what remains is the cost of read_chunk itself (decoding,
    # waking up) — the floor for any server.
    table = ipc.open_file(data).read_all().combine_chunks()
    peer_runs = []
    for _ in range(repeat):
        peer = PeerServer(table)
        peer_runs.append(consume(f"127.0.0.1:{peer.port}", 0, step_s=step_ms / 1e3))
        peer.shutdown()
    keys = ("batches", "seconds", "wait_fraction", "wait_fraction_with_startup")
    s = {m: statistics.median(r[m] for r in runs) for m in keys}
    pre = {m: statistics.median(r[m] for r in pre_runs) for m in keys}
    ps = {m: statistics.median(r[m] for r in peer_runs) for m in keys}
    print(f"\n== sleep: {s['batches']:.0f} text batches, {step_ms} ms step, medians of {repeat}")
    print(f"tripline: consumer waited {100 * s['wait_fraction']:.3f}% of its time after the "
          f"first batch ({100 * s['wait_fraction_with_startup']:.3f}% including start-up) over "
          f"{s['seconds']:.2f} s")
    print(f"tripline, consumer prefetching 2 batches on a thread (examples/torch_consumer.py "
          f"Prefetcher): waited {100 * pre['wait_fraction']:.3f}% "
          f"({100 * pre['wait_fraction_with_startup']:.3f}% including start-up)")
    print(f"pyarrow server (all in memory): {100 * ps['wait_fraction']:.3f}% "
          f"({100 * ps['wait_fraction_with_startup']:.3f}% including start-up)")
    s["prefetch"] = pre
    s["peer"] = ps
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=600, help="batches per epoch")
    ap.add_argument("--step-ms", type=float, default=5.0, help="simulated training step")
    ap.add_argument("--sleep-batches", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the medians here")
    args = ap.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    rows = args.batches * ROWS_PER_BATCH
    text, emb = DATA / f"text-{rows}.arrow", DATA / f"embedding-{rows}.arrow"
    small = DATA / f"text-{args.sleep_batches * ROWS_PER_BATCH}.arrow"
    if not text.exists():
        make_text(rows, text)
    if not emb.exists():
        make_embedding(rows, emb)
    if not small.exists():
        make_text(args.sleep_batches * ROWS_PER_BATCH, small)
    out = {
        "text": run_case("text triplets", text, args.repeat),
        "embedding": run_case("embedding triplets (384 x f32)", emb, args.repeat),
        "sleep": run_sleep(small, args.step_ms, args.repeat),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
