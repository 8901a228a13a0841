#!/usr/bin/env python3
"""Parquet -> Parquet passthrough: tripline against pyarrow on the same files, in the same run.

Generates (once, under bench-data/) a Parquet file of N rows with columns id int64,
label int32, text (~100 bytes), and one of 100k rows with id and a 384-float embedding
column. Each case is timed end to end as a whole process, alternating tripline and pyarrow,
`--repeat` times; medians and the ratio (pyarrow time / tripline time, > 1 means tripline is
faster) are printed, with each process's peak RSS.

pyarrow's side reads the whole file with `pq.read_table` (multi-threaded) and writes it with
`pq.write_table` (zstd level 1, row groups of 65,536 rows, like tripline's defaults), so both
write the same codec and row group size.

Usage: .venv/bin/python scripts/bench-passthrough.py [--rows 1000000] [--repeat 5]
       [--rss-rows 1000000,10000000]   # peak RSS of tripline as the input grows
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench-data"
BIN = REPO / "target" / "release" / "tripline"

PYARROW_PEER = r"""
import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
pq.write_table(t, sys.argv[2], compression="zstd", compression_level=1, row_group_size=65536)
"""


def make_text_file(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    words = np.array(["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "retrieval",
                      "ranking", "triplet", "negative", "anchor", "positive", "embedding", "vector"])
    writer = None
    chunk = 250_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        idx = rng.integers(0, len(words), size=(n, 16))
        texts = [" ".join(row) for row in words[idx]]  # ~100 bytes each
        t = pa.table({
            "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
            "label": pa.array(rng.integers(0, 1000, size=n, dtype=np.int32)),
            "text": pa.array(texts, type=pa.string()),
        })
        if writer is None:
            writer = pq.ParquetWriter(path, t.schema, compression="zstd")
        writer.write_table(t, row_group_size=65536)
    writer.close()


def make_embedding_file(path: Path, rows: int, dim: int = 384) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return
    rng = np.random.default_rng(7)
    emb = rng.standard_normal((rows, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim)
    t = pa.table({"id": pa.array(np.arange(rows, dtype=np.int64)), "embedding": col})
    pq.write_table(t, path, compression="zstd", row_group_size=16384)


def pipeline(input_: Path, out: Path, name: str) -> Path:
    p = DATA / f"{name}.yaml"
    p.write_text(
        "version: 1\n"
        f"sources:\n  docs: {{type: parquet, path: {input_}, batch_rows: 8192}}\n"
        f"sinks:\n  shards: {{type: parquet_shards, inputs: [docs], path: {out}, rows_per_shard: 100000000}}\n"
    )
    return p


def timed(cmd) -> float:
    """Wall seconds of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr.decode()}")
    return wall


def peak_rss_kib(cmd) -> int:
    time_bin = shutil.which("time") or "/usr/bin/time"
    if not os.path.exists(time_bin):
        return -1
    proc = subprocess.run([time_bin, "-f", "%M"] + [str(c) for c in cmd], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    return int(proc.stderr.decode().strip().splitlines()[-1])


def case(name: str, input_: Path, repeat: int) -> None:
    slug = input_.stem
    out = DATA / f"out-{slug}"
    yaml = pipeline(input_, out, slug)
    trip = [str(BIN), "run", str(yaml), "--overwrite", "--progress", "off"]
    peer_out = DATA / f"peer-{slug}.parquet"
    peer = [sys.executable, "-c", PYARROW_PEER, str(input_), str(peer_out)]
    # warm-up (page cache)
    subprocess.run(trip, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    subprocess.run(peer, check=True)
    t_times, p_times, ratios = [], [], []
    for _ in range(repeat):
        t = timed(trip)
        p = timed(peer)
        t_times.append(t)
        p_times.append(p)
        ratios.append(p / t)
    rss_t = peak_rss_kib(trip)
    rss_p = peak_rss_kib(peer)
    print(f"{name:<22} tripline median {statistics.median(t_times):6.3f} s   pyarrow median "
          f"{statistics.median(p_times):6.3f} s   ratio (pyarrow/tripline) median {statistics.median(ratios):4.2f}x"
          f"   peak RSS tripline {rss_t / 1024:.0f} MiB, pyarrow {rss_p / 1024:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rss-rows", default="")
    args = ap.parse_args()
    if not BIN.exists():
        sys.exit(f"{BIN} is missing: run `cargo build --release` first")
    DATA.mkdir(exist_ok=True)
    text = DATA / f"text-{args.rows}.parquet"
    emb = DATA / "embeddings-100000.parquet"
    make_text_file(text, args.rows)
    make_embedding_file(emb, 100_000)
    print(f"machine: {os.cpu_count()} cores; repeat {args.repeat}; pyarrow uses its default thread pool")
    case(f"text {args.rows} rows", text, args.repeat)
    case("embeddings 100000x384", emb, args.repeat)
    for n in [int(x) for x in args.rss_rows.split(",") if x]:
        f = DATA / f"text-{n}.parquet"
        make_text_file(f, n)
        out = DATA / f"out-rss-{n}"
        yaml = pipeline(f, out, f"rss-{n}")
        rss = peak_rss_kib([str(BIN), "run", str(yaml), "--overwrite", "--progress", "off"])
        print(f"peak RSS, tripline passthrough of {n} rows: {rss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
