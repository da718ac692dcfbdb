//! The GPU engine against the CPU engine. The shader checks run everywhere;
//! the engine checks need an adapter: without one they say so and pass,
//! unless ZEBRA_REQUIRE_GPU=1 (CI, with lavapipe installed), where they fail.

mod common;

use zebra_cim::engine::cpu::CpuEngine;
use zebra_cim::engine::gpu::{self, GpuEngine, Params};
use zebra_cim::engine::Engine;
use zebra_cim::experiment::plan::{NoisePath, Plan};
use zebra_cim::model::rng::Address;
use zebra_cim::model::MappingSpec;

#[test]
fn every_shader_parses_and_validates_with_naga() {
    let sources = gpu::shader_sources();
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
    let src = gpu::shader_sources()
        .into_iter()
        .find(|(n, _)| *n == "simulate.wgsl")
        .unwrap()
        .1;
    let module = naga::front::wgsl::parse_str(&src).unwrap();
    let size = module
        .types
        .iter()
        .find_map(|(_, t)| match (&t.name, &t.inner) {
            (Some(n), naga::TypeInner::Struct { span, .. }) if n == "Params" => {
                Some(*span as usize)
            }
            _ => None,
        })
        .expect("struct Params in simulate.wgsl");
    assert_eq!(size, std::mem::size_of::<Params>());
    assert_eq!(size % 16, 0, "uniform structs are 16-byte aligned");
}

/// An adapter, or None (with a note) where there is none and none is required.
fn engine() -> Option<GpuEngine> {
    match GpuEngine::new(None, true) {
        Ok(g) => {
            eprintln!("GPU tests on {}", g.device());
            Some(g)
        }
        Err(e) => {
            if std::env::var("ZEBRA_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("ZEBRA_REQUIRE_GPU=1 but no adapter: {e}");
            }
            eprintln!("skipped: no GPU adapter ({e})");
            None
        }
    }
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

/// Per-entry comparison of raw outputs: equal up to f32 accumulation rounding,
/// or off by at most one ADC step at one conversion; at most 0.1% off.
fn compare(plan: &Plan, cpu: &[f32], gpu: &[f32], what: &str) {
    assert_eq!(cpu.len(), gpu.len(), "{what}: lengths");
    let (bx, n) = (plan.xbits, plan.n);
    // Per column: the largest magnitude the f32 sum passes through, and the largest single step.
    let mut mag = vec![0f64; n];
    let mut step = vec![0f64; n];
    for c in 0..plan.chunks {
        for j in 0..plan.j {
            for col in 0..n {
                let g = plan.group(c, j, col);
                let (lo, hi) = (plan.lo[g] as f64, plan.hi[g] as f64);
                let s = match plan.adc.bits {
                    Some(b) => ((hi - lo) / ((1u64 << b) - 1) as f64).max(1.0),
                    None => 0.0,
                };
                let range = lo.abs().max(hi.abs()).max(plan.p as f64 * 2.0);
                let w = plan.scales[j].unsigned_abs() as f64;
                mag[col] += w * range * ((1u64 << bx) - 1) as f64;
                step[col] = step[col].max(w * (1u64 << (bx - 1)) as f64 * s);
            }
        }
    }
    let mut off = Vec::new();
    for (idx, (&a, &b)) in cpu.iter().zip(gpu).enumerate() {
        let col = idx % n;
        let d = (a as f64 - b as f64).abs();
        let tol = 2e-6 * mag[col] + 1e-3;
        if d > tol {
            assert!(d <= step[col] + tol, "{what}: entry {idx} (trial {}, input {}, column {col}): cpu {a} gpu {b} differ by {d}, more than one step {}", idx / (plan.b * n), (idx / n) % plan.b, step[col]);
            off.push((idx, a, b));
        }
    }
    let frac = off.len() as f64 / cpu.len() as f64;
    assert!(
        frac <= 1e-3,
        "{what}: {} of {} entries differ by a step; first (index, cpu, gpu): {:?}",
        off.len(),
        cpu.len(),
        &off[..off.len().min(5)]
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
        for m in MappingSpec::presets() {
            let plan = Plan::new(&params, &layer, &m);
            assert_eq!(plan.path, path, "{what}");
            let trials = 0..24;
            let c = cpu.run(&plan, trials.clone(), true).unwrap();
            let gb = g.run(&plan, trials, true).unwrap();
            let label = format!("{what} / {}", m.name);
            compare(
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
