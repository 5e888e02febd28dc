//! The lattice codebooks of the IQ types, built at first use the way ggml's
//! `iq2xs_init_impl` / `iq3xs_init_impl` build them (ggml-quants.c, d99724f2) from the
//! compact index lists in [`crate::types::iq_kgrid`]:
//!
//! - the quantizer grid: point `k` has coordinate `i` = `2·level + 1`;
//! - the map from a point of the full lattice (coordinate levels packed `bits` apart) to
//!   its grid index, or, for a point off the grid, to its neighbour list: the grid points
//!   at the `nwant` smallest distinct squared distances, in order of (distance, index)
//!   (ggml sorts `(d2, j)` pairs with `qsort` and a total order, so the list is unique);
//! - the dequantization tables of ggml-common.h (`iq2xxs_grid`, `iq3s_grid`, ...): byte
//!   `i` of entry `k` is a per-level value, checked against digests of ggml's tables in
//!   the tests; and `ksigns_iq2xs` (7 sign bits plus their parity).
//!
//! Only the lattice points a quantizer can reach get neighbour lists (levels
//! `0..=max_level`; ggml computes lists for every index below the map size, the others
//! are never read).

use std::sync::OnceLock;

use crate::types::lanes::{Lanes, Portable};

use crate::types::iq_kgrid::{
    KGRID_1BIT_2048, KGRID_256, KGRID_2BIT_1024, KGRID_2BIT_256, KGRID_2BIT_512, KGRID_512,
};

/// One lattice codebook: grid, map and neighbour lists (see the module documentation).
pub(crate) struct Lattice {
    /// Coordinates per point (8 or 4).
    pub dim: usize,
    /// Quantizer grid, `dim` values (`2·level + 1`) per point.
    pub grid: Vec<i8>,
    /// Lattice index → grid index (`>= 0`) or `-(offset + 1)` into `neighbours`, where
    /// `neighbours[offset]` is the count and the indices follow.
    pub map: Vec<i32>,
    /// The neighbour lists.
    pub neighbours: Vec<u16>,
    /// Per neighbour list (by its offset in `neighbours`): where its points' coordinates
    /// start in `lanes`, 8 neighbours per chunk, `dim` vectors per chunk (coordinate `i`
    /// of the 8 neighbours), the last chunk padded with NaN (never chosen).
    pub lane_start: Vec<u32>,
    /// The neighbours' coordinates, laid out for [`Lattice::best_neighbour`].
    pub lanes: Vec<[f32; 8]>,
    /// Beside `lanes` (8-value lattices): the neighbours' levels plus 4 for the odd
    /// coordinates (3, 7 in the padding), the lanes of [`Lattice::best_neighbour_in`]'s
    /// term tables.
    pub lane_idx: Vec<[u8; 8]>,
    /// Per grid point, its levels (`(value − 1)/2`) as bytes, little-endian.
    pub levels: Vec<u64>,
}

