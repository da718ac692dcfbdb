//! The CIM model: how a mapping turns weights into planes of cell levels, and
//! what one ADC conversion does and costs. It knows no engine, screen or file.

pub mod energy;
pub mod quantize;
pub mod rng;

use serde::{Deserialize, Serialize};

/// How a weight is written as signed digits over power-of-two planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// Two's complement bits in {0,1}; the MSB plane has scale -2^(Bw-1).
    TwosComplement,
    /// sign(w) * bit_j(|w|) in {-1,0,+1}, Bw-1 planes.
    SignMagnitude,
    /// Canonical signed digits (non-adjacent form) in {-1,0,+1}, Bw planes:
    /// the fewest non-zero digits per value.
    Csd,
    /// A weight's non-zero CSD digits, largest first, one per term slot as
    /// a level `±2^e` (scale 1); its digit planes are CSD's.
    TermSlots,
}

impl Encoding {
    /// The name experiment files and result files use.
    pub fn label(&self) -> &'static str {
        match self {
            Encoding::TwosComplement => "twos-complement",
            Encoding::SignMagnitude => "sign-magnitude",
            Encoding::Csd => "csd",
            Encoding::TermSlots => "term-slots",
        }
    }
}

/// Which range each conversion's ADC spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdcRange {
    /// The array's full scale: [0, P] for {0,1} digits, [-P, P] for signed.
    Full,
    /// [-n_neg, n_pos]: the counts of -1 and +1 digits in the (chunk, column, plane) group.
    Adaptive,
    /// A percentile of the plane's noise-free sums over the workload.
    Calibrated,
}

impl AdcRange {
    /// The name experiment files and result files use.
    pub fn label(&self) -> &'static str {
        match self {
            AdcRange::Full => "full",
            AdcRange::Adaptive => "adaptive",
            AdcRange::Calibrated => "calibrated",
        }
    }
}

/// One mapping: an encoding plus the ingredients ZEBRA adds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    pub name: String,
    pub encoding: Encoding,
    /// Digits per cell (1..=4): each cell holds the level of `bits_per_cell`
    /// consecutive digits (see [`MappingSpec::cell_scales`]).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub bits_per_cell: u32,
    /// Term slots per weight (1..=8), for `term-slots` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// Skip (chunk, column, plane) groups whose digits are all zero.
    pub skip_zero_planes: bool,
    /// Skip input bit planes that are all zero within a chunk.
    pub skip_zero_inputs: bool,
    pub adc_range: AdcRange,
}

impl MappingSpec {
    fn new(
        name: &str,
        encoding: Encoding,
        skip: bool,
        skip_inputs: bool,
        adc_range: AdcRange,
    ) -> Self {
        MappingSpec {
            name: name.into(),
            encoding,
            bits_per_cell: 1,
            slots: None,
            skip_zero_planes: skip,
            skip_zero_inputs: skip_inputs,
            adc_range,
        }
    }

    /// The built-in mappings: the two of the paper and ablations that each
    /// isolate one ingredient.
    pub fn presets() -> Vec<MappingSpec> {
        use AdcRange::*;
        use Encoding::*;
        vec![
            MappingSpec::new("dense", TwosComplement, false, false, Full),
            MappingSpec::new("zebra", SignMagnitude, true, true, Adaptive),
            MappingSpec::new("signmag", SignMagnitude, false, false, Full),
            MappingSpec::new("signmag-skip", SignMagnitude, true, true, Full),
            MappingSpec::new("zebra-noskip", SignMagnitude, false, false, Adaptive),
            MappingSpec::new("dense-cal", TwosComplement, false, false, Calibrated),
            MappingSpec::new("dense-adaptive", TwosComplement, true, true, Adaptive),
            MappingSpec::new("csd", Csd, true, true, Adaptive),
        ]
    }

    /// A built-in mapping by name.
    pub fn preset(name: &str) -> Option<MappingSpec> {
        Self::presets().into_iter().find(|m| m.name == name)
    }

    /// Whether levels may be negative (the ADC then spans negative sums):
    /// signed digits, or two's complement cells that hold the sign digit
    /// with others.
    pub fn signed_digits(&self) -> bool {
        self.encoding != Encoding::TwosComplement || self.bits_per_cell > 1
    }

