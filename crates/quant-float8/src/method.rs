//! The [`TorchAo`] method: one scheme, its selection rules, layout, quantize and dequantize.

use quant_core::dtype::{decode_to_f32, encode_f32};
use quant_core::{
    parse_params, DType, Error, ParamSpec, Params, Part, PartLayout, PlannedTensor, QuantMethod,
    QuantizedTensor, Result, Selection, TensorMeta, TensorRecord,
};
use rayon::prelude::*;
use serde::Deserialize;

use crate::fp8::Fp8;
use crate::kernels::{self, with_wd, Wd, EPS_F32};
use crate::layout;

/// Which tensors get a float8 scale of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole weight (`PerTensor()`).
    PerTensor,
    /// One scale per output row (`PerRow()`).
    PerRow,
}

/// The numerics and storage of one method (crate docs give the formulas).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Weight-only float8 per row (`float8wo*`).
    Float8Wo(Fp8),
    /// e4m3fn weight for dynamic float8 activations (`float8dq*`, `float8_e4m3_*`).
    Float8Dq(Granularity),
    /// Weight-only int8 per row, symmetric, /127.5.
    Int8Wo,
    /// int8dq: the int8wo weight for dynamic int8 activations.
    Int8Dq,
    /// fbgemm int4 (torchao `Int4Tensor`), asymmetric min/max groups, packed.
    Int4Wo,
    /// int4 weight in int8 storage, symmetric groups, /7.5, eps finfo(wd).eps.
    Int4Dq,
    /// uintN weight-only, asymmetric groups with an integer zero point (N in 1..=7).
    UintWo(u8),
}

impl Scheme {
    /// The float8 format of float8 schemes (float8dq is always e4m3fn).
    pub const fn fp8(self) -> Option<Fp8> {
        match self {
            Scheme::Float8Wo(f) => Some(f),
            Scheme::Float8Dq(_) => Some(Fp8::E4M3Fn),
            _ => None,
        }
    }

    /// The default group size of grouped schemes (torchao's for the diffusers strings).
    pub const fn default_group(self) -> Option<usize> {
        match self {
            Scheme::Int4Wo => Some(128),
            Scheme::Int4Dq => Some(32),
            Scheme::UintWo(_) => Some(64),
            _ => None,
        }
    }
}

/// The 18 method names and their schemes.
pub const METHODS: [(&str, Scheme); 18] = [
    ("torch_ao_config_int4wo", Scheme::Int4Wo),
    ("torch_ao_config_int4dq", Scheme::Int4Dq),
    ("torch_ao_config_int8wo", Scheme::Int8Wo),
    ("torch_ao_config_int8dq", Scheme::Int8Dq),
    ("torch_ao_config_float8wo", Scheme::Float8Wo(Fp8::E5M2)),
    ("torch_ao_config_float8wo_e5m2", Scheme::Float8Wo(Fp8::E5M2)),
    (
        "torch_ao_config_float8wo_e4m3",
        Scheme::Float8Wo(Fp8::E4M3Fn),
    ),
    (
        "torch_ao_config_float8dq",
        Scheme::Float8Dq(Granularity::PerTensor),
    ),
    (
        "torch_ao_config_float8dq_e4m3",
        Scheme::Float8Dq(Granularity::PerTensor),
    ),
    (
        "torch_ao_config_float8_e4m3_tensor",
        Scheme::Float8Dq(Granularity::PerTensor),
    ),
    (
        "torch_ao_config_float8_e4m3_row",
        Scheme::Float8Dq(Granularity::PerRow),
    ),
    ("torch_ao_config_uint1wo", Scheme::UintWo(1)),
    ("torch_ao_config_uint2wo", Scheme::UintWo(2)),
    ("torch_ao_config_uint3wo", Scheme::UintWo(3)),
    ("torch_ao_config_uint4wo", Scheme::UintWo(4)),
    ("torch_ao_config_uint5wo", Scheme::UintWo(5)),
    ("torch_ao_config_uint6wo", Scheme::UintWo(6)),
    ("torch_ao_config_uint7wo", Scheme::UintWo(7)),
];

/// The `group_size` parameter of the grouped methods.
pub const GROUP_PARAMS: &[ParamSpec] = &[ParamSpec {
    name: "group_size",
    default: "method default (int4wo 128, int4dq 32, uintNwo 64)",
    help: "elements per group along in_features: a power of two from 8 to 1024 (torchao's group_size kwarg)",
}];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupParams {
    group_size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// One TorchAO method: a registered name, its scheme and group size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchAo {
    name: &'static str,
    scheme: Scheme,
    group: Option<usize>,
}

