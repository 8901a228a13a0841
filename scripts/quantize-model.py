#!/usr/bin/env python3
"""Derive an int8-compute model from the quickstart all-MiniLM-L6-v2 (int8 weights, fp32 compute).

The quickstart model.onnx stores its weights as int8 but scales them back to float inside the
graph (Cast + Mul), so every MatMul runs in fp32. This script writes a model whose weight
products run on int8 (ONNX Runtime's MatMulInteger), in four steps:

  1. fold:      ONNX Runtime with GraphOptimizationLevel.ORT_ENABLE_BASIC saves the graph it
                would run (optimized_model_filepath): constant folding turns the Cast + Mul
                dequantisation into plain fp32 initializers;
  2. unguard:   the PyTorch export's softmax NaN guards, Where(IsNaN(x), 0, x), become x. Only
                that exact pattern is rewritten: Where's condition is IsNaN of the tensor that
                is Where's third input, its second input is a constant 0, and the IsNaN feeds
                nothing else. The guard can only fire on a row whose keys are all masked; a
                text row always has [CLS] and [SEP] unmasked (and this export masks with the
                most negative finite float, so softmax stays finite anyway);
  3. fuse:      onnxruntime.transformers.optimizer.optimize_model(model_type="bert",
                num_heads, hidden_size, opt_level=0): BiasGelu and SkipLayerNormalization
                fusions (needs sympy);
  4. quantise:  onnxruntime.quantization.quantize_dynamic(weight_type=QInt8, per_channel=True):
                int8 weights per output channel, uint8 activations quantised at run time.

It copies tokenizer.json and writes SOURCE.txt (the source's sha256, the recipe, tool versions,
the output's sha256). When the output's SOURCE.txt already names the same source, recipe and
tool versions and the files still have their recorded hashes, it does nothing (--force
rebuilds). With the pinned tools the output is byte-for-byte reproducible.

Accuracy: dynamic quantisation computes one activation scale per tensor and run, over the whole
batch (padding included), so a sentence's vector depends slightly on its batch-mates. --check
embeds the first N verses of data/sample/verses.parquet (`text`) with the source and the
derived model in the same length-sorted batches (tokenizers, each batch padded to its longest,
masked mean pooling, L2 norm) and fails when a cosine is below --min-cosine (default 0.98);
it also reports the batch dependence and, when the peer venv has sentence-transformers, the
cosine with its fp32 vectors (see docs/MODELS.md).

Usage (repository root, after scripts/setup-python.sh and scripts/fetch-model.sh):
  .venv/bin/python scripts/quantize-model.py [--src models/all-MiniLM-L6-v2]
      [--out models/all-MiniLM-L6-v2-int8] [--num-heads 12] [--hidden-size 384]
      [--reduce-range] [--check [N]] [--min-cosine 0.98] [--force]
"""

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile

import onnx_embed

# Bump when a step changes what is written; part of the up-to-date test.
RECIPE_VERSION = 1
MIN_COSINE = 0.98
MINILM_SHAPE = {"num_heads": 12, "hidden_size": 384}
# What the build uses (recorded in SOURCE.txt), and what --check needs besides.
TOOLS = ["onnx", "onnxruntime", "numpy", "protobuf", "sympy"]
CHECK_TOOLS = ["tokenizers", "pyarrow"]


def die(msg):
    sys.exit(f"quantize-model: error: {msg}")


def log(msg):
    print(f"quantize-model: {msg}", flush=True)


def require_tools(names):
    """Versions of the build tools (and Python); fails naming the fix when one of `names` is
    not installed."""
    from importlib import metadata

    missing = []
    for name in names:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        why = " (onnxruntime.transformers' optimizer needs it)" if missing == ["sympy"] else ""
        die(f"{', '.join(missing)} not installed in {sys.executable}{why}: run "
            f"scripts/setup-python.sh and use .venv/bin/python (scripts/requirements.txt pins "
            f"every tool)")
    return {n: metadata.version(n) for n in TOOLS} | {"python": platform.python_version()}


