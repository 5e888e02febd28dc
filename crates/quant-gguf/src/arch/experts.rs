//! Tensors of the converted model that are not one checkpoint tensor each: those the
//! reference generates (`generate_extra_tensors`, e.g. Llama 3's `rope_freqs`) and the
//! per-expert weights of mixture-of-experts models that `modify_tensors` stacks into one
//! 3-D tensor per block and weight (`torch.stack(datas, dim=0)`, experts in id order).
//!
//! The reference stacks a block's experts when it has seen `n_experts × kinds` of them
//! (the last one in its tensor order), then yields the stacked tensors in its own kind
//! order; [`Stacker`] does the same, so the stacked tensors take that position.

use std::collections::BTreeMap;
use std::path::Path;

use quant_core::{Error, Result};

/// A tensor the reference generates: llama.cpp name, shape (row-major, outermost
/// first) and f32 values.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// llama.cpp's name.
    pub name: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// The values.
    pub values: Vec<f32>,
}

/// Where one per-expert checkpoint tensor goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertPart {
    /// Its block.
    pub block: usize,
    /// Its expert id.
    pub expert: usize,
    /// The number of experts (`num_local_experts` / `num_experts`).
    pub n_experts: usize,
    /// Its kind's index in `kinds`.
    pub kind: usize,
    /// The stacked tensors' (filtered HF) names, in the order the reference yields them.
    pub kinds: Vec<String>,
}

/// One source of a stacked tensor: (file index, checkpoint name).
pub type Source = (usize, String);

/// A completed stack: its (filtered HF) name and its sources, expert 0 first.
#[derive(Clone, Debug)]
pub struct Stack {
    /// The name `map_tensor` maps.
    pub name: String,
    /// The per-expert sources.
    pub sources: Vec<Source>,
}

/// Collects per-expert tensors block by block.
#[derive(Debug, Default)]
pub struct Stacker {
    blocks: BTreeMap<usize, BTreeMap<(usize, usize), Source>>,
}

impl Stacker {
    /// Adds one per-expert tensor; returns the block's stacks when it completes it.
    pub fn add(
        &mut self,
        dir: &Path,
        hf_name: &str,
        part: &ExpertPart,
        source: Source,
    ) -> Result<Vec<Stack>> {
        if part.expert >= part.n_experts {
            return Err(Error::tensor(
                dir,
                hf_name,
                format!(
                    "expert {} is not below the config's expert count {}",
                    part.expert, part.n_experts
                ),
            ));
        }
        let block = self.blocks.entry(part.block).or_default();
        if block.insert((part.kind, part.expert), source).is_some() {
            return Err(Error::tensor(dir, hf_name, "the same expert weight twice"));
        }
        if block.len() < part.n_experts * part.kinds.len() {
            return Ok(Vec::new());
        }
        let Some(mut block) = self.blocks.remove(&part.block) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(part.kinds.len());
        for (k, name) in part.kinds.iter().enumerate() {
            let mut sources = Vec::with_capacity(part.n_experts);
            for x in 0..part.n_experts {
                let s = block.remove(&(k, x)).ok_or_else(|| {
                    Error::tensor(
                        dir,
                        name,
                        format!("block {}: expert {x} of this weight is missing", part.block),
                    )
                })?;
                sources.push(s);
            }
            out.push(Stack {
                name: name.clone(),
                sources,
            });
        }
        Ok(out)
    }

    /// Fails when some block's experts were never completed (the reference's
    /// "Unprocessed experts").
    pub fn finish(&self, dir: &Path) -> Result<()> {
        match self.blocks.values().flat_map(|b| b.values()).next() {
            None => Ok(()),
            Some((_, name)) => Err(Error::tensor(
                dir,
                name,
                "unprocessed expert: its block does not hold every expert of every weight",
            )),
        }
    }
}

/// Parses `{prefix}{block}.{infix}{expert}.{kind}.weight` against a per-expert pattern
/// `prefix {bid} infix {xid} . kind .weight`: the (block, expert, kind index) of `name`.
pub fn parse_expert(
    name: &str,
    prefix: &str,
    infix: &str,
    kinds: &[&str],
) -> Option<(usize, usize, usize)> {
    let rest = name.strip_prefix(prefix)?;
    let (bid, rest) = rest.split_once('.')?;
    let rest = rest.strip_prefix(infix)?;
    let (xid, rest) = rest.split_once('.')?;
    let kind = rest.strip_suffix(".weight")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(bid) || !digits(xid) {
        return None;
    }
    let k = kinds.iter().position(|k| *k == kind)?;
    Some((bid.parse().ok()?, xid.parse().ok()?, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experts_parse_and_stack_in_kind_order() {
        let kinds = ["down_proj", "gate_proj", "up_proj"];
        assert_eq!(
            parse_expert(
                "model.layers.3.mlp.experts.12.up_proj.weight",
                "model.layers.",
                "mlp.experts.",
                &kinds
            ),
            Some((3, 12, 2))
        );
        assert_eq!(
            parse_expert(
                "model.layers.3.mlp.gate.weight",
                "model.layers.",
                "mlp.experts.",
                &kinds
            ),
            None
        );
        let mut s = Stacker::default();
        let names: Vec<String> = kinds.iter().map(|k| format!("m.{k}")).collect();
        let dir = Path::new("d");
        let mut done = Vec::new();
        for x in [1, 0] {
            for k in [2, 0, 1] {
                let part = ExpertPart {
                    block: 0,
                    expert: x,
                    n_experts: 2,
                    kind: k,
                    kinds: names.clone(),
                };
                done = s.add(dir, "t", &part, (0, format!("{k}.{x}"))).unwrap();
            }
        }
        assert_eq!(done.len(), 3);
        assert_eq!(done[0].name, "m.down_proj");
        assert_eq!(done[2].sources, [(0, "2.0".into()), (0, "2.1".into())]);
        s.finish(dir).unwrap();
        let part = ExpertPart {
            block: 1,
            expert: 0,
            n_experts: 2,
            kind: 0,
            kinds: names,
        };
        s.add(dir, "t", &part, (0, "x".into())).unwrap();
        assert!(s.finish(dir).is_err());
    }
}