    /// Planes of cells for `weight_bits`-bit weights: the term slots, or
    /// the encoding's digit planes `bits_per_cell` at a time.
    pub fn cells(&self, weight_bits: u32) -> usize {
        match self.slots {
            Some(k) if self.encoding == Encoding::TermSlots => k as usize,
            _ => plane_count(self.encoding, weight_bits).div_ceil(self.bits_per_cell as usize),
        }
    }

    /// The scale of each plane of cells: 1 for term slots; the encoding's
    /// plane scales for one digit per cell; `2^(c j)` for slice `j` of `c`
    /// digits per cell.
    pub fn cell_scales(&self, weight_bits: u32) -> Vec<i32> {
        let c = self.bits_per_cell;
        match self.encoding {
            Encoding::TermSlots => vec![1; self.cells(weight_bits)],
            _ if c == 1 => scales(self.encoding, weight_bits),
            _ => (0..self.cells(weight_bits))
                .map(|j| 1i32 << (c as usize * j))
                .collect(),
        }
    }

    /// The lowest and highest level each plane of cells can hold, `[j]`:
    /// `±2^(Bw-1)` for a term slot; for a slice, the sums of its digits'
    /// smallest and largest contributions `d s_i / scale_j` over the
    /// encoding's digits (`{0,1}` for two's complement, `{-1,0,1}` else).
    pub fn level_bounds(&self, weight_bits: u32) -> Vec<(Level, Level)> {
        if self.encoding == Encoding::TermSlots {
            let top: Level = 1 << (weight_bits - 1);
            return vec![(-top, top); self.cells(weight_bits)];
        }
        let low_digit = if self.encoding == Encoding::TwosComplement {
            0
        } else {
            -1
        };
        let plane_scales = scales(self.encoding, weight_bits);
        let c = self.bits_per_cell as usize;
        self.cell_scales(weight_bits)
            .iter()
            .enumerate()
            .map(|(j, &scale)| {
                let planes = &plane_scales[c * j..(c * (j + 1)).min(plane_scales.len())];
                planes.iter().fold((0, 0), |(lo, hi), &s| {
                    let (a, b) = (low_digit * s / scale, s / scale);
                    (lo + a.min(b) as Level, hi + a.max(b) as Level)
                })
            })
            .collect()
    }

    /// The first weight of a `[k][n]` matrix `w` (`n` columns) this mapping
    /// cannot hold, if any: a term-slots weight with more terms than slots.
    pub fn check_weights(
        &self,
        weight_bits: u32,
        w: &[i32],
        n: usize,
    ) -> std::result::Result<(), TooManyTerms> {
        if self.encoding != Encoding::TermSlots {
            return Ok(());
        }
        let slots = self.cells(weight_bits);
        let mut digits = vec![0i8; plane_count(self.encoding, weight_bits)];
        for (idx, &wv) in w.iter().enumerate() {
            encode(self.encoding, weight_bits, wv, &mut digits);
            let terms = digits.iter().filter(|&&d| d != 0).count();
            if terms > slots {
                return Err(TooManyTerms {
                    row: idx / n.max(1),
                    col: idx % n.max(1),
                    w: wv,
                    terms: terms as u32,
                    slots: slots as u32,
                });
            }
        }
        Ok(())
    }

    /// The levels of one weight, one per plane of cells (`out.len() ==
    /// cells`); `digits` is scratch for the encoding's digits. Fails for a
    /// term-slots weight with more non-zero CSD digits than slots, giving
    /// that count.
    pub fn levels(
        &self,
        weight_bits: u32,
        w: i32,
        digits: &mut [i8],
        out: &mut [Level],
    ) -> std::result::Result<(), u32> {
        encode(self.encoding, weight_bits, w, digits);
        if self.encoding == Encoding::TermSlots {
            let terms = digits.iter().filter(|&&d| d != 0).count() as u32;
            if terms as usize > out.len() {
                return Err(terms);
            }
            out.fill(0);
            let largest_first = digits.iter().enumerate().rev().filter(|(_, &d)| d != 0);
            for (slot, (e, &d)) in out.iter_mut().zip(largest_first) {
                *slot = d as Level * (1 << e) as Level;
            }
            return Ok(());
        }
        let plane_scales = scales(self.encoding, weight_bits);
        let c = self.bits_per_cell as usize;
        for (j, (level, scale)) in out
            .iter_mut()
            .zip(self.cell_scales(weight_bits))
            .enumerate()
        {
            let slice = c * j..(c * (j + 1)).min(digits.len());
            let sum: i32 = slice.map(|i| digits[i] as i32 * plane_scales[i]).sum();
            *level = (sum / scale) as Level;
        }
        Ok(())
    }
}

