#!/usr/bin/env python3
"""End-to-end benchmark of the `augment` stage against Python peers, in one invocation.

(a) text: 1M rows Parquet -> word deletion 0.1 + one word swap -> Parquet (snappy, the codec
    `datasets.Dataset.to_parquet` uses)
    tripline `run` (release binary)  vs  HuggingFace `datasets` `.map(batched=True, num_proc=2)`.
(b) images: random resized crop 224 + horizontal flip p=0.5 + colour jitter (0.4, 0.4, 0.4, 0.1)
    + JPEG q90 re-encode, Parquet -> Parquet, over N images (default 2,000)
    tripline `run`  vs  PIL with a 2-process pool (the ops torchvision applies to PIL images:
    `resize(box=…, BILINEAR)`, `transpose`, `ImageEnhance`, HSV hue shift).
(c) scaling: tripline with `runtime.workers=1` vs `2` on both.

Input data (written once under bench-data/augment/):
* text: the bundled WEB verses (data/sample/verses.parquet) repeated to 1M rows, ids unique.
* images: GENERATED photo-like pictures (smooth gradients, shapes, sensor noise; 500x375 JPEG
  q90), not real photos: no registry package here ships thousands of photos.

Each measurement is repeated (--repeats, default 5, alternating tripline / peer) and the
median wall time is reported, with the ratio peer / tripline. Tripline is timed as a whole
process; the peers are timed inside their worker process from just before reading the input to
just after writing the output (interpreter start-up and imports are NOT counted, which favours
the peers). Peer settings: `datasets` caching disabled and a fresh cache dir per run; `to_parquet` with
content-defined chunking and the page index off (faster than its defaults);
OMP/MKL/OPENBLAS threads = 1 per process (the work is per row, no BLAS); PIL default
(single-threaded per process), Pool(2).

Setup (once):
    scripts/setup-python.sh                                 # not needed by this script
    python3 -m venv .peer-venv
    .peer-venv/bin/pip install datasets pillow pyarrow numpy
    cargo build --release --bin tripline
Run:
    .peer-venv/bin/python scripts/bench-augment.py [--rows 1000000] [--images 2000]
(`TRIPLINE_BIN=path` picks another binary than target/release/tripline.)
"""

import argparse
import io
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "bench-data", "augment")
BIN = os.environ.get("TRIPLINE_BIN", os.path.join(ROOT, "target", "release", "tripline"))

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")


# ---------------------------------------------------------------- data


def make_text(rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.path.join(DATA, f"text-{rows}.parquet")
    if os.path.exists(path):
        return path
    src = pq.read_table(os.path.join(ROOT, "data", "sample", "verses.parquet"), columns=["label", "text"])
    texts = src.column("text").to_pylist()
    labels = src.column("label").to_pylist()
    n = len(texts)
    t = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "label": pa.array([labels[i % n] for i in range(rows)], pa.int32()),
            "text": pa.array([texts[i % n] for i in range(rows)], pa.string()),
        }
    )
    os.makedirs(DATA, exist_ok=True)
    pq.write_table(t, path + ".tmp", compression="zstd", row_group_size=65536)
    os.replace(path + ".tmp", path)
    return path


