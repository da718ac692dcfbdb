//! The CPU/GPU contract as WGSL: a prelude of declarations generated from
//! the Rust definitions (stream ids, noise-path codes, histogram layout,
//! limits, workgroup size, the engine's bindings) and prefixed to every
//! shader, so no value of the contract is copied into a `.wgsl` file by hand.
//! The random-number index formulas are `model::rng::BlockLayout` and their
//! WGSL twins in `shaders/rng.wgsl`; `tests/gpu.rs` compares the two.

use crate::engine::stats;
use crate::experiment::plan::NoisePath;
use crate::model::rng::stream;
use std::fmt::Write;

/// Philox, Box-Muller and the block-index formulas (after the prelude in every shader).
pub const RNG_WGSL: &str = include_str!("../../shaders/rng.wgsl");
/// The simulation kernels.
pub const SIMULATE_WGSL: &str = include_str!("../../shaders/simulate.wgsl");
/// A network's forward pass around the simulation kernels.
pub const NETWORK_WGSL: &str = include_str!("../../shaders/network.wgsl");
/// The probes used by the parity tests.
pub const PROBE_WGSL: &str = include_str!("../../shaders/probe.wgsl");

/// Digit planes a GPU conversion loop holds at once (`simulate_dynamic`
/// keeps a chunk's conversion values `[input bit][plane]` in registers).
/// `layer.weight_bits <= 8` keeps every encoding within it.
pub const MAX_PLANES: usize = 8;
/// Input planes one pass of a kernel holds (`simulate` splits them into two
/// vec4s); more planes take more passes.
pub const INPUT_GROUP: usize = 8;
/// Input planes the kernels handle (the weights in `Params::xweight`), a
/// multiple of four. `layer.input_bits <= 8` keeps every input coding within
/// it (sign-magnitude: 14 planes).
pub const MAX_INPUT_PLANES: usize = 16;
/// Threads per workgroup of every kernel but `reduce` (whose size is its own).
pub const WORKGROUP_SIZE: u32 = 64;

/// The kernels' code for each noise path (`Params::path`).
pub fn path_code(path: NoisePath) -> u32 {
    match path {
        NoisePath::Analytic => 0,
        NoisePath::Aggregated => 1,
        NoisePath::PerCellStatic => 2,
        NoisePath::PerCellDynamic => 3,
    }
}

/// Binding numbers of the engine's bind group (group 0): the bind group
/// layout, the bind group and the WGSL declarations all come from
/// [`BINDINGS`].
pub mod binding {
    pub const PARAMS: u32 = 0;
    pub const DIGITS: u32 = 1;
    pub const SA1_DIGIT: u32 = 2;
    pub const X: u32 = 3;
    pub const GROUPS: u32 = 4;
    pub const ROW_ACTIVE: u32 = 5;
    pub const SCALES: u32 = 6;
    pub const EXACT: u32 = 7;
    pub const WEIGHTS: u32 = 8;
    pub const Y: u32 = 9;
    pub const MOMENTS: u32 = 10;
    pub const HIST: u32 = 11;
    pub const DRAW_RANK: u32 = 12;
}

/// How the kernels use a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Uniform,
    Read,
    ReadWrite,
}

/// One binding of the engine's bind group.
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub slot: u32,
    /// The variable's name in WGSL.
    pub name: &'static str,
    pub access: Access,
    /// Its WGSL type.
    pub ty: &'static str,
    /// Its layout, as a comment in the prelude.
    pub doc: &'static str,
}

const fn bind(
    slot: u32,
    name: &'static str,
    access: Access,
    ty: &'static str,
    doc: &'static str,
) -> Binding {
    Binding {
        slot,
        name,
        access,
        ty,
        doc,
    }
}

/// The engine's bindings, in slot order.
pub const BINDINGS: [Binding; 13] = {
    use binding::*;
    use Access::*;
    [
        bind(PARAMS, "P", Uniform, "Params", "kernel parameters"),
        bind(DIGITS, "digits", Read, "array<i32>", "[j][k][n]"),
        bind(SA1_DIGIT, "sa1_digit", Read, "array<i32>", "[j][k][n]"),
        bind(X, "xin", Read, "array<u32>", "[b][k]"),
        bind(
            GROUPS,
            "groups",
            Read,
            "array<vec4<f32>>",
            "[c][j][n]: lo, hi, converted, 0",
        ),
        bind(ROW_ACTIVE, "row_active", Read, "array<u32>", "[b][c][i]"),
        bind(SCALES, "scales", Read, "array<f32>", "[j]"),
        bind(EXACT, "exact", Read, "array<f32>", "[b][n]"),
        bind(WEIGHTS, "weights", ReadWrite, "array<f32>", "[t][j][k][n]"),
        bind(Y, "y", ReadWrite, "array<f32>", "[t][b][n]"),
        bind(
            MOMENTS,
            "moments",
            ReadWrite,
            "array<f32>",
            "[t][3]: sum, sumsq, max |e|",
        ),
        bind(
            HIST,
            "hist",
            ReadWrite,
            "array<atomic<u32>>",
            "[HIST_BINS], engine::stats::bin_of",
        ),
        bind(
            DRAW_RANK,
            "draw_rank",
            Read,
            "array<u32>",
            "[j][k][n], see Plan::draw_rank",
        ),
    ]
};

