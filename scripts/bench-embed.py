#!/usr/bin/env python3
"""Sentences per second of the embed stage against its peers, in one invocation.

Same model (all-MiniLM-L6-v2), same sentences (the first N verses of the bundled sample, WEB
text), same batch size, CPU only, each run R times (median reported):

  tripline              `tripline run` of a Parquet → embed → Parquet pipeline, whole process
                        wall time (start-up, model load, reading and writing included);
                        batches sorted by length within its look-ahead window; its default
                        parallelism (CPU: one single-threaded session per core, at most 4),
                        and again with one session of --threads intra-op threads
  onnxruntime           Python onnxruntime 1.31.1 (the library tripline loads) on the same
                        model.onnx: tokenizers → pad each batch to its longest → run → masked
                        mean → L2 normalise; timed from session creation to the last vector.
                        Three variants: batches in input order (the usual loop), batches of
                        length-sorted sentences (what tripline does), and length-sorted
                        batches on --threads single-threaded sessions from as many Python
                        threads (tripline's default parallelism, done by hand)
  sentence-transformers SentenceTransformer(models/all-MiniLM-L6-v2-fp32).encode(batch_size,
                        normalize_embeddings=True) on torch CPU (it sorts by length itself);
                        timed from model load to the last vector; run from .peer-venv or
                        PEER_PYTHON when importable, skipped (and said so) otherwise

Threads: every runtime gets the same number of intra-op threads (--threads, default: all
cores): ORT `intra_op_num_threads`, tripline `threads:`, `torch.set_num_threads`.

Peer environment (once; torch's PyPI wheel is large):
  python3 -m venv .peer-venv
  .peer-venv/bin/pip install torch sentence-transformers

Usage (repository root, after scripts/setup-python.sh, scripts/fetch-model.sh and
`cargo build --release`):
  .venv/bin/python scripts/bench-embed.py [--rows 2048] [--batch-size 64] [--repeats 3]
                                          [--model models/all-MiniLM-L6-v2-fp32]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def models_dir():
    return os.environ.get("TRIPLINE_MODELS_DIR", os.path.join(REPO, "models"))


def ort_run(texts, batch_size, threads, max_length, sort, model, sessions=1):
    """Python onnxruntime: one session with `threads` intra-op threads, or `sessions`
    single-threaded sessions running batches from as many Python threads (ORT releases the
    GIL while it runs)."""
    import onnxruntime as ort
    from concurrent.futures import ThreadPoolExecutor
    from tokenizers import Tokenizer

    start = time.perf_counter()
    tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads if sessions == 1 else 1
    opts.inter_op_num_threads = 1
    sess = [ort.InferenceSession(os.path.join(model, "model.onnx"), opts,
                                 providers=["CPUExecutionProvider"]) for _ in range(sessions)]
    encs = tok.encode_batch(texts)
    order = list(range(len(texts)))
    if sort:
        order.sort(key=lambda i: -len(encs[i].ids))
    out = np.zeros((len(texts), 384), dtype=np.float32)
    padding = 0
    batches = []
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        seq = max(len(encs[i].ids) for i in idx)
        ids = np.zeros((len(idx), seq), dtype=np.int64)
        mask = np.zeros((len(idx), seq), dtype=np.int64)
        for k, i in enumerate(idx):
            n = len(encs[i].ids)
            ids[k, :n] = encs[i].ids
            mask[k, :n] = 1
            padding += seq - n
        batches.append((idx, ids, mask))

    def infer(k):
        idx, ids, mask = batches[k]
        hidden = sess[k % sessions].run(["last_hidden_state"], {
            "input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        out[idx] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    if sessions == 1:
        for k in range(len(batches)):
            infer(k)
    else:
        # Session k % sessions runs batch k; one Python thread per session.
        def lane(j):
            for k in range(j, len(batches), sessions):
                infer(k)
        with ThreadPoolExecutor(sessions) as ex:
            list(ex.map(lane, range(sessions)))
    return time.perf_counter() - start, out, padding


ST_CODE = r"""
import json, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
texts = json.load(open(args["texts"]))
times = []
for _ in range(args["repeats"]):
    t = time.perf_counter()
    from sentence_transformers import SentenceTransformer
    m = SentenceTransformer(args["model"], device="cpu", local_files_only=True)
    m.max_seq_length = args["max_length"]
    v = m.encode(texts, batch_size=args["batch_size"], normalize_embeddings=True,
                 convert_to_numpy=True)
    times.append(time.perf_counter() - t)
import numpy as np
np.save(args["out"], v)
print(json.dumps({"times": times, "torch": torch.__version__,
                  "threads": torch.get_num_threads()}))
"""


def st_run(texts, args, tmp):
    py = os.environ.get("PEER_PYTHON", ".peer-venv/bin/python")
    if not os.path.exists(py):
        return None, f"{py} not found (create .peer-venv, see this script's docstring)"
    tfile = os.path.join(tmp, "texts.json")
    with open(tfile, "w") as f:
        json.dump(texts, f)
    out = os.path.join(tmp, "st.npy")
    payload = json.dumps({
        "threads": args.threads, "texts": tfile, "repeats": args.repeats,
        "model": os.path.join(models_dir(), "all-MiniLM-L6-v2-fp32"),
        "max_length": args.max_length, "batch_size": args.batch_size, "out": out})
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="true")
    r = subprocess.run([py, "-c", ST_CODE, payload], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return None, "sentence-transformers failed: " + r.stderr.strip().splitlines()[-1]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return (res, np.load(out)), None


def tripline_run(input_path, out_dir, args, binary, single_session=False):
    """`tripline run`, whole process. Default parallelism (on the CPU one single-threaded
    session per core, at most 4), or one session with --threads intra-op threads."""
    parallel = f"workers: 1\n    threads: {args.threads}" if single_session else "# default workers"
    yaml = f"""version: 1
