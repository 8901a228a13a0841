"""Shared by the Python scripts that build, quantise and check embedding models.

Sentence embeddings the way tripline's `embed` stage makes them (Python `tokenizers` with the
file's padding switched off, each batch padded to its longest row, ONNX Runtime on the CPU,
masked mean pooling, L2 normalisation), sentence-transformers' vectors from the peer venv for
comparison, dynamic int8 quantisation, and file hashes.

Import it from a script in this folder (`import onnx_embed`); Python puts the script's folder
on the path. Third-party packages are imported where they are used, so that a script can say
what is missing before it needs it.
"""

import hashlib
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def models_dir():
    """`TRIPLINE_MODELS_DIR`, else `<repo>/models`."""
    return os.environ.get("TRIPLINE_MODELS_DIR", os.path.join(REPO, "models"))


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_for(path, max_length):
    """A `tokenizer.json` with its own padding switched off and truncation at `max_length`."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def session(path, threads=1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def length_sorted(encs):
    """tripline's order within a look-ahead window: longest first, ties in input order."""
    return sorted(range(len(encs)), key=lambda i: -len(encs[i].ids))


def embed(sess, tok, texts, batch_size, sort=False):
    """Unit sentence vectors [len(texts), dim], in input order. Batches of `batch_size` rows in
    input order, or in length-sorted order with `sort` (the batches tripline forms when every
    row fits one look-ahead window); each padded to its longest row."""
    import numpy as np

    encs = tok.encode_batch(texts)
    order = length_sorted(encs) if sort else list(range(len(encs)))
    names = {i.name for i in sess.get_inputs()}
    out = [None] * len(encs)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        seq = max(len(encs[i].ids) for i in idx)
        ids = np.zeros((len(idx), seq), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, i in enumerate(idx):
            n = len(encs[i].ids)
            ids[row, :n] = encs[i].ids
            mask[row, :n] = 1
            types[row, :n] = encs[i].type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        hidden = sess.run(None, {k: v for k, v in feed.items() if k in names})[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norm = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        for row, i in enumerate(idx):
            out[i] = (pooled[row] / norm[row]).astype(np.float32)
    return np.stack(out)


def cosines(a, b):
    """Row-wise cosine of two sets of unit vectors."""
    import numpy as np

    return np.sum(a * b, axis=1)


ST_CODE = ("import json,sys; from sentence_transformers import SentenceTransformer;"
           "m=SentenceTransformer(sys.argv[1], device='cpu', local_files_only=True);"
           "m.max_seq_length=int(sys.argv[3]);"
           "t=json.load(open(sys.argv[2]));"
           "print(json.dumps(m.encode(t, normalize_embeddings=True).tolist()))")


def st_vectors(model_dir, texts, max_length, tmp):
    """sentence-transformers' vectors of `texts` (fp32 checkpoint in `model_dir`), from
    PEER_PYTHON (default .peer-venv/bin/python); (None, why) when it cannot run there."""
    import numpy as np

    py = os.environ.get("PEER_PYTHON", os.path.join(REPO, ".peer-venv", "bin", "python"))
    if not os.path.exists(py):
        return None, f"{py} not found (see scripts/bench-embed.py for the peer venv)"
    path = os.path.join(tmp, "st-texts.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(texts, f)
    r = subprocess.run([py, "-c", ST_CODE, model_dir, path, str(max_length)],
                       capture_output=True, text=True,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        return None, f"{py} could not run it: {lines[-1] if lines else r.returncode}"
    return np.array(json.loads(r.stdout.strip().splitlines()[-1]), dtype=np.float32), None


def quantize_qint8(src, dst, reduce_range=False):
    """ONNX Runtime's dynamic quantisation: int8 weights per output channel (7-bit with
    `reduce_range`), uint8 activations quantised at run time (one scale per tensor and run),
    only the products with a constant weight matrix."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=reduce_range,
                     extra_options={"DefaultTensorType": TensorProto.FLOAT,
                                    "MatMulConstBOnly": True})
