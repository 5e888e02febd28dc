//! The quant-state JSON bitsandbytes stores beside every 4-bit weight
//! (`P.weight.quant_state.bitsandbytes__nf4`), written the way Python's `json.dumps` writes
//! it and parsed the way `QuantState.from_dict` reads it.

use quant_core::DType;

use crate::QuantType;

/// The longest Python `repr` of an f32 value widened to f64 (`-1.2345678901234567e-05`,
/// `-Infinity`): the width reserved for `nested_offset` when a layout is planned.
pub const MAX_OFFSET_REPR: usize = 23;

/// The keys `QuantState.from_dict` accepts (after stripping prefixes).
const VALID_KEYS: [&str; 12] = [
    "absmax",
    "quant_map",
    "nested_absmax",
    "nested_quant_map",
    "quant_state",
    "quant_type",
    "blocksize",
    "dtype",
    "shape",
    "nested_blocksize",
    "nested_dtype",
    "nested_offset",
];

/// The contents of a 4-bit quant-state JSON object.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantState {
    /// nf4 or fp4.
    pub quant_type: QuantType,
    /// Elements per absmax block.
    pub blocksize: usize,
    /// The dtype the weight had when it was quantized (= dequantized output dtype).
    pub dtype: DType,
    /// The original weight shape.
    pub shape: Vec<usize>,
    /// Double quantization: (nested blocksize, nested offset). The nested dtype is float32.
    pub nested: Option<(usize, f32)>,
}

impl QuantState {
    /// The JSON bytes exactly as `json.dumps(quant_state.as_dict())` writes them
    /// (separators `", "` / `": "`, keys in bitsandbytes' order, Python float repr).
    pub fn to_json(&self) -> String {
        let shape = self
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut s = format!(
            "{{\"quant_type\": \"{}\", \"blocksize\": {}, \"dtype\": \"{}\", \"shape\": [{}]",
            self.quant_type.as_str(),
            self.blocksize,
            self.dtype.torch_name(),
            shape
        );
        if let Some((nbs, offset)) = self.nested {
            s.push_str(&format!(
                ", \"nested_blocksize\": {nbs}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
                python_float_repr(f64::from(offset))
            ));
        }
        s.push('}');
        s
    }

    /// The JSON as stored by quant: [`QuantState::to_json`], right-padded with spaces to
    /// [`QuantState::stored_len`] when double quantized (JSON ignores trailing whitespace).
    pub fn to_stored_bytes(&self) -> Vec<u8> {
        let mut bytes = self.to_json().into_bytes();
        let want = self.stored_len();
        while bytes.len() < want {
            bytes.push(b' ');
        }
        bytes
    }

    /// The stored byte length, known before quantizing: exact without double
    /// quantization; with it, the offset's repr is given [`MAX_OFFSET_REPR`] bytes.
    pub fn stored_len(&self) -> usize {
        match self.nested {
            None => self.to_json().len(),
            Some((nbs, _)) => {
                let probe = QuantState {
                    nested: Some((nbs, 0.0)),
                    ..self.clone()
                };
                // "0.0" is 3 bytes long.
                probe.to_json().len() - 3 + MAX_OFFSET_REPR
            }
        }
    }