/// The per-tensor fallback used where torchao raises.
pub const FALLBACK_METHOD: &str = "basic_int8";

impl TorchAo {
    /// Creates the method `name` (one of [`METHODS`]) from parameters.
    pub fn new(name: &str, params: &Params) -> Result<TorchAo> {
        let Some(&(name, scheme)) = METHODS.iter().find(|(n, _)| *n == name) else {
            return Err(Error::Unsupported {
                method: name.to_string(),
                op: "creation (not a torchao method)".into(),
            });
        };
        let group = match scheme.default_group() {
            None => {
                parse_params::<NoParams>(name, &[], params)?;
                None
            }
            Some(default) => {
                let p = parse_params::<GroupParams>(name, GROUP_PARAMS, params)?;
                let g = match p.group_size {
                    None => default,
                    Some(g) => usize::try_from(g)
                        .ok()
                        .filter(|g| g.is_power_of_two() && (8..=1024).contains(g))
                        .ok_or_else(|| Error::BadParam {
                            method: name.to_string(),
                            param: "group_size".into(),
                            reason: format!("{g} is not a power of two from 8 to 1024"),
                            known: GROUP_PARAMS.iter().map(ParamSpec::describe).collect(),
                        })?,
                };
                Some(g)
            }
        };
        Ok(TorchAo {
            name,
            scheme,
            group,
        })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The group size of grouped schemes.
    pub fn group_size(&self) -> Option<usize> {
        self.group
    }

    /// `[N, K]` of a 2-D tensor with a weight dtype this method computes in.
    fn dims(&self, t: &TensorMeta) -> Result<(usize, usize)> {
        let [n, k] = t.shape[..] else {
            return Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected: format!("a 2-D [out_features, in_features] weight for {}", self.name),
                got: t.shape.clone(),
            });
        };
        if !matches!(t.dtype, DType::BF16 | DType::F16 | DType::F32) {
            return Err(Error::UnsupportedDType {
                tensor: t.name.clone(),
                dtype: t.dtype.to_string(),
                op: format!("{} (bf16, f16 or f32 weights)", self.name),
            });
        }
        if let Some(g) = self.group {
            if k % g != 0 {
                return Err(Error::ShapeMismatch {
                    tensor: t.name.clone(),
                    expected: format!("in_features a multiple of group_size {g} for {}", self.name),
                    got: t.shape.clone(),
                });
            }
        }
        if self.scheme == Scheme::Float8Dq(Granularity::PerRow) && t.dtype != DType::BF16 {
            return Err(Error::UnsupportedDType {
                tensor: t.name.clone(),
                dtype: t.dtype.to_string(),
                op: format!(
                    "{} (torchao's PerRow float8 asserts bf16 weights)",
                    self.name
                ),
            });
        }
        Ok((n, k))
    }

    fn record(&self, t: &TensorMeta, layout: &[PartLayout]) -> TensorRecord {
        TensorRecord {
            name: t.name.clone(),
            method: Some(self.name.to_string()),
            dtype: t.dtype,
            shape: t.shape.clone(),
            dequant_dtype: t.dtype,
            params: self.params(),
            parts: layout.iter().map(|l| l.key.clone()).collect(),
            fallback: None,
        }
    }

    fn quantize_as<W: Wd>(&self, k: usize, values: &[f32]) -> Result<Vec<Vec<u8>>> {
        let n_el = values.len();
        Ok(match self.scheme {
            Scheme::Float8Wo(_) | Scheme::Float8Dq(_) => {
                let fmt = self.scheme.fp8().unwrap_or(Fp8::E4M3Fn);
                let mut codes = vec![0u8; n_el];
                let scales = if self.scheme == Scheme::Float8Dq(Granularity::PerTensor) {
                    vec![kernels::fp8_tensor::<W>(values, fmt, &mut codes)]
                } else {
                    let mut s = vec![0f32; n_el / k];
                    kernels::fp8_rows::<W>(values, k, fmt, &mut codes, &mut s);
                    s
                };
                vec![codes, f32_bytes(&scales)]
            }
            Scheme::Int8Wo | Scheme::Int8Dq => {
                let mut codes = vec![0u8; n_el];
                let mut scales = vec![0f32; n_el / k];
                kernels::sym_groups::<W>(
                    values,
                    k,
                    k,
                    127.5,
                    EPS_F32,
                    -128.0,
                    127.0,
                    &mut codes,
                    &mut scales,
                );
                let zeros = vec![0u8; scales.len()];
                vec![codes, f32_bytes(&scales), zeros]
            }
            Scheme::Int4Dq => {
                let g = self.group_or_row(k);
                let mut codes = vec![0u8; n_el];
                let mut scales = vec![0f32; n_el / g];
                kernels::sym_groups::<W>(
                    values,
                    k,
                    g,
                    7.5,
                    W::EPS,
                    -8.0,
                    7.0,
                    &mut codes,
                    &mut scales,
                );
                let zeros = vec![0u8; scales.len()];
                vec![codes, encode_f32(W::DTYPE, &scales)?, zeros]
            }
            Scheme::UintWo(bits) => {
                let g = self.group_or_row(k);
                let qmax = ((1u32 << bits) - 1) as f32;
                let shift = 1i32 << (bits - 1);
                let mut codes = vec![0u8; n_el];
                let mut scales = vec![0f32; n_el / g];
                let mut zps = vec![0i32; n_el / g];
                kernels::asym_groups::<W>(values, k, g, qmax, &mut codes, &mut scales, &mut zps);
                // IntxUnpackedToInt8Tensor holds intN: both codes and zero points shift
                // down by 2^(N-1), which leaves q - zp unchanged.
                // In place and in parallel: the low byte of q - shift.
                let down = shift as u8;
                codes.par_chunks_mut(1 << 16).for_each(|c| {
                    c.iter_mut().for_each(|q| *q = q.wrapping_sub(down));
                });
                let zps: Vec<u8> = zps.iter().map(|&z| (z - shift) as i8 as u8).collect();
                vec![codes, encode_f32(W::DTYPE, &scales)?, zps]
            }
            Scheme::Int4Wo => {
                let g = self.group_or_row(k);
                let n = n_el / k;
                let per_row = k / g;
                let mut codes = vec![0i8; n_el];
                let mut scales = vec![0f32; n_el / g];
                let mut zeros = vec![0f32; n_el / g];
                kernels::int4wo_groups(values, k, g, &mut codes, &mut scales, &mut zeros);
                // Stored group-major ([K/g, N]) in the weight dtype.
                let transpose = |v: &[f32]| -> Vec<f32> {
                    let mut t = vec![0f32; v.len()];
                    for (r, row) in v.chunks(per_row).enumerate() {
                        for (gi, &x) in row.iter().enumerate() {
                            if let Some(slot) = t.get_mut(gi * n + r) {
                                *slot = x;
                            }
                        }
                    }
                    t
                };
                vec![
                    kernels::pack_int4(&codes),
                    encode_f32(W::DTYPE, &transpose(&scales))?,
                    encode_f32(W::DTYPE, &transpose(&zeros))?,
                ]
            }
        })
    }

    fn group_or_row(&self, k: usize) -> usize {
        self.group.unwrap_or(k).max(1)
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl QuantMethod for TorchAo {
    fn name(&self) -> &str {
        self.name
    }

    fn params(&self) -> Params {
        let mut p = Params::new();
        if let Some(g) = self.group {
            p.insert("group_size".into(), serde_json::Value::from(g));
        }
        p
    }

    fn select(&self, t: &TensorMeta) -> Selection {
        let [n, k] = t.shape[..] else {
            return Selection::Keep(None);
        };
        if !t.name.ends_with("weight")
            || t.is_embedding_weight()
            || !matches!(t.dtype, DType::BF16 | DType::F16 | DType::F32)
            || n == 0
            || k == 0
        {
            return Selection::Keep(None);
        }
        let g = self.group.unwrap_or(k);
        match self.scheme {
            // torchao returns these weights unquantized.
            Scheme::Int4Wo | Scheme::Int4Dq if k % g != 0 => Selection::Keep(None),
            Scheme::Int8Dq if k <= 16 => Selection::Keep(None),
            Scheme::Float8Dq(_) if n % 16 != 0 || k % 16 != 0 => Selection::Keep(None),
            // torchao raises for these.
            Scheme::Float8Dq(Granularity::PerRow) if t.dtype != DType::BF16 => {
                Selection::Fallback {
                    method: FALLBACK_METHOD.into(),
                    reason: format!(
                        "{}: torchao's PerRow float8 asserts bf16 weights, this one is {}",
                        self.name, t.dtype
                    ),
                }
            }
            Scheme::UintWo(_) if k % g != 0 || k % 8 != 0 => Selection::Fallback {
                method: FALLBACK_METHOD.into(),
                reason: format!(
                    "{}: torchao raises for in_features {k} (needs a multiple of group_size {g} and of 8)",
                    self.name
                ),
            },
            _ => Selection::Quantize,
        }
    }

    fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
        let (n, k) = self.dims(t)?;
        let key = |d: &str| layout::data_key(&t.name, d);
        Ok(match self.scheme {
            Scheme::Float8Wo(_) | Scheme::Float8Dq(_) => {
                let fmt = self.scheme.fp8().unwrap_or(Fp8::E4M3Fn);
                let rows = if self.scheme == Scheme::Float8Dq(Granularity::PerTensor) {
                    1
                } else {
                    n
                };
                vec![
                    PartLayout::new(key("qdata"), fmt.dtype(), vec![n, k]),
                    PartLayout::new(key("scale"), DType::F32, vec![rows, 1]),
                ]
            }
            Scheme::Int8Wo | Scheme::Int8Dq => vec![
                PartLayout::new(key("qdata"), DType::I8, vec![n, k]),
                PartLayout::new(key("scale"), DType::F32, vec![n, 1]),
                PartLayout::new(key("zero_point"), DType::I8, vec![n, 1]),
            ],
            Scheme::Int4Wo => {
                let g = self.group_or_row(k);
                vec![
                    PartLayout::new(key("qdata"), DType::I8, vec![n, k / 2]),
                    PartLayout::new(key("scale"), t.dtype, vec![k / g, n]),
                    PartLayout::new(key("zero_point"), t.dtype, vec![k / g, n]),
                ]
            }
            Scheme::Int4Dq | Scheme::UintWo(_) => {
                let g = self.group_or_row(k);
                vec![
                    PartLayout::new(key("qdata"), DType::I8, vec![n, k]),
                    PartLayout::new(key("scale"), t.dtype, vec![n, k / g]),
                    PartLayout::new(key("zero_point"), DType::I8, vec![n, k / g]),
                ]
            }
        })
    }

    fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
        let (n, k) = self.dims(t)?;
        if n.checked_mul(k) != Some(values.len()) {
            return Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected: format!("{n}x{k} values"),
                got: vec![values.len()],
            });
        }
        let layout = self.output_layout(t)?;
        let record = self.record(t, &layout);
        let data = with_wd!(t.dtype, W => self.quantize_as::<W>(k, values))?;
        QuantizedTensor::from_layout(record, layout, data)
    }

    fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
        let rec = &q.record;
        let name = &rec.name;
        let layouts: Vec<PartLayout> = q.parts.iter().map(|p| p.layout.clone()).collect();
        let geo = check_layout(self, rec, &layouts).map_err(|r| Error::tensor("", name, r))?;
        let bad = |reason: String| Error::tensor("", name, reason);
        let qdata = q.part(&layout::data_key(name, "qdata"))?;
        let scales = decode_float(q.part(&layout::data_key(name, "scale"))?).map_err(bad)?;
        let zero = q.part(&layout::data_key(name, "zero_point")).ok();
        let out = rec.dequant_dtype;
        let (n, k) = (geo.n, geo.k);
        Ok(match geo.kind {
            GeoKind::Fp8 { fmt, per_row } => {
                with_wd!(out, W => dequant_fp8::<W>(&qdata.data, &scales, fmt, k, per_row))
            }
            GeoKind::Int4 { group } => {
                let zero = zero.ok_or_else(|| bad("missing part zero_point".into()))?;
                let zeros = decode_float(zero).map_err(bad)?;
                with_wd!(out, W => dequant_int4::<W>(&qdata.data, &scales, &zeros, n, k, group))
            }
            GeoKind::Affine { group } => {
                let zps = match zero {
                    Some(z) => {
                        let mut v = Vec::new();
                        decode_to_f32(z.layout.dtype, &z.data, &mut v)?;
                        Some(v)
                    }
                    None => None,
                };
                with_wd!(out, W => dequant_affine::<W>(&qdata.data, &scales, zps.as_deref(), k, group))
            }
        })
    }

    fn artifacts(&self, planned: &[PlannedTensor]) -> Result<quant_core::Artifacts> {
        layout::artifacts(self, planned)
    }
}

