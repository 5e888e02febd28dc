//! `llama_tensor_get_type`: the type llama-quantize gives one tensor under a file type (the
//! options, the mixture rules with their `use_more_bits` layer counters, the shape fallback).

use quant_core::{Error, Result};

use super::select::block_of;
use super::{Ftype, FtypeOptions, ModelInfo};
use crate::method::fallback_type;
use crate::types::GgmlType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Category {
    Output,
    TokenEmbd,
    AttentionQkv,
    AttentionKvB,
    AttentionV,
    AttentionK,
    AttentionQ,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

impl Category {
    /// `tensor_get_category`: exact names first, then the first substring found.
    pub(super) fn of(name: &str) -> Category {
        const BY_SUBSTRING: [(&str, Category); 9] = [
            ("attn_qkv.weight", Category::AttentionQkv),
            ("attn_kv_b.weight", Category::AttentionKvB),
            ("attn_v.weight", Category::AttentionV),
            ("attn_k.weight", Category::AttentionK),
            ("attn_q.weight", Category::AttentionQ),
            ("attn_output.weight", Category::AttentionOutput),
            ("ffn_up", Category::FfnUp),
            ("ffn_gate", Category::FfnGate),
            ("ffn_down", Category::FfnDown),
        ];
        match name {
            "output.weight" => Category::Output,
            "token_embd.weight" | "per_layer_token_embd.weight" => Category::TokenEmbd,
            _ => BY_SUBSTRING
                .iter()
                .find(|(s, _)| name.contains(s))
                .map_or(Category::Other, |(_, c)| *c),
        }
    }

    /// `category_is_attn_v`.
    pub(super) fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttentionV | Category::AttentionQkv | Category::AttentionKvB
        )
    }
}

/// llama.cpp's `use_more_bits`.
pub(super) fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// `quantize_state_impl`: the counters.
pub(super) struct State<'a> {
    pub(super) ftype: Ftype,
    pub(super) model: &'a ModelInfo,
    pub(super) opts: &'a FtypeOptions,
    pub(super) n_attention_wv: i64,
    pub(super) i_attention_wv: i64,
    pub(super) i_ffn_down: i64,
    pub(super) i_ffn_gate: i64,
    pub(super) i_ffn_up: i64,
    pub(super) has_tied_embeddings: bool,
}

