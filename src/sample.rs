//! A small transformer-shaped model generated in code, for `quant demo` and tests
//! (no download).

use crate::{DType, HostTensor, Result};

/// A deterministic pseudo-random normal generator (xorshift64* + Box–Muller).
#[derive(Clone, Debug)]
pub struct Gaussian {
    state: u64,
    spare: Option<f32>,
}

impl Gaussian {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Gaussian {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// One standard normal sample.
    pub fn sample(&mut self) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let t = std::f64::consts::TAU * v;
        self.spare = Some((r * t.sin()) as f32);
        (r * t.cos()) as f32
    }

    /// `n` samples scaled by `std`.
    pub fn fill(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.sample() * std).collect()
    }
}

/// The sample model: a 2-layer decoder with hidden size 256 (about 2.4M parameters),
/// embeddings, attention and MLP matrices, norms and biases, with a few outlier weights
/// as real checkpoints have, stored in `dtype`.
pub fn sample_model(dtype: DType) -> Result<Vec<HostTensor>> {
    let hidden = 256usize;
    let ffn = 768usize;
    let vocab = 1024usize;
    let mut g = Gaussian::new(42);
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, values: Vec<f32>| -> Result<()> {
        out.push(HostTensor::from_f32(name, dtype, shape, &values)?);
        Ok(())
    };
    push(
        "model.embed_tokens.weight".into(),
        vec![vocab, hidden],
        g.fill(vocab * hidden, 0.02),
    )?;
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        push(
            format!("{p}.input_layernorm.weight"),
            vec![hidden],
            vec![1.0; hidden],
        )?;
        for m in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            let mut w = g.fill(hidden * hidden, 0.02);
            // Outliers, as trained attention weights have.
            for i in (0..w.len()).step_by(4099) {
                w[i] *= 12.0;
            }
            push(format!("{p}.self_attn.{m}.weight"), vec![hidden, hidden], w)?;
        }
        push(
            format!("{p}.self_attn.q_proj.bias"),
            vec![hidden],
            g.fill(hidden, 0.01),
        )?;
        push(
            format!("{p}.post_attention_layernorm.weight"),
            vec![hidden],
            vec![1.0; hidden],
        )?;
        push(
            format!("{p}.mlp.gate_proj.weight"),
            vec![ffn, hidden],
            g.fill(ffn * hidden, 0.02),
        )?;
        push(
            format!("{p}.mlp.up_proj.weight"),
            vec![ffn, hidden],
            g.fill(ffn * hidden, 0.02),
        )?;
        push(
            format!("{p}.mlp.down_proj.weight"),
            vec![hidden, ffn],
            g.fill(ffn * hidden, 0.02),
        )?;
    }
    push("model.norm.weight".into(), vec![hidden], vec![1.0; hidden])?;
    push(
        "lm_head.weight".into(),
        vec![vocab, hidden],
        g.fill(vocab * hidden, 0.02),
    )?;
    Ok(out)
}

/// Writes the sample model as a model folder (`config.json` + `model.safetensors`).
pub fn write_sample_model(dir: &std::path::Path, dtype: DType) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let tensors = sample_model(dtype)?;
    let parts = tensors
        .into_iter()
        .map(|t| {
            crate::Part::new(
                crate::PartLayout::new(&t.meta.name, t.meta.dtype, t.meta.shape.clone()),
                t.data,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    crate::safetensors_io::write_safetensors(
        dir.join("model.safetensors"),
        &parts,
        &Default::default(),
    )?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 1024,
        "torch_dtype": dtype.torch_name(),
    });
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&config)
            .map_err(|e| crate::Error::file(&path, "json", e.to_string()))?,
    )
    .map_err(|e| crate::Error::io(&path, e))
}