/// The geometry of stored parts, once checked.
pub(crate) struct Geometry {
    n: usize,
    k: usize,
    kind: GeoKind,
}

pub(crate) enum GeoKind {
    Fp8 { fmt: Fp8, per_row: bool },
    Int4 { group: usize },
    Affine { group: usize },
}

fn find<'a>(
    parts: &'a [PartLayout],
    name: &str,
    data: &str,
) -> std::result::Result<&'a PartLayout, String> {
    let key = layout::data_key(name, data);
    parts
        .iter()
        .find(|p| p.key == key)
        .ok_or_else(|| format!("missing part '{key}'"))
}

fn want_shape(l: &PartLayout, want: &[usize]) -> std::result::Result<(), String> {
    if l.shape == want {
        Ok(())
    } else {
        Err(format!(
            "part {} has shape {:?}, expected {want:?}",
            l.key, l.shape
        ))
    }
}

fn want_float(l: &PartLayout) -> std::result::Result<(), String> {
    if l.dtype.is_float() {
        Ok(())
    } else {
        Err(format!(
            "part {} has dtype {}, expected a float dtype",
            l.key, l.dtype
        ))
    }
}

fn check_group(m: &TorchAo, group: usize) -> std::result::Result<(), String> {
    match m.group {
        Some(g) if g != group => Err(format!(
            "the stored scale gives groups of {group} elements, the method's group_size is {g}"
        )),
        _ => Ok(()),
    }
}

