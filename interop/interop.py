#!/usr/bin/env python3
"""quant's interop suite: quantize small models with every backend quant has, load each
output with the library its users run, run a forward pass and compare it with the
original model's. Prints one table (markdown) and writes it, with the library versions, to
WORK/interop.md and WORK/interop.json.

Run through interop/run.sh (which makes the venv and builds quant); directly:

    python interop/interop.py --quant target/release/quant --work /tmp/quant-interop \
        [--llamacpp DIR] [--minilm DIR] [--only REGEX]

Models (random weights from fixed seeds, made here, offline): a tiny BERT (transformers),
a tiny UNet2DConditionModel and a tiny FluxTransformer2DModel (diffusers); MiniLM
(sentence-transformers/all-MiniLM-L6-v2) when --minilm names its folder.

Per backend:
  transformers + bitsandbytes / optimum-quanto / torchao: AutoModel.from_pretrained(OUT)
  diffusers + bitsandbytes / optimum-quanto / torchao:     UNet2DConditionModel.from_pretrained(OUT)
  diffusers + GGUF:  FluxTransformer2DModel.from_single_file(OUT.gguf, GGUFQuantizationConfig)
  gguf-py:           GGUFReader + gguf.quants.dequantize of every tensor, loaded into the
                     original architecture (a forward pass on gguf-py's weights)
  llama.cpp:         llama-embedding on quant's .gguf of MiniLM vs on llama.cpp's own f32
                     conversion (convert_hf_to_gguf.py)
  quant (plain):     basic_fp16/bf16 files through transformers (plain safetensors)
  restore:           `quant dequantize` of quantized model and pipeline folders, loaded by
                     transformers' and diffusers' from_pretrained as ordinary models
Forward cosine: the flattened output of the loaded model vs the original f32 model's on
the same fixed inputs.
"""

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch

torch.manual_seed(0)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROWS = []


def cosine(a, b):
    a = torch.as_tensor(a).double().flatten()
    b = torch.as_tensor(b).double().flatten()
    if a.shape != b.shape:
        raise ValueError(f"output shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        return float("nan")
    return float((a @ b) / (a.norm() * b.norm()))


def row(model, library, method, loads, cos=None, note=""):
    r = {
        "model": model,
        "library": library,
        "method": method,
        "loads": loads,
        "cosine": cos,
        "note": note.replace("|", "/").replace("\n", " ")[:160],
    }
    ROWS.append(r)
    c = "-" if cos is None else f"{cos:.6f}"
    print(f"  {model:<8} {library:<28} {method:<34} {'yes' if loads else 'no':<4} {c:<9} {r['note']}", flush=True)


def short_error(e):
    msg = f"{type(e).__name__}: {e}".strip()
    return msg.splitlines()[0][:150]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


class Quant:
    def __init__(self, exe, work):
        self.exe = exe
        self.work = work
        methods = json.loads(run([exe, "methods", "--json"], check=True).stdout)
        self.methods = [m["name"] for m in methods if m.get("available", True)]

    def quantize(self, src, out, method, extra=()):
        if os.path.exists(out):
            shutil.rmtree(out) if os.path.isdir(out) else os.remove(out)
        cmd = [self.exe, "quantize", src, "-o", out, "--method", method, "--force", *extra]
        p = run(cmd)
        if p.returncode != 0:
            raise RuntimeError(f"quant quantize failed: {p.stderr.strip().splitlines()[-1:]}")
        return out

    def check(self, *args):
        p = run([self.exe, *args])
        if p.returncode != 0:
            raise RuntimeError(f"quant {args[0]} failed: {p.stderr.strip()[-200:]}")
        return p.stdout


def methods_of(quant, prefix):
    return [m for m in quant.methods if m.startswith(prefix)]


# ----------------------------------------------------------------------------- models


def make_bert(path):
    from transformers import BertConfig, BertModel

    if os.path.exists(os.path.join(path, "config.json")):
        return path
    torch.manual_seed(1)
    cfg = BertConfig(
        vocab_size=1024,
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=128,
    )
    BertModel(cfg).eval().save_pretrained(path)
    return path


def make_bf16_copy(src, path, cls=None):
    if cls is None:
        from transformers import AutoModel as cls
    if not os.path.exists(os.path.join(path, "config.json")):
        kw = {"dtype": torch.bfloat16} if cls.__module__.startswith("transformers") else {"torch_dtype": torch.bfloat16}
        cls.from_pretrained(src, **kw).save_pretrained(path)
    return path


def make_sharded_copy(src, path):
    """The model saved by transformers in shards of 2 MB (index.json and several files)."""
    from transformers import AutoModel

    if not os.path.exists(os.path.join(path, "config.json")):
        AutoModel.from_pretrained(src).save_pretrained(path, max_shard_size="2MB")
    return path


def save_random(path, seed, build):
    """Builds a model with `build()` after seeding torch, gives every matrix N(0, 0.05)
    values (diffusers' default init leaves some projections at zero) and saves it."""
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    torch.manual_seed(seed)
    m = build()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.05)
    m.eval().save_pretrained(path)
    return path


