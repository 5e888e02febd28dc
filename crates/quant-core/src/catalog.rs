//! The canonical method names, known even when their backend is compiled out.

/// One canonical method name and where it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The method name.
    pub name: &'static str,
    /// The backend crate that implements it.
    pub backend: &'static str,
    /// The facade feature that compiles the backend in.
    pub feature: &'static str,
    /// The basic method used when the backend is compiled out.
    pub fallback: &'static str,
}

const fn e(
    name: &'static str,
    backend: &'static str,
    feature: &'static str,
    fallback: &'static str,
) -> CatalogEntry {
    CatalogEntry {
        name,
        backend,
        feature,
        fallback,
    }
}

const BASIC: &str = "quant-basic";
const BNB: &str = "quant-bnb";
const GGUF: &str = "quant-gguf";
const QUANTO: &str = "quant-quanto";
const AO: &str = "quant-float8";
const INT8: &str = "basic_int8";

/// The 43 canonical method names (ARCHITECTURE §3).
pub const CATALOG: &[CatalogEntry] = &[
    e("basic_fp16", BASIC, "", ""),
    e("basic_bf16", BASIC, "", ""),
    e("basic_int8", BASIC, "", ""),
    e("bnb_4bit_config_fp16", BNB, "bnb", INT8),
    e("bnb_4bit_config_bf16", BNB, "bnb", INT8),
    e("bnb_8bit_config_fp16", BNB, "bnb", INT8),
    e("bnb_8bit_config_bf16", BNB, "bnb", INT8),
    e("gguf_config_fp16", GGUF, "gguf", "basic_fp16"),
    e("gguf_config_bf16", GGUF, "gguf", "basic_bf16"),
    e("gguf_config_q8_k", GGUF, "gguf", INT8),
    e("gguf_config_q8_0", GGUF, "gguf", INT8),
    e("gguf_config_q8_1", GGUF, "gguf", INT8),
    e("gguf_config_q6_k", GGUF, "gguf", INT8),
    e("gguf_config_q5_k", GGUF, "gguf", INT8),
    e("gguf_config_q5_1", GGUF, "gguf", INT8),
    e("gguf_config_q5_0", GGUF, "gguf", INT8),
    e("gguf_config_q4_k", GGUF, "gguf", INT8),
    e("gguf_config_q4_0", GGUF, "gguf", INT8),
    e("gguf_config_q4_1", GGUF, "gguf", INT8),
    e("gguf_config_q3_k", GGUF, "gguf", INT8),
    e("gguf_config_q2_k", GGUF, "gguf", INT8),
    e("quanto_config_float8", QUANTO, "quanto", INT8),
    e("quanto_config_int8", QUANTO, "quanto", INT8),
    e("quanto_config_int4", QUANTO, "quanto", INT8),
    e("quanto_config_int2", QUANTO, "quanto", INT8),
    e("torch_ao_config_int4wo", AO, "float8", INT8),
    e("torch_ao_config_int4dq", AO, "float8", INT8),
    e("torch_ao_config_int8wo", AO, "float8", INT8),
    e("torch_ao_config_int8dq", AO, "float8", INT8),
    e("torch_ao_config_float8wo", AO, "float8", INT8),
    e("torch_ao_config_float8wo_e5m2", AO, "float8", INT8),
    e("torch_ao_config_float8wo_e4m3", AO, "float8", INT8),
    e("torch_ao_config_float8dq", AO, "float8", INT8),
    e("torch_ao_config_float8dq_e4m3", AO, "float8", INT8),
    e("torch_ao_config_float8_e4m3_tensor", AO, "float8", INT8),
    e("torch_ao_config_float8_e4m3_row", AO, "float8", INT8),
    e("torch_ao_config_uint1wo", AO, "float8", INT8),
    e("torch_ao_config_uint2wo", AO, "float8", INT8),
    e("torch_ao_config_uint3wo", AO, "float8", INT8),
    e("torch_ao_config_uint4wo", AO, "float8", INT8),
    e("torch_ao_config_uint5wo", AO, "float8", INT8),
    e("torch_ao_config_uint6wo", AO, "float8", INT8),
    e("torch_ao_config_uint7wo", AO, "float8", INT8),
];