/// Checks the parts of a stored tensor against its record (dtypes, shapes, group sizes)
/// before any byte is read, so that a malformed file fails with a reason.
pub(crate) fn check_layout(
    m: &TorchAo,
    rec: &TensorRecord,
    parts: &[PartLayout],
) -> std::result::Result<Geometry, String> {
    let [n, k] = rec.shape[..] else {
        return Err(format!("weight shape {:?} is not 2-D", rec.shape));
    };
    if n == 0 || k == 0 {
        return Err(format!("weight shape {:?} is empty", rec.shape));
    }
    let name = &rec.name;
    let qdata = find(parts, name, "qdata")?;
    let scale = find(parts, name, "scale")?;
    want_float(scale)?;
    let zero = find(parts, name, "zero_point").ok();
    let kind = match m.scheme {
        Scheme::Float8Wo(_) | Scheme::Float8Dq(_) => {
            let fmt = Fp8::from_dtype(qdata.dtype).ok_or_else(|| {
                format!(
                    "float8 qdata has dtype {}, expected F8_E4M3 or F8_E5M2",
                    qdata.dtype
                )
            })?;
            want_shape(qdata, &[n, k])?;
            let per_row = match scale.shape[..] {
                [1, 1] | [1] | [] => false,
                [r, 1] | [r] if r == n => true,
                _ => {
                    return Err(format!(
                        "float8 scale shape {:?} is neither [1, 1] nor [{n}, 1]",
                        scale.shape
                    ))
                }
            };
            GeoKind::Fp8 { fmt, per_row }
        }
        Scheme::Int4Wo => {
            if qdata.dtype != DType::I8 || k % 2 != 0 {
                return Err(format!(
                    "int4 qdata {} {:?} for weight [{n}, {k}]",
                    qdata.dtype, qdata.shape
                ));
            }
            want_shape(qdata, &[n, k / 2])?;
            let groups = match scale.shape[..] {
                [g, c] if c == n && g > 0 && k % g == 0 && (k / g) % 2 == 0 => g,
                _ => {
                    return Err(format!(
                        "int4 scale shape {:?} is not [K/group, {n}] for weight [{n}, {k}]",
                        scale.shape
                    ))
                }
            };
            let zero = zero.ok_or("missing part zero_point")?;
            want_float(zero)?;
            want_shape(zero, &scale.shape)?;
            check_group(m, k / groups)?;
            GeoKind::Int4 { group: k / groups }
        }
        Scheme::Int8Wo | Scheme::Int8Dq | Scheme::Int4Dq | Scheme::UintWo(_) => {
            if qdata.dtype != DType::I8 {
                return Err(format!("qdata has dtype {}, expected I8", qdata.dtype));
            }
            want_shape(qdata, &[n, k])?;
            let groups = match scale.shape[..] {
                [r, g] if r == n && g > 0 && k % g == 0 => g,
                [r] if r == n => 1,
                _ => {
                    return Err(format!(
                        "scale shape {:?} does not fit weight [{n}, {k}]",
                        scale.shape
                    ))
                }
            };
            match zero {
                Some(z) => {
                    if z.shape.iter().product::<usize>() != n * groups {
                        return Err(format!(
                            "zero_point shape {:?} does not match scale shape {:?}",
                            z.shape, scale.shape
                        ));
                    }
                    if z.dtype.size() > 4 && z.dtype != DType::I64 {
                        return Err(format!("zero_point has dtype {}", z.dtype));
                    }
                }
                None if matches!(m.scheme, Scheme::Int8Wo | Scheme::Int8Dq) => {}
                None => return Err("missing part zero_point".into()),
            }
            check_group(m, k / groups)?;
            GeoKind::Affine { group: k / groups }
        }
    };
    Ok(Geometry { n, k, kind })
}

