#!/usr/bin/env python3
"""Benchmarks tripline's `mine` stage against its peers, on the same data, in one run.

(a) kernel: 100k x 384 normalised vectors (numpy seed 0), all-vs-all top-10 excluding self:
    tripline's kernel (benches/mine_kernel.rs in one-shot mode) vs faiss-cpu IndexFlatIP vs
    numpy blocked matmul + argpartition; plus the machine's sgemm peak (numpy 4096^3 matmul)
    measured in the same run. faiss and numpy run with OPENBLAS_CORETYPE=SkylakeX (their
    bundled OpenBLAS otherwise picks a kernel ~6x slower on this CPU).
(b) end to end: >= 10k real (WEB, KJV) verse pairs from data/sample/verses.parquet embedded
    once with onnxruntime (all-MiniLM-L6-v2 int8, mean pooling, normalised) into a Parquet
    file both tools read; `tripline run scripts/mine-paired-bench.yaml` (whole process:
    read, mine, write shards) vs sentence-transformers `mine_hard_negatives` given the same
    precomputed embeddings (its encode calls return them; only its mining is timed, plus the
    Parquet read), range_max 50, num_negatives 5, relative_margin 0.05, sampling top,
    n-tuple. Prints wall seconds, peak RSS of each process, the ratio and the share of
    identical negatives. With --corpus N both also get an extra corpus (sentence-transformers'
    `corpus` argument, tripline's `corpus:` input) of N KJV verses, half of them repeating
    positives.

Setup (once):
    python3 -m venv .peer-venv
    .peer-venv/bin/pip install faiss-cpu numpy pyarrow torch sentence-transformers datasets onnxruntime tokenizers
    cargo build --release && cargo bench --bench mine_kernel --no-run
Run:
    .peer-venv/bin/python scripts/bench-mine.py [--n 100000] [--pairs 20000] [--corpus 0]
                                                [--skip-kernel] [--skip-e2e]
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench-data"
PY = sys.executable


def run_child(code, env_extra=None):
    """Runs python `code` in a fresh process; returns (stdout json, peak RSS MiB of that process)."""
    env = dict(os.environ, **(env_extra or {}))
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def timed_cmd(cmd, env_extra=None):
    """Runs `cmd`; returns its stdout, wall seconds and its own peak RSS in MiB (from wait4,
    so earlier children do not count)."""
    env = dict(os.environ, **(env_extra or {}))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            sys.exit(f"{cmd}: {err.read().decode()}")
        return out.read().decode(), wall, usage.ru_maxrss / 1024


SKX = {"OPENBLAS_CORETYPE": "SkylakeX"}

PEAK = """
import numpy as np, time, json
a = np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)
best = 1e9
for _ in range(3):
    t = time.perf_counter(); a @ a; best = min(best, time.perf_counter() - t)