/// Writes a small diffusers-style pipeline: `model_index.json`, a `text_encoder`, a
/// `transformer` sharded in two files with an index, a `vae`, and `tokenizer` /
/// `scheduler` folders without weights.
pub fn write_sample_pipeline(dir: &std::path::Path, dtype: DType) -> Result<()> {
    use crate::{Error, Part, PartLayout};
    let mut g = Gaussian::new(11);
    let mk = |g: &mut Gaussian, name: &str, shape: Vec<usize>, std: f32| -> Result<Part> {
        let n: usize = shape.iter().product();
        let t = HostTensor::from_f32(name, dtype, shape, &g.fill(n, std))?;
        Part::new(PartLayout::new(name, dtype, t.meta.shape.clone()), t.data)
    };
    let write = |path: std::path::PathBuf, parts: &[Part]| -> Result<()> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
        }
        crate::safetensors_io::write_safetensors(&path, parts, &Default::default())
    };
    let json = |path: std::path::PathBuf, v: serde_json::Value| -> Result<()> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
        }
        std::fs::write(&path, v.to_string()).map_err(|e| Error::io(&path, e))
    };
    json(
        dir.join("model_index.json"),
        serde_json::json!({
            "_class_name": "SamplePipeline",
            "text_encoder": ["transformers", "CLIPTextModel"],
            "transformer": ["diffusers", "SampleTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        }),
    )?;
    let te = vec![
        mk(
            &mut g,
            "text_model.embeddings.token_embedding.weight",
            vec![512, 128],
            0.02,
        )?,
        mk(
            &mut g,
            "text_model.encoder.layers.0.self_attn.q_proj.weight",
            vec![128, 128],
            0.05,
        )?,
        mk(
            &mut g,
            "text_model.encoder.layers.0.mlp.fc1.weight",
            vec![512, 128],
            0.05,
        )?,
        mk(
            &mut g,
            "text_model.encoder.layers.0.mlp.fc1.bias",
            vec![512],
            0.01,
        )?,
        mk(&mut g, "text_model.final_layer_norm.weight", vec![128], 0.1)?,
    ];
    write(dir.join("text_encoder/model.safetensors"), &te)?;
    json(
        dir.join("text_encoder/config.json"),
        serde_json::json!({"model_type": "clip_text_model", "hidden_size": 128}),
    )?;
    let shard1 = vec![
        mk(&mut g, "blocks.0.attn.to_q.weight", vec![256, 256], 0.03)?,
        mk(
            &mut g,
            "blocks.0.ff.net.0.proj.weight",
            vec![1024, 256],
            0.03,
        )?,
    ];
    let shard2 = vec![
        mk(&mut g, "blocks.1.attn.to_q.weight", vec![256, 256], 0.03)?,
        mk(&mut g, "blocks.1.ff.net.2.weight", vec![256, 1024], 0.03)?,
        mk(&mut g, "norm_out.linear.bias", vec![256], 0.01)?,
    ];
    let s1 = "diffusion_pytorch_model-00001-of-00002.safetensors";
    let s2 = "diffusion_pytorch_model-00002-of-00002.safetensors";
    write(dir.join("transformer").join(s1), &shard1)?;
    write(dir.join("transformer").join(s2), &shard2)?;
    let mut map = serde_json::Map::new();
    for p in &shard1 {
        map.insert(p.layout.key.clone(), s1.into());
    }
    for p in &shard2 {
        map.insert(p.layout.key.clone(), s2.into());
    }
    json(
        dir.join("transformer/diffusion_pytorch_model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}),
    )?;
    json(
        dir.join("transformer/config.json"),
        serde_json::json!({"_class_name": "SampleTransformer2DModel", "num_layers": 2}),
    )?;
    let vae = vec![
        mk(&mut g, "decoder.conv_in.weight", vec![64, 4, 3, 3], 0.1)?,
        mk(&mut g, "decoder.conv_in.bias", vec![64], 0.01)?,
    ];
    write(dir.join("vae/diffusion_pytorch_model.safetensors"), &vae)?;
    json(
        dir.join("vae/config.json"),
        serde_json::json!({"_class_name": "AutoencoderKL"}),
    )?;
    json(
        dir.join("tokenizer/tokenizer_config.json"),
        serde_json::json!({"model_max_length": 77}),
    )?;
    json(
        dir.join("scheduler/scheduler_config.json"),
        serde_json::json!({"_class_name": "FlowMatchEulerDiscreteScheduler"}),
    )?;
    Ok(())
}