/// `bits_per_cell`'s default.
fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

/// A weight a term-slots mapping cannot hold: more non-zero CSD digits than
/// slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyTerms {
    /// Its row and column in the `K x N` weight matrix.
    pub row: usize,
    pub col: usize,
    pub w: i32,
    /// Its non-zero CSD digits.
    pub terms: u32,
    pub slots: u32,
}

impl std::fmt::Display for TooManyTerms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let TooManyTerms {
            row,
            col,
            w,
            terms,
            slots,
        } = *self;
        write!(
            f,
            "weight (row {row}, column {col}) = {w} has {terms} non-zero CSD digits (terms), more than `slots = {slots}`; raise `slots` to {terms}, or round the weights to at most {slots} with `[quantize] terms = {slots}`"
        )
    }
}

/// How an array applies input values as bit planes, each driven over the
/// rows as 0/1 and converted like any other; the digital side weights plane
/// `i`'s conversions by [`InputCoding::plane_weight`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputCoding {
    /// `B` planes of `0..=2^B-1`, plane `i` weighted `2^i`.
    Unsigned,
    /// `B` planes of the low `B` bits of `v`, the top plane weighted
    /// `-2^(B-1)` (its conversions are subtracted).
    TwosComplement,
    /// Two passes of `B-1` magnitude planes: `|v|` of the positive inputs in
    /// planes `0..B-1`, of the negative ones in planes `B-1..2B-2`, whose
    /// conversions are subtracted. A row is driven in one pass only.
    SignMagnitude,
}

impl InputCoding {
    /// The name experiment files use.
    pub fn label(&self) -> &'static str {
        match self {
            InputCoding::Unsigned => "unsigned",
            InputCoding::TwosComplement => "twos-complement",
            InputCoding::SignMagnitude => "sign-magnitude",
        }
    }

    /// Whether the coding accepts negative values.
    pub fn signed(&self) -> bool {
        *self != InputCoding::Unsigned
    }

    /// Input planes of `bits`-bit values (`bits >= 2` for the signed codings).
    pub fn planes(&self, bits: u32) -> usize {
        match self {
            InputCoding::Unsigned | InputCoding::TwosComplement => bits as usize,
            InputCoding::SignMagnitude => 2 * (bits as usize - 1),
        }
    }

    /// The values `bits`-bit inputs may take, `(lowest, highest)`.
    pub fn range(&self, bits: u32) -> (i32, i32) {
        let half = 1i32 << (bits - 1);
        match self {
            InputCoding::Unsigned => (0, ((1u64 << bits) - 1) as i32),
            InputCoding::TwosComplement => (-half, half - 1),
            InputCoding::SignMagnitude => (-(half - 1), half - 1),
        }
    }

    /// The plane bits of value `v` (within [`InputCoding::range`]): bit `i`
    /// is 1 where plane `i` drives the row.
    #[inline]
    pub fn pattern(&self, bits: u32, v: i32) -> u32 {
        match self {
            InputCoding::Unsigned => v as u32,
            InputCoding::TwosComplement => (v as u32) & (((1u64 << bits) - 1) as u32),
            InputCoding::SignMagnitude if v < 0 => v.unsigned_abs() << (bits - 1),
            InputCoding::SignMagnitude => v as u32,
        }
    }

    /// The digital weight of input plane `i`: `+2^i`, `-2^(B-1)` for the top
    /// two's complement plane, `-2^(i-(B-1))` for the negative sign-magnitude pass.
    pub fn plane_weight(&self, bits: u32, i: usize) -> i64 {
        let top = bits as usize - 1;
        match self {
            InputCoding::Unsigned => 1 << i,
            InputCoding::TwosComplement if i == top => -(1 << i),
            InputCoding::TwosComplement => 1 << i,
            InputCoding::SignMagnitude if i >= top => -(1 << (i - top)),
            InputCoding::SignMagnitude => 1 << i,
        }
    }

    /// Every plane's weight, `[planes]`.
    pub fn plane_weights(&self, bits: u32) -> Vec<i64> {
        (0..self.planes(bits))
            .map(|i| self.plane_weight(bits, i))
            .collect()
    }
}

/// A cell's signed integer level: a digit, the digits of a multi-level
/// cell, or a term `±2^e` (up to `±2^(Bw-1)`).
pub type Level = i16;

