#![no_main]
//! See `quant::fuzzing::dequantize_parts`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quant::fuzzing::dequantize_parts(data);
});
