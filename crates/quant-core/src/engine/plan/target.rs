//! The memory target: refuse a plan over it, or (auto-optimize) move tensors between the
//! methods of the default's backend until it fits, naming what would fit when none does.

use crate::engine::configure::{ModelQuantizer, BYTES_PER_GB};
use crate::error::{Error, Result};
use crate::method::{Params, TensorRecord};
use crate::plan::{Plan, ValueFn};
use crate::registry::Registry;

impl ModelQuantizer {
    /// Applies the memory target, if any: refuses a plan over it, or (auto-optimize)
    /// moves tensors between methods of the default's backend until it fits.
    pub(super) fn fit_target(&self, plan: &mut Plan, values: Option<&ValueFn<'_>>) -> Result<()> {
        let Some(gb) = self.target_memory_gb else {
            return Ok(());
        };
        let target = (gb * BYTES_PER_GB) as u64;
        let needed = plan.bytes_out();
        let result = if !self.auto_optimize {
            if needed <= target {
                return Ok(());
            }
            Err(Error::OverTarget {
                needed,
                target,
                over: needed - target,
                hint: String::new(),
            })
        } else {
            let registry = Registry::global()?;
            let backend = registry
                .get(&plan.resolved.effective)
                .map(|e| e.backend)
                .unwrap_or("");
            // Every candidate gets the user's parameters it declares (e.g. every GGUF
            // method the imatrix), as the default got them.
            let mut ladder = Vec::new();
            for e in registry.entries().filter(|e| e.backend == backend) {
                ladder.push(self.shared_instance(e.name, &plan.resolved, &mut plan.methods)?);
            }
            crate::planner::fit(plan, &ladder, target, gb, values)
        };
        match result {
            Err(Error::OverTarget { needed, over, .. }) => Err(Error::OverTarget {
                needed,
                target,
                over,
                hint: self.what_fits(plan, target)?,
            }),
            other => other,
        }
    }

    /// Which uniform methods of the default's backend would fit `target`.
    pub(super) fn what_fits(&self, plan: &Plan, target: u64) -> Result<String> {
        let registry = Registry::global()?;
        let current = registry.get(&plan.resolved.effective);
        let backend = current.map(|e| e.backend).unwrap_or("");
        let mut fits = Vec::new();
        for cand in registry.entries().filter(|e| e.backend == backend) {
            let alt = ModelQuantizer {
                method: cand.name.to_string(),
                params: Params::new(),
                target_memory_gb: None,
                ..self.clone()
            };
            let recs: Vec<(usize, TensorRecord)> = plan
                .entries
                .iter()
                .map(|e| (e.shard, crate::load::plain_record(&e.meta)))
                .collect();
            if let Ok(p) = alt.plan(&recs, None) {
                if p.bytes_out() <= target {
                    fits.push((
                        cand.bits_per_weight,
                        format!("{} ({} bytes)", cand.name, p.bytes_out()),
                    ));
                }
            }
        }
        fits.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(if fits.is_empty() {
            "no method of the same backend fits; raise the target or keep fewer tensors unquantized"
                .to_string()
        } else {
            format!(
                "uniform methods that fit: {}{}",
                fits.into_iter().map(|f| f.1).collect::<Vec<_>>().join(", "),
                if self.auto_optimize {
                    ""
                } else {
                    " (or enable auto_optimize)"
                }
            )
        })
    }
}