/// The planes of a weight matrix: digit planes of an encoding, or the
/// planes of cells of a mapping.
#[derive(Clone, Debug)]
pub struct Planes {
    /// Digital scale of each plane (a signed power of two).
    pub scales: Vec<i32>,
    /// Levels (digits in {-1,0,1} for one digit per cell), laid out `[plane][k][n]`.
    pub digits: Vec<Level>,
    pub k: usize,
    pub n: usize,
}

impl Planes {
    /// Number of planes.
    pub fn count(&self) -> usize {
        self.scales.len()
    }

    /// Digit of plane `j` for weight row `k`, column `n`.
    #[inline]
    pub fn digit(&self, j: usize, k: usize, n: usize) -> Level {
        self.digits[(j * self.k + k) * self.n + n]
    }
}

/// Number of digit planes an encoding uses for `weight_bits`-bit weights
/// (term slots: CSD's).
pub fn plane_count(encoding: Encoding, weight_bits: u32) -> usize {
    match encoding {
        Encoding::TwosComplement | Encoding::Csd | Encoding::TermSlots => weight_bits as usize,
        Encoding::SignMagnitude => weight_bits as usize - 1,
    }
}

/// The digits of one weight, least significant plane first (term slots:
/// its CSD digits).
pub fn encode(encoding: Encoding, weight_bits: u32, w: i32, out: &mut [i8]) {
    let planes = plane_count(encoding, weight_bits);
    debug_assert_eq!(out.len(), planes);
    match encoding {
        Encoding::TwosComplement => {
            let u = (w as u32) & ((1u32 << weight_bits) - 1);
            for (j, d) in out.iter_mut().enumerate() {
                *d = ((u >> j) & 1) as i8;
            }
        }
        Encoding::SignMagnitude => {
            let (s, m) = (w.signum() as i8, w.unsigned_abs());
            for (j, d) in out.iter_mut().enumerate() {
                *d = s * ((m >> j) & 1) as i8;
            }
        }
        Encoding::Csd | Encoding::TermSlots => {
            // Non-adjacent form: at each step, an odd remainder takes the
            // digit (2 - (v mod 4)), which leaves an even remainder.
            let mut v = w as i64;
            for d in out.iter_mut() {
                *d = if v & 1 != 0 {
                    let digit = 2 - v.rem_euclid(4);
                    v -= digit;
                    digit as i8
                } else {
                    0
                };
                v /= 2;
            }
            debug_assert_eq!(v, 0, "CSD of {w} needs more than {planes} digits");
        }
    }
}

/// Digit plane scales of an encoding.
pub fn scales(encoding: Encoding, weight_bits: u32) -> Vec<i32> {
    let planes = plane_count(encoding, weight_bits);
    (0..planes)
        .map(|j| {
            if encoding == Encoding::TwosComplement && j == planes - 1 {
                -(1i32 << j)
            } else {
                1i32 << j
            }
        })
        .collect()
}

/// Encodes a `[k][n]` weight matrix into digit planes.
pub fn encode_planes(
    encoding: Encoding,
    weight_bits: u32,
    w: &[i32],
    k: usize,
    n: usize,
) -> Planes {
    let count = plane_count(encoding, weight_bits);
    let mut digits = vec![0; count * k * n];
    let mut buf = vec![0i8; count];
    for (idx, &wv) in w.iter().enumerate() {
        encode(encoding, weight_bits, wv, &mut buf);
        for (j, &d) in buf.iter().enumerate() {
            digits[j * k * n + idx] = d as Level;
        }
    }
    Planes {
        scales: scales(encoding, weight_bits),
        digits,
        k,
        n,
    }
}

/// The planes of cells of a `[k][n]` weight matrix under `mapping`
/// ([`MappingSpec::levels`] of every weight); with one digit per cell they
/// are [`encode_planes`]'s. Fails on the first weight (in row order) that a
/// term-slots mapping cannot hold.
pub fn cell_planes(
    mapping: &MappingSpec,
    weight_bits: u32,
    w: &[i32],
    k: usize,
    n: usize,
) -> std::result::Result<Planes, TooManyTerms> {
    let count = mapping.cells(weight_bits);
    let mut levels = vec![0; count * k * n];
    let mut digits = vec![0i8; plane_count(mapping.encoding, weight_bits)];
    let mut buf = vec![0; count];
    for (idx, &wv) in w.iter().enumerate() {
        mapping
            .levels(weight_bits, wv, &mut digits, &mut buf)
            .map_err(|terms| TooManyTerms {
                row: idx / n.max(1),
                col: idx % n.max(1),
                w: wv,
                terms,
                slots: count as u32,
            })?;
        for (j, &l) in buf.iter().enumerate() {
            levels[j * k * n + idx] = l;
        }
    }
    Ok(Planes {
        scales: mapping.cell_scales(weight_bits),
        digits: levels,
        k,
        n,
    })
}

