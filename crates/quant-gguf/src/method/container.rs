//! The .gguf container as quant's engine sees it: a .gguf input's tensors as the
//! `gguf_config_*` methods' records ([`GgufReader`]), the writer's key/value list and tensor
//! types from the plan, and the container's registration.

use std::collections::BTreeMap;
use std::path::Path;

use quant_core::format::{ContainerReader, ContainerWriter, PlannedOutput};
use quant_core::{DType, Error, Params, Part, PartLayout, QuantizedTensor, Result, TensorRecord};

use crate::arch::HfGgufReader;
use crate::gguf::{
    kv_text, sniff, GgufFile, GgufTensorInfo, GgufType, GgufValue, GgufWriter, IntType, KvList,
    TensorInfo, DEFAULT_ALIGNMENT, MAX_DIMS,
};
use crate::method::{method_name, method_type};
use crate::types::GgmlType;

/// The record quant gives a tensor read from a .gguf: F32 and the integer types are stored
/// unquantized, every other type is the matching `gguf_config_*` method with
/// `{"type": NAME}`.
fn record_for(info: &GgufTensorInfo) -> TensorRecord {
    let shape = info.shape();
    let ty = match info.ty {
        GgufType::Ggml(ty) => ty,
        GgufType::Int(int) => {
            let mut r = quant_core::load::plain_record(&quant_core::TensorMeta::new(
                info.name.clone(),
                int.dtype(),
                shape,
            ));
            r.parts = vec![info.name.clone()];
            return r;
        }
    };
    let (method, dtype, dequant) = match ty {
        GgmlType::F32 => (None, DType::F32, DType::F32),
        // Plain 16-bit floats, as llama-quantize reads them (not a requantization).
        GgmlType::F16 => (None, DType::F16, DType::F16),
        GgmlType::BF16 => (None, DType::BF16, DType::BF16),
        ty => (method_name(ty), DType::F32, DType::F32),
    };
    let mut params = Params::new();
    if method.is_some() {
        params.insert("type".into(), ty.name().into());
    }
    TensorRecord {
        name: info.name.clone(),
        method: method.map(str::to_string),
        dtype,
        shape,
        dequant_dtype: dequant,
        params,
        parts: vec![info.name.clone()],
        fallback: None,
    }
}

/// The part layout of a tensor of `ty` and PyTorch `shape` (as the methods store it).
fn part_layout(name: &str, ty: GgufType, shape: &[usize], size: usize) -> PartLayout {
    let ty = match ty {
        GgufType::Ggml(ty) => ty,
        GgufType::Int(int) => return PartLayout::new(name, int.dtype(), shape.to_vec()),
    };
    match ty {
        GgmlType::F32 => PartLayout::new(name, DType::F32, shape.to_vec()),
        GgmlType::F16 => PartLayout::new(name, DType::F16, shape.to_vec()),
        GgmlType::BF16 => PartLayout::new(name, DType::BF16, shape.to_vec()),
        _ => {
            let row = shape.last().copied().unwrap_or(1).max(1);
            // An empty tensor may pair a 0 with dims whose product overflows; a product
            // that overflows otherwise describes no data this file can hold (0 rows: the
            // part's size check then refuses it).
            let rows = if shape.contains(&0) {
                0
            } else {
                quant_core::tensor::checked_numel(shape).map_or(0, |n| n / row)
            };
            PartLayout::new(name, DType::U8, vec![rows, size / rows.max(1)])
        }
    }
}

/// [`ContainerReader`] over a .gguf file.
pub struct GgufReader {
    file: GgufFile,
    records: Vec<TensorRecord>,
}

impl GgufReader {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let records = file.tensors.iter().map(record_for).collect();
        Ok(GgufReader { file, records })
    }

    /// The parsed file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

impl ContainerReader for GgufReader {
    fn metadata(&self) -> BTreeMap<String, String> {
        kv_text(&self.file.metadata)
    }

    fn records(&self) -> &[TensorRecord] {
        &self.records
    }

