//! `quant plan`: the dry run, one line per tensor.

use quant::engine::Action;
use quant::{Pipeline, Result};

use super::quantize::{pipeline_with_components, quantizer};
use super::util::human;
use crate::PlanArgs;

pub fn plan(a: PlanArgs) -> Result<()> {
    let q = quantizer(&a)?;
    if Pipeline::is_pipeline(&a.input) {
        let pipe = pipeline_with_components(&a, &q)?;
        let mut total = 0;
        for c in pipe.components() {
            match pipe.planned(&c.name) {
                Some(quant::ComponentPlan::Quantize(cq)) => {
                    println!("== component {} ({})", c.name, cq.method_name());
                    let (_, plan) = cq.plan_path(&c.path)?;
                    print_plan(&plan);
                    total += plan.bytes_out();
                }
                _ => println!("== component {}: copied unchanged", c.name),
            }
        }
        println!("pipeline total {}", human(total));
        return Ok(());
    }
    let (_, plan) = q.plan_path(&a.input)?;
    print_plan(&plan);
    Ok(())
}

pub fn print_plan(plan: &quant::engine::Plan) {
    if let Some(r) = &plan.resolved.fallback_reason {
        eprintln!("warning: {}: {r}", plan.resolved.requested);
    }
    println!(
        "{:<52} {:<14} {:<6} {:<9} {:<26} {:>10}  RULE / NOTE",
        "TENSOR", "SHAPE", "DTYPE", "ACTION", "METHOD / DTYPE", "BYTES"
    );
    for e in &plan.entries {
        let what = match e.action {
            Action::Quantize => e.method.clone().unwrap_or_default(),
            _ => e
                .layout
                .first()
                .map(|l| l.dtype.to_string())
                .unwrap_or_default(),
        };
        let why = [e.rule.clone(), e.note.clone()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "{:<52} {:<14} {:<6} {:<9} {:<26} {:>10}  {}",
            e.name,
            format!("{:?}", e.meta.shape),
            e.meta.dtype.to_string(),
            format!("{:?}", e.action).to_lowercase(),
            what,
            e.bytes_out,
            why
        );
    }
    println!(
        "total {} -> {} ({} bytes), {} fallbacks",
        human(plan.bytes_in()),
        human(plan.bytes_out()),
        plan.bytes_out(),
        plan.fallbacks()
    );
}