/// An ADC: `bits = None` is ideal (no quantisation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adc {
    pub bits: Option<u32>,
}

impl Adc {
    /// The value read back for analog sum `a` over range `[lo, hi]`.
    ///
    /// `step >= 1`: a range that fits in `2^b` codes is read losslessly.
    #[inline(always)]
    pub fn convert(&self, a: f32, lo: f32, hi: f32) -> f32 {
        match self.bits {
            None => a,
            Some(b) => {
                let top = Self::top(b);
                lo + Self::code(a, lo, hi - lo, top) * Self::step(lo, hi, top)
            }
        }
    }

    /// The bits a conversion over `[lo, hi]` needs: `ceil(log2(hi - lo + 1))`,
    /// enough codes for every integer sum of the range (a fractional range
    /// is rounded up), capped at the ADC's bits; an ideal ADC is not capped.
    pub fn effective_bits(&self, lo: f32, hi: f32) -> u32 {
        let range = (hi - lo).max(0.0).ceil() as u64;
        let need = u64::BITS - range.leading_zeros();
        self.bits.map_or(need, |b| need.min(b))
    }

    /// The largest code, `2^b - 1`, as f32.
    #[inline(always)]
    pub fn top(bits: u32) -> f32 {
        ((1u32 << bits) - 1) as f32
    }

    /// The step of range `[lo, hi]`: at least one cell.
    #[inline(always)]
    pub fn step(lo: f32, hi: f32, top: f32) -> f32 {
        ((hi - lo) / top).max(1.0)
    }

    /// The code of analog sum `a` over a range of width `range` from `lo`:
    /// `round_ties_even((a - lo) top / range)` applied to the exact quotient
    /// (or `round_ties_even(a - lo)` when the range fits in `top` codes),
    /// clamped to `[0, top]`.
    ///
    /// Dividing by a precomputed step would round twice and move exact ties
    /// (integer sums at zero noise) one ulp off the tie. Here one correctly
    /// rounded division of exact values, `((a - lo) top) / range`, gives the
    /// quotient: for integer sums with `(a - lo) top` below 2^22 it is a tie
    /// exactly when the exact quotient is. GPUs may divide with 2.5 ulp of
    /// error, so `simulate.wgsl`'s `adc_code` floors the quotient and puts it
    /// right by its exact remainder instead; the codes are the same.
    #[inline(always)]
    pub fn code(a: f32, lo: f32, range: f32, top: f32) -> f32 {
        let (scale, den) = Self::scale(range, top);
        Self::code_scaled(a, lo, scale, den, top)
    }

    /// The factors of [`Adc::code_scaled`] for a range of width `range`:
    /// `(top, range)` when it is wider than `top` codes, else `(1, 1)`.
    #[inline(always)]
    pub fn scale(range: f32, top: f32) -> (f32, f32) {
        if range > top {
            (top, range)
        } else {
            (1.0, 1.0)
        }
    }