fn decode_float(p: &Part) -> std::result::Result<Vec<f32>, String> {
    if !p.layout.dtype.is_float() {
        return Err(format!(
            "part {} has dtype {}, expected a float dtype",
            p.layout.key, p.layout.dtype
        ));
    }
    let mut v = Vec::new();
    decode_to_f32(p.layout.dtype, &p.data, &mut v).map_err(|e| e.to_string())?;
    Ok(v)
}

/// A `Vec` of `n` values whose rows `fill` writes: without zeroing it first when
/// `complete` (the sizes guarantee that every value is written), else zeroed first.
fn rows_out(
    n: usize,
    complete: bool,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]),
) -> Vec<f32> {
    if complete {
        // SAFETY: the callers pass `complete` only when their kernels write all `n` values
        // (whole rows of codes for every output row).
        unsafe { quant_core::simd::vec_written(n, fill) }
    } else {
        let mut out = vec![0f32; n];
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; the kernels only write values.
        fill(unsafe {
            &mut *(out.as_mut_slice() as *mut [f32] as *mut [std::mem::MaybeUninit<f32>])
        });
        out
    }
}

/// `wd(f32(q) * scale)`, per row or per tensor.
fn dequant_fp8<W: Wd>(codes: &[u8], scales: &[f32], fmt: Fp8, k: usize, per_row: bool) -> Vec<f32> {
    let table = fmt.table();
    let complete = k > 0 && codes.len() % k == 0;
    rows_out(codes.len(), complete, |res| {
        res.par_chunks_mut(k.max(1))
            .zip(codes.par_chunks(k.max(1)))
            .enumerate()
            .for_each(|(r, (o, c))| {
                let s = scales
                    .get(if per_row { r } else { 0 })
                    .copied()
                    .unwrap_or(0.0);
                kernels::dequant_fp8_row_into::<W>(c, &table, s, o);
            })
    })
}

