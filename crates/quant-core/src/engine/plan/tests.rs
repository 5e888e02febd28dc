//! Unit tests of the plan stage: mixtures, rules over mixtures, parameter sets, ladders.

use super::*;
use crate::dtype::encode_f32;
use crate::engine::configure::BYTES_PER_GB;
use crate::load::dequantize;
use crate::method::QuantizedTensor;
use crate::registry::MethodEntry;
use crate::rules::Rules;

/// Stores f32 tensors as they are (a stand-in method for the mixture tests).
struct Plain;

impl QuantMethod for Plain {
    fn name(&self) -> &str {
        "test_plain"
    }
    fn params(&self) -> Params {
        Params::new()
    }
    fn select(&self, _: &TensorMeta) -> Selection {
        Selection::Quantize
    }
    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        Ok(vec![PartLayout::new(&t.name, DType::F32, t.shape.clone())])
    }
    fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
        let record = crate::load::plain_record(t);
        let data = encode_f32(DType::F32, values)?;
        QuantizedTensor::from_layout(record, self.output_layout(t)?, vec![data])
    }
    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        dequantize(q)
    }
}

/// Mixes by name: `a*` → test_plain (a fallback for `a2`), `k*` → kept as f16,
/// `p*` → test_ladder_wide with `scale = 7`, others by default; output in reverse
/// order. `bad=1` gives one choice too few.
struct Mix(bool);

impl QuantMethod for Mix {
    fn name(&self) -> &str {
        "test_mix"
    }
    fn params(&self) -> Params {
        Params::new()
    }
    fn select(&self, _: &TensorMeta) -> Selection {
        Selection::Keep(None)
    }
    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        Ok(vec![PartLayout::new(&t.name, t.dtype, t.shape.clone())])
    }
    fn quantize(&self, _: &TensorMeta, _: &[f32]) -> Result<QuantizedTensor> {
        Err(Error::Unsupported {
            method: "test_mix".into(),
            op: "quantize".into(),
        })
    }
    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        dequantize(q)
    }
    fn mixture(&self, model: &ModelView<'_>) -> Result<Option<Mixture>> {
        assert_eq!(model.metadata.get("arch").map(String::as_str), Some("x"));
        let mut choices: Vec<TensorChoice> = model
            .tensors
            .iter()
            .map(|t| match t.name.as_bytes().first() {
                Some(b'a') => TensorChoice::Method {
                    name: "test_plain".into(),
                    params: Params::new(),
                    fallback: (t.name == "a2").then(|| "rows do not fit".to_string()),
                },
                Some(b'k') => TensorChoice::Keep(Some(DType::F16)),
                Some(b'p') => {
                    let mut params = Params::new();
                    params.insert("scale".into(), 7.into());
                    TensorChoice::Method {
                        name: "test_ladder_wide".into(),
                        params,
                        fallback: None,
                    }
                }
                _ => TensorChoice::Default,
            })
            .collect();
        if self.0 {
            choices.pop();
        }
        let order = (0..model.tensors.len()).rev().collect();
        Ok(Some(Mixture {
            choices,
            order: Some(order),
        }))
    }
}

crate::register_method!(MethodEntry {
    name: "test_plain",
    backend: "quant-core-tests",
    bits_per_weight: 32.0,
    summary: "f32 as stored (tests)",
    params: &[],
    create: |_| Ok(Box::new(Plain)),
});
crate::register_method!(MethodEntry {
    name: "test_mix",
    backend: "quant-core-tests",
    bits_per_weight: 32.0,
    summary: "a mixture (tests)",
    params: &[],
    create: |p| Ok(Box::new(Mix(p.contains_key("bad")))),
});

