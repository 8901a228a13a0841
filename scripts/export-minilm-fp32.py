#!/usr/bin/env python3
"""Export the fp32 all-MiniLM-L6-v2 (a 6-layer BERT) to ONNX with only numpy + onnx.

Reads the safetensors weights and config.json that scripts/fetch-model.sh unpacks into
models/all-MiniLM-L6-v2-fp32/ and writes models/all-MiniLM-L6-v2-fp32/model.onnx (plus a copy of
tokenizer.json next to it is already there), with the same interface as the int8 quickstart
model: inputs input_ids, attention_mask, token_type_ids (int64 [batch, sequence]), output
last_hidden_state (float32 [batch, sequence, 384]). Pool with `pooling: mean` and
`normalize: true` to get sentence-transformers' vectors.

The graph is the standard BERT encoder: word + position + token-type embeddings, LayerNorm;
per layer self-attention with 12 heads and the additive mask (1 - mask) * -10000, output
projection, residual + LayerNorm, feed-forward with erf GELU, residual + LayerNorm (eps from
config.json). With --check it compares against sentence-transformers when importable
(PEER_PYTHON, default .peer-venv/bin/python) on a few sentences.

Usage: .venv/bin/python scripts/export-minilm-fp32.py [--dir models/all-MiniLM-L6-v2-fp32] [--check]
                                                      [--qint8 [DIR]]
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnx_embed

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=DTYPES[meta["dtype"]]).reshape(meta["shape"])
        out[name.removeprefix("bert.")] = arr.astype(np.float32) if arr.dtype == np.float16 else arr
    return out


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, value, base="c"):
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op, inputs, base=None, **attrs):
        out = self.name(base or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out


def export(d, out_path):
    cfg = json.load(open(os.path.join(d, "config.json")))
    w = read_safetensors(os.path.join(d, "model.safetensors"))
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    head_dim = hidden // heads
    eps = float(cfg["layer_norm_eps"])
    g = Graph()

    def linear(x, prefix):
        wt = g.const(w[prefix + ".weight"].T.copy(), prefix + ".wT")
        return g.op("Add", [g.op("MatMul", [x, wt]), g.const(w[prefix + ".bias"], prefix + ".b")])

    def layer_norm(x, prefix):
        return g.op("LayerNormalization",
                    [x, g.const(w[prefix + ".weight"]), g.const(w[prefix + ".bias"])],
                    axis=-1, epsilon=eps)

    # Embeddings.
    words = g.op("Gather", [g.const(w["embeddings.word_embeddings.weight"], "word_emb"), "input_ids"])
    seq_len = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const(np.array(1, dtype=np.int64))])
    positions = g.op("Range", [g.const(np.array(0, dtype=np.int64)), seq_len,
                               g.const(np.array(1, dtype=np.int64))])
    pos = g.op("Gather", [g.const(w["embeddings.position_embeddings.weight"], "pos_emb"), positions])
    types = g.op("Gather", [g.const(w["embeddings.token_type_embeddings.weight"], "type_emb"),
                            "token_type_ids"])
    x = g.op("Add", [g.op("Add", [words, pos]), types])
    x = layer_norm(x, "embeddings.LayerNorm")

    # Additive mask [batch, 1, 1, seq].
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask = g.op("Unsqueeze", [mask, g.const(np.array([1, 2], dtype=np.int64))])
    mask = g.op("Mul", [g.op("Sub", [g.const(np.array(1.0, dtype=np.float32)), mask]),
                        g.const(np.array(-10000.0, dtype=np.float32))])

    split_shape = g.const(np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_shape = g.const(np.array([0, 0, hidden], dtype=np.int64))
    scale = g.const(np.array(1.0 / math.sqrt(head_dim), dtype=np.float32))
    sqrt2 = g.const(np.array(math.sqrt(2.0), dtype=np.float32))
    one = g.const(np.array(1.0, dtype=np.float32))
    half = g.const(np.array(0.5, dtype=np.float32))
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"

        def heads_of(t):
            return g.op("Transpose", [g.op("Reshape", [t, split_shape])], perm=[0, 2, 1, 3])

        q = heads_of(linear(x, p + ".attention.self.query"))
        k = g.op("Transpose", [g.op("Reshape", [linear(x, p + ".attention.self.key"), split_shape])],
                 perm=[0, 2, 3, 1])
        v = heads_of(linear(x, p + ".attention.self.value"))
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), mask])
        probs = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_shape])
        attn = linear(ctx, p + ".attention.output.dense")
        x1 = layer_norm(g.op("Add", [attn, x]), p + ".attention.output.LayerNorm")
        h = linear(x1, p + ".intermediate.dense")
        gelu = g.op("Mul", [g.op("Mul", [h, half]),
                            g.op("Add", [g.op("Erf", [g.op("Div", [h, sqrt2])]), one])])
        out = linear(gelu, p + ".output.dense")
        x = layer_norm(g.op("Add", [out, x1]), p + ".output.LayerNorm")
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                           ["batch", "sequence", hidden])
    graph = helper.make_graph(g.nodes, "all-MiniLM-L6-v2-fp32", inputs, [output],
                              initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="tripline scripts/export-minilm-fp32.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out_path)
    print(f"wrote {out_path} ({os.path.getsize(out_path) / 1e6:.1f} MB)")


SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The girl is carrying a baby.", "東京は日本の首都です。", "I ❤️ pizza 🍕"]


def embed_onnx(d, path):
    tok = onnx_embed.tokenizer_for(os.path.join(d, "tokenizer.json"), 256)
    return onnx_embed.embed(onnx_embed.session(path, threads=os.cpu_count()), tok, SENTENCES,
                            len(SENTENCES))


def check(d, path):
    v = embed_onnx(d, path)
    print(f"cos('{SENTENCES[0]}', '{SENTENCES[1]}') = {float(v[0] @ v[1]):.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        st, why = onnx_embed.st_vectors(d, SENTENCES, 256, tmp)
    if st is None:
        print(f"sentence-transformers comparison skipped: {why}")
        return
    cos = onnx_embed.cosines(v, st)
    print(f"cosine with sentence-transformers per sentence: min {cos.min():.7f}")
    if cos.min() < 0.9999:
        sys.exit("the export does not match sentence-transformers")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    models = onnx_embed.models_dir()
    p.add_argument("--dir", default=os.path.join(models, "all-MiniLM-L6-v2-fp32"))
    p.add_argument("--check", action="store_true")
    p.add_argument("--qint8", metavar="DIR", nargs="?",
                   const=os.path.join(models, "all-MiniLM-L6-v2-qint8"),
                   help="also write a dynamically quantised copy (int8 weights per output "
                        "channel, activations quantised at run time, only the products with a "
                        "weight matrix; what sentence-transformers publishes as "
                        "model_qint8_avx512_vnni.onnx) into DIR, default "
                        "models/all-MiniLM-L6-v2-qint8")
    args = p.parse_args()
    if not os.path.isfile(os.path.join(args.dir, "model.safetensors")):
        sys.exit(f"{args.dir}/model.safetensors is missing: run scripts/fetch-model.sh")
    out = os.path.join(args.dir, "model.onnx")
    export(args.dir, out)
    if args.check:
        check(args.dir, out)
    if args.qint8:
        os.makedirs(args.qint8, exist_ok=True)
        q = os.path.join(args.qint8, "model.onnx")
        onnx_embed.quantize_qint8(out, q)
        shutil.copyfile(os.path.join(args.dir, "tokenizer.json"),
                        os.path.join(args.qint8, "tokenizer.json"))
        cos = onnx_embed.cosines(embed_onnx(args.dir, out), embed_onnx(args.dir, q))
        print(f"wrote {q}; cosine with the fp32 export per sentence: min {cos.min():.4f}")


if __name__ == "__main__":
    main()