def model_shape(args):
    """num_heads and hidden_size: the options, else config.json (the source folder's, or its
    `-fp32` sibling's, where fetch-model.sh puts all-MiniLM-L6-v2's), else MiniLM's."""
    shape = dict(MINILM_SHAPE)
    origin = "all-MiniLM-L6-v2's shape (no config.json found)"
    for cfg in (os.path.join(args.src, "config.json"),
                os.path.join(args.src.rstrip("/") + "-fp32", "config.json")):
        if os.path.isfile(cfg):
            with open(cfg) as f:
                c = json.load(f)
            shape = {"num_heads": int(c["num_attention_heads"]),
                     "hidden_size": int(c["hidden_size"])}
            origin = os.path.relpath(cfg, onnx_embed.REPO)
            break
    if args.num_heads or args.hidden_size:
        origin = "options" if args.num_heads and args.hidden_size else origin + " and options"
        shape["num_heads"] = args.num_heads or shape["num_heads"]
        shape["hidden_size"] = args.hidden_size or shape["hidden_size"]
    if shape["hidden_size"] % shape["num_heads"]:
        die(f"hidden_size {shape['hidden_size']} is not a multiple of num_heads "
            f"{shape['num_heads']}")
    return shape, origin


def output_width(model):
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None


def fold(src, dst):
    """Step 1: the graph ONNX Runtime runs after its basic (hardware-independent) passes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = dst
    ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def constant(graph, name):
    """The value of initializer or Constant `name`, else None."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            for attr in n.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
    return None


def is_zero_scalar(graph, name):
    a = constant(graph, name)
    return a is not None and a.size == 1 and a.dtype.kind == "f" and float(a.reshape(-1)[0]) == 0


def remove_nan_guards(src, dst):
    """Step 2: Where(IsNaN(x), 0, x) → x, for exactly that pattern; returns how many."""
    import onnx

    model = onnx.load(src)
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    uses = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    outputs = {o.name for o in g.output}
    rename, drop = {}, set()
    for n in g.node:
        if n.op_type != "Where" or n.output[0] in outputs:
            continue
        cond = producer.get(n.input[0])
        if (cond is not None and cond.op_type == "IsNaN" and cond.input[0] == n.input[2]
                and uses[cond.output[0]] == 1 and is_zero_scalar(g, n.input[1])):
            rename[n.output[0]] = n.input[2]
            drop.update((id(n), id(cond)))
    keep = [n for n in g.node if id(n) not in drop]
    for n in keep:
        for k, name in enumerate(n.input):
            n.input[k] = rename.get(name, name)
    del g.node[:]
    g.node.extend(keep)
    onnx.save(model, dst)
    return len(rename)