    /// Parses the stored bytes; `key_type` is the suffix of the key (`nf4`/`fp4`).
    pub fn parse(bytes: &[u8], key_type: QuantType) -> Result<QuantState, String> {
        let text =
            std::str::from_utf8(bytes).map_err(|e| format!("quant state is not UTF-8: {e}"))?;
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("quant state is not valid JSON: {e}"))?;
        let obj = value
            .as_object()
            .ok_or_else(|| "quant state JSON is not an object".to_string())?;
        if let Some(k) = obj.keys().find(|k| !VALID_KEYS.contains(&k.as_str())) {
            return Err(format!("quant state JSON has unknown key '{k}'"));
        }
        let get = |k: &str| {
            obj.get(k)
                .ok_or_else(|| format!("quant state JSON lacks '{k}'"))
        };
        let quant_type = match get("quant_type")?.as_str() {
            Some("nf4") => QuantType::Nf4,
            Some("fp4") => QuantType::Fp4,
            other => return Err(format!("quant state has bad quant_type {other:?}")),
        };
        if quant_type != key_type {
            return Err(format!(
                "quant state says quant_type {} but its key ends in bitsandbytes__{}",
                quant_type.as_str(),
                key_type.as_str()
            ));
        }
        let blocksize = as_size(get("blocksize")?, "blocksize")?;
        if blocksize == 0 {
            return Err("quant state has blocksize 0".into());
        }
        let dtype = parse_float_dtype(get("dtype")?, "dtype")?;
        let shape = get("shape")?
            .as_array()
            .ok_or_else(|| "quant state 'shape' is not a list".to_string())?
            .iter()
            .map(|d| as_size(d, "shape"))
            .collect::<Result<Vec<_>, _>>()?;
        let nested_keys = ["nested_blocksize", "nested_dtype", "nested_offset"];
        let present = nested_keys.iter().filter(|k| obj.contains_key(**k)).count();
        let nested =
            match present {
                0 => None,
                3 => {
                    let nbs = as_size(get("nested_blocksize")?, "nested_blocksize")?;
                    if nbs == 0 {
                        return Err("quant state has nested_blocksize 0".into());
                    }
                    if parse_float_dtype(get("nested_dtype")?, "nested_dtype")? != DType::F32 {
                        return Err("quant state nested_dtype must be float32".into());
                    }
                    let off = get("nested_offset")?;
                    let offset = off.as_f64().ok_or_else(|| {
                        format!("quant state nested_offset {off} is not a number")
                    })?;
                    // torch.tensor(float(x)) rounds the double to f32.
                    Some((nbs, offset as f32))
                }
                _ => return Err(
                    "quant state has only some of nested_blocksize, nested_dtype, nested_offset"
                        .into(),
                ),
            };
        Ok(QuantState {
            quant_type,
            blocksize,
            dtype,
            shape,
            nested,
        })
    }
}

fn as_size(v: &serde_json::Value, what: &str) -> Result<usize, String> {
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| format!("quant state '{what}' has bad value {v}"))
}

fn parse_float_dtype(v: &serde_json::Value, what: &str) -> Result<DType, String> {
    match v.as_str() {
        Some("float32") => Ok(DType::F32),
        Some("float16") => Ok(DType::F16),
        Some("bfloat16") => Ok(DType::BF16),
        _ => Err(format!(
            "quant state '{what}' must be float32, float16 or bfloat16, got {v}"
        )),
    }
}

