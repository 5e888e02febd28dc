#!/usr/bin/env python3
"""Quality of low-bit GGUF files with and without an importance matrix, measured by
llama.cpp itself (not part of `cargo test`; the README's imatrix quality table).

    python interop/imatrix_quality.py --quant target/release/quant --llamacpp DIR \
        --corpus corpus.txt --minilm MINILM_FOLDER [--llama NAME=FOLDER ...] [--work DIR]

The corpus is cut in two by paragraphs: the first half calibrates (`quant imatrix`, and
`llama-imatrix` on the same text for comparison), the second half evaluates, so no
evaluation text was seen by the matrix.

- MiniLM (bert): every sentence of the evaluation half embedded by `llama-embedding`
  (mean pooling, L2-normalised); the score is the mean cosine against the f32 file's
  embeddings, and the worst sentence.
- Llama folders: `llama-perplexity -c 64` on the evaluation half.

Each ftype is quantized by quant (`gguf_<ftype>`) without a matrix, with quant's and with
llama-imatrix's; quant's file with quant's matrix is also compared with `llama-quantize
--imatrix` on the same matrix (every tensor's bytes). Planner rows quantize with `gguf_config_q8_0` and
`--target-memory-gb` set to the tensor bytes of the Q2_K, Q3_K_M and Q4_K_M files, with and
without `--imatrix`. Needs numpy.
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np

FTYPES = ["Q2_K", "Q3_K_M", "Q4_K_M", "IQ4_XS"]


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return p


def same_tensors(a, b):
    """Whether two GGUF files hold the same tensors (names, order, types, bytes). The
    key/values differ: llama-quantize copies the f32 input's, quant writes the folder's."""
    from gguf import GGUFReader

    def tensors(path):
        return [(t.name, int(t.tensor_type), hashlib.sha256(bytes(t.data)).hexdigest())
                for t in GGUFReader(path).tensors]
    return tensors(a) == tensors(b)


def split_corpus(path, work):
    paras = [p.strip() for p in open(path, encoding="utf-8").read().split("\n\n") if p.strip()]
    half = len(paras) // 2
    calib = os.path.join(work, "calib.txt")
    with open(calib, "w", encoding="utf-8") as f:
        f.write("\n\n".join(paras[:half]) + "\n")
    evaltext = os.path.join(work, "eval.txt")
    with open(evaltext, "w", encoding="utf-8") as f:
        f.write("\n\n".join(paras[half:]) + "\n")
    sentences = []
    for p in paras[half:]:
        for s in re.split(r"(?<=[.!?])\s+", p.replace("\n", " ")):
            if len(s.split()) >= 4:
                sentences.append(s)
    return calib, evaltext, sentences


def embed(llamacpp, gguf_path, prompts, tries=3):
    exe = os.path.join(llamacpp, "bin", "llama-embedding")
    p = run([exe, "-m", gguf_path, "-p", "\n".join(prompts), "--embd-separator", "\n",
             "--embd-output-format", "json", "--pooling", "mean", "--embd-normalize", "2",
             "-t", "2", "-b", "512", "-ub", "512"])
    try:
        data = json.loads(p.stdout[p.stdout.index("{"):])
    except (json.JSONDecodeError, ValueError):
        # llama.cpp's asynchronous logger can exit before the JSON is flushed: run again.
        if tries > 1:
            return embed(llamacpp, gguf_path, prompts, tries - 1)
        raise
    return np.array([d["embedding"] for d in data["data"]], dtype=np.float64)


def cosines(a, b):
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / (na * nb)


def perplexity(llamacpp, gguf_path, evaltext, tries=3):
    exe = os.path.join(llamacpp, "bin", "llama-perplexity")
    p = run([exe, "-m", gguf_path, "-f", evaltext, "-c", "64", "-t", "2"])
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", p.stdout + p.stderr)
    if not m:
        # The asynchronous logger can exit before the last line is flushed: run again.
        if tries > 1:
            return perplexity(llamacpp, gguf_path, evaltext, tries - 1)
        sys.exit(f"no perplexity for {gguf_path}")
    return float(m.group(1)), float(m.group(2))


def quantize(quant, src, out, method, imatrix=None, extra=()):
    if not os.path.exists(out):
        cmd = [quant, "quantize", src, "-o", out, "--method", method, *extra]
        if imatrix:
            cmd += ["--imatrix", imatrix]
        run(cmd)
    return out


def tensor_bytes(path):
    from gguf import GGUFReader

    return sum(int(t.n_bytes) for t in GGUFReader(path).tensors)


def model_rows(args, name, folder, kind, calib, evaltext, sentences):
    w = os.path.join(args.work, name)
    os.makedirs(w, exist_ok=True)
    q, L = args.quant, args.llamacpp
    f32 = quantize(q, folder, os.path.join(w, "f32.gguf"), "gguf_config_fp16", extra=["--rules", "float32"])
    ctx = "128" if kind == "bert" else "64"
    qim = os.path.join(w, "quant.imatrix.gguf")
    if not os.path.exists(qim):
        run([q, "imatrix", folder, "-f", calib, "-c", ctx, "-o", qim])
    lim = os.path.join(w, "llama.imatrix.gguf")
    if not os.path.exists(lim):
        cmd = [os.path.join(L, "bin", "llama-imatrix"), "-m", f32, "-f", calib, "-c", ctx,
               "-o", lim]
        if kind == "bert":
            # llama-imatrix refuses a vocabulary that adds EOS and an encoder batch longer
            # than the context; an embedding model has no logits for perplexity.
            cmd += ["-b", ctx, "-ub", ctx, "--no-ppl",
                    "--override-kv", "tokenizer.ggml.add_eos_token=bool:false"]
        run(cmd)

    if kind == "bert":
        ref = embed(L, f32, sentences)

        def score(path):
            c = cosines(embed(L, path, sentences), ref)
            return f"{c.mean():.5f} (min {c.min():.4f})"
    else:
        base = perplexity(L, f32, evaltext)

        def score(path):
            p, e = perplexity(L, path, evaltext)
            return f"{p:.2f} ± {e:.2f}"

    rows = []
    if kind != "bert":
        rows.append((name, "f32", f"{base[0]:.2f} ± {base[1]:.2f}", "", "", ""))
    for ft in FTYPES:
        m = "gguf_" + ft.lower()
        plain = quantize(q, folder, os.path.join(w, f"{ft}.gguf"), m)
        with_q = quantize(q, folder, os.path.join(w, f"{ft}-qim.gguf"), m, qim)
        with_l = quantize(q, folder, os.path.join(w, f"{ft}-lim.gguf"), m, lim)
        ref_q = os.path.join(w, f"{ft}-qim-llama-quantize.gguf")
        if not os.path.exists(ref_q):
            run([os.path.join(L, "bin", "llama-quantize"), "--imatrix", qim, f32, ref_q, ft, "1"])
        same = "yes" if same_tensors(ref_q, with_q) else "NO"
        rows.append((name, ft, score(plain), score(with_q), score(with_l), same))

    # The planner at the tensor bytes of each ftype's file: quant moves single tensors of a
    # gguf_config_q8_0 plan (every matrix of these models takes Q8_0, so every matrix can
    # move) down to the ftype's size, without and with the matrix.
    for ft in FTYPES[:3]:
        target = tensor_bytes(os.path.join(w, f"{ft}.gguf")) / 1e9
        extra = ["--target-memory-gb", f"{target:.9f}"]
        plain = quantize(q, folder, os.path.join(w, f"target-{ft}.gguf"), "gguf_config_q8_0",
                         extra=extra)
        with_q = quantize(q, folder, os.path.join(w, f"target-{ft}-qim.gguf"), "gguf_config_q8_0",
                          qim, extra=extra)
        rows.append((name, f"planner at {ft}'s {target * 1e9:,.0f} tensor bytes", score(plain),
                     score(with_q), "", ""))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quant", required=True)
    ap.add_argument("--llamacpp", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--minilm")
    ap.add_argument("--llama", action="append", default=[], metavar="NAME=FOLDER")
    ap.add_argument("--work", default="imatrix-quality")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    calib, evaltext, sentences = split_corpus(args.corpus, args.work)
    print(f"calibration: {os.path.getsize(calib)} bytes; evaluation: {os.path.getsize(evaltext)} "
          f"bytes, {len(sentences)} sentences", file=sys.stderr)
    rows = []
    for spec in args.llama:
        name, folder = spec.split("=", 1)
        rows += model_rows(args, name, folder, "llama", calib, evaltext, sentences)
    if args.minilm:
        rows += model_rows(args, "all-MiniLM-L6-v2", args.minilm, "bert", calib, evaltext, sentences)
    print("| model | ftype | no imatrix | quant's imatrix | llama-imatrix's | "
          "tensors = llama-quantize with quant's |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