/// Key suffixes that mark a tensor stored by another library's quantizer, with the backend
/// and feature that read it: a file holding such keys while that backend is compiled out
/// fails naming the feature, instead of loading packed bytes as if they were weights.
pub const FOREIGN_MARKERS: &[(&str, &str, &str)] = &[
    (".quant_state.bitsandbytes__nf4", BNB, "bnb"),
    (".quant_state.bitsandbytes__fp4", BNB, "bnb"),
    (".SCB", BNB, "bnb"),
    ("._data", QUANTO, "quanto"),
    ("_weight_qdata", AO, "float8"),
];

/// Names beyond the canonical 43, known the same way: GGUF's IQ, TQ and MXFP4 types and
/// llama-quantize's file types as quant-gguf registers them (`gguf_<ftype>`, a per-tensor
/// mixture), each falling back to the basic method of its kind when the GGUF backend is
/// compiled out.
pub const EXTRA: &[CatalogEntry] = &[
    e("gguf_config_iq4_nl", GGUF, "gguf", INT8),
    e("gguf_config_iq4_xs", GGUF, "gguf", INT8),
    e("gguf_config_iq3_s", GGUF, "gguf", INT8),
    e("gguf_config_iq3_xxs", GGUF, "gguf", INT8),
    e("gguf_config_iq2_s", GGUF, "gguf", INT8),
    e("gguf_config_iq2_xs", GGUF, "gguf", INT8),
    e("gguf_config_iq2_xxs", GGUF, "gguf", INT8),
    e("gguf_config_iq1_m", GGUF, "gguf", INT8),
    e("gguf_config_iq1_s", GGUF, "gguf", INT8),
    e("gguf_config_tq2_0", GGUF, "gguf", INT8),
    e("gguf_config_tq1_0", GGUF, "gguf", INT8),
    e("gguf_config_mxfp4", GGUF, "gguf", INT8),
    e("gguf_f16", GGUF, "gguf", "basic_fp16"),
    e("gguf_bf16", GGUF, "gguf", "basic_bf16"),
    e("gguf_q8_0", GGUF, "gguf", INT8),
    e("gguf_q6_k", GGUF, "gguf", INT8),
    e("gguf_q5_k_m", GGUF, "gguf", INT8),
    e("gguf_q5_k_s", GGUF, "gguf", INT8),
    e("gguf_q5_1", GGUF, "gguf", INT8),
    e("gguf_q5_0", GGUF, "gguf", INT8),
    e("gguf_q4_k_m", GGUF, "gguf", INT8),
    e("gguf_q4_k_s", GGUF, "gguf", INT8),
    e("gguf_q4_1", GGUF, "gguf", INT8),
    e("gguf_q4_0", GGUF, "gguf", INT8),
    e("gguf_iq4_xs", GGUF, "gguf", INT8),
    e("gguf_iq4_nl", GGUF, "gguf", INT8),
    e("gguf_q3_k_l", GGUF, "gguf", INT8),
    e("gguf_q3_k_m", GGUF, "gguf", INT8),
    e("gguf_q3_k_s", GGUF, "gguf", INT8),
    e("gguf_q2_k", GGUF, "gguf", INT8),
    e("gguf_iq3_m", GGUF, "gguf", INT8),
    e("gguf_iq3_s", GGUF, "gguf", INT8),
    e("gguf_iq3_xs", GGUF, "gguf", INT8),
    e("gguf_iq3_xxs", GGUF, "gguf", INT8),
    e("gguf_iq2_m", GGUF, "gguf", INT8),
    e("gguf_iq2_s", GGUF, "gguf", INT8),
    e("gguf_iq2_xs", GGUF, "gguf", INT8),
    e("gguf_iq2_xxs", GGUF, "gguf", INT8),
    e("gguf_q2_k_s", GGUF, "gguf", INT8),
    e("gguf_iq1_m", GGUF, "gguf", INT8),
    e("gguf_iq1_s", GGUF, "gguf", INT8),
    e("gguf_tq2_0", GGUF, "gguf", INT8),
    e("gguf_tq1_0", GGUF, "gguf", INT8),
    e("gguf_mxfp4_moe", GGUF, "gguf", INT8),
];

/// The catalog entry for `name`, if it is a canonical name or one of [`EXTRA`].
pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().chain(EXTRA).find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forty_three_unique_names() {
        let mut names: Vec<_> = CATALOG.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 43);
        let mut all: Vec<_> = CATALOG.iter().chain(EXTRA).map(|c| c.name).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 43 + EXTRA.len());
        for c in CATALOG.iter().chain(EXTRA) {
            if !c.fallback.is_empty() {
                assert!(lookup(c.fallback).is_some_and(|f| f.backend == BASIC));
            }
        }
    }
}