/// The digits and decimal exponent (`x = d.ddd × 10^exp`) of the shortest decimal string that
/// reads back as `x` (> 0, finite), choosing among strings of that length the one nearest to
/// `x`, ties to an even last digit: what CPython's `repr` (David Gay's `dtoa` mode 0) prints.
fn shortest_digits(x: f64) -> (String, i32) {
    // The exact decimal expansion: a double has at most 767 significant digits.
    let exact = format!("{x:.800e}");
    let (mant, exp) = exact.split_once('e').unwrap_or((exact.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let all: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    let len = all.iter().rposition(|&d| d != b'0').map_or(1, |i| i + 1);
    let all = &all[..len];
    for p in 1..=17usize {
        let (digits, e) = round_half_even(all, p, exp);
        // `digits` as an integer times 10^(e - p + 1) is the candidate.
        let candidate = format!(
            "{}e{}",
            String::from_utf8_lossy(&digits),
            e - digits.len() as i32 + 1
        );
        if candidate.parse::<f64>().ok() == Some(x) {
            let keep = digits.iter().rposition(|&d| d != b'0').map_or(1, |i| i + 1);
            return (String::from_utf8_lossy(&digits[..keep]).into_owned(), e);
        }
    }
    // Unreachable for finite doubles (17 digits always round-trip); fall back to Rust's.
    let sci = format!("{x:e}");
    let (m, e) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    (
        m.chars().filter(char::is_ascii_digit).collect(),
        e.parse().unwrap_or(0),
    )
}

/// Rounds the digit string `d[0] . d[1..] × 10^exp` to `p` significant digits, half to even.
fn round_half_even(d: &[u8], p: usize, exp: i32) -> (Vec<u8>, i32) {
    if d.len() <= p {
        return (d.to_vec(), exp);
    }
    let mut kept = d[..p].to_vec();
    let rest = &d[p..];
    let first = rest.first().copied().unwrap_or(b'0');
    let beyond = rest.iter().skip(1).any(|&c| c != b'0');
    let odd = kept.last().is_some_and(|&c| (c - b'0') % 2 == 1);
    let up = first > b'5' || (first == b'5' && (beyond || odd));
    if !up {
        return (kept, exp);
    }
    for c in kept.iter_mut().rev() {
        if *c == b'9' {
            *c = b'0';
        } else {
            *c += 1;
            return (kept, exp);
        }
    }
    // 99…9 rounded up to 100…0.
    kept.insert(0, b'1');
    kept.pop();
    (kept, exp + 1)
}

/// Python's `repr(float)` as `json.dumps` writes it: the shortest round-trip digits, fixed
/// notation for `1e-4 <= |x| < 1e16` (with `.0` for integral values), else `d.ddde±XX`;
/// `NaN`, `Infinity`, `-Infinity` for non-finite values.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let (digits, exp) = shortest_digits(x.abs());
    let sign = if x < 0.0 { "-" } else { "" };
    let n = digits.len() as i32;
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = (exp + 1) as usize;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.push_str(&"0".repeat(int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_repr_cases() {
        // Values and their repr() as CPython prints them.
        let cases: [(f64, &str); 18] = [
            (0.05156582221388817, "0.05156582221388817"),
            (141.31964111328125, "141.31964111328125"),
            (2.6071386337280273, "2.6071386337280273"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            // A tie at 17 digits (exact value ...5625): CPython keeps the even digit.
            (f64::from(0.123_172_76_f32), "0.12317276000976562"),
            (0.1, "0.1"),
            (1e23, "1e+23"),
            (5e-324, "5e-324"),
            (0.00012, "0.00012"),
            (1e-05, "1e-05"),
            (1.5e-07, "1.5e-07"),
            (1e16, "1e+16"),
            (1.2345e22, "1.2345e+22"),
            (123456789012345.6, "123456789012345.6"),
            (-0.5, "-0.5"),
            (3.4028234663852886e38, "3.4028234663852886e+38"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float_repr(x), want);
        }
    }

    #[test]
    fn repr_width_bound_holds_for_f32_values() {
        for bits in (1u32..0x7F80_0000).step_by(104_729) {
            let x = f64::from(-f32::from_bits(bits));
            assert!(python_float_repr(x).len() <= MAX_OFFSET_REPR, "{x}");
        }
        assert!(python_float_repr(f64::NEG_INFINITY).len() <= MAX_OFFSET_REPR);
    }

    #[test]
    fn json_round_trip_and_padding() {
        let qs = QuantState {
            quant_type: QuantType::Nf4,
            blocksize: 64,
            dtype: DType::F32,
            shape: vec![128, 128],
            nested: Some((256, 0.051_565_82)),
        };
        let b = qs.to_stored_bytes();
        assert_eq!(b.len(), qs.stored_len());
        assert_eq!(QuantState::parse(&b, QuantType::Nf4).unwrap(), qs);
        let plain = QuantState { nested: None, ..qs };
        assert_eq!(
            plain.to_json(),
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [128, 128]}"#
        );
        assert!(QuantState::parse(&plain.to_stored_bytes(), QuantType::Fp4).is_err());
    }
}