def make_unet(path):
    from diffusers import UNet2DConditionModel

    return save_random(path, 2, lambda: UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(128, 256),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=256,
        attention_head_dim=8,
        norm_num_groups=32,
    ))


def unet_class():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel


def make_flux(path):
    from diffusers import FluxTransformer2DModel

    return save_random(path, 3, lambda: FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=64,
        num_attention_heads=4,
        joint_attention_dim=256,
        pooled_projection_dim=256,
        guidance_embeds=False,
        axes_dims_rope=(16, 24, 24),
    ))


# ----------------------------------------------------------------------------- inputs and forwards


def bert_inputs(model_dir):
    tok = os.path.join(model_dir, "tokenizer.json")
    if os.path.exists(tok):
        from transformers import AutoTokenizer

        t = AutoTokenizer.from_pretrained(model_dir)
        sents = [
            "The quick brown fox jumps over the lazy dog.",
            "Quantization trades a little accuracy for a lot of memory.",
            "Where is the nearest train station?",
            "Neural networks are stacks of matrix multiplications.",
        ]
        enc = t(sents, padding=True, return_tensors="pt")
        return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(1, 1000, (2, 24), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def bert_forward(model, inputs):
    """Sentence embeddings as sentence-transformers makes them: mean over the attention
    mask, L2-normalised (the flattened cosine of two such batches is the mean per-sentence
    cosine)."""
    with torch.no_grad():
        out = model(**inputs).last_hidden_state.float()
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    emb = (out * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(emb, dim=-1)


def unet_inputs():
    g = torch.Generator().manual_seed(5)
    return {
        "sample": torch.randn(1, 4, 16, 16, generator=g),
        "timestep": torch.tensor([10]),
        "encoder_hidden_states": torch.randn(1, 8, 256, generator=g),
    }


def unet_forward(model, inputs):
    dt = next(model.parameters()).dtype
    if dt not in (torch.float32, torch.float16, torch.bfloat16):
        dt = torch.float32
    with torch.no_grad():
        out = model(**{k: (v.to(dt) if v.is_floating_point() else v) for k, v in inputs.items()}).sample
    return out.float()


def flux_inputs():
    g = torch.Generator().manual_seed(6)
    n_img, n_txt = 16, 8
    return {
        "hidden_states": torch.randn(1, n_img, 64, generator=g),
        "encoder_hidden_states": torch.randn(1, n_txt, 256, generator=g),
        "pooled_projections": torch.randn(1, 256, generator=g),
        "timestep": torch.tensor([0.5]),
        "img_ids": torch.zeros(n_img, 3),
        "txt_ids": torch.zeros(n_txt, 3),
    }


def flux_forward(model, inputs):
    with torch.no_grad():
        return model(**inputs).sample.float()


# ----------------------------------------------------------------------------- backends


def library_of(method):
    if method.startswith("bnb_"):
        return "bitsandbytes"
    if method.startswith("quanto_"):
        return "optimum-quanto"
    if method.startswith("torch_ao_"):
        return "torchao"
    return "plain safetensors"


def method_dtype(method):
    """The dtype a method's folder is loaded in (bnb's compute/load dtype)."""
    if method.endswith("_fp16"):
        return torch.float16
    if method.endswith("_bf16"):
        return torch.bfloat16
    return torch.float32


def load_checked(cls, path, **kw):
    """from_pretrained that fails on weights the checkpoint did not provide (transformers
    and diffusers otherwise initialise them randomly with only a warning)."""
    model, info = cls.from_pretrained(path, output_loading_info=True, **kw)
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise ValueError(f"{len(missing)} weights missing from the load, e.g. {sorted(missing)[0]}")
    return model.eval()


def quanto_requantize(cls, src, out, dtype):
    """optimum-quanto's loader for a transformers model: the architecture from the folder,
    then `requantize` with the state dict and quanto_qmap.json (transformers' QuantoConfig
    cannot load pre-quantized weights)."""
    from optimum.quanto import requantize
    from safetensors.torch import load_file

    model = cls.from_pretrained(src, dtype=dtype)
    sd = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".safetensors"):
            sd.update(load_file(os.path.join(out, f)))
    with open(os.path.join(out, "quanto_qmap.json")) as f:
        qmap = json.load(f)
    requantize(model, sd, qmap)
    return model.eval()


def torchao_own(cls, src, out, forward, inputs, ref, dtype_kw):
    """When quant's torchao folder fails, the same config applied by torchao itself
    (quantize_ on the original model): tells a torchao limitation from a quant bug."""
    try:
        from torchao.core.config import config_from_dict
        from torchao.quantization import quantize_

        with open(os.path.join(out, "config.json")) as f:
            qt = json.load(f)["quantization_config"]["quant_type"]["default"]
        model = cls.from_pretrained(src, **dtype_kw).eval()
        quantize_(model, config_from_dict(qt))
        got = forward(model, inputs)
        return f"; torchao's own quantize_ runs: cosine {cosine(ref, got):.6f}"
    except Exception as e:
        return f"; torchao's own quantize_ fails too: {short_error(e)[:90]}"


def torchao_reason(out):
    """Why torchao's own deserializer refuses a file (transformers only says that the
    conversion failed)."""
    try:
        from safetensors import safe_open
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

        for f in sorted(os.listdir(out)):
            if f.endswith(".safetensors"):
                with safe_open(os.path.join(out, f), framework="pt") as st:
                    unflatten_tensor_state_dict({k: st.get_tensor(k) for k in st.keys()}, st.metadata())
        return ""
    except Exception as e:
        return "; torchao's unflatten_tensor_state_dict: " + short_error(e)[:110]


def fallback_note(out):
    """quant's own record of tensors that fell back to another method."""
    try:
        with open(os.path.join(out, "quantization_info.json")) as f:
            info = json.load(f)
    except OSError:
        return ""
    fb = [t for t in info.get("tensors", []) if t.get("is_fallback")]
    if not fb:
        return ""
    methods = sorted({t.get("method") or "kept" for t in fb})
    return f"; {len(fb)} tensors fell back to {'/'.join(methods)}"


# torchao's PerRow float8 asserts bf16 weights: that method gets the bf16 copy of a model.
BF16_ONLY = ("torch_ao_config_float8_e4m3_row",)


def check_one(name, lib, m, quantize, load, forward, ref, why=None, own=None, note=None):
    """One row: quant writes the output (`quantize()` gives its path), the library loads it
    (`load(out, lib)` gives the model and the library label), and `forward(model)` is
    compared with the original's `ref`. `why(out)` explains a refused load, `own()` a
    failed forward, `note(model, out)` describes a good one."""
    try:
        out = quantize()
    except Exception as e:
        return row(name, lib, m, False, None, short_error(e))
    try:
        model, lib = load(out, lib)
    except Exception as e:
        return row(name, lib, m, False, None, short_error(e)[:60] + (why(out) if why else ""))
    try:
        got = forward(model)
        text = note(model, out) if note else quantized_note(model)
        row(name, lib, m, True, cosine(ref, got), text)
    except Exception as e:
        row(name, lib, m, True, None, "forward: " + short_error(e)[:90] + (own() if own else ""))


def folder_note(inp, src):
    return lambda model, out: quantized_note(model) + fallback_note(out) + ("; bf16 input" if inp != src else "")


def folder_suite(quant, name, src, methods, work, src_bf16, cls, library, forward, inputs, dtype_kw, load):
    """Every safetensors-folder method: quant writes the folder, `load(out, lib, method,
    input)` loads it with the library (`cls` is the architecture), `forward` runs it."""
    ref = forward(cls.from_pretrained(src, **{dtype_kw: torch.float32}).eval(), inputs)
    for m in methods:
        inp = src_bf16 if (m in BF16_ONLY and src_bf16) else src
        out = os.path.join(work, f"{name}-{m}")
        ao = m.startswith("torch_ao_")
        check_one(
            name, f"{library} + {library_of(m)}", m,
            lambda inp=inp, out=out, m=m: quant.quantize(inp, out, m),
            lambda out, lib, m=m, inp=inp: load(out, lib, m, inp),
            lambda model: forward(model, inputs), ref,
            why=torchao_reason if ao else None,
            own=(lambda inp=inp, out=out, m=m: torchao_own(
                cls, inp, out, forward, inputs, ref, {dtype_kw: method_dtype(m)})) if ao else None,
            note=folder_note(inp, src),
        )


def transformers_suite(quant, name, src, methods, work, src_bf16=None):
    """Through transformers' AutoModel (optimum-quanto's requantize for quanto folders)."""
    from transformers import AutoModel

    def load(out, lib, m, inp):
        if m.startswith("quanto_"):
            return quanto_requantize(AutoModel, inp, out, torch.float32), "optimum-quanto requantize"
        return load_checked(AutoModel, out, device_map="cpu", dtype=method_dtype(m)), lib

    folder_suite(quant, name, src, methods, work, src_bf16, AutoModel, "transformers", bert_forward,
                 bert_inputs(src), "dtype", load)


def quantized_note(model):
    """The quantized tensor class or module the library built, as a check it really loaded
    quantized weights."""
    kinds = set()
    for mod in model.modules():
        cls = type(mod).__name__
        if cls in ("Linear4bit", "Linear8bitLt", "QLinear", "QConv2d"):
            kinds.add(cls)
        w = getattr(mod, "weight", None)
        if w is not None:
            wc = type(w.data if hasattr(w, "data") else w).__name__
            if wc not in ("Tensor", "Parameter"):
                kinds.add(wc)
    return ",".join(sorted(kinds)) or "plain weights"


def without_bnb_gpu_check(load):
    """diffusers refuses bitsandbytes without a GPU even for pre-quantized weights, though
    bitsandbytes runs them on CPU: `load()` again with that check switched off."""
    from diffusers.quantizers.bitsandbytes.bnb_quantizer import BnB4BitDiffusersQuantizer, BnB8BitDiffusersQuantizer

    saved = (BnB4BitDiffusersQuantizer.validate_environment, BnB8BitDiffusersQuantizer.validate_environment)
    BnB4BitDiffusersQuantizer.validate_environment = lambda self, *a, **k: None
    BnB8BitDiffusersQuantizer.validate_environment = lambda self, *a, **k: None
    try:
        return load()
    finally:
        BnB4BitDiffusersQuantizer.validate_environment, BnB8BitDiffusersQuantizer.validate_environment = saved


def diffusers_suite(quant, name, src, methods, work, src_bf16=None):
    """Through diffusers' UNet2DConditionModel.from_pretrained."""
    from diffusers import UNet2DConditionModel

    def load(out, lib, m, inp):
        def go():
            return load_checked(UNet2DConditionModel, out, device_map="cpu", torch_dtype=method_dtype(m))

        try:
            return go(), lib
        except RuntimeError as e:
            if not (m.startswith("bnb_") and "GPU" in str(e)):
                raise
            return without_bnb_gpu_check(go), lib + " (diffusers' GPU check bypassed)"

    folder_suite(quant, name, src, methods, work, src_bf16, UNet2DConditionModel, "diffusers", unet_forward,
                 unet_inputs(), "torch_dtype", load)


def gguf_file_of(out):
    if os.path.isfile(out):
        return out
    for root, _, files in os.walk(out):
        for f in files:
            if f.endswith(".gguf"):
                return os.path.join(root, f)
    raise FileNotFoundError(f"no .gguf in {out}")


def diffusers_gguf_suite(quant, name, src, methods, work):
    from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig

    inputs = flux_inputs()
    ref = flux_forward(FluxTransformer2DModel.from_pretrained(src, torch_dtype=torch.float32).eval(), inputs)
    weights = os.path.join(src, "diffusion_pytorch_model.safetensors")
    for m in methods:
        out = os.path.join(work, f"{name}-{m}.gguf")

        def load(out, lib):
            return FluxTransformer2DModel.from_single_file(
                out,
                config=src,
                quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32),
                torch_dtype=torch.float32,
            ).eval(), lib

        check_one(name, "diffusers + GGUF", m, lambda out=out, m=m: quant.quantize(weights, out, m), load,
                  lambda model: flux_forward(model, inputs), ref)


