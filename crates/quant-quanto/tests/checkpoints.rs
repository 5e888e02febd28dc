//! Acceptance: quantizing the original tiny UNet with our methods gives the folders that
//! diffusers (`QuantoConfig`) and optimum-quanto (`QuantizedDiffusersModel`) saved, tensor
//! for tensor, with an equivalent quantization map / `quantization_config`; and the layout
//! detector restores every weight of those library-written folders.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use quant_core::format::{layouts, ForeignFile};
use quant_core::safetensors_io::SafetensorsFile;
use quant_core::{PlannedTensor, QuantMethod, Selection, TensorMeta, TensorSource};

const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

struct Case {
    folder: &'static str,
    method: &'static str,
    qtype: &'static str,
    params: Vec<(&'static str, serde_json::Value)>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            folder: "unet_diffusers_quanto_int8",
            method: "quanto_config_int8",
            qtype: "qint8",
            params: vec![],
        },
        Case {
            folder: "unet_diffusers_quanto_int4",
            method: "quanto_config_int4",
            qtype: "qint4",
            params: vec![],
        },
        Case {
            folder: "unet_diffusers_quanto_float8",
            method: "quanto_config_float8",
            qtype: "qfloat8_e4m3fn",
            params: vec![],
        },
        Case {
            folder: "unet_oq_qint4",
            method: "quanto_config_int4",
            qtype: "qint4",
            params: vec![("layout", "optimum".into())],
        },
    ]
}

/// Quantizes every tensor of the original as the engine would; returns key → (dtype,
/// shape, bytes) of the output file, the planned tensors and our dequantized weights.
#[allow(clippy::type_complexity)]
fn quantize_original(
    m: &dyn QuantMethod,
) -> (
    BTreeMap<String, quant_core::Part>,
    Vec<PlannedTensor>,
    BTreeMap<String, Vec<f32>>,
) {
    let original =
        SafetensorsFile::open(data("checkpoints/originals/unet_tiny_f16").join(WEIGHTS)).unwrap();
    let mut out = BTreeMap::new();
    let mut planned = Vec::new();
    let mut deq = BTreeMap::new();
    for t in original.tensors() {
        let meta = t.meta().clone();
        match m.select(&meta) {
            Selection::Keep(None) => {
                let p = original.part(&meta.name).unwrap();
                assert!(out.insert(meta.name.clone(), p).is_none());
            }
            Selection::Quantize => {
                let layout = m.output_layout(&meta).unwrap();
                let q = m.quantize(&meta, &t.to_f32().unwrap()).unwrap();
                deq.insert(meta.name.clone(), m.dequantize(&q).unwrap());
                for p in q.parts {
                    assert!(
                        out.insert(p.layout.key.clone(), p).is_none(),
                        "duplicate key"
                    );
                }
                planned.push(PlannedTensor {
                    meta,
                    layout,
                    method: Some(m.name().to_string()),
                });
            }
            other => panic!("unexpected selection {other:?} for {}", meta.name),
        }
    }
    (out, planned, deq)
}

#[test]
fn quantizing_the_original_reproduces_every_library_checkpoint() {
    let manifest = json("checkpoints/manifest.json");
    for case in cases() {
        assert_eq!(
            manifest["quanto"][case.folder]["original"].as_str(),
            Some("originals/unet_tiny_f16")
        );
        let m = method(case.method, &case.params);
        let (ours, planned, _) = quantize_original(m.as_ref());
        let dir = data("checkpoints/quanto").join(case.folder);
        let saved = SafetensorsFile::open(dir.join(WEIGHTS)).unwrap();

        let saved_keys: BTreeSet<String> = saved.metas().map(|t| t.name.clone()).collect();
        let our_keys: BTreeSet<String> = ours.keys().cloned().collect();
        assert_eq!(our_keys, saved_keys, "{}: tensor sets differ", case.folder);
        for (key, p) in &ours {
            let want = saved.part(key).unwrap();
            assert_eq!(p.layout, want.layout, "{} {key}", case.folder);
            assert!(
                p.data == want.data,
                "{}: bytes of {key} differ",
                case.folder
            );
        }

        // quantization_config / quantization map.
        let art = m.artifacts(&planned).unwrap();
        let config = json(&format!("checkpoints/quanto/{}/config.json", case.folder));
        assert_eq!(
            art.quantization_config.as_ref(),
            config.get("quantization_config"),
            "{}",
            case.folder
        );
        let (name, bytes) = art.files.first().unwrap();
        assert_eq!(name, quant_quanto::QMAP_FILE);
        let our_map = quant_quanto::parse_qmap(bytes).unwrap();
        let qmap_path = dir.join(quant_quanto::QMAP_FILE);
        if qmap_path.exists() {
            let theirs = quant_quanto::parse_qmap(&std::fs::read(&qmap_path).unwrap()).unwrap();
            assert_eq!(our_map, theirs, "{}: quantization maps differ", case.folder);
            // Same text as Python's json.dump(indent=4) up to key order.
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(text.contains("\n    \"conv_in\": {\n        \"weights\": \"qint4\",\n"));
        } else {
            // diffusers writes no map; ours names exactly the modules holding scales, with
            // the qtype diffusers' weights_dtype stands for.
            let modules: BTreeMap<String, (String, String)> = saved
                .metas()
                .filter_map(|t| t.name.strip_suffix(".weight._scale"))
                .map(|mname| {
                    (
                        mname.to_string(),
                        (case.qtype.to_string(), "none".to_string()),
                    )
                })
                .collect();
            assert_eq!(our_map, modules, "{}", case.folder);
        }
    }
}

#[test]
fn detector_restores_every_library_checkpoint() {
    for case in cases() {
        let m = method(case.method, &case.params);
        let (_, planned, ours) = quantize_original(m.as_ref());
        let dir = data("checkpoints/quanto").join(case.folder);
        let saved = SafetensorsFile::open(dir.join(WEIGHTS)).unwrap();
        let config = json(&format!("checkpoints/quanto/{}/config.json", case.folder));
        let metas: Vec<TensorMeta> = saved.metas().cloned().collect();
        let file = ForeignFile {
            path: &dir.join(WEIGHTS),
            tensors: &metas,
            metadata: saved.metadata(),
            config: Some(&config),
        };
        let records: Vec<_> = layouts()
            .filter(|l| l.backend == quant_quanto::BACKEND)
            .flat_map(|l| (l.detect)(&file).unwrap())
            .collect();
        assert_eq!(records.len(), planned.len(), "{}", case.folder);
        for rec in &records {
            let p = planned
                .iter()
                .find(|p| p.meta.name == rec.name)
                .unwrap_or_else(|| panic!("{}: unexpected record {}", case.folder, rec.name));
            assert_eq!(rec.method.as_deref(), Some(case.method));
            assert_eq!(rec.dtype, p.meta.dtype);
            // A grouped Conv2d comes back flattened to [out, in*kh*kw] (documented).
            if rec.shape != p.meta.shape {
                assert_eq!(p.meta.shape.len(), 4, "{}", rec.name);
                assert_eq!(rec.shape[0], p.meta.shape[0]);
                assert_eq!(rec.shape[1], p.meta.shape[1..].iter().product::<usize>());
            }
            let restored = quant_core::Registry::global()
                .unwrap()
                .create(rec.method.as_deref().unwrap(), &rec.params)
                .unwrap();
            let got = restored.dequantize(&load(&saved, rec)).unwrap();
            assert_eq!(
                bits(&got),
                bits(&ours[&rec.name]),
                "{} {}",
                case.folder,
                rec.name
            );
        }
    }
}
