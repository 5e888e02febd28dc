//! torchao 0.15's `UintxTensor` bit packing (`pack_dim=-1`), kept to show that the codes
//! quant stores unpacked are the ones torchao packs: each b-bit value is split by bit
//! field into shards of 4, 2 and 1 bits; a shard of width s cuts every row of length K
//! into p = 8/s contiguous chunks of L = K/p values, and byte j of the shard row is
//! `OR_i field(chunk_i[j]) << (s * i)`.

/// The shards of a b-bit code: (torchao attribute name, width, lowest bit of the field).
pub fn shard_fields(bits: u8) -> &'static [(&'static str, u32, u32)] {
    match bits {
        1 => &[("int1_shard", 1, 0)],
        2 => &[("int2_shard", 2, 0)],
        3 => &[("int2_shard", 2, 0), ("int1_shard", 1, 2)],
        4 => &[("int4_shard", 4, 0)],
        5 => &[("int4_shard", 4, 0), ("int1_shard", 1, 4)],
        6 => &[("int4_shard", 4, 0), ("int2_shard", 2, 4)],
        7 => &[
            ("int4_shard", 4, 0),
            ("int2_shard", 2, 4),
            ("int1_shard", 1, 6),
        ],
        _ => &[],
    }
}

/// Packs row-major `[rows, k]` codes (`k` a multiple of 8) into torchao's shards, each
/// `[rows, k * s / 8]` bytes. Returns `None` when `k` is not a multiple of 8 or `bits` is
/// not in 1..=7.
pub fn pack_shards(bits: u8, codes: &[u8], k: usize) -> Option<Vec<(&'static str, Vec<u8>)>> {
    let fields = shard_fields(bits);
    if fields.is_empty() || k == 0 || k % 8 != 0 || codes.len() % k != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(fields.len());
    for &(name, width, low) in fields {
        let per_byte = (8 / width) as usize;
        let chunk = k / per_byte;
        let mask = (1u8 << width) - 1;
        let mut shard = Vec::with_capacity(codes.len() / per_byte);
        for row in codes.chunks(k) {
            for j in 0..chunk {
                let mut byte = 0u8;
                for i in 0..per_byte {
                    let v = row.get(i * chunk + j).copied().unwrap_or(0);
                    byte |= ((v >> low) & mask) << (width * i as u32);
                }
                shard.push(byte);
            }
        }
        out.push((name, shard));
    }
    Some(out)
}