impl State<'_> {
    /// `layer_info`: the layer of an FFN tensor (parsed from the name with experts).
    pub(super) fn layer_info(&self, i: i64, name: &str) -> Result<(i64, i64)> {
        let n = i64::from(self.model.n_layer);
        if self.model.n_expert.max(1) > 1 {
            let bad = |reason: String| Error::tensor("(model)", name, reason);
            let layer = block_of(name)
                .ok_or_else(|| bad("failed to determine the layer of an expert tensor".into()))?;
            if layer < 0 || layer >= n {
                return Err(bad(format!("bad layer {layer}: must be in [0, {n})")));
            }
            return Ok((layer, n));
        }
        Ok((i, n))
    }

    /// `llama_tensor_get_type_impl` for the supported ftypes; `ne2` is the tensor's third
    /// ggml dimension (experts).
    pub(super) fn mixture_type(
        &mut self,
        mut new_type: GgmlType,
        name: &str,
        row_len: usize,
        ne2: usize,
        cat: Category,
    ) -> Result<GgmlType> {
        use Ftype as F;
        use GgmlType as T;
        let ftype = self.ftype;
        let model = self.model;
        let falcon = model.is_falcon();
        let gqa4 = model.n_gqa() >= 4;
        let iq2s_or_m = matches!(ftype, F::IQ2_S | F::IQ2_M);
        if cat == Category::Output || (self.has_tied_embeddings && cat == Category::TokenEmbd) {
            if let Some(t) = self.opts.output_tensor_type {
                new_type = t;
            } else if ftype == F::MXFP4_MOE || falcon || row_len % new_type.block_size() != 0 {
                new_type = T::Q8_0;
            } else if ftype.is_iq1_iq2() || ftype == F::IQ3_XXS {
                new_type = T::Q5_K;
            } else if new_type != T::Q8_0 {
                new_type = T::Q6_K;
            }
        } else if ftype == F::MXFP4_MOE {
            // Expert tensors (3-D) MXFP4, everything else Q8_0.
            new_type = if ne2 > 1 { T::MXFP4 } else { T::Q8_0 };
        } else if cat == Category::TokenEmbd {
            if let Some(t) = self.opts.token_embedding_type {
                new_type = t;
            } else {
                match ftype {
                    F::IQ2_XXS | F::IQ2_XS | F::IQ1_S | F::IQ1_M => new_type = T::Q2_K,
                    F::IQ2_S | F::IQ2_M | F::IQ3_XXS => new_type = T::IQ3_S,
                    F::TQ1_0 | F::TQ2_0 => new_type = T::Q4_K,
                    _ => {}
                }
            }
        } else if ftype.is_iq1_iq2() {
            let low = if iq2s_or_m { T::IQ3_S } else { T::Q2_K };
            if cat.is_attn_v() {
                new_type = if gqa4 || model.n_expert >= 4 {
                    T::Q4_K
                } else {
                    low
                };
                self.i_attention_wv += 1;
            } else if model.n_expert == 8 && cat == Category::AttentionK {
                new_type = T::Q4_K;
            } else if cat == Category::FfnDown {
                if self.i_ffn_down < i64::from(model.n_layer) / 8 {
                    new_type = low;
                }
                self.i_ffn_down += 1;
            } else if cat == Category::AttentionOutput {
                if model.n_expert == 8 {
                    new_type = T::Q5_K;
                } else if matches!(ftype, F::IQ1_S | F::IQ1_M) {
                    new_type = T::IQ2_XXS;
                } else if iq2s_or_m {
                    new_type = T::IQ3_S;
                }
            }
        } else if cat.is_attn_v() {
            let (i, n) = (self.i_attention_wv, self.n_attention_wv);
            match ftype {
                F::Q2_K => new_type = if gqa4 { T::Q4_K } else { T::Q3_K },
                F::Q2_K_S if gqa4 => new_type = T::Q4_K,
                F::IQ3_XXS => {
                    new_type = if gqa4 {
                        T::Q4_K
                    } else if !self.opts.has_imatrix {
                        T::IQ3_S
                    } else {
                        T::IQ3_XXS
                    }
                }
                F::IQ3_XS | F::IQ3_S if gqa4 => new_type = T::Q4_K,
                F::IQ3_M => new_type = T::Q4_K,
                F::Q3_K_M => new_type = if i < 2 { T::Q5_K } else { T::Q4_K },
                F::Q3_K_L => new_type = T::Q5_K,
                F::IQ4_NL | F::IQ4_XS if gqa4 => new_type = T::Q5_K,
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => new_type = T::Q6_K,
                F::Q4_K_S if i < 4 => new_type = T::Q5_K,
                _ => {}
            }
            if model.is_70b() && matches!(new_type, T::Q3_K | T::Q4_K) {
                new_type = T::Q5_K;
            }
            if model.n_expert == 8 {
                new_type = T::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttentionK {
            if model.n_expert == 8 {
                new_type = T::Q8_0;
            } else if ftype == F::IQ3_XS {
                new_type = T::IQ3_XXS;
            } else if ftype == F::IQ3_XXS {
                new_type = T::IQ2_S;
            }
        } else if cat == Category::AttentionQ {
            if ftype == F::IQ3_XS {
                new_type = T::IQ3_XXS;
            } else if ftype == F::IQ3_XXS {
                new_type = T::IQ2_S;
            }
        } else if cat == Category::FfnDown {
            new_type = self.ffn_down_type(new_type, name)?;
        } else if cat == Category::AttentionOutput {
            if !falcon {
                if model.n_expert == 8 {
                    if matches!(
                        ftype,
                        F::Q2_K
                            | F::IQ3_XS
                            | F::IQ3_XXS
                            | F::Q3_K_S
                            | F::Q3_K_M
                            | F::IQ4_NL
                            | F::Q4_K_S
                            | F::Q4_K_M
                            | F::IQ3_S
                            | F::IQ3_M
                            | F::IQ4_XS
                    ) {
                        new_type = T::Q5_K;
                    }
                } else {
                    match ftype {
                        F::Q2_K => new_type = T::Q3_K,
                        F::IQ3_XXS => new_type = T::IQ3_S,
                        F::Q3_K_M | F::IQ3_M => new_type = T::Q4_K,
                        F::Q3_K_L => new_type = T::Q5_K,
                        _ => {}
                    }
                }
            } else if ftype == F::Q3_K_L {
                new_type = T::Q4_K;
            }
        } else if cat == Category::AttentionQkv {
            match ftype {
                F::Q3_K_M | F::Q3_K_L | F::IQ3_M => new_type = T::Q4_K,
                F::Q4_K_M => new_type = T::Q5_K,
                F::Q5_K_M => new_type = T::Q6_K,
                _ => {}
            }
        } else if cat == Category::FfnGate || cat == Category::FfnUp {
            let counter = if cat == Category::FfnGate {
                self.i_ffn_gate
            } else {
                self.i_ffn_up
            };
            let (i, n) = self.layer_info(counter, name)?;
            if ftype == F::IQ3_XS && i >= n / 8 && i < 7 * n / 8 {
                new_type = T::IQ3_XXS;
            }
            if cat == Category::FfnGate {
                self.i_ffn_gate += 1;
            } else {
                self.i_ffn_up += 1;
            }
        }
        Ok(new_type)
    }

    /// The ffn_down branch of `llama_tensor_get_type_impl` (outside the IQ1/IQ2 family).
    fn ffn_down_type(&mut self, mut new_type: GgmlType, name: &str) -> Result<GgmlType> {
        use Ftype as F;
        use GgmlType as T;
        let ftype = self.ftype;
        let falcon = self.model.is_falcon();
        let (i, n) = self.layer_info(self.i_ffn_down, name)?;
        match ftype {
            F::Q2_K => new_type = T::Q3_K,
            F::Q2_K_S if i < n / 8 => new_type = T::Q4_K,
            F::IQ3_XXS if !self.opts.has_imatrix => {
                new_type = if i < n / 8 { T::Q4_K } else { T::Q3_K };
            }
            F::Q3_K_M => {
                new_type = if i < n / 16 {
                    T::Q5_K
                } else if !falcon || use_more_bits(i, n) {
                    T::Q4_K
                } else {
                    T::Q3_K
                }
            }
            F::IQ3_M if i < n / 8 || (self.model.n_expert == 8 && use_more_bits(i, n)) => {
                new_type = T::Q4_K;
            }
            F::Q3_K_L => new_type = if falcon { T::Q4_K } else { T::Q5_K },
            F::Q4_K_M => {
                if falcon {
                    new_type = if i < n / 16 {
                        T::Q6_K
                    } else if use_more_bits(i, n) {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    };
                } else if use_more_bits(i, n) {
                    new_type = T::Q6_K;
                }
            }
            F::IQ4_NL | F::IQ4_XS if i < n / 8 && !self.opts.has_imatrix => new_type = T::Q5_K,
            F::Q5_K_M if use_more_bits(i, n) => new_type = T::Q6_K,
            F::Q4_K_S if !falcon && i < n / 8 => new_type = T::Q5_K,
            F::Q4_0 | F::Q5_0 if self.opts.has_imatrix && i < n / 8 => {
                new_type = if ftype == F::Q4_0 { T::Q4_1 } else { T::Q5_1 };
            }
            _ => {}
        }
        self.i_ffn_down += 1;
        Ok(new_type)
    }

    /// `llama_tensor_get_type` for a tensor `tensor_allows_quantization` accepted:
    /// (type, fallback reason).
    pub(super) fn tensor_type(
        &mut self,
        name: &str,
        row_len: usize,
        ne2: usize,
        cat: Category,
    ) -> Result<(GgmlType, Option<String>)> {
        let opts = self.opts;
        if let (Some(t), Category::TokenEmbd) = (opts.token_embedding_type, cat) {
            // per_layer_token_embd follows --token-embedding-type unless a pattern names it.
            let named = name == "per_layer_token_embd.weight"
                && opts.tensor_types.iter().any(|(re, _)| re.is_match(name));
            if !named {
                return Ok((t, None));
            }
        }
        if let (Some(t), Category::Output) = (opts.output_tensor_type, cat) {
            return Ok((t, None));
        }
        let default = self.ftype.default_type();
        // ggml_is_quantized(default_type): F16/BF16 ftypes use their type everywhere.
        if matches!(default, GgmlType::F16 | GgmlType::BF16 | GgmlType::F32) {
            return Ok((default, None));
        }
        let manual = opts
            .tensor_types
            .iter()
            .find(|(re, _)| re.is_match(name))
            .map(|(_, t)| *t);
        let chosen = match manual {
            Some(t) => t,
            None if opts.pure => default,
            None => self.mixture_type(default, name, row_len, ne2, cat)?,
        };
        // tensor_type_fallback: llama.cpp has no rule for Q8_K or MXFP4 and refuses.
        if matches!(chosen, GgmlType::Q8_K | GgmlType::MXFP4) && row_len % chosen.block_size() != 0
        {
            return Err(Error::tensor(
                "(model)",
                name,
                format!(
                    "row length {row_len} does not fit {chosen} and llama.cpp defines no fallback"
                ),
            ));
        }
        Ok(match fallback_type(chosen, row_len) {
            None => (chosen, None),
            Some(next) => (
                next,
                Some(format!(
                    "row length {row_len} is not a multiple of {} ({chosen}); llama.cpp falls back to {next}",
                    chosen.block_size()
                )),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn use_more_bits_matches_llama() {
        let picked: Vec<i64> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            picked,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }
}