def gguf_py_suite(quant, name, src, methods, work):
    """gguf-py reads and dequantizes every tensor of quant's .gguf; the weights go into the
    original architecture for a forward pass; integer tensors must come back exactly."""
    import gguf
    from safetensors.torch import load_file
    from transformers import AutoModel

    inputs = bert_inputs(src)
    ref_model = AutoModel.from_pretrained(src, dtype=torch.float32).eval()
    ref = bert_forward(ref_model, inputs)
    original = load_file(os.path.join(src, "model.safetensors"))
    for m in methods:
        lib = "gguf-py " + gguf_version()
        out = os.path.join(work, f"{name}-{m}.gguf")
        try:
            quant.quantize(os.path.join(src, "model.safetensors"), out, m)
        except Exception as e:
            row(name, lib, m, False, None, short_error(e))
            continue
        try:
            reader = gguf.GGUFReader(out)
            sd = {}
            ints = 0
            for t in reader.tensors:
                shape = [int(d) for d in reversed(list(t.shape))]
                if t.tensor_type in (gguf.GGMLQuantizationType.I8, gguf.GGMLQuantizationType.I16,
                                     gguf.GGMLQuantizationType.I32, gguf.GGMLQuantizationType.I64):
                    # gguf-py hands integer tensors back as typed arrays (no dequantization).
                    arr = torch.from_numpy(np.array(t.data)).reshape(shape)
                    ints += 1
                    if not torch.equal(arr, original[t.name].reshape(shape).to(arr.dtype)):
                        raise ValueError(f"integer tensor {t.name} differs")
                else:
                    vals = gguf.quants.dequantize(t.data, t.tensor_type)
                    arr = torch.from_numpy(np.array(vals)).reshape(shape)
                sd[t.name] = arr
        except Exception as e:
            row(name, lib, m, False, None, short_error(e))
            continue
        try:
            model = AutoModel.from_pretrained(src, dtype=torch.float32).eval()
            # Integer buffers transformers no longer keeps in the state dict (BERT's
            # position_ids) were compared exactly above.
            own = model.state_dict()
            sd = {k: v for k, v in sd.items() if k in own or v.is_floating_point()}
            missing, unexpected = model.load_state_dict(
                {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=False
            )
            if unexpected or any(k in original for k in missing):
                raise ValueError(f"keys: missing {missing[:3]} unexpected {unexpected[:3]}")
            got = bert_forward(model, inputs)
            note = f"{len(sd)} tensors" + (f", {ints} integer exact" if ints else "")
            row(name, lib, m, True, cosine(ref, got), note)
        except Exception as e:
            row(name, lib, m, True, None, "forward: " + short_error(e))


def gguf_version():
    try:
        return importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def llamacpp_embed(llamacpp, gguf_path, prompts, tries=8):
    exe = os.path.join(llamacpp, "bin", "llama-embedding")
    p = run(
        [exe, "-m", gguf_path, "-p", "\n".join(prompts), "--embd-separator", "\n",
         "--embd-output-format", "json", "--pooling", "mean", "--embd-normalize", "2", "-t", "2"],
        timeout=600,
    )
    if p.returncode != 0:
        lines = p.stderr.splitlines()
        errs = [ln for ln in lines if "error" in ln.lower()] or [ln for ln in lines if " E " in ln]
        if not errs:
            # llama.cpp logs from a thread and can exit before flushing: say what the
            # file declares instead.
            import gguf

            arch = gguf.GGUFReader(gguf_path).get_field("general.architecture")
            arch = arch.contents() if arch is not None else None
            errs = [f"llama-embedding exit {p.returncode}; the file's general.architecture is {arch!r}"]
        raise RuntimeError(re.sub(r"^[0-9.]+ [A-Z] ", "", errs[0].strip())[:150])
    try:
        data = json.loads(p.stdout[p.stdout.index("{"):])
    except json.JSONDecodeError:
        # llama-embedding prints its JSON through llama.cpp's asynchronous logger, which
        # can exit before the last lines are flushed (the JSON ends mid-array): run again.
        if tries > 1:
            return llamacpp_embed(llamacpp, gguf_path, prompts, tries - 1)
        raise
    return torch.tensor([d["embedding"] for d in data["data"]])


def llamacpp_suite(quant, name, src, methods, work, llamacpp):
    prompts = [
        "The quick brown fox jumps over the lazy dog.",
        "Quantization trades a little accuracy for a lot of memory.",
        "Where is the nearest train station?",
    ]
    conv = os.path.join(llamacpp, "src", "convert_hf_to_gguf.py")
    f32 = os.path.join(work, f"{name}-llamacpp-f32.gguf")
    if not os.path.exists(f32):
        p = run([sys.executable, conv, src, "--outtype", "f32", "--outfile", f32])
        if p.returncode != 0:
            row(name, "llama.cpp", "(convert_hf_to_gguf f32)", False, None, p.stderr.strip()[-150:])
            return
    ref = llamacpp_embed(llamacpp, f32, prompts)
    lib = "llama.cpp"
    # quant's GGUF of the HF folder, and quant requantizing llama.cpp's own f32 conversion.
    for m in methods:
        for kind, inp in (("from HF folder", src), ("from llama.cpp f32 gguf", f32)):
            out = os.path.join(work, f"{name}-llamacpp-{m}-{'hf' if inp == src else 'gguf'}.gguf")
            try:
                quant.quantize(inp, out, m, ["--format", "gguf"] if inp == src else [])
                out = gguf_file_of(out)
            except Exception as e:
                row(name, lib, f"{m} ({kind})", False, None, short_error(e))
                continue
            try:
                got = llamacpp_embed(llamacpp, out, prompts)
                row(name, lib, f"{m} ({kind})", True, cosine(ref, got), "llama-embedding, mean pooling")
            except Exception as e:
                row(name, lib, f"{m} ({kind})", False, None, short_error(e))


def make_pipeline(path, bert, unet):
    """A diffusers-style pipeline folder: the tiny UNet, the tiny BERT as text encoder and a
    scheduler config (no weights)."""
    if os.path.exists(os.path.join(path, "model_index.json")):
        return path
    os.makedirs(os.path.join(path, "scheduler"), exist_ok=True)
    shutil.copytree(unet, os.path.join(path, "unet"))
    shutil.copytree(bert, os.path.join(path, "text_encoder"))
    with open(os.path.join(path, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump({"_class_name": "DDIMScheduler", "num_train_timesteps": 1000}, f)
    with open(os.path.join(path, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                   "text_encoder": ["transformers", "BertModel"], "scheduler": ["diffusers", "DDIMScheduler"]}, f)
    return path


def pipeline_suite(quant, name, src, layouts, work):
    """A quantized pipeline: each component loaded by its library from the output folder,
    and quant's own dequantize/eval reading the whole pipeline folder."""
    from diffusers import UNet2DConditionModel
    from transformers import AutoModel

    unet_in, bert_in = unet_inputs(), bert_inputs(os.path.join(src, "text_encoder"))
    ref_unet = unet_forward(UNet2DConditionModel.from_pretrained(os.path.join(src, "unet")).eval(), unet_in)
    ref_bert = bert_forward(AutoModel.from_pretrained(os.path.join(src, "text_encoder")).eval(), bert_in)
    for unet_m, te_m in layouts:
        label = f"unet={unet_m}, text_encoder={te_m}"
        out = os.path.join(work, f"{name}-{unet_m}-{te_m}")
        try:
            quant.quantize(src, out, "basic_bf16", ["--component", f"unet={unet_m}", "--component", f"text_encoder={te_m}"])
            unet = load_checked(UNet2DConditionModel, os.path.join(out, "unet"), device_map="cpu",
                                torch_dtype=method_dtype(unet_m))
            te = load_checked(AutoModel, os.path.join(out, "text_encoder"), device_map="cpu", dtype=method_dtype(te_m))
            c_unet = cosine(ref_unet, unet_forward(unet, unet_in))
            c_te = cosine(ref_bert, bert_forward(te, bert_in))
            row(name, "diffusers + transformers", label, True, min(c_unet, c_te),
                f"unet {c_unet:.6f} ({quantized_note(unet)}), text_encoder {c_te:.6f} ({quantized_note(te)})")
        except Exception as e:
            row(name, "diffusers + transformers", label, False, None, short_error(e))
            continue
        try:
            quant.check("inspect", out)
            quant.check("dequantize", out, "-o", os.path.join(work, "restored.safetensors"), "--force")
            ev = json.loads(quant.check("eval", src, out, "--json"))
            worst = min(r["stats"]["cosine"] for r in ev)
            row(name, "quant inspect/dequantize/eval", label, True, None,
                f"{len(ev)} tensors as component/tensor, worst weight cosine {worst:.6f}")
        except Exception as e:
            row(name, "quant inspect/dequantize/eval", label, False, None, short_error(e))


def quant_roundtrip(quant, name, src, methods, work):
    """quant's own commands read every layout it wrote (inspect, dequantize, eval): one row
    for all methods, one more per failure."""
    done, failed = [], 0
    for m in methods:
        out = os.path.join(work, f"{name}-{m}")
        for cand in (out, out + ".gguf"):
            if os.path.exists(cand):
                out = cand
                break
        try:
            if not os.path.exists(out):
                # A method no library suite wrote (basic_int8, quant's own format).
                quant.quantize(src, out, m)
            quant.check("inspect", out)
            quant.check("dequantize", out, "-o", os.path.join(work, "restored.safetensors"), "--force")
            quant.check("eval", src, out, "--json")
            done.append(m)
        except Exception as e:
            failed += 1
            row(name, "quant inspect/dequantize/eval", m, False, None, short_error(e))
    row(name, "quant inspect/dequantize/eval", f"{len(done)} methods' outputs", True, None,
        f"all read back ({len(done)} of {len(done) + failed})")


def make_llama(path):
    """A tiny LlamaForCausalLM (random weights, fixed seed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if os.path.exists(os.path.join(path, "config.json")):
        return path
    torch.manual_seed(7)
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    LlamaForCausalLM(cfg).eval().save_pretrained(path, max_shard_size="1MB")
    return path


def max_abs(a, b):
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


def restored_layout(src, out):
    """What `quant dequantize` of a folder promises: config.json without
    quantization_config, the other files carried, shards and index like the input."""
    with open(os.path.join(out, "config.json")) as f:
        if "quantization_config" in json.load(f):
            raise ValueError("restored config.json still has quantization_config")
    weights = lambda d: sorted(n for n in os.listdir(d) if n.endswith(".safetensors"))
    others = lambda d: sorted(n for n in os.listdir(d) if not n.endswith(".safetensors")
                              and n not in ("config.json", "quantization_info.json"))
    if weights(src) != weights(out) or others(src) != others(out):
        raise ValueError(f"files differ: {weights(src) + others(src)} vs {weights(out) + others(out)}")
    return f"{len(weights(out))} weight files"


def restore_suite(quant, work, bert, llama, pipeline):
    """`quant dequantize` of quantized folders: the restored model folder loaded by
    transformers (AutoModel / LlamaForCausalLM.from_pretrained, no quant-specific code), the
    restored pipeline folder by diffusers (DiffusionPipeline.from_pretrained); the output
    compared with the original model's (cosine, max abs difference)."""
    from diffusers import DiffusionPipeline, UNet2DConditionModel
    from transformers import AutoModel, LlamaForCausalLM

    ids = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(8))
    llama_logits = lambda m: m(input_ids=ids).logits.float()
    cases = [
        ("bert", bert, AutoModel, bert_inputs(bert), bert_forward, "embeddings"),
        ("llama", llama, LlamaForCausalLM, None, None, "logits"),
    ]
    for name, src, cls, inputs, forward, what in cases:
        ref_model = cls.from_pretrained(src).eval()
        with torch.no_grad():
            ref = forward(ref_model, inputs) if forward else llama_logits(ref_model)
        for m in ["basic_fp16", "bnb_4bit_config_bf16", "torch_ao_config_int8wo", "quanto_config_int8"]:
            q = os.path.join(work, f"restore-{name}-{m}")
            out = q + "-restored"
            try:
                quant.quantize(src, q, m)
                if os.path.exists(out):
                    shutil.rmtree(out)
                quant.check("dequantize", q, "-o", out)
                note = restored_layout(src, out)
                model = load_checked(cls, out)
                with torch.no_grad():
                    got = forward(model, inputs) if forward else llama_logits(model)
                row(name, "transformers (restored)", m, True, cosine(ref, got),
                    f"{what} max abs diff {max_abs(ref, got):.3e} vs original; {note}")
            except Exception as e:
                row(name, "transformers (restored)", m, False, None, short_error(e))
    unet_in, bert_in = unet_inputs(), bert_inputs(os.path.join(pipeline, "text_encoder"))
    ref_unet = unet_forward(UNet2DConditionModel.from_pretrained(os.path.join(pipeline, "unet")).eval(), unet_in)
    ref_bert = bert_forward(AutoModel.from_pretrained(os.path.join(pipeline, "text_encoder")).eval(), bert_in)
    for unet_m, te_m in [("torch_ao_config_int8wo", "bnb_4bit_config_bf16"), ("gguf_config_q8_0", "quanto_config_int8")]:
        label = f"unet={unet_m}, text_encoder={te_m}"
        q = os.path.join(work, f"restore-pipeline-{unet_m}-{te_m}")
        out = q + "-restored"
        try:
            quant.quantize(pipeline, q, "basic_bf16", ["--component", f"unet={unet_m}", "--component", f"text_encoder={te_m}"])
            if os.path.exists(out):
                shutil.rmtree(out)
            quant.check("dequantize", q, "-o", out)
            pipe = DiffusionPipeline.from_pretrained(out, vae=None, tokenizer=None, safety_checker=None,
                                                     feature_extractor=None, requires_safety_checker=False)
            got_unet = unet_forward(pipe.unet.eval(), unet_in)
            got_bert = bert_forward(pipe.text_encoder.eval(), bert_in)
            c = min(cosine(ref_unet, got_unet), cosine(ref_bert, got_bert))
            row("pipeline", "diffusers (restored)", label, True, c,
                f"{type(pipe).__name__}; unet max abs diff {max_abs(ref_unet, got_unet):.3e}, "
                f"text_encoder embeddings {max_abs(ref_bert, got_bert):.3e} vs original")
        except Exception as e:
            row("pipeline", "diffusers (restored)", label, False, None, short_error(e))


# ----------------------------------------------------------------------------- main


def versions():
    names = ["torch", "transformers", "diffusers", "torchao", "bitsandbytes", "optimum-quanto",
             "accelerate", "gguf", "safetensors", "numpy"]
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "missing"
    return out


def table(rows):
    lines = ["| model | loaded by | method | loads | forward cosine vs original | note |",
             "|---|---|---|---|---:|---|"]
    for r in rows:
        c = "-" if r["cosine"] is None else f"{r['cosine']:.6f}"
        lines.append(f"| {r['model']} | {r['library']} | {r['method']} | {'yes' if r['loads'] else 'no'} | {c} | {r['note']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quant", required=True, help="the quant executable")
    ap.add_argument("--work", required=True, help="scratch folder (models and outputs)")
    ap.add_argument("--llamacpp", help="llama.cpp tools folder (bin/llama-embedding, src/)")
    ap.add_argument("--minilm", help="all-MiniLM-L6-v2 folder (scripts/fetch-minilm.sh)")
    ap.add_argument("--only", default="", help="regex: run only suites whose name matches")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    quant = Quant(os.path.abspath(a.quant), a.work)
    ver = versions()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()), flush=True)
    models = os.path.join(a.work, "models")
    os.makedirs(models, exist_ok=True)
    bert = make_bert(os.path.join(models, "bert"))
    st_methods = [m for m in quant.methods if not m.startswith("gguf_") and m != "basic_int8"]
    gguf_methods = methods_of(quant, "gguf_")
    suites = [
        ("transformers-bert", lambda: transformers_suite(
            quant, "bert", bert, st_methods, a.work, make_bf16_copy(bert, os.path.join(models, "bert-bf16")))),
        ("transformers-bert-sharded", lambda: transformers_suite(
            quant, "bert-sharded", make_sharded_copy(bert, os.path.join(models, "bert-sharded")),
            ["bnb_4bit_config_fp16", "torch_ao_config_int8wo", "torch_ao_config_float8wo_e4m3",
             "torch_ao_config_uint4wo"], a.work)),
        ("gguf-py-bert", lambda: gguf_py_suite(quant, "bert", bert, gguf_methods, a.work)),
        ("diffusers-unet", lambda: diffusers_suite(
            quant, "unet", make_unet(os.path.join(models, "unet")),
            [m for m in st_methods if not m.startswith("basic_")], a.work,
            make_bf16_copy(os.path.join(models, "unet"), os.path.join(models, "unet-bf16"), unet_class()))),
        ("diffusers-gguf-flux", lambda: diffusers_gguf_suite(
            quant, "flux", make_flux(os.path.join(models, "flux")), gguf_methods, a.work)),
        ("quant-roundtrip", lambda: quant_roundtrip(quant, "bert", bert, quant.methods, a.work)),
        ("pipeline", lambda: pipeline_suite(
            quant, "pipeline", make_pipeline(os.path.join(models, "pipeline"), bert, make_unet(os.path.join(models, "unet"))),
            [("torch_ao_config_int8wo", "bnb_4bit_config_bf16"), ("quanto_config_int8", "torch_ao_config_float8wo_e4m3"),
             ("torch_ao_config_uint4wo", "bnb_8bit_config_fp16")], a.work)),
        ("restore", lambda: restore_suite(
            quant, a.work, make_sharded_copy(bert, os.path.join(models, "bert-sharded")),
            make_llama(os.path.join(models, "llama")),
            make_pipeline(os.path.join(models, "pipeline"), bert, make_unet(os.path.join(models, "unet"))))),
    ]
    if a.minilm:
        suites.insert(1, ("transformers-minilm", lambda: transformers_suite(
            quant, "minilm", a.minilm, st_methods, a.work, make_bf16_copy(a.minilm, os.path.join(models, "minilm-bf16")))))
        suites.insert(3, ("gguf-py-minilm", lambda: gguf_py_suite(quant, "minilm", a.minilm, gguf_methods, a.work)))
        if a.llamacpp:
            suites.append(("llamacpp-minilm", lambda: llamacpp_suite(
                quant, "minilm", a.minilm,
                ["gguf_f16", "gguf_q8_0", "gguf_q4_k_m", "gguf_q4_0", "gguf_config_q8_0"],
                a.work, a.llamacpp)))
    for sname, fn in suites:
        if a.only and not re.search(a.only, sname):
            continue
        print(f"== {sname}", flush=True)
        t = time.time()
        try:
            fn()
        except Exception as e:
            traceback.print_exc()
            row(sname, "(suite)", "-", False, None, short_error(e))
        print(f"   ({time.time() - t:.0f} s)", flush=True)
    md = table(ROWS)
    print()
    print(md)
    with open(os.path.join(a.work, "interop.md"), "w") as f:
        f.write("Versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()) + "\n\n" + md + "\n")
    with open(os.path.join(a.work, "interop.json"), "w") as f:
        json.dump({"versions": ver, "rows": ROWS}, f, indent=1)
    bad = [r for r in ROWS if not r["loads"]]
    print(f"\n{len(ROWS)} rows, {len(bad)} not loading; table in {a.work}/interop.md")


if __name__ == "__main__":
    main()
