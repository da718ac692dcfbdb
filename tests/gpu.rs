//! The GPU engine against the CPU engine. The shader checks run everywhere;
//! the engine checks need an adapter: without one they say so and pass,
//! unless ZEBRA_REQUIRE_GPU=1 (CI, with lavapipe installed), where they fail.

mod common;

use std::collections::BTreeMap;
use zebra_cim::engine::cpu::CpuEngine;
use zebra_cim::engine::gpu::net::NetParams;
use zebra_cim::engine::gpu::{BlockProbe, GpuEngine, KernelSet, Params};
use zebra_cim::engine::wgsl::{self, Access, BINDINGS, NET_BINDINGS};
use zebra_cim::engine::{stats, Engine};
use zebra_cim::experiment::plan::{NoisePath, Plan};
use zebra_cim::model::rng::{stream, Address, BlockLayout};
use zebra_cim::model::MappingSpec;

#[test]
fn every_shader_parses_and_validates_with_naga() {
    let sources = wgsl::shader_sources();
    let mut files: Vec<String> = std::fs::read_dir("shaders")
        .expect("shaders/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".wgsl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .wgsl files found in shaders/");
    let mut covered: Vec<String> = sources.iter().map(|(f, _)| f.to_string()).collect();
    covered.sort();
    assert_eq!(
        files, covered,
        "every shader file must be compiled (and so validated) by the engine"
    );
    for (name, src) in sources {
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}

#[test]
fn params_struct_matches_wgsl_size() {
    for (file, name, rust) in [
        ("simulate.wgsl", "Params", std::mem::size_of::<Params>()),
        (
            "network.wgsl",
            "NetParams",
            std::mem::size_of::<NetParams>(),
        ),
    ] {
        let src = wgsl::shader_sources()
            .into_iter()
            .find(|(n, _)| *n == file)
            .unwrap()
            .1;
        let module = naga::front::wgsl::parse_str(&src).unwrap();
        let size = module
            .types
            .iter()
            .find_map(|(_, t)| match (&t.name, &t.inner) {
                (Some(n), naga::TypeInner::Struct { span, .. }) if n == name => {
                    Some(*span as usize)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("struct {name} in {file}"));
        assert_eq!(size, rust, "{name}");
        assert_eq!(size % 16, 0, "uniform structs are 16-byte aligned");
    }
}

/// The module-scope constants of a WGSL source as naga evaluates them.
fn wgsl_constants(src: &str) -> BTreeMap<String, naga::Literal> {
    let module =
        naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{}", e.emit_to_string(src)));
    module
        .constants
        .iter()
        .map(|(_, c)| match module.global_expressions[c.init] {
            naga::Expression::Literal(l) => (c.name.clone().expect("named"), l),
            ref e => panic!("{:?} is not a literal: {e:?}", c.name),
        })
        .collect()
}

#[test]
fn prelude_constants_are_the_rust_values() {
    use naga::Literal::{F32, U32};
    use zebra_cim::experiment::plan::NoisePath::*;
    // What the shaders see, parsed back by the shader compiler.
    let got = wgsl_constants(&wgsl::prelude());
    let want: BTreeMap<String, naga::Literal> = [
        ("STREAM_WORKLOAD", U32(stream::WORKLOAD)),
        ("STREAM_CELL_STATIC", U32(stream::CELL_STATIC)),
        ("STREAM_CELL_DYNAMIC", U32(stream::CELL_DYNAMIC)),
        ("STREAM_READ", U32(stream::READ)),
        ("STREAM_AGGREGATED", U32(stream::AGGREGATED)),
        ("STREAM_FAULT", U32(stream::FAULT)),
        ("PATH_ANALYTIC", U32(wgsl::path_code(Analytic))),
        ("PATH_AGGREGATED", U32(wgsl::path_code(Aggregated))),
        ("PATH_STATIC", U32(wgsl::path_code(PerCellStatic))),
        ("PATH_DYNAMIC", U32(wgsl::path_code(PerCellDynamic))),
        ("HIST_BINS_PER_DECADE", U32(stats::BINS_PER_DECADE as u32)),
        ("HIST_DECADES", U32(stats::DECADES as u32)),
        ("HIST_SIDE", U32(stats::SIDE as u32)),
        ("HIST_BINS", U32(stats::BINS as u32)),
        ("HIST_MIN", F32(stats::HIST_MIN as f32)),
        ("LOG10_2", F32(std::f32::consts::LOG10_2)),
        ("MAX_PLANES", U32(wgsl::MAX_PLANES as u32)),
        ("INPUT_GROUP", U32(wgsl::INPUT_GROUP as u32)),
        ("MAX_INPUT_PLANES", U32(wgsl::MAX_INPUT_PLANES as u32)),
        ("WORKGROUP_SIZE", U32(wgsl::WORKGROUP_SIZE)),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    assert_eq!(
        got, want,
        "prelude (left) against the Rust constants (right)"
    );
    // The factor the GPU's bin_of has always used: the shipped GPU results
    // were binned with it.
    let old: f32 = "0.30102999566".parse().unwrap();
    assert_eq!(std::f32::consts::LOG10_2, old);
}

#[test]
fn engine_bindings_are_declared_from_the_rust_table_only() {
    for (src, table) in [
        (wgsl::simulate_source(), &BINDINGS[..]),
        (wgsl::network_source(), &NET_BINDINGS[..]),
    ] {
        bindings_match(&src, table);
    }
    // The hand-written files declare no engine binding (the probe keeps its own).
    for (file, text) in [
        ("simulate.wgsl", wgsl::SIMULATE_WGSL),
        ("network.wgsl", wgsl::NETWORK_WGSL),
        ("rng.wgsl", wgsl::RNG_WGSL),
    ] {
        assert!(
            !text.contains("@binding"),
            "{file} declares a binding by hand"
        );
    }
}

/// The bindings `src` declares are those of `table`, slot, name and access.
fn bindings_match(src: &str, table: &[wgsl::Binding]) {
    let module = naga::front::wgsl::parse_str(src).unwrap();
    let mut declared: Vec<(u32, String, Access)> = module
        .global_variables
        .iter()
        .filter_map(|(_, v)| {
            let b = v.binding.as_ref()?;
            assert_eq!(b.group, 0, "{:?}", v.name);
            let access = match v.space {
                naga::AddressSpace::Uniform => Access::Uniform,
                naga::AddressSpace::Storage { access }
                    if access.contains(naga::StorageAccess::STORE) =>
                {
                    Access::ReadWrite
                }
                naga::AddressSpace::Storage { .. } => Access::Read,
                ref s => panic!("{:?}: unexpected space {s:?}", v.name),
            };
            Some((b.binding, v.name.clone().unwrap(), access))
        })
        .collect();
    declared.sort_by_key(|d| d.0);
    let table: Vec<(u32, String, Access)> = table
        .iter()
        .map(|b| (b.slot, b.name.to_string(), b.access))
        .collect();
    assert_eq!(declared, table);
}

/// The kernel set that is not `k`.
fn other_kernels(k: KernelSet) -> KernelSet {
    match k {
        KernelSet::Plain => KernelSet::Tiled,
        KernelSet::Tiled => KernelSet::Plain,
    }
}

/// An adapter, or None (with a note) where there is none and none is required.
fn engine() -> Option<GpuEngine> {
    common::gpu_engine()
}

#[test]
fn rng_words_match_exactly_and_gaussians_closely() {
    let Some(g) = engine() else { return };
    let mut reqs = Vec::new();
    let kat = [
        (0u64, 0u32, 0u32, 0u64),
        (u64::MAX, u32::MAX, u32::MAX, u64::MAX),
        (
            0x299f31d0_a4093822,
            0x13198a2e,
            0x03707344,
            0x85a308d3_243f6a88,
        ),
    ];
    for (seed, trial, stream, index) in kat {
        reqs.push((
            Address {
                seed,
                trial,
                stream,
            },
            index,
            0xFFFF_FFFF,
            0xD251_1F53,
        ));
    }
    for i in 0..4000u64 {
        let w = Address {
            seed: 99,
            trial: 1,
            stream: 2,
        }
        .block(i);
        reqs.push((
            Address {
                seed: i * 7919,
                trial: (i % 13) as u32,
                stream: (i % 7) as u32,
            },
            i << 20 | i,
            w[0],
            w[1],
        ));
    }
    let out = g.probe(&reqs).unwrap();
    let mut worst: f32 = 0.0;
    for (i, ((addr, index, a, b), (words, z, prod))) in reqs.iter().zip(&out).enumerate() {
        assert_eq!(*words, addr.block(*index), "request {i}: words differ");
        assert_eq!(
            *prod,
            zebra_cim::model::rng::mulhilo(*a, *b),
            "request {i}: {a:#x} * {b:#x}"
        );
        let want = addr.gaussian4(*index);
        for l in 0..4 {
            let d = (z[l] - want[l]).abs();
            worst = worst.max(d);
            // Same f32 operations; a driver may round sqrt or division 1 ulp differently.
            assert!(
                d <= 2e-6 * (1.0 + want[l].abs()),
                "request {i} lane {l}: gpu {} cpu {} (diff {d})",
                z[l],
                want[l]
            );
        }
    }
    // Random123 known answers through the GPU.
    assert_eq!(out[0].0, [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    assert_eq!(out[1].0, [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    assert_eq!(out[2].0, [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]);
    eprintln!("largest Gaussian difference: {worst:e}");
}

/// Argument tuples for the block-index formulas: fixed corner cases and
/// Philox-drawn ones of every magnitude, all with 32-bit first factors
/// (what the GPU engine accepts), many with rows and block indices past
/// 2^32.
fn block_probes() -> Vec<BlockProbe> {
    let at = |layout: (usize, usize, usize, usize, usize), a: [usize; 6]| BlockProbe {
        layout: BlockLayout {
            k: layout.0,
            j: layout.1,
            xbits: layout.2,
            chunks: layout.3,
            nb: layout.4,
        },
        b: a[0],
        c: a[1],
        i: a[2],
        k: a[3],
        j: a[4],
        blk: a[5],
    };
    // In 128 bits: the engine refuses plans whose first factors pass 2^32;
    // a block index stays below 2^64.
    let fits = |p: &BlockProbe| {
        let l = &p.layout;
        let w = |v: usize| v as u128;
        let first = [
            w(p.j) * w(l.k) + w(p.k),
            w(p.b) * w(l.xbits) + w(p.i),
            w(p.b) * w(l.chunks) + w(p.c),
        ];
        let rows = [
            ((w(p.b) * w(l.xbits) + w(p.i)) * w(l.k) + w(p.k)) * w(l.j) + w(p.j),
            ((w(p.b) * w(l.chunks) + w(p.c)) * w(l.xbits) + w(p.i)) * w(l.j) + w(p.j),
        ];
        first.iter().all(|&r| r <= u32::MAX as u128)
            && rows
                .iter()
                .all(|&r| r * w(l.nb) + w(p.blk) <= u64::MAX as u128)
    };
    let max = u32::MAX as usize;
    let mut out = vec![
        at((1, 1, 1, 1, 1), [0; 6]),
        at((256, 7, 8, 2, 64), [3, 1, 5, 200, 6, 63]),
        // Rows just under 2^32, the largest block count and offset.
        at((65_536, 1, 1, 1, max), [0, 0, 0, 65_535, 65_535, max]),
        at((1, 1, 1, 1, max), [max, 0, 0, 0, 0, max]),
        at(
            (4096, 8, 8, 4096, 1 << 20),
            [16_383, 4095, 7, 4095, 7, (1 << 20) - 1],
        ),
        // A network's rows: 10,000 images of 28 x 28 positions, K = 576,
        // sign-magnitude inputs, P = 64.
        at((576, 8, 14, 9, 16), [7_839_999, 8, 13, 575, 7, 15]),
    ];
    assert!(
        out.iter().all(fits),
        "a corner case is out of the GPU's range"
    );
    let draw = Address {
        seed: 0xB10C,
        trial: 0,
        stream: 0,
    };
    let mut t = 0u64;
    while out.len() < 20_000 {
        let words: Vec<u32> = (0..4).flat_map(|o| draw.block(4 * t + o)).collect();
        t += 1;
        // Value `n` of this tuple, of a random width up to `bits`, so that
        // small and large values both occur.
        let value = |n: usize, bits: u32| {
            let width = (words[11 + n / 4] >> (8 * (n % 4))) as u64 % (bits as u64 + 1);
            (words[n] as u64 & ((1u64 << width) - 1)) as usize
        };
        let layout = (
            value(0, 20).max(1),
            value(1, 4).max(1),
            value(2, 4).max(1),
            value(3, 16).max(1),
            value(4, 32).max(1),
        );
        let p = at(
            layout,
            [
                value(5, 28),
                value(6, 16),
                value(7, 4),
                value(8, 20),
                value(9, 4),
                value(10, 32),
            ],
        );
        if fits(&p) {
            out.push(p);
        }
    }
    out
}

#[test]
fn block_index_formulas_match_their_wgsl_twins() {
    let Some(g) = engine() else { return };
    let probes = block_probes();
    let got = g.probe_blocks(&probes).unwrap();
    let past_32_bits = probes
        .iter()
        .filter(|p| p.layout.read_block(p.b, p.c, p.i, p.j, p.blk) >> 32 != 0)
        .count();
    assert!(past_32_bits > 1000, "only {past_32_bits} indices past 2^32");
    let rows_past_32_bits = probes
        .iter()
        .filter(|p| (p.layout.dynamic_block(p.b, p.i, p.k, p.j, 0) / p.layout.nb as u64) >> 32 != 0)
        .count();
    assert!(
        rows_past_32_bits > 1000,
        "only {rows_past_32_bits} dynamic rows past 2^32"
    );
    let mut bad = Vec::new();
    for (n, (p, gpu)) in probes.iter().zip(&got).enumerate() {
        let l = &p.layout;
        let cpu = [
            l.static_block(p.j, p.k, p.blk),
            l.dynamic_block(p.b, p.i, p.k, p.j, p.blk),
            l.read_block(p.b, p.c, p.i, p.j, p.blk),
        ];
        if cpu != *gpu {
            bad.push((n, p, cpu, *gpu));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} tuples differ; first (index, arguments, rust [static, dynamic, read], wgsl): {:#?}",
        bad.len(),
        probes.len(),
        &bad[..bad.len().min(3)]
    );
}

fn scenario(noise: &str, adc: &str, p: usize) -> String {
    format!(
        "version = 1\nseed = 21\n[layer]\nk = 70\nn = 20\ninputs = 3\ninput_zero_fraction = 0.3\n[array]\nparallelism = {p}\n\
         [adc]\nbits = {adc}\ncalibrate_percentile = 99.0\n[noise]\n{noise}\n"
    )
}

#[test]
fn gpu_matches_cpu_on_every_mapping_and_noise_path() {
    gpu_matches_cpu(&MappingSpec::presets());
}

/// Multi-level cells: sign-magnitude with two digits per cell, two's
/// complement with four (a signed top slice, calibrated) and four term
/// slots (levels up to 128, which hold every 8-bit weight).
#[test]
fn gpu_matches_cpu_on_multi_level_cells() {
    use zebra_cim::model::{AdcRange, Encoding};
    let m = |name: &str, encoding, c, slots, adc_range, skip| MappingSpec {
        name: name.into(),
        encoding,
        bits_per_cell: c,
        slots,
        skip_zero_planes: skip,
        skip_zero_inputs: skip,
        adc_range,
    };
    gpu_matches_cpu(&[
        m(
            "signmag-2",
            Encoding::SignMagnitude,
            2,
            None,
            AdcRange::Adaptive,
            true,
        ),
        m(
            "dense-4",
            Encoding::TwosComplement,
            4,
            None,
            AdcRange::Calibrated,
            false,
        ),
        m(
            "slots-4",
            Encoding::TermSlots,
            1,
            Some(4),
            AdcRange::Full,
            true,
        ),
    ]);
}

fn gpu_matches_cpu(mappings: &[MappingSpec]) {
    let Some(mut g) = engine() else { return };
    let cases = [
        (
            "none",
            scenario("cell_sigma = 0.0", "6", 32),
            NoisePath::Analytic,
        ),
        (
            "read",
            scenario("read_sigma = 0.7", "5", 24),
            NoisePath::Analytic,
        ),
        (
            "static",
            scenario("cell_sigma = 0.08", "6", 32),
            NoisePath::PerCellStatic,
        ),
        (
            "static ideal",
            scenario("cell_sigma = 0.08\nread_sigma = 0.2", "\"ideal\"", 70),
            NoisePath::PerCellStatic,
        ),
        (
            "dynamic per-cell",
            scenario(
                "cell_sigma = 0.08\nmode = \"dynamic\"\nsampling = \"per-cell\"",
                "6",
                33,
            ),
            NoisePath::PerCellDynamic,
        ),
        (
            "dynamic per-cell, leak and faults (draws addressed by column)",
            scenario(
                "cell_sigma = 0.08\nmode = \"dynamic\"\nsampling = \"per-cell\"\nleak = 0.02\np_sa1 = 0.01",
                "6",
                33,
            ),
            NoisePath::PerCellDynamic,
        ),
        (
            "dynamic per-cell + read",
            scenario(
                "cell_sigma = 0.08\nmode = \"dynamic\"\nsampling = \"per-cell\"\nread_sigma = 0.4",
                "6",
                33,
            ),
            NoisePath::PerCellDynamic,
        ),
        (
            "dynamic per-cell, leak + read",
            scenario(
                "cell_sigma = 0.08\nmode = \"dynamic\"\nsampling = \"per-cell\"\nleak = 0.02\nread_sigma = 0.4",
                "\"ideal\"",
                33,
            ),
            NoisePath::PerCellDynamic,
        ),
        (
            "dynamic aggregated",
            scenario(
                "cell_sigma = 0.08\nmode = \"dynamic\"\nread_sigma = 0.3",
                "4",
                16,
            ),
            NoisePath::Aggregated,
        ),
        (
            "faults + leak",
            scenario(
                "cell_sigma = 0.05\nleak = 0.03\np_sa0 = 0.02\np_sa1 = 0.01",
                "6",
                40,
            ),
            NoisePath::PerCellStatic,
        ),
        (
            "faults analytic",
            scenario("p_sa0 = 0.02\np_sa1 = 0.02\nread_sigma = 0.1", "7", 40),
            NoisePath::Analytic,
        ),
    ];
    let mut cpu = CpuEngine::new();
    for (what, text, path) in cases {
        let (params, layer) = common::point(&text);
        for m in mappings {
            let plan = Plan::new(&params, &layer, m);
            assert_eq!(plan.path, path, "{what}");
            let trials = 0..24;
            let c = cpu.run(&plan, trials.clone(), true).unwrap();
            let gb = g.run(&plan, trials.clone(), true).unwrap();
            let label = format!("{what} / {}", m.name);
            // The other kernel set sums the same values in the same order.
            let default = g.kernels();
            g.set_kernels(other_kernels(default));
            let go = g.run(&plan, trials, true).unwrap();
            g.set_kernels(default);
            assert_eq!(go.raw, gb.raw, "{label}: kernel sets differ");
            common::compare_within_steps(
                &plan,
                c.raw.as_ref().unwrap(),
                gb.raw.as_ref().unwrap(),
                &label,
            );
            // Statistics reduced on the GPU agree with the CPU's within f32 rounding and single-step flips.
            // The GPU's histogram holds its own errors in their bins (totals
            // alone cannot fail): binned here by `stats::bin_of`, an error
            // within 1e-4 (relative) of a bin edge may land on either side,
            // as the shader's f32 log2 is not the CPU's f64 log10.
            let got_raw = gb.raw.as_ref().unwrap();
            let mut want = vec![0i64; zebra_cim::engine::stats::BINS];
            let mut near_edge = 0i64;
            for &e in got_raw {
                let e = e as f64;
                let bin = zebra_cim::engine::stats::bin_of(e);
                want[bin] += 1;
                let (a, b) = (
                    zebra_cim::engine::stats::bin_of(e * (1.0 - 1e-4)),
                    zebra_cim::engine::stats::bin_of(e * (1.0 + 1e-4)),
                );
                near_edge += (a != bin || b != bin) as i64;
            }
            assert_eq!(
                gb.hist.iter().sum::<u64>() as usize,
                got_raw.len(),
                "{label}: histogram total"
            );
            let moved: i64 = want
                .iter()
                .zip(&gb.hist)
                .map(|(&w, &g)| (w - g as i64).abs())
                .sum();
            assert!(
                moved <= 2 * near_edge,
                "{label}: GPU histogram differs from its raw errors' bins by {moved} counts ({near_edge} errors near an edge)"
            );
            for (t, (a, b)) in c.trials.iter().zip(&gb.trials).enumerate() {
                let scale = a.sumsq.sqrt() * (plan.b * plan.n) as f64;
                assert!(
                    (a.sumsq - b.sumsq).abs() <= 1e-3 * a.sumsq + 1e-3 * scale + 1.0,
                    "{label}: trial {t} sumsq cpu {} gpu {}",
                    a.sumsq,
                    b.sumsq
                );
            }
        }
    }
}

/// The GPU bins an error with f32 `log2(|e| / HIST_MIN) * LOG10_2 * 100`,
/// the CPU with f64 `log10`: the two agree except for an |e| within float
/// rounding of a bin edge. Bound: the f32 path rounds `|e| / HIST_MIN`
/// (1 ulp, and `HIST_MIN` itself: 1e-7 relative together), `log2` (Vulkan:
/// 3 ulp of a result below 37, 1.2e-5), and the product with `LOG10_2 * 100`
/// (1 ulp of up to 1100 and of the factor: 2e-4 bins): under 6e-4 of a
/// fine bin. An error counts as near an edge within 1e-3 of a bin (2.3e-5
/// relative in |e|); exact decades, frequent with an ADC, are edges.
#[test]
fn gpu_histogram_bins_are_the_cpu_bins_except_at_edges() {
    let Some(mut g) = engine() else { return };
    const NEAR: f64 = 1e-3;
    for (what, adc) in [("ideal ADC", "\"ideal\""), ("6-bit ADC", "6")] {
        let (params, layer) =
            common::point(&scenario("cell_sigma = 0.05\nread_sigma = 0.2", adc, 32));
        for mapping in ["dense", "zebra"] {
            let plan = common::plan(&params, &layer, mapping);
            let out = g.run(&plan, 0..64, true).unwrap();
            // The raw errors are the f32 `y - exact` the GPU binned (both
            // exact in f64 below 2^24, so rounded once, as the GPU rounds).
            let raw = out.raw.unwrap();
            let (mut far, mut slack) = (vec![0u64; stats::BINS], vec![0u64; stats::BINS]);
            let mut near = 0;
            for &e in &raw {
                let e = e as f64;
                // Fine-bin offset of |e| in f64; edges are at whole offsets 0, 1, ...
                let m = (e.abs() / stats::HIST_MIN).log10() * stats::BINS_PER_DECADE as f64;
                let edge = m.round();
                if e != 0.0 && edge >= 0.0 && (m - edge).abs() < NEAR {
                    // Either bin beside the edge (offset edge - 1, or the
                    // zero bin, and offset edge).
                    near += 1;
                    let bin = |off: f64| {
                        if off < 0.0 {
                            return stats::SIDE;
                        }
                        let off = (off as usize).min(stats::SIDE - 1);
                        if e > 0.0 {
                            stats::SIDE + 1 + off
                        } else {
                            stats::SIDE - 1 - off
                        }
                    };
                    let (below, above) = (bin(edge - 1.0), bin(edge));
                    slack[below] += 1;
                    if above != below {
                        slack[above] += 1;
                    }
                } else {
                    far[stats::bin_of(e)] += 1;
                }
            }
            let label = format!("{what} / {mapping}");
            assert_eq!(
                out.hist.iter().sum::<u64>(),
                raw.len() as u64,
                "{label}: total"
            );
            let bad: Vec<(usize, u64, u64)> = (0..stats::BINS)
                .filter(|&b| out.hist[b] < far[b] || out.hist[b] > far[b] + slack[b])
                .map(|b| (b, far[b], out.hist[b]))
                .take(5)
                .collect();
            assert!(
                bad.is_empty(),
                "{label}: bins (bin, cpu count, gpu count) differ beyond {near} errors at edges: {bad:?}"
            );
            let cpu_bins = raw.iter().fold(vec![0u64; stats::BINS], |mut h, &e| {
                h[stats::bin_of(e as f64)] += 1;
                h
            });
            let moved: u64 = cpu_bins
                .iter()
                .zip(&out.hist)
                .map(|(a, b)| a.abs_diff(*b))
                .sum();
            eprintln!(
                "{label}: {} errors, {near} within {NEAR} bins of an edge, {} binned apart",
                raw.len(),
                moved / 2
            );
        }
    }
}

#[test]
fn a_short_first_call_does_not_fix_the_dispatch_size() {
    // A one-trial warm-up once sized every later dispatch of the same plan to
    // one trial (17x slower on an H100); later, larger calls must grow it.
    let Some(mut g) = engine() else { return };
    let text =
        "version = 1\nseed = 3\n[layer]\nk = 64\nn = 16\ninputs = 2\n[noise]\ncell_sigma = 0.05\n";
    let (params, layer) = common::point(text);
    let plan = Plan::new(&params, &layer, &MappingSpec::presets()[0]);
    let first = g.run(&plan, 0..1, false).unwrap();
    assert_eq!(g.dispatch_trials(), Some(1));
    let later = g.run(&plan, 0..32, false).unwrap();
    assert_eq!(g.dispatch_trials(), Some(32));
    // Re-sizing changes nothing in the results.
    assert_eq!(first.trials[0].sumsq, later.trials[0].sumsq);
}

#[test]
fn gpu_is_exact_without_noise_and_with_a_lossless_adc() {
    let Some(mut g) = engine() else { return };
    for (k, n, b, p, wbits, xbits) in [
        (1, 1, 1, 1, 2, 1),
        (65, 7, 2, 13, 8, 8),
        (200, 33, 1, 128, 5, 3),
        (130, 5, 4, 64, 8, 6),
    ] {
        let text = format!(
            "version = 1\nseed = {k}\n[layer]\nk = {k}\nn = {n}\ninputs = {b}\nweight_bits = {wbits}\ninput_bits = {xbits}\n[array]\nparallelism = {p}\n[adc]\nbits = 16\ncalibrate_percentile = 100.0\n"
        );
        let (params, layer) = common::point(&text);
        for m in MappingSpec::presets() {
            let plan = Plan::new(&params, &layer, &m);
            let out = g.run(&plan, 0..2, true).unwrap();
            let raw = out.raw.unwrap();
            let bad: Vec<(usize, f32)> = raw
                .iter()
                .cloned()
                .enumerate()
                .filter(|(_, e)| *e != 0.0)
                .take(5)
                .collect();
            assert!(
                bad.is_empty(),
                "{} k={k} n={n} p={p}: first errors {bad:?}",
                m.name
            );
            assert!(out.trials.iter().all(|t| t.sumsq == 0.0));
        }
    }
}

#[test]
fn gpu_static_variance_matches_closed_form() {
    let Some(mut g) = engine() else { return };
    let sigma = 0.05f64;
    let text = "version = 1\nseed = 11\n[layer]\nk = 70\nn = 12\ninputs = 1\ninput_zero_fraction = 0.2\n[array]\nparallelism = 32\n[adc]\nbits = \"ideal\"\n[noise]\ncell_sigma = 0.05\n";
    let (params, layer) = common::point(text);
    let trials = 3000usize;
    for mapping in ["dense", "zebra"] {
        let plan = common::plan(&params, &layer, mapping);
        let raw = g.run(&plan, 0..trials as u32, true).unwrap().raw.unwrap();
        let n = plan.n;
        for col in 0..n {
            let theory = sigma
                * sigma
                * (0..plan.k)
                    .map(|k| {
                        let e: f64 = (0..plan.j)
                            .map(|j| {
                                (plan.scales[j] as f64).powi(2)
                                    * (plan.digits[(j * plan.k + k) * n + col] as f64).abs()
                            })
                            .sum();
                        (plan.x[k] as f64).powi(2) * e
                    })
                    .sum::<f64>();
            let v: Vec<f64> = (0..trials).map(|t| raw[t * n + col] as f64).collect();
            let mean = v.iter().sum::<f64>() / trials as f64;
            let var = v.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (trials - 1) as f64;
            // Standard error of a Gaussian sample variance: var * sqrt(2 / (T - 1)); 6 SE.
            let se = theory * (2.0 / (trials - 1) as f64).sqrt();
            assert!(
                (var - theory).abs() <= 6.0 * se,
                "{mapping} column {col}: {var} vs {theory}"
            );
        }
    }
}

/// A whole network on the GPU: with no noise and a lossless ADC its logits
/// equal the int8 inference; with static noise its accuracy on each chip is
/// the CPU engine's, within one image in a hundred.
#[test]
fn gpu_network_is_exact_without_noise_and_matches_the_cpu_with_noise() {
    use zebra_cim::sweep::accuracy::{SimNetwork, Workload};
    let Some(mut g) = engine() else { return };
    let text = |extra: &str| {
        format!(
            "version = 1\nseed = 3\nmappings = [\"dense\", \"zebra\"]\n[network]\n\
             model = \"../models/fmnist_cnn/model.toml\"\n\
             images = \"../data/fashion-mnist/t10k-images-idx3-ubyte.gz\"\n\
             labels = \"../data/fashion-mnist/t10k-labels-idx1-ubyte.gz\"\nlimit = 100\n{extra}"
        )
    };
    let load = |extra: &str| {
        zebra_cim::experiment::Experiment::parse(
            &text(extra),
            std::path::Path::new("experiments/t.toml"),
            Default::default(),
        )
        .unwrap()
    };
    let exp = load("[array]\nparallelism = 64\n[adc]\nbits = 8\n");
    let work = Workload::load(exp.network.as_ref().unwrap()).unwrap();
    let size = work.net.image_size();
    let images = &work.data.pixels[..8 * size];
    for m in &exp.mappings {
        let sim = SimNetwork::new(&work, &exp.points[0].params, m, 4).unwrap();
        let got = sim.logits(&work.net, &mut g, 0, images, 8).unwrap();
        for (i, l) in got.iter().enumerate() {
            assert_eq!(
                l,
                &work.net.infer(&images[i * size..(i + 1) * size]),
                "{} image {i}",
                m.name
            );
        }
    }
    let exp = load("[noise]\ncell_sigma = 0.05\n");
    for m in &exp.mappings {
        let sim = SimNetwork::new(&work, &exp.points[0].params, m, 4).unwrap();
        for trial in 0..2 {
            let cpu = sim.accuracy(&work, &mut CpuEngine::new(), trial).unwrap();
            let gpu = sim.accuracy(&work, &mut g, trial).unwrap();
            assert!(
                (cpu - gpu).abs() <= 0.01,
                "{} chip {trial}: cpu {cpu}, gpu {gpu}",
                m.name
            );
        }
    }
}
