//! Diffusers-style pipelines: per-component methods, carried-along folders, reload.
use quant::{DType, ModelFiles, ModelQuantizer, Pipeline};

use crate::common::listing;

#[test]
fn pipeline_round_trip_with_mixed_methods() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pipe");
    quant::sample::write_sample_pipeline(&input, DType::BF16).unwrap();
    let mut pipe = Pipeline::open(&input).unwrap();
    let names: Vec<_> = pipe
        .components()
        .iter()
        .map(|c| (c.name.as_str(), c.has_weights))
        .collect();
    assert_eq!(
        names,
        [
            ("scheduler", false),
            ("text_encoder", true),
            ("tokenizer", false),
            ("transformer", true),
            ("vae", true)
        ]
    );
    let plan = pipe
        .quantize_component("transformer", ModelQuantizer::new("basic_fp16"))
        .unwrap();
    assert_eq!(plan.entries.len(), 5);
    pipe.skip_component("vae").unwrap();
    let out = dir.path().join("out");
    let reports = pipe
        .save(&out, Some(&ModelQuantizer::new("basic_int8")), false)
        .unwrap();
    assert_eq!(
        reports.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["text_encoder", "transformer"]
    );
    assert_eq!(
        listing(&out),
        [
            "model_index.json",
            "scheduler",
            "text_encoder",
            "tokenizer",
            "transformer",
            "vae"
        ]
    );
    assert_eq!(
        listing(&out.join("transformer")),
        [
            "config.json",
            "diffusion_pytorch_model-00001-of-00002.safetensors",
            "diffusion_pytorch_model-00002-of-00002.safetensors",
            "diffusion_pytorch_model.safetensors.index.json",
            "quantization_info.json"
        ]
    );
    // The skipped component is byte-identical.
    assert_eq!(
        std::fs::read(out.join("vae/diffusion_pytorch_model.safetensors")).unwrap(),
        std::fs::read(input.join("vae/diffusion_pytorch_model.safetensors")).unwrap()
    );
    let reopened = Pipeline::open(&out).unwrap();
    for c in ["text_encoder", "transformer", "vae"] {
        let a = ModelFiles::open(input.join(c)).unwrap();
        let b = reopened.open_component(c).unwrap();
        for (_, r) in a.records() {
            let x = a.load_f32(&r.name).unwrap();
            let y = b.load_f32(&r.name).unwrap();
            let s = quant::metrics::ErrorStats::compare(&x, &y);
            assert!(s.cosine > 0.999, "{c}/{}: {s:?}", r.name);
        }
    }
    let te = reopened.open_component("text_encoder").unwrap();
    assert!(te
        .records()
        .any(|(_, r)| r.method.as_deref() == Some("basic_int8")));
    let tr = reopened.open_component("transformer").unwrap();
    assert!(tr
        .records()
        .all(|(_, r)| r.method.as_deref() == Some("basic_fp16")));
}

#[test]
fn unknown_component_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pipe");
    quant::sample::write_sample_pipeline(&input, DType::F32).unwrap();
    let mut pipe = Pipeline::open(&input).unwrap();
    assert!(matches!(
        pipe.skip_component("unet"),
        Err(quant::Error::Config { .. })
    ));
    assert!(matches!(
        pipe.quantize_component("tokenizer", ModelQuantizer::new("basic_int8")),
        Err(quant::Error::Config { .. })
    ));
}

/// The example recipe drives a whole pipeline: per-component methods and rules, a copied
/// component, and a pipeline target that the written weights never exceed.
#[test]
fn recipe_with_pipeline_target() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pipe");
    quant::sample::write_sample_pipeline(&input, DType::F32).unwrap();
    let recipe_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/pipeline-recipe.toml");
    let recipe = quant::PipelineRecipe::load(&recipe_path).unwrap();
    let mut pipe = Pipeline::open(&input).unwrap();
    pipe.apply_recipe(&recipe, false).unwrap();
    let out = dir.path().join("out");
    let reports = pipe.save(&out, None, false).unwrap();
    let vae_bytes = std::fs::metadata(input.join("vae/diffusion_pytorch_model.safetensors"))
        .unwrap()
        .len();
    let written: u64 = reports.iter().map(|(_, r)| r.bytes_out).sum::<u64>() + vae_bytes;
    let target = (recipe.target_memory_gb.unwrap() * 1e9) as u64;
    assert!(written <= target, "{written} > {target}");
    let te = Pipeline::open(&out)
        .unwrap()
        .open_component("text_encoder")
        .unwrap();
    let norm = te.read("text_model.final_layer_norm.weight").unwrap();
    assert_eq!(norm.record.method, None);
    assert_eq!(norm.parts[0].layout.dtype, DType::F32);
}

/// A component quantized with a GGUF method is written as `<component>/<component>.gguf`
/// and loads back through the container.
#[cfg(feature = "gguf")]
#[test]
fn gguf_component_is_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pipe");
    quant::sample::write_sample_pipeline(&input, DType::F32).unwrap();
    let mut pipe = Pipeline::open(&input).unwrap();
    pipe.quantize_component("transformer", ModelQuantizer::new("gguf_config_q8_0"))
        .unwrap();
    let out = dir.path().join("out");
    pipe.save(&out, Some(&ModelQuantizer::new("basic_bf16")), false)
        .unwrap();
    assert_eq!(
        listing(&out.join("transformer")),
        [
            "config.json",
            "transformer.gguf",
            "transformer.quantization_info.json"
        ]
    );
    let tr = Pipeline::open(&out)
        .unwrap()
        .open_component("transformer")
        .unwrap();
    let original = ModelFiles::open(input.join("transformer")).unwrap();
    for (_, r) in original.records() {
        let s = quant::metrics::ErrorStats::compare(
            &original.load_f32(&r.name).unwrap(),
            &tr.load_f32(&r.name).unwrap(),
        );
        assert!(s.cosine > 0.999, "{}: {s:?}", r.name);
    }
}