sources:
  verses:
    type: parquet
    path: {input_path}
    batch_rows: 1024
stages:
  embed:
    type: embed
    inputs: [verses]
    model: {os.path.join(args.model, 'model.onnx')}
    tokenizer: {os.path.join(args.model, 'tokenizer.json')}
    columns: [text]
    device: cpu
    batch_size: {args.batch_size}
    max_length: {args.max_length}
    {parallel}
sinks:
  shards:
    type: parquet_shards
    inputs: [embed]
    path: {out_dir}
    overwrite: true
"""
    cfg = os.path.join(os.path.dirname(out_dir), "bench-embed.yaml")
    with open(cfg, "w") as f:
        f.write(yaml)
    metrics = os.path.join(os.path.dirname(out_dir), "metrics.json")
    t = time.perf_counter()
    r = subprocess.run([binary, "run", cfg, "--overwrite", "--metrics-json", metrics],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit("tripline failed:\n" + r.stderr)
    with open(metrics) as f:
        m = json.load(f)
    details = next(c for c in m["components"] if c["name"] == "embed")["details"]
    parts = sorted(os.path.join(out_dir, f) for f in os.listdir(out_dir) if f.endswith(".parquet"))
    vecs = pa.concat_tables([pq.read_table(f) for f in parts]).column("text_embedding").combine_chunks()
    vecs = np.asarray(vecs.values, dtype=np.float32).reshape(len(vecs), -1)
    return wall, vecs, details


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--input", default=os.path.join(REPO, "data", "sample", "verses.parquet"))
    p.add_argument("--model", default=os.path.join(models_dir(), "all-MiniLM-L6-v2"),
                   help="model directory (model.onnx + tokenizer.json) for tripline and "
                        "onnxruntime; sentence-transformers always runs the fp32 checkpoint")
    p.add_argument("--tripline", default=os.path.join(REPO, "target", "release", "tripline"))
    p.add_argument("--skip-st", action="store_true", help="do not run sentence-transformers")
    args = p.parse_args()
    if not os.path.exists(args.tripline):
        sys.exit(f"{args.tripline} not found: run `cargo build --release`")

    table = pq.read_table(args.input, columns=["id", "text"]).slice(0, args.rows)
    texts = table.column("text").to_pylist()
    n = len(texts)
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in.parquet")
        pq.write_table(table, inp)
        print(f"{n} sentences (first rows of {os.path.relpath(args.input, REPO)}), "
              f"batch_size {args.batch_size}, max_length {args.max_length}, "
              f"{args.threads} threads, model {os.path.relpath(args.model, REPO)}, "
              f"median of {args.repeats}", flush=True)
        res = {}
        tl_times, tl_single, tl_vecs, details = [], [], None, None
        ort_in, ort_sorted, ort_multi = [], [], []
        ref = None
        # Interleave runs so that machine noise hits every contender alike.
        for _ in range(args.repeats):
            w, tl_vecs, details = tripline_run(inp, os.path.join(tmp, "out"), args, args.tripline)
            tl_times.append(w)
            w, _, _ = tripline_run(inp, os.path.join(tmp, "out1"), args, args.tripline, True)
            tl_single.append(w)
            t, ref, pad_in = ort_run(texts, args.batch_size, args.threads, args.max_length, False,
                                     args.model)
            ort_in.append(t)
            t, _, pad_sorted = ort_run(texts, args.batch_size, args.threads, args.max_length, True,
                                       args.model)
            ort_sorted.append(t)
            t, _, _ = ort_run(texts, args.batch_size, args.threads, args.max_length, True,
                              args.model, sessions=args.threads)
            ort_multi.append(t)
        res["tripline"] = statistics.median(tl_times)
        res[f"tripline (1 session x {args.threads} thr)"] = statistics.median(tl_single)
        res["onnxruntime (input order)"] = statistics.median(ort_in)
        res["onnxruntime (length-sorted)"] = statistics.median(ort_sorted)
        res[f"onnxruntime ({args.threads} sessions, sorted)"] = statistics.median(ort_multi)
        st_note = None
        st = None
        if not args.skip_st:
            st, st_note = st_run(texts, args, tmp)
            if st:
                res["sentence-transformers"] = statistics.median(st[0]["times"])
        diff = float(np.abs(tl_vecs - ref).max())
        print(f"max |tripline - onnxruntime| over all vectors: {diff:.2e}")
        if st:
            cos = float(np.min(np.sum(tl_vecs * st[1], axis=1)))
            print(f"min cosine(tripline, sentence-transformers fp32): {cos:.4f}")
        print(f"tripline: {details.get('workers')} workers x {details.get('threads_per_worker')} "
              f"threads")
        print(f"padding tokens: tripline {details.get('padding_tokens')} "
              f"(input order would be {details.get('padding_tokens_unsorted')}, saved "
              f"{details.get('padding_saved')}); python input order {pad_in}, "
              f"sorted whole set {pad_sorted}")
        base = res["tripline"]
        print(f"{'':30} {'median s':>9} {'sentences/s':>12} {'tripline speed-up':>18}")
        for k, v in res.items():
            print(f"{k:30} {v:9.3f} {n / v:12.1f} {v / base:17.2f}x")
        if st_note:
            print(f"sentence-transformers: skipped: {st_note}")


if __name__ == "__main__":
    main()