/// A ladder method of backend `quant-core-ladder-tests` that keeps its parameters:
/// `wide` (f32) takes `scale`, `tag` and `extra`; `narrow` (f16) takes `scale` and
/// `tag`, and refuses a `tag` other than "narrow".
struct Rung(&'static str, DType, Params);

impl QuantMethod for Rung {
    fn name(&self) -> &str {
        self.0
    }
    fn params(&self) -> Params {
        self.2.clone()
    }
    fn select(&self, _: &TensorMeta) -> Selection {
        Selection::Quantize
    }
    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        Ok(vec![PartLayout::new(&t.name, self.1, t.shape.clone())])
    }
    fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
        let record = crate::load::plain_record(t);
        let data = encode_f32(self.1, values)?;
        QuantizedTensor::from_layout(record, self.output_layout(t)?, vec![data])
    }
    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        dequantize(q)
    }
}

const fn spec(name: &'static str) -> crate::method::ParamSpec {
    crate::method::ParamSpec {
        name,
        default: "none",
        help: "test",
    }
}

const WIDE: &[crate::method::ParamSpec] = &[spec("scale"), spec("tag"), spec("extra")];
const NARROW: &[crate::method::ParamSpec] = &[spec("scale"), spec("tag")];

fn create_rung(
    name: &'static str,
    dtype: DType,
    specs: &[crate::method::ParamSpec],
    p: &Params,
) -> Result<Box<dyn QuantMethod>> {
    let known = || specs.iter().map(|s| s.describe()).collect();
    if let Some(k) = p.keys().find(|k| !specs.iter().any(|s| s.name == *k)) {
        return Err(Error::BadParam {
            method: name.into(),
            param: k.clone(),
            reason: "unknown parameter".into(),
            known: known(),
        });
    }
    if name == "test_ladder_narrow" && p.get("tag").is_some_and(|t| t != "narrow") {
        return Err(Error::BadParam {
            method: name.into(),
            param: "tag".into(),
            reason: "not this method's tag".into(),
            known: known(),
        });
    }
    Ok(Box::new(Rung(name, dtype, p.clone())))
}

crate::register_method!(MethodEntry {
    name: "test_ladder_wide",
    backend: "quant-core-ladder-tests",
    bits_per_weight: 32.0,
    summary: "f32, keeps its parameters (tests)",
    params: WIDE,
    create: |p| create_rung("test_ladder_wide", DType::F32, WIDE, p),
});
crate::register_method!(MethodEntry {
    name: "test_ladder_narrow",
    backend: "quant-core-ladder-tests",
    bits_per_weight: 16.0,
    summary: "f16, keeps its parameters (tests)",
    params: NARROW,
    create: |p| create_rung("test_ladder_narrow", DType::F16, NARROW, p),
});

/// The memory target's ladder: the other candidate gets the user's parameters it
/// declares (`scale`), not those it does not (`extra`, which it would refuse), and
/// not one it refuses by name (`tag`); before, it got none.
#[test]
fn ladder_candidates_get_the_user_params_they_declare() {
    let recs: Vec<(usize, TensorRecord)> = ["w1", "w2"]
        .iter()
        .map(|n| {
            let meta = TensorMeta::new(*n, DType::F32, vec![4, 8]);
            (0, crate::load::plain_record(&meta))
        })
        .collect();
    let q = ModelQuantizer::new("test_ladder_wide")
        .param("scale", 2.into())
        .param("tag", "wide".into())
        .param("extra", 1.into());
    // 2 tensors of 32 values: 256 bytes as f32, 128 as f16; 200 fits one of each.
    let plan = q
        .clone()
        .target_memory_gb(Some(200.0 / BYTES_PER_GB))
        .plan_model(&recs, &BTreeMap::new(), None)
        .unwrap();
    assert_eq!(plan.bytes_out(), 192);
    let narrow = plan.method("test_ladder_narrow").unwrap().params();
    assert_eq!(
        serde_json::Value::Object(narrow),
        serde_json::json!({"scale": 2})
    );
    let wide = plan.method("test_ladder_wide").unwrap().params();
    assert_eq!(wide.len(), 3, "{wide:?}");
    let methods: Vec<_> = plan.entries.iter().map(|e| e.method.as_deref()).collect();
    assert!(methods.contains(&Some("test_ladder_narrow")), "{methods:?}");
}