/// Binding numbers of the network kernels' bind group (group 0 of
/// `shaders/network.wgsl`), from [`NET_BINDINGS`].
pub mod net_binding {
    pub const PARAMS: u32 = 0;
    pub const IMAGES: u32 = 1;
    pub const SRC_A: u32 = 2;
    pub const SRC_B: u32 = 3;
    pub const DST: u32 = 4;
    pub const PERM: u32 = 5;
    pub const X: u32 = 6;
    pub const ACTIVE: u32 = 7;
    pub const Y: u32 = 8;
    pub const CHAN: u32 = 9;
    pub const LOGITS: u32 = 10;
    pub const PREDS: u32 = 11;
}

/// The network kernels' bindings, in slot order. `xout`, `active_out` and
/// `ysum` are the simulation kernels' `xin`, `row_active` and `y` buffers.
pub const NET_BINDINGS: [Binding; 12] = {
    use net_binding::*;
    use Access::*;
    [
        bind(PARAMS, "NP", Uniform, "NetParams", "step parameters"),
        bind(
            IMAGES,
            "images",
            Read,
            "array<u32>",
            "[image][c][h][w] bytes, four to a word",
        ),
        bind(SRC_A, "src_a", Read, "array<i32>", "[t][img][c][h][w]"),
        bind(SRC_B, "src_b", Read, "array<i32>", "[t][img][c][h][w]"),
        bind(DST, "dst", ReadWrite, "array<i32>", "[t][img][c][h][w]"),
        bind(PERM, "perm", Read, "array<u32>", "[k]: array row -> input"),
        bind(
            X,
            "xout",
            ReadWrite,
            "array<u32>",
            "[t][b][k] input patterns",
        ),
        bind(
            ACTIVE,
            "active_out",
            ReadWrite,
            "array<u32>",
            "[t][b][c][i] converted planes",
        ),
        bind(Y, "ysum", Read, "array<f32>", "[t][b][n] simulated sums"),
        bind(CHAN, "chan", Read, "array<vec2<f32>>", "[n]: scale, bias"),
        bind(LOGITS, "logits", ReadWrite, "array<f32>", "[t][img][n]"),
        bind(PREDS, "preds", ReadWrite, "array<u32>", "[t][img]"),
    ]
};

/// A WGSL f32 literal of `v` written with every digit of the f64 (the
/// shortest decimal that round-trips it); WGSL rounds it once, to `v as
/// f32` (`tests/gpu.rs` parses the prelude back to check).
fn f32_literal(v: f64) -> String {
    format!("{v:?}f")
}

/// The constants every shader sees, generated from the Rust definitions.
pub fn prelude() -> String {
    let mut out = String::from(
        "// Generated by engine::wgsl::prelude from the Rust definitions; the\n\
         // .wgsl files use these names and never copy their values.\n",
    );
    let mut u32_const = |name: &str, v: u32| {
        writeln!(out, "const {name}: u32 = {v}u;").expect("write to a String");
    };
    // Streams, as model::rng::stream.
    u32_const("STREAM_WORKLOAD", stream::WORKLOAD);
    u32_const("STREAM_CELL_STATIC", stream::CELL_STATIC);
    u32_const("STREAM_CELL_DYNAMIC", stream::CELL_DYNAMIC);
    u32_const("STREAM_READ", stream::READ);
    u32_const("STREAM_AGGREGATED", stream::AGGREGATED);
    u32_const("STREAM_FAULT", stream::FAULT);
    // Noise paths, as Params::path.
    u32_const("PATH_ANALYTIC", path_code(NoisePath::Analytic));
    u32_const("PATH_AGGREGATED", path_code(NoisePath::Aggregated));
    u32_const("PATH_STATIC", path_code(NoisePath::PerCellStatic));
    u32_const("PATH_DYNAMIC", path_code(NoisePath::PerCellDynamic));
    // Histogram layout, as engine::stats.
    u32_const("HIST_BINS_PER_DECADE", stats::BINS_PER_DECADE as u32);
    u32_const("HIST_DECADES", stats::DECADES as u32);
    u32_const("HIST_SIDE", stats::SIDE as u32);
    u32_const("HIST_BINS", stats::BINS as u32);
    // Limits.
    u32_const("MAX_PLANES", MAX_PLANES as u32);
    u32_const("INPUT_GROUP", INPUT_GROUP as u32);
    u32_const("MAX_INPUT_PLANES", MAX_INPUT_PLANES as u32);
    u32_const("WORKGROUP_SIZE", WORKGROUP_SIZE);
    writeln!(
        out,
        "const HIST_MIN: f32 = {};\n\
         // log10(2), for log10 from the f32 log2.\n\
         const LOG10_2: f32 = {};",
        f32_literal(stats::HIST_MIN),
        f32_literal(std::f64::consts::LOG10_2),
    )
    .expect("write to a String");
    out
}

