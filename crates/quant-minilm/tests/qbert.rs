//! The QMatMul BERT used for GGUF files computes what candle-transformers' `BertModel`
//! computes: on a small random BERT, equal with f32 weights, close with Q8_0 blocks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use quant_minilm::qbert::MatmulPath;
use quant_minilm::{cosine, QBert};

fn config() -> Config {
    Config {
        vocab_size: 50,
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 128,
        max_position_embeddings: 16,
        ..Config::default()
    }
}

fn random_weights(c: &Config) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let mut t = HashMap::new();
    let mut put = |name: String, shape: &[usize], std: f64, mean: f64| {
        let x = Tensor::randn(0f32, 1f32, shape, &dev)
            .unwrap()
            .affine(std, mean)
            .unwrap();
        t.insert(name, x);
    };
    let (h, i) = (c.hidden_size, c.intermediate_size);
    put(
        "embeddings.word_embeddings.weight".into(),
        &[c.vocab_size, h],
        0.5,
        0.0,
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        &[c.max_position_embeddings, h],
        0.1,
        0.0,
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        &[c.type_vocab_size, h],
        0.1,
        0.0,
    );
    let mut norm = |p: String| {
        put(format!("{p}.weight"), &[h], 0.05, 1.0);
        put(format!("{p}.bias"), &[h], 0.05, 0.0);
    };
    norm("embeddings.LayerNorm".into());
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
            norm(format!("{p}.{n}"));
        }
    }
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (n, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            put(format!("{p}.{n}.weight"), &[out, inp], 0.1, 0.0);
            put(format!("{p}.{n}.bias"), &[out], 0.02, 0.0);
        }
    }
    t
}

fn qweights(t: &HashMap<String, Tensor>, linear: GgmlDType) -> HashMap<String, Arc<QTensor>> {
    t.iter()
        .map(|(name, x)| {
            let ty = if name.ends_with("dense.weight")
                || name.ends_with("query.weight")
                || name.ends_with("key.weight")
                || name.ends_with("value.weight")
            {
                linear
            } else {
                GgmlDType::F32
            };
            (name.clone(), Arc::new(QTensor::quantize(x, ty).unwrap()))
        })
        .collect()
}

fn inputs() -> (Tensor, Tensor, Tensor) {
    let dev = Device::Cpu;
    let ids = Tensor::new(&[[1u32, 7, 3, 42, 9, 2, 0, 0]], &dev).unwrap();
    let types = ids.zeros_like().unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1, 0, 0]], &dev).unwrap();
    (ids, types, mask)
}

#[test]
fn qbert_equals_candle_bert_with_f32_weights_and_stays_close_with_q8_0() {
    let c = config();
    let w = random_weights(&c);
    let (ids, types, mask) = inputs();
    let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu);
    let dense = BertModel::load(vb, &c)
        .unwrap()
        .forward(&ids, &types, Some(&mask))
        .unwrap();
    let dense: Vec<f32> = dense.flatten_all().unwrap().to_vec1().unwrap();

    let f32_model = QBert::load(&qweights(&w, GgmlDType::F32), &c, &Device::Cpu).unwrap();
    let got = f32_model.forward(&ids, &types, &mask).unwrap();
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let max_diff = dense
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff < 1e-4,
        "f32 QBert differs from BertModel by {max_diff}"
    );

    let q8 = QBert::load(&qweights(&w, GgmlDType::Q8_0), &c, &Device::Cpu).unwrap();
    assert!(q8
        .linear_types()
        .iter()
        .all(|t| *t == (GgmlDType::Q8_0, MatmulPath::Packed)));
    let got = q8.forward(&ids, &types, &mask).unwrap();
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let cos = cosine(&dense, &got);
    assert!(cos > 0.999, "Q8_0 QBert cosine {cos}");
}