def make_images(count):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image, ImageDraw, ImageFilter

    path = os.path.join(DATA, f"images-{count}.parquet")
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(7)
    blobs = []
    for i in range(count):
        w, h = (500, 375) if i % 3 else (375, 500)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack(
            [
                128 + 100 * np.sin(xx / rng.uniform(30, 120) + rng.uniform(0, 6)),
                128 + 100 * np.cos(yy / rng.uniform(30, 120) + rng.uniform(0, 6)),
                128 + 80 * np.sin((xx + yy) / rng.uniform(40, 160)),
            ],
            axis=-1,
        )
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = int(rng.uniform(0, w)), int(rng.uniform(0, h))
            x1, y1 = x0 + int(rng.uniform(20, 200)), y0 + int(rng.uniform(20, 200))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (d.ellipse if rng.uniform() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=colour)
        img = img.filter(ImageFilter.GaussianBlur(1.2))
        arr = np.asarray(img).astype(np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        blobs.append(buf.getvalue())
    t = pa.table(
        {
            "id": pa.array(range(count), pa.int64()),
            "label": pa.array([i % 100 for i in range(count)], pa.int32()),
            "image": pa.array(blobs, pa.binary()),
        }
    )
    os.makedirs(DATA, exist_ok=True)
    pq.write_table(t, path + ".tmp", compression="none", row_group_size=256)
    os.replace(path + ".tmp", path)
    return path


# ---------------------------------------------------------------- tripline

TEXT_YAML = """version: 1
seed: 7
sources:
  docs: {{type: parquet, path: {input}, batch_rows: 8192}}
stages:
  aug:
    type: augment
    inputs: [docs]
    ops:
      text:
        - {{op: word_deletion, rate: 0.1}}
        - {{op: word_swap, n: 1}}
sinks:
  out: {{type: parquet_shards, inputs: [aug], path: {output}, overwrite: true, compression: snappy}}
"""

IMAGE_YAML = """version: 1
seed: 7
sources:
  imgs: {{type: parquet, path: {input}, batch_rows: 16}}
stages:
  aug:
    type: augment
    inputs: [imgs]
    ops:
      image:
        - {{op: random_resized_crop, size: [224, 224]}}
        - {{op: horizontal_flip, p: 0.5}}
        - {{op: color_jitter, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1}}
        - {{op: encode, format: jpeg, quality: 90}}
sinks:
  out: {{type: parquet_shards, inputs: [aug], path: {output}, overwrite: true, compression: zstd}}
"""


def run_tripline(template, input_path, workers, work):
    out = os.path.join(work, "tripline-out")
    cfg = os.path.join(work, "tripline.yaml")
    with open(cfg, "w") as f:
        f.write(template.format(input=input_path, output=out))
    t0 = time.perf_counter()
    subprocess.run(
        [BIN, "run", cfg, "--progress", "off", "--set", f"runtime.workers={workers}"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dt = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return dt


# ---------------------------------------------------------------- text peer


def eda(batch):
    # Same ops as the tripline config: EDA random deletion (rate 0.1, keep one word if all go)
    # then one random swap of two distinct words.
    out = []
    rnd = random.random
    for t in batch["text"]:
        w = t.split()
        if len(w) > 1:
            kept = [x for x in w if rnd() >= 0.1]
            if not kept:
                kept = [random.choice(w)]
            w = kept
        if len(w) >= 2:
            i, j = random.sample(range(len(w)), 2)
            w[i], w[j] = w[j], w[i]
        out.append(" ".join(w))
    return {"text": out}


def run_hf(input_path, work):
    # Run in a fresh interpreter so caches and imports do not carry over; time inside it.
    script = os.path.join(work, "hf_peer.py")
    with open(script, "w") as f:
        f.write(
            "import time, random, sys, datasets\n"
            "datasets.disable_caching()\n"
            "datasets.disable_progress_bars()\n"
            "datasets.logging.set_verbosity_error()\n"
            + _source_of(eda)
            + f"\nif __name__ == '__main__':\n"
            f"    t0 = time.perf_counter()\n"
            f"    ds = datasets.Dataset.from_parquet({input_path!r}, cache_dir={os.path.join(work, 'hf-cache')!r})\n"
            f"    ds = ds.map(eda, batched=True, num_proc=2)\n"
            f"    ds.to_parquet({os.path.join(work, 'hf-out.parquet')!r}, use_content_defined_chunking=False, write_page_index=False)\n"
            f"    print(time.perf_counter() - t0)\n"
        )
    r = subprocess.run([sys.executable, script], check=True, capture_output=True, text=True)
    shutil.rmtree(os.path.join(work, "hf-cache"), ignore_errors=True)
    return float(r.stdout.strip().splitlines()[-1])


def _source_of(fn):
    import inspect

    return inspect.getsource(fn)


# ---------------------------------------------------------------- image peer


def _rrc_params(w, h, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    # torchvision.transforms.RandomResizedCrop.get_params
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return random.randint(0, w - cw), random.randint(0, h - ch), cw, ch
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def _augment_image(blob):
    import numpy as np
    from PIL import Image, ImageEnhance

    img = Image.open(io.BytesIO(blob)).convert("RGB")
    x, y, cw, ch = _rrc_params(*img.size)
    img = img.resize((224, 224), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    if random.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    # torchvision ColorJitter(0.4, 0.4, 0.4, 0.1) on PIL images.
    order = list(range(4))
    random.shuffle(order)
    b, c, s = (random.uniform(0.6, 1.4) for _ in range(3))
    hue = random.uniform(-0.1, 0.1)
    for k in order:
        if k == 0:
            img = ImageEnhance.Brightness(img).enhance(b)
        elif k == 1:
            img = ImageEnhance.Contrast(img).enhance(c)
        elif k == 2:
            img = ImageEnhance.Color(img).enhance(s)
        else:
            hh, ss, vv = img.convert("HSV").split()
            np_h = np.array(hh, dtype=np.uint8)
            with np.errstate(over="ignore"):
                np_h += np.uint8(int(hue * 255) % 256)
            img = Image.merge("HSV", (Image.fromarray(np_h, "L"), ss, vv)).convert("RGB")
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _augment_chunk(blobs):
    return [_augment_image(b) for b in blobs]


def run_pil(input_path, work):
    import multiprocessing as mp

    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    t = pq.read_table(input_path)
    blobs = t.column("image").to_pylist()
    chunks = [blobs[i : i + 16] for i in range(0, len(blobs), 16)]
    with mp.get_context("fork").Pool(2) as pool:
        out = [b for chunk in pool.imap(_augment_chunk, chunks) for b in chunk]
    t = t.set_column(t.schema.get_field_index("image"), "image", pa.array(out, pa.binary()))
    pq.write_table(t, os.path.join(work, "pil-out.parquet"), compression="zstd")
    return time.perf_counter() - t0


# ---------------------------------------------------------------- main


def median_pair(a, b, repeats):
    xs, ys = [], []
    for _ in range(repeats):
        xs.append(a())
        ys.append(b())
    return statistics.median(xs), statistics.median(ys), xs, ys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-text", action="store_true")
    ap.add_argument("--skip-images", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: run `cargo build --release --bin tripline` first")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        if not args.skip_text:
            text = make_text(args.rows)
            t2, hf, xs, ys = median_pair(
                lambda: run_tripline(TEXT_YAML, text, 2, work), lambda: run_hf(text, work), args.repeats
            )
            t1 = statistics.median(run_tripline(TEXT_YAML, text, 1, work) for _ in range(args.repeats))
            results["text"] = dict(rows=args.rows, tripline_2w_s=t2, tripline_1w_s=t1, hf_datasets_2proc_s=hf,
                                   ratio_hf_over_tripline=hf / t2, scaling_1w_over_2w=t1 / t2,
                                   tripline_runs=xs, hf_runs=ys)
            print(f"text   {args.rows} rows: tripline {t2:.3f} s (1 worker {t1:.3f} s, scaling {t1 / t2:.2f}x) | "
                  f"HF datasets num_proc=2 {hf:.3f} s | ratio {hf / t2:.2f}x", flush=True)
        if not args.skip_images:
            imgs = make_images(args.images)
            t2, pil, xs, ys = median_pair(
                lambda: run_tripline(IMAGE_YAML, imgs, 2, work), lambda: run_pil(imgs, work), args.repeats
            )
            t1 = statistics.median(run_tripline(IMAGE_YAML, imgs, 1, work) for _ in range(args.repeats))
            results["images"] = dict(images=args.images, tripline_2w_s=t2, tripline_1w_s=t1, pil_pool2_s=pil,
                                     ratio_pil_over_tripline=pil / t2, scaling_1w_over_2w=t1 / t2,
                                     tripline_runs=xs, pil_runs=ys)
            print(f"images {args.images} generated JPEGs: tripline {t2:.3f} s (1 worker {t1:.3f} s, scaling "
                  f"{t1 / t2:.2f}x) | PIL Pool(2) {pil:.3f} s | ratio {pil / t2:.2f}x", flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