impl Lattice {
    fn build(
        kgrid: &[u16],
        dim: usize,
        bits: u32,
        map_size: usize,
        max_level: usize,
        nwant: usize,
    ) -> Self {
        let mask = (1u16 << bits) - 1;
        let n = kgrid.len();
        let mut grid = vec![0i8; n * dim];
        for (k, &g) in kgrid.iter().enumerate() {
            for i in 0..dim {
                let l = (g >> (bits as usize * i)) & mask;
                grid[k * dim + i] = (2 * l + 1) as i8;
            }
        }
        let mut map = vec![-1i32; map_size];
        for k in 0..n {
            let mut index = 0usize;
            for i in 0..dim {
                let q = ((grid[k * dim + i] - 1) / 2) as usize;
                index |= q << (bits as usize * i);
            }
            map[index] = k as i32;
        }
        let mut neighbours: Vec<u16> = Vec::new();
        let mut dist: Vec<(i32, u16)> = Vec::with_capacity(n);
        let mut pos = [0i32; 8];
        for (i, m) in map.iter_mut().enumerate() {
            if *m >= 0 {
                continue;
            }
            let reachable =
                (0..dim).all(|k| (i >> (bits as usize * k)) & mask as usize <= max_level);
            if !reachable {
                continue;
            }
            for (k, p) in pos.iter_mut().enumerate().take(dim) {
                *p = 2 * ((i >> (bits as usize * k)) & mask as usize) as i32 + 1;
            }
            dist.clear();
            for j in 0..n {
                let pg = &grid[j * dim..j * dim + dim];
                let d2: i32 = pg
                    .iter()
                    .zip(&pos)
                    .map(|(&g, &p)| (g as i32 - p) * (g as i32 - p))
                    .sum();
                dist.push((d2, j as u16));
            }
            // The `nwant` smallest distinct distances; the list is the points at them in
            // order of (distance, index), as sorting the pairs and taking them would give.
            let mut levels: Vec<i32> = Vec::with_capacity(nwant);
            for _ in 0..nwant {
                let floor = levels.last().copied().unwrap_or(-1);
                if let Some(d) = dist.iter().map(|p| p.0).filter(|&d| d > floor).min() {
                    levels.push(d);
                }
            }
            let offset = neighbours.len();
            *m = -(offset as i32 + 1);
            neighbours.push(0);
            let mut count = 0u16;
            for &d in &levels {
                for &(_, j) in dist.iter().filter(|p| p.0 == d) {
                    neighbours.push(j);
                    count += 1;
                }
            }
            neighbours[offset] = count;
        }
        let mut lane_start = vec![0u32; neighbours.len()];
        let mut lanes: Vec<[f32; 8]> = Vec::new();
        let mut lane_idx: Vec<[u8; 8]> = Vec::new();
        let mut off = 0;
        while off < neighbours.len() {
            let count = neighbours[off] as usize;
            lane_start[off] = lanes.len() as u32;
            for chunk in neighbours[off + 1..off + 1 + count].chunks(8) {
                for i in 0..dim {
                    let odd = 4 * (i as u8 & 1);
                    let mut v = [f32::NAN; 8];
                    let mut ix = [3 + odd; 8];
                    for (lane, &j) in chunk.iter().enumerate() {
                        let g = grid[j as usize * dim + i];
                        v[lane] = g as f32;
                        ix[lane] = ((g - 1) / 2) as u8 + odd;
                    }
                    lanes.push(v);
                    if dim == 8 {
                        lane_idx.push(ix);
                    }
                }
            }
            off += 1 + count;
        }
        let levels = grid
            .chunks_exact(dim)
            .map(|p| {
                p.iter().enumerate().fold(0u64, |acc, (i, &v)| {
                    acc | (((v - 1) / 2) as u8 as u64) << (8 * i)
                })
            })
            .collect();
        Lattice {
            dim,
            levels,
            grid,
            map,
            neighbours,
            lane_start,
            lanes,
            lane_idx,
        }
    }

    /// The best neighbour of off-grid lattice point `u` for `D`-value group `x` with
    /// weights `w` at `scale`: the first of least `Σ w·(scale·q − x)²` (each sum in ggml's
    /// order, 8 neighbours side by side), where `q` is the grid value, or with `iq1 =
    /// Some(xg0)` the IQ1 level value `xg0 + (value − 1)/2` (exactly ggml's `xg[level]`,
    /// the levels being `xg0`, `xg0 + 1`, `xg0 + 2`). Returns the grid index (the first
    /// neighbour when every sum is NaN or above `f32::MAX`, where ggml aborts).
    ///
    /// On the portable lanes (plain arrays left to the compiler); a kernel that holds an
    /// AVX2 token passes it to [`Lattice::best_neighbour_in`].
    #[inline(always)]
    pub fn best_neighbour<const D: usize>(
        &self,
        u: usize,
        x: &[f32],
        w: &[f32],
        scale: f32,
        iq1: Option<f32>,
    ) -> usize {
        self.best_neighbour_in::<_, D>(Portable, u, x, w, scale, iq1)
    }