/// `wd((q - zp) * scale)` with one scale (and zero point) per group of a row.
fn dequant_affine<W: Wd>(
    codes: &[u8],
    scales: &[f32],
    zps: Option<&[f32]>,
    k: usize,
    group: usize,
) -> Vec<f32> {
    let per_row = k / group.max(1);
    let complete = k > 0 && codes.len() % k == 0;
    rows_out(codes.len(), complete, |res| {
        res.par_chunks_mut(k.max(1))
            .zip(codes.par_chunks(k.max(1)))
            .enumerate()
            .for_each(|(r, (o, c))| {
                let range = r * per_row..(r + 1) * per_row;
                let s = scales.get(range.clone()).unwrap_or(&[]);
                let z = zps.map(|z| z.get(range).unwrap_or(&[]));
                kernels::dequant_affine_row_into::<W>(c, s, z, group.max(1), o);
            })
    })
}

/// `wd(q * scale + zero)` for packed int4 with group-major `[K/g, N]` scale and zero.
fn dequant_int4<W: Wd>(
    packed: &[u8],
    scales: &[f32],
    zeros: &[f32],
    n: usize,
    k: usize,
    group: usize,
) -> Vec<f32> {
    let groups = k / group.max(1);
    let complete = k > 0
        && k % 2 == 0
        && group > 0
        && group % 2 == 0
        && k % group == 0
        && Some(packed.len()) == n.checked_mul(k / 2);
    rows_out(n * k, complete, |res| {
        res.par_chunks_mut(k.max(2))
            .zip(packed.par_chunks((k / 2).max(1)))
            .enumerate()
            .for_each(|(r, (o, p))| {
                let pick = |v: &[f32]| -> Vec<f32> {
                    (0..groups)
                        .map(|gi| v.get(gi * n + r).copied().unwrap_or(0.0))
                        .collect()
                };
                kernels::dequant_int4_row_into::<W>(
                    p,
                    &pick(scales),
                    &pick(zeros),
                    group.max(2),
                    o,
                );
            })
    })
}