/// The declarations of the engine's bindings, from [`BINDINGS`].
pub fn bindings() -> String {
    declarations("BINDINGS", &BINDINGS)
}

/// The WGSL declarations of binding table `table` (named `name`).
fn declarations(name: &str, table: &[Binding]) -> String {
    let mut out = format!("// Generated from engine::wgsl::{name}.\n");
    for b in table {
        let space = match b.access {
            Access::Uniform => "uniform",
            Access::Read => "storage, read",
            Access::ReadWrite => "storage, read_write",
        };
        writeln!(
            out,
            "@group(0) @binding({}) var<{space}> {}: {}; // {}",
            b.slot, b.name, b.ty, b.doc
        )
        .expect("write to a String");
    }
    out
}

/// What the engine compiles for the simulation kernels.
pub fn simulate_source() -> String {
    format!("{}\n{RNG_WGSL}\n{}\n{SIMULATE_WGSL}", prelude(), bindings())
}

/// What the engine compiles for the network kernels.
pub fn network_source() -> String {
    format!(
        "{}\n{}\n{NETWORK_WGSL}",
        prelude(),
        declarations("NET_BINDINGS", &NET_BINDINGS)
    )
}

/// What the engine compiles for the parity probes.
pub fn probe_source() -> String {
    format!("{}\n{RNG_WGSL}\n{PROBE_WGSL}", prelude())
}

/// Every shader file with the source the engine compiles for it (`rng.wgsl`
/// is compiled inside both; alone it is checked with the prelude).
pub fn shader_sources() -> Vec<(&'static str, String)> {
    vec![
        ("rng.wgsl", format!("{}\n{RNG_WGSL}", prelude())),
        ("simulate.wgsl", simulate_source()),
        ("probe.wgsl", probe_source()),
        ("network.wgsl", network_source()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_are_in_slot_order_without_gaps() {
        for (i, b) in BINDINGS.iter().enumerate() {
            assert_eq!(b.slot as usize, i, "{}", b.name);
        }
        for (i, b) in NET_BINDINGS.iter().enumerate() {
            assert_eq!(b.slot as usize, i, "{}", b.name);
        }
    }

    #[test]
    fn path_codes_are_distinct() {
        let all = [
            NoisePath::Analytic,
            NoisePath::Aggregated,
            NoisePath::PerCellStatic,
            NoisePath::PerCellDynamic,
        ];
        let mut codes: Vec<u32> = all.iter().map(|&p| path_code(p)).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn every_encoding_fits_the_plane_limit() {
        use crate::model::{plane_count, Encoding, MappingSpec};
        // `layer.weight_bits` is at most 8; `slots` at most 8.
        for e in [
            Encoding::TwosComplement,
            Encoding::SignMagnitude,
            Encoding::Csd,
            Encoding::TermSlots,
        ] {
            assert!(plane_count(e, 8) <= MAX_PLANES, "{e:?}");
        }
        let slots = MappingSpec {
            encoding: Encoding::TermSlots,
            slots: Some(8),
            ..MappingSpec::preset("csd").expect("a preset")
        };
        assert_eq!(slots.cells(8), MAX_PLANES);
    }

    #[test]
    fn every_input_coding_fits_the_input_plane_limit() {
        use crate::model::InputCoding;
        // `layer.input_bits` is at most 8.
        for c in [
            InputCoding::Unsigned,
            InputCoding::TwosComplement,
            InputCoding::SignMagnitude,
        ] {
            assert!(c.planes(8) <= MAX_INPUT_PLANES, "{c:?}");
        }
        assert_eq!(MAX_INPUT_PLANES % 4, 0);
    }
}