    /// [`Lattice::best_neighbour`] on lanes `s`.
    #[inline(always)]
    pub fn best_neighbour_in<S: Lanes, const D: usize>(
        &self,
        s: S,
        u: usize,
        x: &[f32],
        w: &[f32],
        scale: f32,
        iq1: Option<f32>,
    ) -> usize {
        let off = (-self.map[u] - 1) as usize;
        let ids = self.neighbours_of(u);
        let first = ids.first().copied().unwrap_or(0) as usize;
        let start = self.lane_start.get(off).copied().unwrap_or(0) as usize;
        let nchunks = ids.len().div_ceil(8);
        let (x, w): (&[f32; D], &[f32; D]) = match (x.try_into(), w.try_into()) {
            (Ok(x), Ok(w)) => (x, w),
            _ => return first,
        };
        let Some(vals) = self.lanes.get(start..start + nchunks * D) else {
            return first;
        };
        let sc = s.splat(scale);
        let mut xs = [sc; D];
        let mut ws = [sc; D];
        for i in 0..D {
            xs[i] = s.splat(x[i]);
            ws[i] = s.splat(w[i]);
        }
        let (one, half) = (s.splat(1.0), s.splat(0.5));
        // Per lane, the least sum below `f32::MAX` (NaN never taken, the padding lanes
        // are NaN) and the chunk where it first occurs: the sequential `if d < best`
        // scan's choice is then the least of these, at its smallest list position.
        let mut best = s.splat(f32::MAX);
        let mut chunk = s.splat_i(0);
        if D == 8 && iq1.is_none() {
            // Term `w·(scale·q − x)²` of coordinate `i` depends on the neighbour only
            // through its level: tables of the three terms of two coordinates per
            // vector (NaN in lanes 3 and 7, the padding's), each neighbour's sum then
            // adds its terms in ggml's order, the same values as computed one by one.
            let Some(idx) = self.lane_idx.get(start..start + nchunks * D) else {
                return first;
            };
            let mut xa = [0f32; 8];
            let mut wa = [0f32; 8];
            xa.copy_from_slice(&x[..8]);
            wa.copy_from_slice(&w[..8]);
            let (xv, wv) = (s.load(&xa), s.load(&wa));
            let nan = f32::NAN;
            let sq = s.mul(sc, s.load(&[1.0, 3.0, 5.0, nan, 1.0, 3.0, 5.0, nan]));
            // Loops, not `array::from_fn`: its closure would not inline into the AVX2
            // build.
            let mut tabs = [sq; 4];
            for (p, t) in tabs.iter_mut().enumerate() {
                let (a, b) = (2 * p as i32, 2 * p as i32 + 1);
                let ix = s.load_i(&[a, a, a, a, b, b, b, b]);
                let diff = s.sub(sq, s.permute(xv, ix));
                *t = s.mul(s.mul(s.permute(wv, ix), diff), diff);
            }
            for (c, ix) in idx.chunks_exact(8).enumerate() {
                let mut d2 = s.splat(0.0);
                for (i, ix) in ix.iter().enumerate() {
                    d2 = s.add(d2, s.permute(tabs[(i / 2) & 3], s.load_u8(ix)));
                }
                let take = s.gt(best, d2);
                best = s.select(take, d2, best);
                chunk = s.select_i(take, s.splat_i(c as i32), chunk);
            }
            return self.pick(s, ids, first, best, chunk);
        }
        for (c, vals) in vals.chunks_exact(D).enumerate() {
            let mut d2 = s.splat(0.0);
            for ((q, &xi), &wi) in vals.iter().zip(&xs).zip(&ws) {
                let mut q = s.load(q);
                if let Some(xg0) = iq1 {
                    q = s.add(s.splat(xg0), s.mul(s.sub(q, one), half));
                }
                let diff = s.sub(s.mul(sc, q), xi);
                d2 = s.add(d2, s.mul(s.mul(wi, diff), diff));
            }
            let take = s.gt(best, d2);
            best = s.select(take, d2, best);
            chunk = s.select_i(take, s.splat_i(c as i32), chunk);
        }
        self.pick(s, ids, first, best, chunk)
    }

    /// The neighbour of list `ids` at the least of the per-lane bests `best` (each first
    /// seen in chunk `chunk`), at its smallest position; `first` when none is below
    /// `f32::MAX`.
    #[inline(always)]
    fn pick<S: Lanes>(&self, s: S, ids: &[u16], first: usize, best: S::F, chunk: S::I) -> usize {
        // No NaN, no −0 (every sum starts from +0): the least lane in any order.
        let m = s.hmin_splat(best);
        if s.store(m)[0] >= f32::MAX {
            return first;
        }
        let mut eq = s.eq_bits(best, m);
        if ids.len() <= 8 {
            // One chunk: the first lane holding the least.
            let lane = eq.trailing_zeros() as usize;
            return ids.get(lane).copied().map_or(first, usize::from);
        }
        let chunk = s.store_i(chunk);
        // Usually one lane; on ties the smallest list position.
        let mut pos = u32::MAX;
        while eq != 0 {
            let lane = eq.trailing_zeros();
            pos = pos.min(8 * chunk[lane as usize & 7] as u32 + lane);
            eq &= eq - 1;
        }
        ids.get(pos as usize).copied().map_or(first, usize::from)
    }

