//! Which tensors llama-quantize quantizes (`tensor_allows_quantization`) and in which order
//! (llama.cpp's `weights_map`: tensors outside a block first, then by block number).

use super::FtypeOptions;

/// `sscanf(name, "blk.%d.", &layer)`: the block number, if the name starts with one.
pub(super) fn block_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?.trim_start();
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'-') => (-1, &rest[1..]),
        Some(b'+') => (1, &rest[1..]),
        _ => (1, rest),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let n = digits[..end].parse::<i64>().unwrap_or(i64::MAX);
    Some(sign * n.min(i64::from(i32::MAX)))
}

/// `ggml_n_dims` of a shape given outermost first.
pub(super) fn n_dims(shape: &[usize]) -> usize {
    shape
        .iter()
        .rev()
        .rposition(|&d| d > 1)
        .map_or(1, |i| i + 1)
}

/// `tensor_allows_quantization` for the architectures supported here.
pub(super) fn allows_quantization(name: &str, shape: &[usize], opts: &FtypeOptions) -> bool {
    if n_dims(shape) < 2 {
        return false;
    }
    // `name.rfind("weight") == name.size() - 6`: also true for any 5-byte name, whose
    // size - 6 wraps to npos in C++.
    let ends_with_weight = name.ends_with("weight") || name.len() == 5;
    const EXCLUDED: [&str; 35] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    ends_with_weight
        && !(opts.leave_output_tensor && name == "output.weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !EXCLUDED.iter().any(|e| name.contains(e))
}

/// llama.cpp's tensor order (`weight_name_comparer`): tensors outside a block first, then
/// by block number, then by name. Returns indices into `names`.
pub fn tensor_order<S: AsRef<str>>(names: &[S]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        let (na, nb) = (names[a].as_ref(), names[b].as_ref());
        let la = block_of(na).unwrap_or(-1);
        let lb = block_of(nb).unwrap_or(-1);
        la.cmp(&lb).then_with(|| na.cmp(nb))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_puts_blocks_after_globals_by_number() {
        let names = [
            "blk.10.a",
            "blk.2.b",
            "output.weight",
            "blk.2.a",
            "token_embd.weight",
        ];
        let order: Vec<&str> = tensor_order(&names).iter().map(|&i| names[i]).collect();
        assert_eq!(
            order,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.a",
                "blk.2.b",
                "blk.10.a"
            ]
        );
    }

    #[test]
    fn n_dims_ignores_trailing_ones() {
        assert_eq!(n_dims(&[1, 256]), 1);
        assert_eq!(n_dims(&[2, 256]), 2);
        assert_eq!(n_dims(&[]), 1);
        assert_eq!(n_dims(&[4, 1, 1]), 3);
    }
}