/// One method with two sets of parameters in one plan (a rule's, none; the
/// mixture's, `scale = 7`) is two instances, whichever tensor comes first: before,
/// the first instance created served both.
#[test]
fn one_method_with_two_parameter_sets_is_two_instances() {
    for names in [["p1", "r1"], ["r1", "p1"]] {
        let recs: Vec<(usize, TensorRecord)> = names
            .iter()
            .map(|n| {
                let meta = TensorMeta::new(*n, DType::F32, vec![4, 8]);
                (0, crate::load::plain_record(&meta))
            })
            .collect();
        let plan = ModelQuantizer::new("test_mix")
            .rules(Rules::from_pairs([("^r1$", "test_ladder_wide")]).unwrap())
            .plan_model(&recs, &meta(), None)
            .unwrap();
        let idx: Vec<usize> = (0..plan.entries.len()).collect();
        for (e, out) in plan.entries.iter().zip(plan.planned_outputs(&idx)) {
            assert_eq!(e.method.as_deref(), Some("test_ladder_wide"), "{names:?}");
            let want = if e.name == "p1" {
                serde_json::json!({"scale": 7})
            } else {
                serde_json::json!({})
            };
            assert_eq!(serde_json::Value::Object(out.params), want, "{}", e.name);
            let m = plan.instance(e).unwrap();
            assert_eq!(serde_json::Value::Object(m.params()), want, "{}", e.name);
        }
        let keys: Vec<_> = plan.entries.iter().map(|e| e.instance.clone()).collect();
        assert_ne!(keys[0], keys[1], "{names:?}");
    }
}

fn records() -> Vec<(usize, TensorRecord)> {
    ["a1", "k1", "z1", "a2"]
        .iter()
        .map(|n| {
            (
                0,
                crate::load::plain_record(&TensorMeta::new(*n, DType::F32, vec![2, 4])),
            )
        })
        .collect()
}

fn meta() -> BTreeMap<String, String> {
    BTreeMap::from([("arch".to_string(), "x".to_string())])
}

#[test]
fn mixture_chooses_methods_keeps_and_order() {
    let plan = ModelQuantizer::new("test_mix")
        .plan_model(&records(), &meta(), None)
        .unwrap();
    let got: Vec<(&str, Action, Option<&str>, bool)> = plan
        .entries
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.action,
                e.method.as_deref(),
                e.is_fallback,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a2", Action::Quantize, Some("test_plain"), true),
            ("z1", Action::Keep, None, false),
            ("k1", Action::Cast, None, false),
            ("a1", Action::Quantize, Some("test_plain"), false),
        ]
    );
    assert_eq!(plan.entries[2].layout[0].dtype, DType::F16);
    assert_eq!(plan.fallbacks(), 1);
}

#[test]
fn rules_win_over_the_mixture_and_strict_refuses_its_fallbacks() {
    let q =
        ModelQuantizer::new("test_mix").rules(Rules::from_pairs([("^a1$", "float16")]).unwrap());
    let plan = q.plan_model(&records(), &meta(), None).unwrap();
    let a1 = plan.entries.iter().find(|e| e.name == "a1").unwrap();
    assert_eq!((a1.action, a1.method.as_deref()), (Action::Cast, None));
    let err = ModelQuantizer::new("test_mix")
        .strict(true)
        .plan_model(&records(), &meta(), None)
        .unwrap_err();
    assert!(matches!(err, Error::StrictFallback { ref tensor, .. } if tensor == "a2"));
}

#[test]
fn a_mixture_that_does_not_fit_the_model_is_an_error() {
    let err = ModelQuantizer::new("test_mix")
        .param("bad", serde_json::Value::Bool(true))
        .plan_model(&records(), &meta(), None)
        .unwrap_err();
    assert!(err.to_string().contains("3 choices for 4 tensors"), "{err}");
}