    /// [`Lattice::best_neighbour`], checked to equal the AVX2 lanes' answer where the CPU
    /// has them.
    #[cfg(test)]
    pub(crate) fn best_neighbour_checked<const D: usize>(
        &self,
        u: usize,
        x: &[f32],
        w: &[f32],
        scale: f32,
        iq1: Option<f32>,
    ) -> usize {
        let p = self.best_neighbour::<D>(u, x, w, scale, iq1);
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = crate::types::lanes::Avx2::get() {
            assert_eq!(self.best_neighbour_in::<_, D>(t, u, x, w, scale, iq1), p);
        }
        p
    }

    /// The levels of grid point `k` into `l` (`D` of them).
    #[inline(always)]
    pub fn put_levels<const D: usize>(&self, k: usize, l: &mut [i8]) {
        let b = self.levels.get(k).copied().unwrap_or(0).to_le_bytes();
        for (l, &b) in l.iter_mut().zip(&b[..D]) {
            *l = b as i8;
        }
    }

    /// Grid point `k`.
    #[inline(always)]
    pub fn point(&self, k: usize) -> &[i8] {
        &self.grid[k * self.dim..(k + 1) * self.dim]
    }

    /// The neighbour list of off-grid lattice index `u` (`map[u] < 0`).
    #[inline(always)]
    pub fn neighbours_of(&self, u: usize) -> &[u16] {
        let off = (-self.map[u] - 1) as usize;
        let count = self.neighbours.get(off).copied().unwrap_or(0) as usize;
        &self.neighbours[off + 1..off + 1 + count]
    }
}

/// Most trial scales a search tries (IQ3_XXS: 31), rounded up to whole lane groups.
pub(crate) const MAX_TRIALS: usize = 32;

/// `Σ w·x·q` and `Σ w·q²` (`q = 2l + 1`, each sum in ggml's order: from 0, value by
/// value, `(w·x)·q` and `(w·q)·q`) of trial scales `0..n`, eight trials side by side:
/// `cols[i][t]` is level `l` of value `i` at trial `t`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane loops, index for index
pub(crate) fn trial_sums<const N: usize>(
    weight: &[f32; N],
    xval: &[f32; N],
    cols: &[[i8; MAX_TRIALS]; N],
    n: usize,
) -> ([f32; MAX_TRIALS], [f32; MAX_TRIALS]) {
    let mut sumqx = [0f32; MAX_TRIALS];
    let mut sumq2 = [0f32; MAX_TRIALS];
    for b in 0..n.div_ceil(8).min(MAX_TRIALS / 8) {
        let mut sqx = [0f32; 8];
        let mut sq2 = [0f32; 8];
        for i in 0..N {
            let w = weight[i];
            let wx = w * xval[i];
            let l = &cols[i][8 * b..8 * b + 8];
            for t in 0..8 {
                let q = (2 * l[t] as i32 + 1) as f32;
                sqx[t] += wx * q;
                sq2[t] += w * q * q;
            }
        }
        sumqx[8 * b..8 * b + 8].copy_from_slice(&sqx);
        sumq2[8 * b..8 * b + 8].copy_from_slice(&sq2);
    }
    (sumqx, sumq2)
}

/// Levels `clamp(nearest_int(0.5·(id·x − 1)), 0, kmax)` of the 8 values `x` on lanes `s`.
#[inline(always)]
pub(crate) fn round_levels<S: Lanes>(s: S, id: f32, x: &[f32], kmax: i32) -> [i32; 8] {
    let mut a = [0f32; 8];
    a.copy_from_slice(&x[..8]);
    let v = s.mul(
        s.splat(0.5),
        s.sub(s.mul(s.splat(id), s.load(&a)), s.splat(1.0)),
    );
    s.store_i(s.clamp_i(s.nearest_int(v), s.splat_i(0), s.splat_i(kmax)))
}

