//! TorchAO weight quantization for quant: the 18 `TorchAoConfig` string types of
//! diffusers 0.32–0.37, with torchao 0.15's numerics byte for byte, stored in the
//! safetensors form torchao ≥ 0.16 (and diffusers ≥ 0.39, transformers 5) loads.
//!
//! (Docs are completed below.)

pub mod fp8;
pub mod kernels;
pub mod layout;
pub mod method;
pub mod uintx;

pub use fp8::Fp8;
pub use method::{Granularity, Scheme, TorchAo, METHODS};

const BACKEND: &str = "quant-float8";

macro_rules! register {
    ($name:literal, $bits:expr, $params:expr, $summary:literal) => {
        quant_core::register_method!(quant_core::MethodEntry {
            name: $name,
            backend: BACKEND,
            bits_per_weight: $bits,
            summary: $summary,
            params: $params,
            create: |p| Ok(Box::new(TorchAo::new($name, p)?)),
        });
    };
}

const NONE: &[quant_core::ParamSpec] = &[];
const GROUP: &[quant_core::ParamSpec] = method::GROUP_PARAMS;

register!("torch_ao_config_int4wo", 4.25, GROUP, "torchao int4wo: fbgemm Int4Tensor, asymmetric min/max groups of 128, packed 2 per byte, bf16 scale and zero");
register!("torch_ao_config_int4dq", 8.75, GROUP, "torchao int4dq: symmetric int4 groups of 32 (amax/7.5, eps finfo(wd).eps) in int8 storage, for dynamic int8 activations");
register!(
    "torch_ao_config_int8wo",
    8.0,
    NONE,
    "torchao int8wo: symmetric per-row int8 (amax/127.5) computed in the weight dtype"
);
register!(
    "torch_ao_config_int8dq",
    8.0,
    NONE,
    "torchao int8dq: the int8wo weight, for dynamic per-token int8 activations"
);
register!(
    "torch_ao_config_float8wo",
    8.0,
    NONE,
    "torchao float8wo: per-row float8 e5m2 (diffusers' float8wo means e5m2), f32 scale"
);
register!(
    "torch_ao_config_float8wo_e5m2",
    8.0,
    NONE,
    "torchao float8wo_e5m2: per-row float8 e5m2, f32 scale"
);
register!(
    "torch_ao_config_float8wo_e4m3",
    8.0,
    NONE,
    "torchao float8wo_e4m3: per-row float8 e4m3fn, f32 scale"
);
register!(
    "torch_ao_config_float8dq",
    8.0,
    NONE,
    "torchao float8dq: per-tensor float8 e4m3fn weight for dynamic float8 activations"
);
register!(
    "torch_ao_config_float8dq_e4m3",
    8.0,
    NONE,
    "torchao float8dq_e4m3: per-tensor float8 e4m3fn weight for dynamic float8 activations"
);
register!(
    "torch_ao_config_float8_e4m3_tensor",
    8.0,
    NONE,
    "torchao float8dq_e4m3_tensor: per-tensor float8 e4m3fn weight for dynamic float8 activations"
);
register!("torch_ao_config_float8_e4m3_row", 8.0, NONE, "torchao float8dq_e4m3_row: per-row float8 e4m3fn weight (bf16 weights only) for dynamic per-token float8 activations");
register!("torch_ao_config_uint1wo", 8.375, GROUP, "torchao uint1wo: asymmetric 1-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint2wo", 8.375, GROUP, "torchao uint2wo: asymmetric 2-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint3wo", 8.375, GROUP, "torchao uint3wo: asymmetric 3-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint4wo", 8.375, GROUP, "torchao uint4wo: asymmetric 4-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint5wo", 8.375, GROUP, "torchao uint5wo: asymmetric 5-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint6wo", 8.375, GROUP, "torchao uint6wo: asymmetric 6-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");
register!("torch_ao_config_uint7wo", 8.375, GROUP, "torchao uint7wo: asymmetric 7-bit groups of 64 with integer zero point, stored unpacked as IntxUnpackedToInt8Tensor");

quant_core::register_layout!(quant_core::format::LayoutEntry {
    backend: BACKEND,
    detect: layout::detect,
});