    fn read(&self, name: &str) -> Result<QuantizedTensor> {
        let (info, record) = self
            .file
            .tensors
            .iter()
            .zip(&self.records)
            .find(|(t, _)| t.name == name)
            .ok_or_else(|| Error::tensor(self.file.path(), name, "no such tensor in the file"))?;
        let data = self.file.read_data(info)?;
        let layout = part_layout(name, info.ty, &record.shape, data.len());
        let part = Part::new(layout, data)
            .map_err(|e| Error::tensor(self.file.path(), name, e.to_string()))?;
        Ok(QuantizedTensor {
            record: record.clone(),
            parts: vec![part],
        })
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// The type a planned tensor is written as: its method's GGML type, or for a tensor kept
/// as it is F32/F16/BF16 or the integer type of its dtype.
fn planned_type(p: &PlannedOutput) -> Result<GgufType> {
    let unsupported = |what: String| Error::UnsupportedDType {
        tensor: p.meta.name.clone(),
        dtype: what,
        op: "the gguf container (F32, F16, BF16, I8-I64 and the gguf_config_* methods only)".into(),
    };
    match &p.method {
        // A gguf_<ftype> method stores a tensor it quantizes itself in its default type.
        Some(m) => method_type(m)
            .or_else(|| crate::Ftype::from_method(m).map(crate::Ftype::default_type))
            .map(GgufType::Ggml)
            .ok_or_else(|| unsupported(format!("method {m}"))),
        None => match p.layout.first().map(|l| l.dtype) {
            Some(DType::F32) => Ok(GgmlType::F32.into()),
            Some(DType::F16) => Ok(GgmlType::F16.into()),
            Some(DType::BF16) => Ok(GgmlType::BF16.into()),
            Some(d) => IntType::from_dtype(d)
                .map(GgufType::Int)
                .ok_or_else(|| unsupported(d.to_string())),
            None => Err(unsupported("no stored part".into())),
        },
    }
}

/// Keys the writer sets itself (not copied from the caller's metadata).
const OWN_KEYS: [&str; 5] = [
    "general.architecture",
    "general.name",
    "general.file_type",
    "general.quantization_version",
    "general.alignment",
];

/// The header entries of `planned` and the type holding the most non-fallback elements.
fn tensor_infos(path: &Path, planned: &[PlannedOutput]) -> Result<(Vec<TensorInfo>, GgmlType)> {
    let mut infos = Vec::with_capacity(planned.len());
    let mut offset = 0u64;
    // (type, elements) of the quantized tensors that did not fall back, first seen first.
    let mut weight_by_type: Vec<(GgmlType, u64)> = Vec::new();
    for p in planned {
        let ty = planned_type(p)?;
        let size = p
            .byte_len()
            .ok_or_else(|| Error::tensor(path, &p.meta.name, "byte size overflows"))?;
        let numel = p.meta.numel()? as u64;
        let mut dims: Vec<u64> = p.meta.shape.iter().rev().map(|&d| d as u64).collect();
        if dims.is_empty() {
            dims.push(1);
        }
        if dims.len() > MAX_DIMS as usize {
            return Err(Error::ShapeMismatch {
                tensor: p.meta.name.clone(),
                expected: format!("at most {MAX_DIMS} dims for gguf"),
                got: p.meta.shape.clone(),
            });
        }
        let want = ty
            .row_size(dims[0] as usize)
            .map(|r| r as u64 * (numel / dims[0].max(1)));
        if want != Some(size) {
            return Err(Error::tensor(
                path,
                &p.meta.name,
                format!(
                    "planned {size} bytes do not match {ty} for shape {:?}",
                    p.meta.shape
                ),
            ));
        }
        let counted = ty
            .ggml()
            .filter(|t| *t != GgmlType::F32 && p.method.is_some() && p.fallback.is_none());
        if let Some(ty) = counted {
            match weight_by_type.iter_mut().find(|(t, _)| *t == ty) {
                Some((_, n)) => *n += numel,
                None => weight_by_type.push((ty, numel)),
            }
        }
        infos.push((p.meta.name.clone(), dims, ty, offset, size));
        offset += size.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    }
    // The type holding the most elements; on a tie the one seen first.
    let main_type = weight_by_type
        .iter()
        .fold(None::<(GgmlType, u64)>, |best, &(t, n)| match best {
            Some((_, bn)) if bn >= n => best,
            _ => Some((t, n)),
        })
        .map_or(GgmlType::F32, |(t, _)| t);
    Ok((infos, main_type))
}

/// Writes the header for `planned` with file-level `metadata` (string values; keys
/// without a dot are skipped, `quantize.imatrix.*_count` become i32 like llama.cpp).
pub fn create(
    path: &Path,
    planned: &[PlannedOutput],
    metadata: &BTreeMap<String, String>,
) -> Result<GgufWriter> {
    create_with(path, planned, metadata, None)
}

/// [`create`] for a converted model or a .gguf input: its typed
/// key/values ([`crate::arch::HfGgufReader::kvs`], or the input file's) come first,
/// in their order, with
/// `general.file_type` set to the file's type; then quant's own keys (`quantize.*`,
/// `quant.*`; the `source.*` copies of the converted keys are left out).
pub fn create_with(
    path: &Path,
    planned: &[PlannedOutput],
    metadata: &BTreeMap<String, String>,
    converted: Option<&KvList>,
) -> Result<GgufWriter> {
    let (infos, main_type) = tensor_infos(path, planned)?;
    let name = metadata
        .get("general.name")
        .cloned()
        .unwrap_or_else(|| crate::gguf::split::model_stem(path, metadata));
    let mut kv: Vec<(String, GgufValue)> = architecture(metadata)
        .map(|a| ("general.architecture".into(), GgufValue::String(a)))
        .into_iter()
        .collect();
    kv.extend([
        ("general.name".into(), GgufValue::String(name)),
        (
            "general.file_type".into(),
            GgufValue::U32(crate::ftype::kv::llama_ftype(main_type)),
        ),
        ("general.quantization_version".into(), GgufValue::U32(2)),
        (
            "quantize.tool".into(),
            GgufValue::String(format!("quant {}", env!("CARGO_PKG_VERSION"))),
        ),
        (
            "quantize.ggml_type".into(),
            GgufValue::String(main_type.name().into()),
        ),
    ]);
    for (k, v) in metadata {
        if !k.contains('.')
            || OWN_KEYS.contains(&k.as_str())
            || k.starts_with("quant.split.")
            || kv.iter().any(|(e, _)| e == k)
        {
            continue;
        }
        let value = match (k.as_str(), v.parse::<i32>()) {
            ("quantize.imatrix.entries_count" | "quantize.imatrix.chunks_count", Ok(n)) => {
                GgufValue::I32(n)
            }
            _ => GgufValue::String(v.clone()),
        };
        kv.push((k.clone(), value));
    }
    if let Some(list) = converted {
        let mut typed = list.clone();
        typed.set(
            "general.file_type",
            GgufValue::U32(crate::ftype::kv::llama_ftype(main_type)),
        );
        for (k, v) in kv {
            if !OWN_KEYS.contains(&k.as_str())
                && !k.starts_with("source.")
                && typed.get(&k).is_none()
            {
                typed.set(k, v);
            }
        }
        kv = typed.entries().to_vec();
    }
    GgufWriter::start(path, infos, kv, metadata)
}

/// Writes the header of llama-quantize's output for `ftype`: the input's key/values
/// `input_kv` in their order (typed), `general.quantization_version` and
/// `general.file_type` moved to the end, the split keys removed, then `overrides`
/// (e.g. the `quantize.imatrix.*` keys, see [`crate::ftype::kv::llama_imatrix_kv`]) as its
/// `--override-kv` does.
/// `metadata` is only read for the split keys of a split output.
pub fn create_llama(
    path: &Path,
    planned: &[PlannedOutput],
    input_kv: &[(String, GgufValue)],
    ftype: crate::Ftype,
    overrides: Vec<(String, GgufValue)>,
    metadata: &BTreeMap<String, String>,
) -> Result<GgufWriter> {
    let (infos, _) = tensor_infos(path, planned)?;
    let kv = crate::ftype::kv::llama_quantize_kv(input_kv, ftype, overrides);
    if let Some((_, v)) = kv.iter().find(|(k, _)| k == "general.alignment") {
        if v.as_u64() != Some(DEFAULT_ALIGNMENT) {
            return Err(Error::InvalidFile {
                path: path.into(),
                format: "gguf",
                reason: format!(
                    "the input's general.alignment {} is not supported (only {DEFAULT_ALIGNMENT})",
                    v.to_text()
                ),
            });
        }
    }
    GgufWriter::start(path, infos, kv, metadata)
}
fn open_reader(path: &Path) -> Result<Box<dyn ContainerReader>> {
    Ok(Box::new(GgufReader::open(path)?))
}

fn create_writer(
    path: &Path,
    planned: &[PlannedOutput],
    metadata: &BTreeMap<String, String>,
    source: Option<&dyn ContainerReader>,
) -> Result<Box<dyn ContainerWriter>> {
    let ftype = [
        "quant.method.effective",
        "quant.method.requested",
        "quant.method",
    ]
    .iter()
    .find_map(|k| metadata.get(*k))
    .and_then(|m| crate::Ftype::from_method(m));
    // The input's typed key/values (a converted HF folder: what convert_hf_to_gguf.py
    // would have written; a .gguf: its own, as `llama-quantize --pure` keeps them), less
    // the keys of the input's own split.
    let input_kv = match source {
        Some(s) => typed_kv(s)?,
        None => None,
    };
    let typed: Option<KvList> = input_kv.map(|kv| {
        let mut list = KvList::default();
        // quant writes with the default alignment: another one is not carried over.
        let keep = |(k, v): &&(String, GgufValue)| {
            !k.starts_with("split.")
                && (k != "general.alignment" || v.as_u64() == Some(DEFAULT_ALIGNMENT))
        };
        for (k, v) in kv.iter().filter(keep) {
            list.set(k.clone(), v.clone());
        }
        list
    });
    let converted = typed.as_ref();
    match (ftype, input_kv) {
        (Some(ftype), Some(input_kv)) => {
            let overrides = imatrix_overrides(metadata)?;
            Ok(Box::new(create_llama(
                path, planned, input_kv, ftype, overrides, metadata,
            )?))
        }
        _ => Ok(Box::new(create_with(path, planned, metadata, converted)?)),
    }
}

/// `general.architecture` of a file quant writes without a conversion: the caller's, the
/// input GGUF's, or what the input's `config.json` names (never a guess; `None` leaves
/// the key out).
fn architecture(metadata: &BTreeMap<String, String>) -> Option<String> {
    if let Some(a) = metadata
        .get("general.architecture")
        .or_else(|| metadata.get("source.general.architecture"))
    {
        return Some(a.clone());
    }
    let config: serde_json::Value =
        serde_json::from_str(metadata.get("source.config.json")?).ok()?;
    crate::arch::generic_architecture(&config)
}

/// The typed key/values of an input reader this crate knows (a .gguf file, or a converted
/// HF folder, whose vocabulary may still be read here), in order.
fn typed_kv(source: &dyn ContainerReader) -> Result<Option<&[(String, GgufValue)]>> {
    let Some(any) = source.as_any() else {
        return Ok(None);
    };
    if let Some(r) = any.downcast_ref::<GgufReader>() {
        return Ok(Some(r.file().metadata.as_slice()));
    }
    match any.downcast_ref::<HfGgufReader>() {
        Some(r) => Ok(Some(r.kvs()?.entries())),
        None => Ok(None),
    }
}

/// The `quantize.imatrix.*` pairs for the run's parameters (`quant.params`: `imatrix`,
/// `imatrix_include`, `imatrix_exclude`), as llama-quantize's tool adds them.
fn imatrix_overrides(metadata: &BTreeMap<String, String>) -> Result<Vec<(String, GgufValue)>> {
    let Some(params) = metadata
        .get("quant.params")
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
    else {
        return Ok(Vec::new());
    };
    let Some(file) = params.get("imatrix").and_then(|v| v.as_str()) else {
        return Ok(Vec::new());
    };
    let list = |key: &str| {
        params
            .get(key)
            .and_then(|v| serde_json::from_value::<crate::method::NameList>(v.clone()).ok())
    };
    let (include, exclude) =
        crate::method::name_lists(&list("imatrix_include"), &list("imatrix_exclude"));
    let im = crate::Imatrix::load_shared(file, &include, &exclude)?;
    Ok(crate::ftype::kv::llama_imatrix_kv(file, &im))
}

quant_core::register_container!(quant_core::format::ContainerEntry {
    name: "gguf",
    extensions: &["gguf"],
    backend: crate::BACKEND,
    sniff,
    open: open_reader,
    create: create_writer,
    split: Some(crate::gguf::split::split_files),
});