/// Which codebook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Book {
    /// IQ2_XXS: 256 points of 8, 2 bits.
    Iq2Xxs,
    /// IQ2_XS: 512 points.
    Iq2Xs,
    /// IQ2_S: 1024 points.
    Iq2S,
    /// IQ1_S / IQ1_M: 2048 points.
    Iq1,
    /// IQ3_XXS: 256 points of 4, 3 bits.
    Iq3Xxs,
    /// IQ3_S: 512 points of 4.
    Iq3S,
}

/// The codebook `b`, built on first use.
pub(crate) fn lattice(b: Book) -> &'static Lattice {
    static CELLS: [OnceLock<Lattice>; 6] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    const IQ2_MAP: usize = 43692;
    const IQ3_MAP: usize = 4096;
    match b {
        Book::Iq2Xxs => {
            CELLS[0].get_or_init(|| Lattice::build(&KGRID_2BIT_256, 8, 2, IQ2_MAP, 2, 2))
        }
        Book::Iq2Xs => {
            CELLS[1].get_or_init(|| Lattice::build(&KGRID_2BIT_512, 8, 2, IQ2_MAP, 2, 2))
        }
        Book::Iq2S => {
            CELLS[2].get_or_init(|| Lattice::build(&KGRID_2BIT_1024, 8, 2, IQ2_MAP, 2, 1))
        }
        Book::Iq1 => CELLS[3].get_or_init(|| Lattice::build(&KGRID_1BIT_2048, 8, 2, IQ2_MAP, 2, 3)),
        Book::Iq3Xxs => CELLS[4].get_or_init(|| Lattice::build(&KGRID_256, 4, 3, IQ3_MAP, 7, 2)),
        Book::Iq3S => CELLS[5].get_or_init(|| Lattice::build(&KGRID_512, 4, 3, IQ3_MAP, 7, 3)),
    }
}

/// A ggml-common.h dequantization table built from `kgrid`: byte `i` of entry `k` is
/// `values[level_i(k)]`.
fn table(kgrid: &[u16], dim: usize, bits: u32, values: &[u8]) -> Vec<u64> {
    let mask = (1u16 << bits) - 1;
    kgrid
        .iter()
        .map(|&g| {
            (0..dim).fold(0u64, |acc, i| {
                let l = ((g >> (bits as usize * i)) & mask) as usize;
                acc | (values[l] as u64) << (8 * i)
            })
        })
        .collect()
}

/// ggml's `iq2xxs_grid`, `iq2xs_grid`, `iq2s_grid`, `iq1s_grid` (8 bytes per entry) or
/// `iq3xxs_grid`, `iq3s_grid` (4 bytes, in the low half) for codebook `b`.
pub(crate) fn dequant_table(b: Book) -> &'static [u64] {
    static CELLS: [OnceLock<Vec<u64>>; 6] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    const IQ2: [u8; 3] = [8, 25, 43];
    match b {
        Book::Iq2Xxs => CELLS[0].get_or_init(|| table(&KGRID_2BIT_256, 8, 2, &IQ2)),
        Book::Iq2Xs => CELLS[1].get_or_init(|| table(&KGRID_2BIT_512, 8, 2, &IQ2)),
        Book::Iq2S => CELLS[2].get_or_init(|| table(&KGRID_2BIT_1024, 8, 2, &IQ2)),
        // int8 −1, 0, 1.
        Book::Iq1 => CELLS[3].get_or_init(|| table(&KGRID_1BIT_2048, 8, 2, &[0xff, 0, 1])),
        Book::Iq3Xxs => {
            CELLS[4].get_or_init(|| table(&KGRID_256, 4, 3, &[4, 12, 20, 28, 36, 44, 52, 62]))
        }
        Book::Iq3S => {
            CELLS[5].get_or_init(|| table(&KGRID_512, 4, 3, &[1, 3, 5, 7, 9, 11, 13, 15]))
        }
    }
}