print(json.dumps({"gflops": 2 * 4096**3 / best / 1e9}))
"""

FAISS = """
import numpy as np, faiss, time, json, resource
x = np.fromfile('{f}', dtype=np.float32).reshape(-1, 384)
t = time.perf_counter()
index = faiss.IndexFlatIP(384); index.add(x)
D, I = index.search(x, 11)
s = time.perf_counter() - t
first = [int(i) for i in I[0] if i != 0][:10]
print(json.dumps({{"seconds": s, "first": first, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

NUMPY = """
import numpy as np, time, json, resource
x = np.fromfile('{f}', dtype=np.float32).reshape(-1, 384)
n = len(x); B = 4096; out = np.empty((n, 10), dtype=np.int64)
t = time.perf_counter()
for s in range(0, n, B):
    sc = x[s:s+B] @ x.T
    sc[np.arange(sc.shape[0]), np.arange(s, s + sc.shape[0])] = -np.inf
    part = np.argpartition(-sc, 10, axis=1)[:, :10]
    order = np.argsort(-np.take_along_axis(sc, part, 1), axis=1, kind='stable')
    out[s:s+B] = np.take_along_axis(part, order, 1)
s = time.perf_counter() - t
print(json.dumps({{"seconds": s, "first": out[0].tolist(), "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def kernel_bench(n):
    import numpy as np
    DATA.mkdir(exist_ok=True)
    f = DATA / f"mine-{n}x384.f32"
    if not f.exists():
        x = np.random.default_rng(0).standard_normal((n, 384), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x.astype("<f4").tofile(f)
    flops = 2.0 * n * n * 384
    peak = run_child(PEAK, SKX)["gflops"]
    out, wall, _ = timed_cmd(["cargo", "bench", "--quiet", "--bench", "mine_kernel"], {"MINE_BENCH_ONESHOT": str(f)})
    ours = json.loads(out.strip().splitlines()[-1])
    fa = run_child(FAISS.format(f=f), SKX)
    npy = run_child(NUMPY.format(f=f), SKX)
    print(f"kernel {n}x384 top-10 (sgemm peak measured now: {peak:.0f} GFLOP/s)")
    for name, r in [("tripline", ours), ("faiss IndexFlatIP", fa), ("numpy blocked", npy)]:
        g = flops / r["seconds"] / 1e9
        print(f"  {name:18s} {r['seconds']:8.2f} s  {g:6.0f} GFLOP/s  {100 * g / peak:5.1f}% of peak")
    print(f"  ratio faiss/tripline {fa['seconds'] / ours['seconds']:.2f}x, numpy/tripline {npy['seconds'] / ours['seconds']:.2f}x")
    print(f"  first query's neighbours agree with faiss: {ours['first'] == fa['first']}")


EMBED = """
import numpy as np, onnxruntime as ort, pyarrow as pa, pyarrow.parquet as pq, json
from tokenizers import Tokenizer
t = pq.read_table('{src}').slice(0, {n})
tok = Tokenizer.from_file('{model}/tokenizer.json'); tok.enable_truncation(256); tok.enable_padding()
sess = ort.InferenceSession('{model}/model.onnx', providers=['CPUExecutionProvider'])
def embed(texts):
    out = []
    for i in range(0, len(texts), 64):
        enc = tok.encode_batch(texts[i:i+64])
        ids = np.array([e.ids for e in enc], dtype=np.int64); m = np.array([e.attention_mask for e in enc], dtype=np.int64)
        h = sess.run(None, {{'input_ids': ids, 'attention_mask': m, 'token_type_ids': np.zeros_like(ids)}})[0]
        v = (h * m[..., None]).sum(1) / m.sum(1, keepdims=True)
        out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return np.concatenate(out).astype(np.float32)
a = t.column('text').to_pylist(); p = t.column('kjv').to_pylist()
vec = lambda e: pa.FixedSizeListArray.from_arrays(pa.array(e.reshape(-1)), 384)
import os
if not os.path.exists('{dst}'):
    ea, ep = embed(a), embed(p)
    pq.write_table(pa.table({{'id': t.column('id'), 'anchor': a, 'positive': p, 'anchor_embedding': vec(ea), 'positive_embedding': vec(ep)}}), '{dst}')
if {corpus}:
    # Corpus: the KJV text of the `corpus` verses centred on the end of the pairs, so half of
    # it repeats positives (deduplicated by text) and half is new.
    c = pq.read_table('{src}').slice(max({n} - {corpus} // 2, 0), {corpus})
    ct = c.column('kjv').to_pylist()
    pq.write_table(pa.table({{'id': pa.array(range(10**6, 10**6 + len(ct)), pa.int64()), 'text': ct, 'text_embedding': vec(embed(ct))}}), '{cdst}')
print(json.dumps({{"rows": len(a)}}))
"""

ST = """
import json, time, resource, numpy as np, pyarrow.parquet as pq, torch
from datasets import Dataset
from sentence_transformers import util
from sentence_transformers.util import mine_hard_negatives
t0 = time.perf_counter()  # after the imports: only reading the pairs and mining are timed
t = pq.read_table('{f}')
a = t.column('anchor').to_pylist(); p = t.column('positive').to_pylist()
emb = {{}}
cols = [(t, a, 'anchor_embedding'), (t, p, 'positive_embedding')]
corpus = None
if '{cf}':
    c = pq.read_table('{cf}'); corpus = c.column('text').to_pylist()
    cols.append((c, corpus, 'text_embedding'))
for tab, texts, col in cols:
    e = np.asarray(tab.column(col).combine_chunks().flatten(), dtype=np.float32).reshape(-1, 384)
    for s, v in zip(texts, e):
        emb.setdefault(s, v)
class Card: base_model = 'precomputed'
class Precomputed:
    '''Stands in for a SentenceTransformer: returns the precomputed embeddings.'''
    device = torch.device('cpu'); model_card_data = Card()
    def get_embedding_dimension(self): return 384
    def encode_document(self, texts, **kw): return np.stack([emb[s] for s in texts])
    encode_query = encode_document
    def similarity(self, x, y): return util.cos_sim(x, y)
    def similarity_pairwise(self, x, y): return util.pairwise_cos_sim(torch.as_tensor(x), torch.as_tensor(y))
ds = Dataset.from_dict({{'anchor': a, 'positive': p}})
t1 = time.perf_counter()
out = mine_hard_negatives(ds, Precomputed(), corpus=corpus, range_max=50, num_negatives=5, relative_margin=0.05, sampling_strategy='top', output_format='n-tuple', verbose=False)
t2 = time.perf_counter()
rows = {{(r['anchor'], r['positive']): [r[f'negative_{{i}}'] for i in range(1, 6)] for r in out}}
json.dump({{k[0] + '\\x00' + k[1]: v for k, v in rows.items()}}, open('{dump}', 'w'))
print(json.dumps({{"seconds_total": t2 - t0, "seconds_mining": t2 - t1, "rows": len(out), "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def e2e_bench(pairs, corpus=0):
    import pyarrow.parquet as pq
    DATA.mkdir(exist_ok=True)
    f = DATA / f"verse-pairs-{pairs}.parquet"
    cf = DATA / f"verse-corpus-{pairs}-{corpus}.parquet" if corpus else ""
    model = REPO / "models" / "all-MiniLM-L6-v2"
    if not f.exists() or (cf and not cf.exists()):
        run_child(EMBED.format(src=REPO / "data/sample/verses.parquet", n=pairs, model=model, dst=f,
                               corpus=corpus, cdst=cf))
    out_dir = DATA / "mine-out"
    binary = REPO / "target" / "release" / "tripline"
    cmd = [str(binary), "run", str(REPO / "scripts/mine-paired-bench.yaml"), "--overwrite", "--progress", "off",
           "--set", f"sources.pairs.path={f}", "--set", f"sinks.shards.path={out_dir}"]
    if corpus:
        cmd += ["--set", f"sources.docs={{type: parquet, path: '{cf}'}}",
                "--set", "stages.hard_pairs.corpus={input: docs, column: text}"]
    _, wall, rss = timed_cmd(cmd)
    dump = DATA / "st-negatives.json"
    st = run_child(ST.format(f=f, cf=cf, dump=dump))
    ours = {}
    for shard in sorted(out_dir.glob("part-*.parquet")):
        t = pq.read_table(shard).to_pydict()
        for i in range(len(t["anchor"])):
            ours[t["anchor"][i] + "\x00" + t["positive"][i]] = [t[f"negative_{k}"][i] for k in range(1, 6)]
    theirs = json.load(open(dump))
    same = total = 0
    for k, v in theirs.items():
        mine = ours.get(k, [])
        total += len(v)
        same += sum(1 for j, x in enumerate(v) if j < len(mine) and mine[j] == x)
    if corpus:
        report = json.load(open(out_dir / "mining_report.json"))
        print(f"extra corpus of {corpus} verses: {report['corpus_duplicates']} repeat a positive, "
              f"{report['candidates']} candidates")
    print(f"end to end, {pairs} verse pairs, range_max 50, num_negatives 5, relative_margin 0.05, top, n-tuple")
    print(f"  tripline (whole process)          {wall:7.2f} s  peak RSS {rss:7.0f} MiB  rows {sum(1 for _ in ours)}")
    print(f"  sentence-transformers (read+mine) {st['seconds_total']:7.2f} s  (mining alone {st['seconds_mining']:.2f} s)  peak RSS {st['rss_mib']:7.0f} MiB  rows {st['rows']}")
    print(f"  ratio {st['seconds_total'] / wall:.2f}x  (mining alone vs our whole process {st['seconds_mining'] / wall:.2f}x)")
    print(f"  identical negatives (position-wise): {100 * same / max(total, 1):.2f}% of {total}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--corpus", type=int, default=0,
                    help="also pass an extra corpus of this many verses (half repeat positives)")
    ap.add_argument("--skip-kernel", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    a = ap.parse_args()
    if not a.skip_kernel:
        kernel_bench(a.n)
    if not a.skip_e2e:
        e2e_bench(a.pairs, a.corpus)