def fuse(src, dst, shape):
    """Step 3: onnxruntime.transformers' BERT fusions, without ONNX Runtime's own passes."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    m = optimize_model(src, model_type="bert", num_heads=shape["num_heads"],
                       hidden_size=shape["hidden_size"],
                       optimization_options=FusionOptions("bert"), opt_level=0)
    m.save_model_to_file(dst)
    return {k: v for k, v in sorted(m.get_fused_operator_statistics().items()) if v}


def derive(src_model, out_model, shape, reduce_range, tmp):
    """Steps 1-4 through files in `tmp`; returns what the recipe found to record."""
    folded, unguarded, fused = (os.path.join(tmp, f) for f in
                                ("folded.onnx", "unguarded.onnx", "fused.onnx"))
    log("1/4 fold the dequantisation (ONNX Runtime, basic optimisations)")
    fold(src_model, folded)
    log("2/4 remove the softmax NaN guards")
    guards = remove_nan_guards(folded, unguarded)
    log(f"    removed {guards}")
    log("3/4 BERT fusions (onnxruntime.transformers optimizer, opt_level 0)")
    fusions = fuse(unguarded, fused, shape)
    log(f"    {fusions}")
    log("4/4 dynamic int8 quantisation (QInt8 weights per channel"
        + (", 7-bit range)" if reduce_range else ")"))
    onnx_embed.quantize_qint8(fused, out_model, reduce_range)
    return {"guards": guards, "fusions": fusions}


def recipe_text(shape, origin, reduce_range, found):
    fusions = ", ".join(f"{k} {v}" for k, v in found["fusions"].items()) or "none"
    return f"""Recipe (version {RECIPE_VERSION}), scripts/quantize-model.py:
  1. fold      onnxruntime.InferenceSession with GraphOptimizationLevel.ORT_ENABLE_BASIC and
               optimized_model_filepath: the Cast + Mul dequantisation of the int8 weights is
               constant-folded into fp32 initializers
  2. unguard   Where(IsNaN(x), 0, x) -> x (the PyTorch export's softmax NaN guards): {found['guards']} removed
  3. fuse      onnxruntime.transformers.optimizer.optimize_model(model_type="bert",
               num_heads={shape['num_heads']}, hidden_size={shape['hidden_size']}, opt_level=0);
               shape from {origin}; fused: {fusions}
  4. quantise  onnxruntime.quantization.quantize_dynamic(weight_type=QInt8, per_channel=True,
               reduce_range={reduce_range}, MatMulConstBOnly): int8 weights per output channel,
               uint8 activations quantised at run time with one scale per tensor and run
"""


def header(fields):
    return "".join(f"{k}: {v}\n" for k, v in fields.items())


def read_header(path):
    fields = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break
                k, _, v = line.partition(": ")
                fields[k] = v.rstrip("\n")
    except OSError:
        pass
    return fields


def up_to_date(out, want):
    have = read_header(os.path.join(out, "SOURCE.txt"))
    if any(have.get(k) != v for k, v in want.items()):
        return False
    for f in ("model.onnx", "tokenizer.json"):
        p = os.path.join(out, f)
        if not os.path.isfile(p) or onnx_embed.sha256_of(p) != have.get(f"{f} sha256"):
            return False
    return True


def build(args, src_model, src_tok, want, shape, origin):
    import onnx

    width = output_width(onnx.load(src_model, load_external_data=False))
    if width is not None and width != shape["hidden_size"]:
        die(f"hidden_size {shape['hidden_size']} does not match the model's output width "
            f"{width}: pass --hidden-size and --num-heads")
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="quantize-model-") as tmp:
        model = os.path.join(tmp, "model.onnx")
        found = derive(src_model, model, shape, args.reduce_range, tmp)
        shutil.copyfile(src_tok, os.path.join(tmp, "tokenizer.json"))
        fields = dict(want)
        for f in ("model.onnx", "tokenizer.json"):
            fields[f"{f} sha256"] = onnx_embed.sha256_of(os.path.join(tmp, f))
        fields["model.onnx bytes"] = str(os.path.getsize(model))
        text = (header(fields) + "\n"
                f"all-MiniLM-L6-v2 with int8 compute, derived from "
                f"{os.path.relpath(src_model, onnx_embed.REPO)} (int8 weights, fp32 compute;\n"
                f"see its SOURCE.txt) by scripts/quantize-model.py. Same inputs and output; "
                f"tokenizer.json is the\nsource's, copied. See docs/MODELS.md.\n\n"
                + recipe_text(shape, origin, args.reduce_range, found))
        with open(os.path.join(tmp, "SOURCE.txt"), "w", encoding="utf-8") as f:
            f.write(text)
        # SOURCE.txt last: an interrupted run never looks up to date.
        for f in ("model.onnx", "tokenizer.json", "SOURCE.txt"):
            shutil.move(os.path.join(tmp, f), os.path.join(args.out, f))
    log(f"wrote {os.path.join(args.out, 'model.onnx')} ({fields['model.onnx bytes']} bytes, "
        f"sha256 {fields['model.onnx sha256']})")


def check(args, src_model, src_tok, tmp):
    import numpy as np
    import pyarrow.parquet as pq

    texts = pq.read_table(args.sample, columns=["text"]).column("text").to_pylist()[:args.check]
    tok = onnx_embed.tokenizer_for(src_tok, args.max_length)
    src = onnx_embed.session(src_model)
    out = onnx_embed.session(os.path.join(args.out, "model.onnx"))
    log(f"check: {len(texts)} verses of {os.path.relpath(args.sample, onnx_embed.REPO)}, "
        f"length-sorted batches of {args.batch_size}, max_length {args.max_length}")
    a = onnx_embed.embed(src, tok, texts, args.batch_size, sort=True)
    b = onnx_embed.embed(out, tok, texts, args.batch_size, sort=True)
    cos = onnx_embed.cosines(a, b)
    log(f"  cosine with the source model (same batches): min {cos.min():.4f}, "
        f"mean {cos.mean():.4f}")
    c = onnx_embed.embed(out, tok, texts, args.batch_size, sort=False)
    moved = onnx_embed.cosines(b, c)
    log(f"  batch dependence (length-sorted vs input-order batches): max |diff| "
        f"{np.abs(b - c).max():.4f}, min cosine {moved.min():.4f}")
    worst = float(cos.min())
    st, why = onnx_embed.st_vectors(args.st_model, texts, args.max_length, tmp)
    if st is None:
        log(f"  sentence-transformers comparison skipped: {why}")
    else:
        for name, v in (("source", a), ("derived", b)):
            s = onnx_embed.cosines(v, st)
            log(f"  cosine of the {name} model with sentence-transformers fp32: "
                f"min {s.min():.4f}, mean {s.mean():.4f}")
        worst = min(worst, float(onnx_embed.cosines(b, st).min()))
    if worst < args.min_cosine:
        die(f"min cosine {worst:.4f} is below --min-cosine {args.min_cosine}")
    log(f"check passed (min cosine {worst:.4f} >= {args.min_cosine})")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    models = onnx_embed.models_dir()
    p.add_argument("--src", default=os.path.join(models, "all-MiniLM-L6-v2"),
                   help="folder with model.onnx and tokenizer.json (default: %(default)s)")
    p.add_argument("--out", default=os.path.join(models, "all-MiniLM-L6-v2-int8"),
                   help="folder to write (default: %(default)s)")
    p.add_argument("--num-heads", type=int, help="attention heads (default: config.json, "
                   "else 12)")
    p.add_argument("--hidden-size", type=int, help="hidden width (default: config.json, "
                   "else 384)")
    p.add_argument("--reduce-range", action="store_true",
                   help="7-bit weights: avoids the int16 saturation of u8s8 products on x86 "
                        "CPUs without VNNI, at some accuracy (see docs/MODELS.md)")
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p.add_argument("--check", type=int, nargs="?", const=1024, metavar="N",
                   help="compare the first N sample verses (default 1024) with the source")
    p.add_argument("--min-cosine", type=float, default=MIN_COSINE,
                   help="--check fails below this (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="--check batch size")
    p.add_argument("--max-length", type=int, default=128, help="--check truncation")
    p.add_argument("--sample", default=os.path.join(onnx_embed.REPO, "data", "sample",
                                                    "verses.parquet"))
    p.add_argument("--st-model", default=os.path.join(models, "all-MiniLM-L6-v2-fp32"),
                   help="sentence-transformers checkpoint for --check (default: %(default)s)")
    args = p.parse_args()

    tools = require_tools(TOOLS + (CHECK_TOOLS if args.check is not None else []))
    src_model = os.path.join(args.src, "model.onnx")
    src_tok = os.path.join(args.src, "tokenizer.json")
    for f in (src_model, src_tok):
        if not os.path.isfile(f):
            die(f"{f} is missing: run scripts/fetch-model.sh (or pass --src)")
    if os.path.abspath(args.src) == os.path.abspath(args.out):
        die("--out must differ from --src")
    if args.check is not None and not os.path.isfile(args.sample):
        die(f"{args.sample} is missing: run scripts/make-sample.sh")
    shape, origin = model_shape(args)
    want = {"recipe version": str(RECIPE_VERSION),
            "source": os.path.relpath(src_model, onnx_embed.REPO),
            "source sha256": onnx_embed.sha256_of(src_model),
            "num_heads": str(shape["num_heads"]),
            "hidden_size": str(shape["hidden_size"]),
            "reduce_range": str(args.reduce_range),
            "tools": ", ".join(f"{k} {v}" for k, v in tools.items())}
    if not args.force and up_to_date(args.out, want):
        log(f"{args.out} is up to date (same source sha256, recipe and tools); --force rebuilds")
    else:
        logging.getLogger().setLevel(logging.ERROR)
        build(args, src_model, src_tok, want, shape, origin)
    if args.check is not None:
        with tempfile.TemporaryDirectory(prefix="quantize-model-") as tmp:
            check(args, src_model, src_tok, tmp)


if __name__ == "__main__":
    main()