/// ggml's `ksigns_iq2xs`: 7 sign bits and their parity in bit 7.
pub(crate) const KSIGNS_IQ2XS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = i as u8 | (((i as u8).count_ones() as u8 & 1) << 7);
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn digest(v: &[u64], width: usize) -> String {
        let mut h = Sha256::new();
        for &x in v {
            h.update(&x.to_le_bytes()[..width]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// SHA-256 of ggml-common.h's tables (d99724f2), little-endian entries.
    #[test]
    fn dequant_tables_equal_ggml_common_h() {
        let want = [
            (
                Book::Iq2Xxs,
                8,
                "05826b5d3e472a3a78f196be62ac78acf81df0f909626e12ab9fa2a5d490dd54",
            ),
            (
                Book::Iq2Xs,
                8,
                "06e47aaca60b4dc1d9b5a3f34540437058a6b142b4d7a59d5ded769b4d1bf1de",
            ),
            (
                Book::Iq2S,
                8,
                "e1aa1473412b0552c2174c30ef22ab4073f6a181b85a17056e8249bd2932fd88",
            ),
            (
                Book::Iq3Xxs,
                4,
                "46e35f5a997efdee6c99ce57854c8a0d4f0ff8ca57e5e8a60c0793ea580acf5d",
            ),
            (
                Book::Iq3S,
                4,
                "bd1af4945a1717c65610b0284e4628b9a1ba3b306fae3a06f6e5f597356e349f",
            ),
            (
                Book::Iq1,
                8,
                "07540ffc1aeaf6ad4d97e96b0fcc765aae39671d4ae4a27bbd0e796fde167c6a",
            ),
        ];
        for (b, w, d) in want {
            assert_eq!(digest(dequant_table(b), w), d, "{b:?}");
        }
        let signs: Vec<u64> = KSIGNS_IQ2XS.iter().map(|&s| s as u64).collect();
        assert_eq!(
            digest(&signs, 1),
            "a76742a603f8beca5212ecce0f1f02f11a4887fd2f7c8b15aca0ea3eb3380c31"
        );
    }

    /// The lists equal ggml's construction: every (distance, index) pair sorted, taken
    /// up to the `nwant`-th distinct distance.
    #[test]
    fn neighbour_lists_equal_the_sorted_construction() {
        for (b, bits, nwant) in [
            (Book::Iq2Xxs, 2, 2),
            (Book::Iq2Xs, 2, 2),
            (Book::Iq2S, 2, 1),
            (Book::Iq1, 2, 3),
            (Book::Iq3Xxs, 3, 2),
            (Book::Iq3S, 3, 3),
        ] {
            let l = lattice(b);
            let (dim, mask) = (l.dim, (1usize << bits) - 1);
            let n = l.grid.len() / dim;
            for u in (0..l.map.len()).step_by(5) {
                let max_level = if bits == 2 { 2 } else { 7 };
                if l.map[u] >= 0 || (0..dim).any(|k| (u >> (bits * k)) & mask > max_level) {
                    continue;
                }
                let pos: Vec<i32> = (0..dim)
                    .map(|k| 2 * ((u >> (bits * k)) & mask) as i32 + 1)
                    .collect();
                let mut dist: Vec<(i32, u16)> = (0..n)
                    .map(|j| {
                        let d = l
                            .point(j)
                            .iter()
                            .zip(&pos)
                            .map(|(&g, &p)| (g as i32 - p) * (g as i32 - p))
                            .sum();
                        (d, j as u16)
                    })
                    .collect();
                dist.sort_unstable();
                let mut want = Vec::new();
                let (mut d2, mut nhave) = (dist[0].0, 1);
                for &(d, j) in &dist {
                    if d > d2 {
                        if nhave == nwant {
                            break;
                        }
                        d2 = d;
                        nhave += 1;
                    }
                    want.push(j);
                }
                assert_eq!(l.neighbours_of(u), &want[..], "{b:?} u={u}");
            }
        }
    }

    #[test]
    fn maps_invert_the_grids_and_neighbours_are_sorted() {
        for b in [
            Book::Iq2Xxs,
            Book::Iq2Xs,
            Book::Iq2S,
            Book::Iq1,
            Book::Iq3Xxs,
            Book::Iq3S,
        ] {
            let l = lattice(b);
            let n = l.grid.len() / l.dim;
            let on_grid = l.map.iter().filter(|&&m| m >= 0).count();
            assert_eq!(on_grid, n, "{b:?}");
            // Spot check: ggml's first neighbour list of IQ3_XXS (index 1 = levels
            // (1,0,0,0), off the grid) holds grid points at distances 4 and 8 first.
            if b == Book::Iq3Xxs {
                assert!(l.map[1] < 0);
                assert!(!l.neighbours_of(1).is_empty());
            }
        }
    }
}