    /// The code of `a` with the group's factors precomputed: branch-free, so
    /// the CPU engine's loop over a row of conversions vectorises.
    #[inline(always)]
    pub fn code_scaled(a: f32, lo: f32, scale: f32, den: f32, top: f32) -> f32 {
        (((a - lo) * scale) / den).round_ties_even().clamp(0.0, top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(enc: Encoding, bw: u32, w: i32) -> i64 {
        let mut d = vec![0i8; plane_count(enc, bw)];
        encode(enc, bw, w, &mut d);
        d.iter()
            .zip(scales(enc, bw))
            .map(|(&d, s)| d as i64 * s as i64)
            .sum()
    }

    #[test]
    fn effective_bits_are_the_bit_length_of_the_range_capped_by_the_adc() {
        let ideal = Adc { bits: None };
        for (lo, hi, bits) in [
            (0.0, 0.0, 0),
            (0.0, 1.0, 1),
            (-1.0, 0.0, 1),
            (-1.0, 1.0, 2),
            (0.0, 3.0, 2),
            (-2.0, 2.0, 3),
            (0.0, 128.0, 8),
            (-128.0, 128.0, 9),
            (0.0, 2.5, 2),
            (-1048576.0, 1048576.0, 22),
        ] {
            assert_eq!(ideal.effective_bits(lo, hi), bits, "[{lo}, {hi}]");
            assert_eq!(Adc { bits: Some(6) }.effective_bits(lo, hi), bits.min(6));
        }
    }

    #[test]
    fn every_encoding_reconstructs_every_value() {
        for enc in [
            Encoding::TwosComplement,
            Encoding::SignMagnitude,
            Encoding::Csd,
        ] {
            for bw in 2..=8u32 {
                let m = (1i32 << (bw - 1)) - 1;
                for w in -m..=m {
                    assert_eq!(value(enc, bw, w), w as i64, "{enc:?} Bw={bw} w={w}");
                }
            }
        }
    }

    /// A mapping of `encoding` with `c` digits per cell (or `slots` term slots).
    fn cells(encoding: Encoding, c: u32, slots: Option<u32>) -> MappingSpec {
        MappingSpec {
            bits_per_cell: c,
            slots,
            ..MappingSpec::new("m", encoding, false, false, AdcRange::Adaptive)
        }
    }

    /// The levels of `w`, or its term count when refused.
    fn levels_of(m: &MappingSpec, bw: u32, w: i32) -> Result<Vec<Level>, u32> {
        let mut digits = vec![0i8; plane_count(m.encoding, bw)];
        let mut out = vec![0; m.cells(bw)];
        m.levels(bw, w, &mut digits, &mut out).map(|()| out)
    }

    const DIGIT_ENCODINGS: [Encoding; 3] = [
        Encoding::TwosComplement,
        Encoding::SignMagnitude,
        Encoding::Csd,
    ];

    #[test]
    fn every_encoding_and_cell_size_reconstructs_every_weight_within_its_bounds() {
        for enc in DIGIT_ENCODINGS {
            for c in 1..=4u32 {
                for bw in 2..=8u32 {
                    let m = cells(enc, c, None);
                    let (scales, bounds) = (m.cell_scales(bw), m.level_bounds(bw));
                    assert_eq!(scales.len(), plane_count(enc, bw).div_ceil(c as usize));
                    let q = (1i32 << (bw - 1)) - 1;
                    for w in -q..=q {
                        let l = levels_of(&m, bw, w).unwrap();
                        let back: i64 = l
                            .iter()
                            .zip(&scales)
                            .map(|(&l, &s)| l as i64 * s as i64)
                            .sum();
                        assert_eq!(back, w as i64, "{enc:?} c={c} Bw={bw} w={w}: {l:?}");
                        for (j, (&l, &(lo, hi))) in l.iter().zip(&bounds).enumerate() {
                            assert!(
                                (lo..=hi).contains(&l),
                                "{enc:?} c={c} Bw={bw} w={w} slice {j}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn one_digit_per_cell_is_the_encoding_itself() {
        for enc in DIGIT_ENCODINGS {
            for bw in 2..=8u32 {
                let m = cells(enc, 1, None);
                assert_eq!(m.cell_scales(bw), scales(enc, bw));
                let w: Vec<i32> = (-3..=3).collect();
                let p = cell_planes(&m, bw, &w, 7, 1).unwrap();
                assert_eq!(p.digits, encode_planes(enc, bw, &w, 7, 1).digits);
                let want = if enc == Encoding::TwosComplement {
                    (0, 1)
                } else {
                    (-1, 1)
                };
                assert!(m.level_bounds(bw).iter().all(|&b| b == want), "{enc:?}");
            }
        }
    }

    #[test]
    fn hand_worked_levels() {
        use Encoding::*;
        // 7 = 0b111 in three sign-magnitude planes: slices (1, 1) and (1): 3 and 1.
        assert_eq!(
            levels_of(&cells(SignMagnitude, 2, None), 4, 7),
            Ok(vec![3, 1])
        );
        assert_eq!(cells(SignMagnitude, 2, None).cell_scales(4), vec![1, 4]);
        assert_eq!(
            levels_of(&cells(SignMagnitude, 2, None), 4, -7),
            Ok(vec![-3, -1])
        );
        // -3 in 4-bit two's complement is 1101: slices 01 -> 1 and 11 with
        // scales 4 and -8 -> 1 - 2 = -1; levels -2..=1 in the top slice.
        let tc = cells(TwosComplement, 2, None);
        assert_eq!(levels_of(&tc, 4, -3), Ok(vec![1, -1]));
        assert_eq!(tc.level_bounds(4), vec![(0, 3), (-2, 1)]);
        assert!(tc.signed_digits());
        // CSD of 7 is 8 - 1: its terms, largest first.
        let ts = cells(TermSlots, 1, Some(2));
        assert_eq!(levels_of(&ts, 8, 7), Ok(vec![8, -1]));
        assert_eq!(levels_of(&ts, 8, -7), Ok(vec![-8, 1]));
        assert_eq!(levels_of(&ts, 8, 0), Ok(vec![0, 0]));
        assert_eq!(levels_of(&ts, 8, 64), Ok(vec![64, 0]));
        assert_eq!(levels_of(&ts, 8, 127), Ok(vec![128, -1]));
        assert_eq!(ts.cell_scales(8), vec![1, 1]);
        assert_eq!(ts.level_bounds(8), vec![(-128, 128); 2]);
        // 85 = 0b1010101 has four non-zero CSD digits.
        assert_eq!(levels_of(&ts, 8, 85), Err(4));
    }

    #[test]
    fn term_slots_hold_every_weight_with_at_most_k_terms_and_refuse_the_rest() {
        for bw in 2..=8u32 {
            let q = (1i32 << (bw - 1)) - 1;
            for k in 1..=4u32 {
                let m = cells(Encoding::TermSlots, 1, Some(k));
                for w in -q..=q {
                    let mut d = vec![0i8; bw as usize];
                    encode(Encoding::Csd, bw, w, &mut d);
                    let terms = d.iter().filter(|&&d| d != 0).count() as u32;
                    match levels_of(&m, bw, w) {
                        Ok(l) => {
                            assert!(terms <= k, "Bw={bw} k={k} w={w}");
                            assert_eq!(l.iter().map(|&l| l as i32).sum::<i32>(), w);
                            // Powers of two, largest first, then zeros.
                            let nz: Vec<i32> =
                                l.iter().map(|&l| l as i32).filter(|&l| l != 0).collect();
                            assert_eq!(nz.len() as u32, terms);
                            assert!(nz.iter().all(|l| l.unsigned_abs().is_power_of_two()));
                            assert!(
                                nz.windows(2).all(|p| p[0].abs() > p[1].abs()),
                                "w={w}: {l:?}"
                            );
                            assert!(l[nz.len()..].iter().all(|&l| l == 0));
                        }
                        Err(t) => assert!(t == terms && terms > k, "Bw={bw} k={k} w={w}"),
                    }
                }
            }
        }
        let m = cells(Encoding::TermSlots, 1, Some(2));
        let e = cell_planes(&m, 8, &[1, 2, 3, 85], 2, 2).unwrap_err();
        assert_eq!((e.row, e.col, e.w, e.terms, e.slots), (1, 1, 85, 4, 2));
        assert_eq!(m.check_weights(8, &[1, 2, 3, 85], 2), Err(e));
        let msg = e.to_string();
        for part in [
            "row 1, column 1",
            "= 85",
            "4 non-zero CSD digits",
            "`slots = 2`",
            "`[quantize] terms = 2`",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        assert_eq!(m.check_weights(8, &[1, 2, 3, 5], 2), Ok(()));
    }

    #[test]
    fn input_patterns_weighted_by_their_planes_give_back_every_value() {
        use InputCoding::*;
        for coding in [Unsigned, TwosComplement, SignMagnitude] {
            for bits in 2..=8u32 {
                let (lo, hi) = coding.range(bits);
                let planes = coding.planes(bits);
                let weights = coding.plane_weights(bits);
                assert_eq!(weights.len(), planes);
                for v in lo..=hi {
                    let p = coding.pattern(bits, v);
                    assert_eq!(
                        p >> planes,
                        0,
                        "{coding:?} B={bits} v={v}: bits past the planes"
                    );
                    let back: i64 = (0..planes)
                        .map(|i| ((p >> i) & 1) as i64 * weights[i])
                        .sum();
                    assert_eq!(back, v as i64, "{coding:?} B={bits} v={v} pattern {p:b}");
                    if coding == SignMagnitude {
                        // One pass only: positive values drive no negative
                        // plane and negative values no positive one.
                        let pos = p & ((1 << (bits - 1)) - 1);
                        assert!(pos == 0 || p >> (bits - 1) == 0, "B={bits} v={v}");
                    }
                }
            }
        }
        assert_eq!(Unsigned.range(8), (0, 255));
        assert_eq!(TwosComplement.range(8), (-128, 127));
        assert_eq!(SignMagnitude.range(8), (-127, 127));
        assert_eq!(SignMagnitude.planes(8), 14);
        assert_eq!(TwosComplement.pattern(8, -128), 0b1000_0000);
        assert_eq!(TwosComplement.plane_weight(8, 7), -128);
        assert_eq!(SignMagnitude.pattern(4, -5), 0b101_000);
        assert_eq!(SignMagnitude.plane_weight(4, 5), -4);
    }

    #[test]
    fn csd_is_non_adjacent_and_minimal_on_examples() {
        let mut d = [0i8; 8];
        encode(Encoding::Csd, 8, 7, &mut d);
        assert_eq!(d, [-1, 0, 0, 1, 0, 0, 0, 0]);
        for w in -127..=127 {
            encode(Encoding::Csd, 8, w, &mut d);
            assert!(d.windows(2).all(|p| p[0] == 0 || p[1] == 0), "w={w}: {d:?}");
        }
    }

    /// `round_ties_even(num / den)` of exact integers, `den > 0`.
    fn exact_round(num: i64, den: i64) -> i64 {
        let (q, r) = (num.div_euclid(den), num.rem_euclid(den));
        match (2 * r).cmp(&den) {
            std::cmp::Ordering::Less => q,
            std::cmp::Ordering::Greater => q + 1,
            std::cmp::Ordering::Equal => q + (q & 1),
        }
    }

    #[test]
    fn adc_rounds_hand_computed_ties_to_even() {
        // (bits, lo, hi, a, code): (a - lo) (2^b - 1) / (hi - lo) is k + 1/2.
        let cases = [
            (6, 0.0, 128.0, 64.0, 32.0),  // 64 * 63 / 128 = 31.5
            (3, -37.0, 37.0, 0.0, 4.0),   // 37 * 7 / 74 = 3.5
            (4, 0.0, 96.0, 16.0, 2.0),    // 16 * 15 / 96 = 2.5
            (4, 0.0, 96.0, 48.0, 8.0),    // 7.5
            (4, 0.0, 96.0, 80.0, 12.0),   // 12.5
            (5, -20.0, 42.0, 11.0, 16.0), // 31 * 31 / 62 = 15.5
            (2, 0.0, 6.0, 1.0, 0.0),      // 1 * 3 / 6 = 0.5
            (2, 0.0, 6.0, 5.0, 2.0),      // 2.5
        ];
        for (bits, lo, hi, a, code) in cases {
            let top = Adc::top(bits);
            assert_eq!(
                Adc::code(a, lo, hi - lo, top),
                code,
                "b={bits} [{lo}, {hi}] a={a}"
            );
            let value = lo + code * Adc::step(lo, hi, top);
            assert_eq!(Adc { bits: Some(bits) }.convert(a, lo, hi), value);
        }
    }

    #[test]
    fn adc_codes_of_integer_sums_are_the_exactly_rounded_quotient() {
        for bits in 1..=8u32 {
            let top = (1i64 << bits) - 1;
            for lo in [-300i64, -64, -7, 0] {
                for width in (1..=600i64).step_by(7) {
                    for a in (lo - 3)..=(lo + width + 3) {
                        let want = if width <= top {
                            a - lo
                        } else {
                            exact_round((a - lo) * top, width)
                        }
                        .clamp(0, top);
                        let got = Adc::code(a as f32, lo as f32, width as f32, top as f32);
                        assert_eq!(got, want as f32, "b={bits} lo={lo} width={width} a={a}");
                    }
                }
            }
        }
    }

    #[test]
    fn adc_reads_a_small_range_losslessly_and_clamps() {
        let adc = Adc { bits: Some(3) };
        for a in -3..=4 {
            assert_eq!(adc.convert(a as f32, -3.0, 4.0), a as f32);
        }
        assert_eq!(adc.convert(0.49, -3.0, 4.0), 0.0);
        assert_eq!(adc.convert(9.0, -3.0, 4.0), 4.0);
        // 128 over 63 codes: step 128/63, ties to even.
        let adc6 = Adc { bits: Some(6) };
        let step = 128.0f32 / 63.0;
        assert_eq!(adc6.convert(3.0, 0.0, 128.0), step);
        assert_eq!(adc6.convert(-1.0, 0.0, 128.0), 0.0);
        assert_eq!(adc6.convert(500.0, 0.0, 128.0), 63.0 * step);
    }
}
