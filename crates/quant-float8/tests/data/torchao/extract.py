"""Copies the parts of /work/shared/testdata/torchao that the quant-float8 tests use.

Run once by hand (python3 extract.py SRC DST); the tests never read SRC.
Kept: the manifest entries (all of them, with every tensor_sha256), the input weight `w`
of every case, and for the small cases the reference tensors a port must reproduce
(codes, shards, scales, zero points, dequant). Dropped: activations, y, dequant_f32 and the
tinygemm v1 variant (not one of the 18 methods); the tests check their hashes instead
(except dequant_f32 of the edge case, kept for its NaN rows).
The 128x256 case keeps only its input: its outputs are checked by sha256 alone.
"""
import json, os, struct, sys

src, dst = sys.argv[1], sys.argv[2]
DROP = {"y", "dequant_f32", "act_qdata", "act_scale", "act_zero_point", "act_dequant",
        "packed_weight_cpu", "w_f32", "act_x"}
HASH_ONLY_CASES = {"w128x256_bf16"}


def copy(path_in, path_out, keep):
    raw = open(path_in, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out_header, blobs, off = {}, [], 0
    if "__metadata__" in header:
        out_header["__metadata__"] = header["__metadata__"]
    for k, v in header.items():
        if k == "__metadata__" or not keep(k):
            continue
        s, e = v["data_offsets"]
        blob = raw[8 + n + s:8 + n + e]
        out_header[k] = {"dtype": v["dtype"], "shape": v["shape"], "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    h = json.dumps(out_header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    os.makedirs(os.path.dirname(path_out), exist_ok=True)
    with open(path_out, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


m = json.load(open(os.path.join(src, "manifest.json")))
entries = [e for e in m["entries"] if e["method"] != "int4wo_v1_tinygemm"]
for e in entries:
    for f in e.get("files", []):
        if e["method"] == "__input__":
            copy(os.path.join(src, f), os.path.join(dst, f), lambda k: k == "w")
        elif e["case"] == "edge32x256_bf16":
            # Its float8 rows of zeros dequantize to NaN, whose payload torch does not fix:
            # keep dequant_f32 so the tests can compare it NaN-aware instead of by hash.
            copy(os.path.join(src, f), os.path.join(dst, f), lambda k: k not in DROP - {"dequant_f32"})
        elif e["case"] not in HASH_ONLY_CASES:
            copy(os.path.join(src, f), os.path.join(dst, f), lambda k: k not in DROP)


def finite(v):
    # Python writes inf/nan as bare Infinity/NaN, which is not JSON: keep them as strings.
    if isinstance(v, float) and v != v or v in (float("inf"), float("-inf")):
        return repr(v)
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [finite(x) for x in v]
    return v


m["entries"] = finite(entries)
m["note"] = "trimmed copy made by extract.py; outputs of w128x256_bf16 are checked by tensor_sha256 only"
json.dump(m, open(os.path.join(dst, "manifest.json"), "w"), indent=1)
