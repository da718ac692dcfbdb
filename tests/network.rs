//! Quantised networks: the im2col lowering equals a direct convolution, a
//! small model loads and infers, and malformed models give clear errors.

mod common;

use safetensors::{serialize, Dtype, View};
use std::borrow::Cow;
use std::path::Path;
use zebra_cim::model::rng::Address;
use zebra_cim::network::{im2col, matmul, Activation, MatrixLayer, Network};

fn words(n: usize, seed: u64) -> Vec<u32> {
    let a = Address {
        seed,
        trial: 0,
        stream: 9,
    };
    (0..n).map(|i| a.block(i as u64)[0]).collect()
}

#[test]
fn im2col_equals_direct_convolution() {
    for (c, h, w, k, stride, pad, out) in [
        (3, 7, 6, 3, 2, 1, 4),
        (1, 5, 5, 5, 1, 0, 2),
        (2, 9, 4, 2, 1, 2, 3),
    ] {
        let data: Vec<i16> = words(c * h * w, 1)
            .iter()
            .map(|v| (v % 383) as i16 - 127)
            .collect();
        let a = Activation {
            c,
            h,
            w,
            data,
            scale: 1.0,
        };
        let weights: Vec<i32> = words(out * c * k * k, 2)
            .iter()
            .map(|v| (v % 255) as i32 - 127)
            .collect();
        let m = MatrixLayer {
            name: "t".into(),
            outputs: out,
            inputs: c * k * k,
            weights: weights.clone(),
            scales: vec![1.0; out],
            bias: vec![0.0; out],
            relu: false,
            out_scale: None,
            out_signed: false,
            signed_input: true,
        };
        let (cols, oh, ow) = im2col(&a, k, stride, pad);
        let got = matmul(&cols, &m);
        for o in 0..out {
            for y in 0..oh {
                for x in 0..ow {
                    let mut want = 0i64;
                    for ci in 0..c {
                        for i in 0..k {
                            for j in 0..k {
                                let (iy, ix) = (
                                    (y * stride + i) as isize - pad as isize,
                                    (x * stride + j) as isize - pad as isize,
                                );
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                    continue;
                                }
                                let v = a.data[(ci * h + iy as usize) * w + ix as usize] as i64;
                                want += v * weights[((o * c + ci) * k + i) * k + j] as i64;
                            }
                        }
                    }
                    assert_eq!(
                        got[(y * ow + x) * out + o],
                        want as f64,
                        "out {o} at ({y}, {x})"
                    );
                }
            }
        }
    }
}

/// Writes a uint8 `.npy` file of `shape`.
fn write_npy(path: &Path, shape: &[u64], data: &[u8]) {
    use npyz::WriterBuilder;
    let mut w = npyz::WriteOptions::<u8>::new()
        .default_dtype()
        .shape(shape)
        .writer(std::fs::File::create(path).unwrap())
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

struct T(Dtype, Vec<usize>, Vec<u8>);
impl View for &T {
    fn dtype(&self) -> Dtype {
        self.0
    }
    fn shape(&self) -> &[usize] {
        &self.1
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.2)
    }
    fn data_len(&self) -> usize {
        self.2.len()
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

const MODEL: &str = "version = 1\nweights = \"m.safetensors\"\ninput = { channels = 1, height = 6, width = 6, scale = 0.004 }\n\
[[layer]]\nkind = \"conv2d\"\nname = \"conv\"\nout_channels = 2\nkernel = 3\npadding = 1\nrelu = true\nout_scale = 0.02\n\
[[layer]]\nkind = \"maxpool\"\nsize = 2\n[[layer]]\nkind = \"flatten\"\n\
[[layer]]\nkind = \"linear\"\nname = \"fc\"\nout_features = 3\n";

fn write_model(dir: &Path, conv_w: Vec<u8>, fc_shape: Vec<usize>) -> std::path::PathBuf {
    let tensors = [
        (
            "conv.weight".to_string(),
            T(Dtype::I8, vec![2, 1, 3, 3], conv_w),
        ),
        (
            "conv.scale".to_string(),
            T(Dtype::F32, vec![2], f32s(&[0.01, 0.02])),
        ),
        (
            "conv.bias".to_string(),
            T(Dtype::F32, vec![2], f32s(&[0.0, 0.1])),
        ),
        (
            "fc.weight".to_string(),
            T(
                Dtype::I8,
                fc_shape.clone(),
                (0..fc_shape.iter().product::<usize>())
                    .map(|i| (i as i8 % 7) as u8)
                    .collect(),
            ),
        ),
        (
            "fc.scale".to_string(),
            T(Dtype::F32, vec![3], f32s(&[0.01, 0.01, 0.01])),
        ),
        (
            "fc.bias".to_string(),
            T(Dtype::F32, vec![3], f32s(&[0.0, 0.5, -0.5])),
        ),
    ];
    let bytes = serialize(tensors.iter().map(|(n, t)| (n.clone(), t)), None).unwrap();
    std::fs::write(dir.join("m.safetensors"), bytes).unwrap();
    let p = dir.join("model.toml");
    std::fs::write(&p, MODEL).unwrap();
    p
}

#[test]
fn a_small_model_loads_and_infers() {
    let dir = tempfile::tempdir().unwrap();
    let conv_w: Vec<u8> = (0..18).map(|i| ((i % 5) as i8 - 2) as u8).collect();
    let net = Network::load(&write_model(dir.path(), conv_w, vec![3, 18])).unwrap();
    assert_eq!(net.nodes.len(), 4);
    let image: Vec<u8> = (0..36).map(|i| (i * 7 % 256) as u8).collect();
    let logits = net.infer(&image);
    assert_eq!(logits.len(), 3);
    assert!(logits.iter().all(|v| v.is_finite()));
    // A different image gives different logits.
    let other: Vec<u8> = image.iter().map(|v| 255 - v).collect();
    assert_ne!(net.infer(&other), logits);
}

#[test]
fn malformed_models_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let conv_w: Vec<u8> = vec![1; 18];
    let err = Network::load(&write_model(dir.path(), conv_w.clone(), vec![3, 17]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`fc.weight` must be int8 of shape [3, 18]"),
        "{err}"
    );
    let mut bad_w = conv_w.clone();
    bad_w[4] = 0x80; // -128
    let err = Network::load(&write_model(dir.path(), bad_w, vec![3, 18]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("element 4 is -128"), "{err}");
    write_model(dir.path(), conv_w, vec![3, 18]);
    std::fs::write(
        dir.path().join("model.toml"),
        MODEL.replace("[[layer]]\nkind = \"flatten\"\n", ""),
    )
    .unwrap();
    let err = Network::load(&dir.path().join("model.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("linear needs a flatten before it"), "{err}");
    std::fs::write(
        dir.path().join("model.toml"),
        MODEL.replace("kind = \"maxpool\"", "kind = \"minpool\""),
    )
    .unwrap();
    let err = Network::load(&dir.path().join("model.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("minpool"), "{err}");
}

const SHIPPED: &str = "models/fmnist_cnn/model.toml";

fn shipped_experiment(extra: &str) -> zebra_cim::experiment::Experiment {
    model_experiment(SHIPPED, extra)
}

fn model_experiment(model: &str, extra: &str) -> zebra_cim::experiment::Experiment {
    model_images_experiment(model, 12, extra)
}

fn model_images_experiment(
    model: &str,
    limit: usize,
    extra: &str,
) -> zebra_cim::experiment::Experiment {
    let text = format!(
        "version = 1\ntrials = 2\nseed = 7\nmappings = [\"dense\", \"zebra\", \"dense-cal\", \"csd\", \"signmag-skip\"]\n\
         [network]\nmodel = \"../{model}\"\n\
         images = \"../data/fashion-mnist/t10k-images-idx3-ubyte.gz\"\n\
         labels = \"../data/fashion-mnist/t10k-labels-idx1-ubyte.gz\"\nlimit = {limit}\n{extra}"
    );
    zebra_cim::experiment::Experiment::parse(
        &text,
        Path::new("experiments/t.toml"),
        Default::default(),
    )
    .unwrap()
}

/// The shipped models' int8 logits equal those the exporter's NumPy
/// reference computed (experiments/export_pytorch.py, first 100 test images).
#[test]
fn shipped_models_match_the_exporters_int8_reference() {
    for model in ["fmnist_cnn", "fmnist_resnet", "fmnist_resnet_t2"] {
        matches_reference(&format!("models/{model}"));
    }
    // The term-budget variant holds at most 2 CSD terms per weight.
    let t2 = Network::load(Path::new("models/fmnist_resnet_t2/model.toml")).unwrap();
    for m in t2.matrices() {
        let most = m
            .weights
            .iter()
            .map(|&w| zebra_cim::model::quantize::term_count(w));
        assert!(most.max().unwrap() <= 2, "{}", m.name);
    }
}

fn matches_reference(dir: &str) {
    let net = Network::load(&Path::new(dir).join("model.toml")).unwrap();
    let data = zebra_cim::io::dataset::Dataset::from_idx(
        Path::new("data/fashion-mnist/t10k-images-idx3-ubyte.gz"),
        Path::new("data/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let file = std::fs::File::open(Path::new(dir).join("reference_logits.npy")).unwrap();
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).unwrap();
    assert_eq!(npy.shape(), &[100, 10]);
    let want: Vec<f32> = npy.into_vec().unwrap();
    for i in 0..100 {
        let got = net.infer(data.image(i));
        for (o, (&g, &w)) in got.iter().zip(&want[i * 10..(i + 1) * 10]).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{dir}: image {i} logit {o}: zebra {g}, NumPy {w}"
            );
        }
    }
}

/// With no noise and a lossless ADC (8 bits hold the 129 levels of a signed
/// full-scale range [-64, 64], so P = 64, or an ideal ADC), every mapping's
/// simulated arrays reproduce the plain int8 inference of both shipped
/// models (whose logits equal the exporter's, above): the logits are equal.
#[test]
fn noiseless_lossless_network_equals_int8_inference() {
    use zebra_cim::engine::cpu::CpuEngine;
    use zebra_cim::sweep::accuracy::{SimNetwork, Workload};
    for (model, adc) in [
        (SHIPPED, "8"),
        (SHIPPED, "\"ideal\""),
        ("models/fmnist_resnet/model.toml", "8"),
    ] {
        let exp = model_experiment(
            model,
            &format!("[array]\nparallelism = 64\n[adc]\nbits = {adc}\n"),
        );
        let work = Workload::load(exp.network.as_ref().unwrap()).unwrap();
        let size = work.net.image_size();
        let images = &work.data.pixels[..12 * size];
        let want: Vec<Vec<f32>> = (0..12)
            .map(|i| work.net.infer(&images[i * size..(i + 1) * size]))
            .collect();
        for m in &exp.mappings {
            let sim = SimNetwork::new(&work, &exp.points[0].params, m, 4).unwrap();
            let got = sim
                .logits(&work.net, &mut CpuEngine::new(), 1, images, 12)
                .unwrap();
            assert_eq!(
                got, want,
                "{model}: mapping {} with a {adc}-bit ADC",
                m.name
            );
        }
    }
}

/// A lossy ADC changes the logits (so the test above can fail), and static
/// noise gives different chips different answers.
#[test]
fn lossy_adc_and_noise_change_the_logits() {
    use zebra_cim::engine::cpu::CpuEngine;
    use zebra_cim::sweep::accuracy::{SimNetwork, Workload};
    let exp = shipped_experiment("[adc]\nbits = 3\n[noise]\ncell_sigma = 0.1\n");
    let work = Workload::load(exp.network.as_ref().unwrap()).unwrap();
    let images = &work.data.pixels[..4 * work.net.image_size()];
    let sim = SimNetwork::new(&work, &exp.points[0].params, &exp.mappings[0], 4).unwrap();
    let chip0 = sim
        .logits(&work.net, &mut CpuEngine::new(), 0, images, 4)
        .unwrap();
    let chip1 = sim
        .logits(&work.net, &mut CpuEngine::new(), 1, images, 4)
        .unwrap();
    let exact = work.net.infer(&images[..work.net.image_size()]);
    assert_ne!(chip0[0], exact);
    assert_ne!(chip0, chip1);
    // The same chip twice is the same answer.
    assert_eq!(
        chip0,
        sim.logits(&work.net, &mut CpuEngine::new(), 0, images, 4)
            .unwrap()
    );
}

#[test]
fn images_that_do_not_fit_the_model_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let imgs: Vec<u8> = vec![0; 2 * 5 * 5];
    let write =
        |name: &str, shape: &[u64], data: &[u8]| write_npy(&dir.path().join(name), shape, data);
    write("x.npy", &[2, 5, 5], &imgs);
    write("y.npy", &[2], &[0, 1]);
    let model = std::fs::canonicalize(SHIPPED).unwrap();
    let text = format!(
        "version = 1\n[network]\nmodel = \"{}\"\nimages = \"x.npy\"\nlabels = \"y.npy\"\n",
        model.display()
    );
    let exp = zebra_cim::experiment::Experiment::parse(
        &text,
        &dir.path().join("e.toml"),
        Default::default(),
    )
    .unwrap();
    let err = zebra_cim::sweep::accuracy::Workload::load(exp.network.as_ref().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("images are 1x5x5") && err.contains("takes 1x28x28"),
        "{err}"
    );
}

/// Chips spread over several engines on their own threads give the same
/// per-chip accuracies as the CPU's parallel path.
#[test]
fn chips_over_several_engines_match_the_parallel_cpu_path() {
    use zebra_cim::engine::{cpu::CpuEngine, Engine};
    use zebra_cim::sweep::accuracy::{prepare, run, Options};
    let exp = shipped_experiment("[noise]\ncell_sigma = 0.2\n");
    let accuracies = |engines: &mut [Box<dyn Engine + Send>]| {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            out_dir: dir.path().to_path_buf(),
            fresh: true,
            progress: false,
        };
        let prep = prepare(&exp, &opts).unwrap();
        run(&exp, prep, engines, &opts).unwrap();
        std::fs::read_to_string(dir.path().join(format!("{}_trials.csv", exp.name))).unwrap()
    };
    let parallel = accuracies(&mut []);
    let mut two: Vec<Box<dyn Engine + Send>> = vec![
        Box::new(CpuEngine::with_threads(1)),
        Box::new(CpuEngine::with_threads(1)),
    ];
    assert_eq!(accuracies(&mut two), parallel);
    assert_eq!(parallel.lines().count(), 1 + 2 * exp.mappings.len());
}

/// Writes a model of 1x1 convs on a 1x2x2 image: conv `a` (weight `wa`,
/// scale 1), `add` of `a` and the image, global average pool, flatten and a
/// 1->1 linear of weight 1: every value is countable by hand.
fn residual_model(dir: &Path, wa: i8, signed: bool, version: u32) -> std::path::PathBuf {
    let one = |v: i8, shape: Vec<usize>| T(Dtype::I8, shape, vec![v as u8]);
    let tensors = [
        ("a.weight".to_string(), one(wa, vec![1, 1, 1, 1])),
        ("a.scale".to_string(), T(Dtype::F32, vec![1], f32s(&[1.0]))),
        ("a.bias".to_string(), T(Dtype::F32, vec![1], f32s(&[0.0]))),
        ("fc.weight".to_string(), one(1, vec![1, 1])),
        ("fc.scale".to_string(), T(Dtype::F32, vec![1], f32s(&[1.0]))),
        ("fc.bias".to_string(), T(Dtype::F32, vec![1], f32s(&[0.0]))),
    ];
    let bytes = serialize(tensors.iter().map(|(n, t)| (n.clone(), t)), None).unwrap();
    std::fs::write(dir.join("m.safetensors"), bytes).unwrap();
    let text = format!(
        "version = {version}\nweights = \"m.safetensors\"\ninput = {{ channels = 1, height = 2, width = 2, scale = 1.0 }}\n\
         [[layer]]\nkind = \"conv2d\"\nname = \"a\"\nout_channels = 1\nkernel = 1\nout_scale = 1.0\nout_signed = {signed}\n\
         [[layer]]\nkind = \"add\"\nname = \"r\"\ninputs = [\"a\", \"input\"]\nout_scale = 1.0\nout_signed = {signed}\n\
         [[layer]]\nkind = \"global_avgpool\"\n[[layer]]\nkind = \"flatten\"\n\
         [[layer]]\nkind = \"linear\"\nname = \"fc\"\nout_features = 1\n"
    );
    let p = dir.join("model.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Version 2: `add` reads two earlier layers with their own scales, int8
/// activations keep their sign, `global_avgpool` rounds the mean half to
/// even; counted by hand on a 2x2 image [1, 2, 3, 4].
#[test]
fn residual_add_signed_activations_and_global_pool_count_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let image = [1u8, 2, 3, 4];
    // a = 2x = [2, 4, 6, 8]; r = a + x = [3, 6, 9, 12]; mean 7.5 -> 8.
    let net = Network::load(&residual_model(dir.path(), 2, false, 2)).unwrap();
    assert_eq!(net.infer(&image), vec![8.0]);
    // a = -2x = [-2, -4, -6, -8] (int8); r = -x = [-1, -2, -3, -4]; mean -2.5 -> -2.
    let net = Network::load(&residual_model(dir.path(), -2, true, 2)).unwrap();
    assert!(net.matrices()[1].signed_input);
    assert_eq!(net.infer(&image), vec![-2.0]);
    // Unsigned outputs clamp at 0: a = [0, 0, 0, 0], r = x, mean 2.5 -> 2.
    let net = Network::load(&residual_model(dir.path(), -2, false, 2)).unwrap();
    assert!(!net.matrices()[1].signed_input);
    assert_eq!(net.infer(&image), vec![2.0]);
    // Version 1 files cannot use the version 2 layers.
    let err = Network::load(&residual_model(dir.path(), 2, false, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("need `version = 2`"), "{err}");
}

#[test]
fn malformed_graphs_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = residual_model(dir.path(), 2, false, 2);
    let text = std::fs::read_to_string(&path).unwrap();
    let cases = [
        (
            text.replace("[\"a\", \"input\"]", "[\"a\", \"b\"]"),
            "input `b` is not an earlier layer's name",
        ),
        (
            text.replace("[\"a\", \"input\"]", "[\"a\"]"),
            "`inputs` must name two layers",
        ),
        (
            text.replace("kernel = 1\n", "kernel = 1\nstride = 2\n"),
            "adds a 1x1x1 tensor to a 1x2x2 one",
        ),
        (
            text.replace("name = \"a\"\n", "name = \"a\"\ninput = \"r\"\n"),
            "input `r` is not an earlier layer's name",
        ),
        (
            text.replace("name = \"r\"", "name = \"a\""),
            "the name `a` is also layer 1's",
        ),
        (
            format!("{text}[[layer]]\nkind = \"flatten\"\n"),
            "follows a layer without `out_scale`",
        ),
        (
            text.replace(
                "kind = \"global_avgpool\"",
                "kind = \"global_avgpool\"\ninput = \"nope\"",
            ),
            "input `nope`",
        ),
    ];
    for (model, want) in cases {
        std::fs::write(&path, &model).unwrap();
        let err = Network::load(&path).unwrap_err().to_string();
        assert!(err.contains(want), "want `{want}`, got: {err}");
    }
}

/// A network whose inner layers read int8 activations: conv `a` (1->4, 3x3)
/// writes int8, conv `b` reads it (K = 36 signed rows), `add` of the two
/// stays int8, then global pool and a 4->3 linear on signed inputs. Writes
/// the model and 6 random 4x4 images with labels; returns the experiment text.
fn signed_network(dir: &Path) -> String {
    let i8s = |n: usize, seed: u64| -> Vec<u8> {
        words(n, seed)
            .iter()
            .map(|v| ((v % 255) as i32 - 127) as i8 as u8)
            .collect()
    };
    let tensors = [
        ("a.weight", T(Dtype::I8, vec![4, 1, 3, 3], i8s(36, 11))),
        ("a.scale", T(Dtype::F32, vec![4], f32s(&[0.01; 4]))),
        (
            "a.bias",
            T(Dtype::F32, vec![4], f32s(&[0.1, -0.2, 0.0, 0.05])),
        ),
        ("b.weight", T(Dtype::I8, vec![4, 4, 3, 3], i8s(144, 12))),
        ("b.scale", T(Dtype::F32, vec![4], f32s(&[0.004; 4]))),
        ("b.bias", T(Dtype::F32, vec![4], f32s(&[0.0; 4]))),
        ("fc.weight", T(Dtype::I8, vec![3, 4], i8s(12, 13))),
        ("fc.scale", T(Dtype::F32, vec![3], f32s(&[0.01; 3]))),
        ("fc.bias", T(Dtype::F32, vec![3], f32s(&[0.0; 3]))),
    ];
    let bytes = serialize(tensors.iter().map(|(n, t)| (n.to_string(), t)), None).unwrap();
    std::fs::write(dir.join("m.safetensors"), bytes).unwrap();
    let model = "version = 2\nweights = \"m.safetensors\"\ninput = { channels = 1, height = 4, width = 4, scale = 0.004 }\n\
         [[layer]]\nkind = \"conv2d\"\nname = \"a\"\nout_channels = 4\nkernel = 3\npadding = 1\nout_scale = 0.01\nout_signed = true\n\
         [[layer]]\nkind = \"conv2d\"\nname = \"b\"\nout_channels = 4\nkernel = 3\npadding = 1\nout_scale = 0.01\nout_signed = true\n\
         [[layer]]\nkind = \"add\"\nname = \"r\"\ninputs = [\"a\", \"b\"]\nout_scale = 0.02\nout_signed = true\n\
         [[layer]]\nkind = \"global_avgpool\"\n[[layer]]\nkind = \"flatten\"\n\
         [[layer]]\nkind = \"linear\"\nname = \"fc\"\nout_features = 3\n";
    std::fs::write(dir.join("model.toml"), model).unwrap();
    let write = |name: &str, shape: &[u64], data: &[u8]| write_npy(&dir.join(name), shape, data);
    let pixels: Vec<u8> = words(6 * 16, 14).iter().map(|v| (v % 256) as u8).collect();
    write("x.npy", &[6, 4, 4], &pixels);
    write("y.npy", &[6], &[0, 1, 2, 0, 1, 2]);
    "version = 1\ntrials = 2\nseed = 3\nmappings = [\"dense\", \"zebra\", \"dense-cal\", \"csd\", \"signmag-skip\"]\n\
     [network]\nmodel = \"model.toml\"\nimages = \"x.npy\"\nlabels = \"y.npy\"\n"
        .to_string()
}

/// Layers reading int8 activations take signed inputs on the arrays: with
/// no noise and an ideal ADC every mapping reproduces the int8 inference
/// under both signed codings (P = 8 splits the 36-row layer into chunks);
/// with noise the two codings give different chips.
#[test]
fn signed_activations_on_the_arrays_are_exact_without_noise() {
    use zebra_cim::engine::cpu::CpuEngine;
    use zebra_cim::sweep::accuracy::{SimNetwork, Workload};
    let dir = tempfile::tempdir().unwrap();
    let base = signed_network(dir.path());
    let exp_of = |extra: &str| {
        zebra_cim::experiment::Experiment::parse(
            &format!("{base}{extra}"),
            &dir.path().join("e.toml"),
            Default::default(),
        )
        .unwrap()
    };
    let mut noisy = Vec::new();
    for coding in ["twos-complement", "sign-magnitude"] {
        let arrays = format!("[array]\nparallelism = 8\nsigned_inputs = \"{coding}\"\n");
        let exp = exp_of(&format!("{arrays}[adc]\nbits = \"ideal\"\n"));
        let work = Workload::load(exp.network.as_ref().unwrap()).unwrap();
        assert!(work.net.matrices()[1].signed_input && work.net.matrices()[2].signed_input);
        let images = &work.data.pixels[..6 * 16];
        let want: Vec<Vec<f32>> = (0..6)
            .map(|i| work.net.infer(&images[i * 16..(i + 1) * 16]))
            .collect();
        for m in &exp.mappings {
            let sim = SimNetwork::new(&work, &exp.points[0].params, m, 4).unwrap();
            let got = sim
                .logits(&work.net, &mut CpuEngine::new(), 1, images, 6)
                .unwrap();
            assert_eq!(got, want, "mapping {} with {coding} inputs", m.name);
        }
        let exp = exp_of(&format!(
            "{arrays}[adc]\nbits = 4\n[noise]\ncell_sigma = 0.1\n"
        ));
        let sim = SimNetwork::new(&work, &exp.points[0].params, &exp.mappings[0], 4).unwrap();
        noisy.push(
            sim.logits(&work.net, &mut CpuEngine::new(), 1, images, 6)
                .unwrap(),
        );
    }
    assert_ne!(noisy[0], noisy[1]);
}

/// `[quantize]` on a network: the arrays reproduce the quantised network's
/// int8 inference exactly without noise (term budgets change the weights,
/// the row order only where each input meets its row), for every mapping,
/// and the quantised weights keep their budgets.
#[test]
fn quantised_networks_on_reordered_arrays_are_exact_without_noise() {
    use zebra_cim::engine::cpu::CpuEngine;
    use zebra_cim::model::quantize::term_count;
    use zebra_cim::sweep::accuracy::{SimNetwork, Workload};
    let exp = shipped_experiment(
        "[array]\nparallelism = 64\n[adc]\nbits = 8\n\
         [quantize]\nterms = 2\ngroup = 16\ngroup_terms = 20\nrow_order = \"magnitude\"\n",
    );
    let params = &exp.points[0].params;
    let base = Workload::load(exp.network.as_ref().unwrap()).unwrap();
    let work = base.quantized(&params.layer.quantize).unwrap();
    for (m, orig) in work.net.matrices().iter().zip(base.net.matrices()) {
        assert!(m.weights.iter().all(|&w| term_count(w) <= 2), "{}", m.name);
        assert_ne!(m.weights, orig.weights, "{}: nothing quantised", m.name);
        // At most 20 terms in every 16 consecutive inputs of an output.
        for o in 0..m.outputs {
            let row = &m.weights[o * m.inputs..(o + 1) * m.inputs];
            for g in row.chunks(16) {
                assert!(g.iter().map(|&w| term_count(w)).sum::<u32>() <= 20);
            }
        }
    }
    let size = work.net.image_size();
    let images = &work.data.pixels[..12 * size];
    let want: Vec<Vec<f32>> = (0..12)
        .map(|i| work.net.infer(&images[i * size..(i + 1) * size]))
        .collect();
    let unquantised: Vec<Vec<f32>> = (0..12)
        .map(|i| base.net.infer(&images[i * size..(i + 1) * size]))
        .collect();
    assert_ne!(want, unquantised, "the budgets change the logits");
    for m in &exp.mappings {
        let sim = SimNetwork::new(&work, params, m, 4).unwrap();
        let got = sim
            .logits(&work.net, &mut CpuEngine::new(), 1, images, 12)
            .unwrap();
        assert_eq!(got, want, "mapping {}", m.name);
    }
}

/// A network's cost on its clean activations: its MACs per image are the
/// matrix layers' (K x N per output position), the active reads counted by
/// popcount equal those the plan of the same inputs counts, and skipping
/// mappings convert less than dense.
#[test]
fn network_cost_counts_the_clean_activations() {
    use zebra_cim::sweep::accuracy::{SimNetwork, Workload};
    use zebra_cim::sweep::output::NetworkCostColumns;
    let exp =
        shipped_experiment("[energy]\nmodel = \"neurosim-sar\"\nadc_scaling = \"effective\"\n");
    let params = &exp.points[0].params;
    let work = Workload::load(exp.network.as_ref().unwrap()).unwrap();
    // conv1 28x28x(9x8), conv2 14x14x(72x16), fc 784x64, fc 64x10.
    let macs = 28 * 28 * 9 * 8 + 14 * 14 * 72 * 16 + 784 * 64 + 64 * 10;
    let mut per_mac = Vec::new();
    for m in &exp.mappings {
        let sim = SimNetwork::new(&work, params, m, 4).unwrap();
        let cost = sim.clean_cost(&work).unwrap();
        assert_eq!(cost.images, 12);
        assert_eq!(cost.counters.macs, 12 * macs as u64, "{}", m.name);
        let cols = NetworkCostColumns::new(params, &cost);
        assert_eq!(cols.macs_per_image, macs as u64);
        assert_eq!(cols.energy_model, "neurosim-sar");
        let e = cols.energy_fj_per_mac.unwrap();
        let parts = cols.parts.adc_fj_per_mac.unwrap()
            + cols.parts.cell_fj_per_mac.unwrap()
            + cols.parts.add_fj_per_mac.unwrap()
            + cols.parts.check_fj_per_mac.unwrap();
        assert!((e - parts).abs() <= 1e-9 * e, "{}: {e} vs {parts}", m.name);
        per_mac.push((m.name.clone(), cols.conversions_per_mac));
        // The first layer's active reads, by plan and by popcount.
        let image = &work.data.pixels[..work.net.image_size()];
        let mut first = None;
        work.net
            .forward(image, 1, |i, layer, rows| {
                if i == 0 {
                    first = Some(rows.iter().map(|&v| v as i32).collect::<Vec<i32>>());
                }
                Ok(zebra_cim::network::matmul(rows, layer))
            })
            .unwrap();
        let x = first.unwrap();
        let plan = sim.plans[0].with_inputs(x.clone());
        let layer = zebra_cim::experiment::workload::Layer {
            k: plan.k,
            n: plan.n,
            inputs: plan.b,
            weight_bits: 8,
            input_bits: 8,
            w: work.net.matrices()[0].kn(),
            x,
            coding: zebra_cim::model::InputCoding::Unsigned,
        };
        let full = zebra_cim::experiment::plan::Plan::new(params, &layer, m);
        assert_eq!(
            plan.active_reads(),
            full.counters.active_reads,
            "{}",
            m.name
        );
        assert!(full.counters.active_reads > 0);
    }
    let conv = |name: &str| per_mac.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(conv("zebra") < conv("dense"), "{per_mac:?}");
}

/// Chip `trial` resident on the GPU (with `both_kernels`, the same under
/// both kernel sets) against the same chip through the host layer by layer, on the GPU
/// engine and on the CPU engine: the
/// images whose prediction differs from each, and the largest logit
/// difference from the GPU's.
fn resident_against(
    work: &zebra_cim::sweep::accuracy::Workload,
    sim: &zebra_cim::sweep::accuracy::SimNetwork,
    gpu: &mut zebra_cim::engine::gpu::GpuEngine,
    trial: u32,
    both_kernels: bool,
) -> (usize, usize, f32) {
    use zebra_cim::sweep::accuracy::argmax;
    let size = work.net.image_size();
    let images = &work.data.pixels[..work.count * size];
    let cpu = sim
        .logits(
            &work.net,
            &mut zebra_cim::engine::cpu::CpuEngine::new(),
            trial,
            images,
            work.count,
        )
        .unwrap();
    let layered = sim
        .logits(&work.net, gpu, trial, images, work.count)
        .unwrap();
    let device = zebra_cim::sweep::device::chip_logits(sim, work, trial, gpu).unwrap();
    assert_eq!(device.len(), work.count);
    // Both kernel sets give the same chip.
    if both_kernels {
        use zebra_cim::engine::gpu::KernelSet;
        let default = gpu.kernels();
        gpu.set_kernels(match default {
            KernelSet::Plain => KernelSet::Tiled,
            KernelSet::Tiled => KernelSet::Plain,
        });
        let other = zebra_cim::sweep::device::chip_logits(sim, work, trial, gpu).unwrap();
        gpu.set_kernels(default);
        assert_eq!(other, device, "kernel sets differ");
    }
    let flips = |host: &[Vec<f32>]| {
        host.iter()
            .zip(&device)
            .filter(|(h, d)| argmax(h) != argmax(d))
            .count()
    };
    let diff = layered
        .iter()
        .zip(&device)
        .flat_map(|(h, d)| h.iter().zip(d).map(|(a, b)| (a - b).abs()))
        .fold(0f32, f32::max);
    (flips(&cpu), flips(&layered), diff)
}

/// Whole networks resident on the GPU (im2col, requantisation, pooling,
/// residual adds and the argmax on the device) reproduce the int8
/// inference exactly without noise and with a lossless ADC: the shipped CNN
/// and ResNet, a quantised CNN on reordered arrays, and the signed network
/// under both signed codings in chunks of 8 rows, for every mapping.
#[test]
fn resident_gpu_networks_are_exact_without_noise() {
    use zebra_cim::sweep::accuracy::{SimNetwork, Workload};
    let Some(mut gpu) = common::gpu_engine() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let signed = signed_network(dir.path());
    let signed_exp = |coding: &str| {
        zebra_cim::experiment::Experiment::parse(
            &format!("{signed}[array]\nparallelism = 8\nsigned_inputs = \"{coding}\"\n[adc]\nbits = \"ideal\"\n"),
            &dir.path().join("e.toml"),
            Default::default(),
        )
        .unwrap()
    };
    let lossless = "[array]\nparallelism = 64\n[adc]\nbits = 8\n";
    let quantised = format!("{lossless}[quantize]\nterms = 2\nrow_order = \"magnitude\"\n");
    let exps = [
        shipped_experiment(lossless),
        shipped_experiment(&quantised),
        // The ResNet on 4 images (slow on lavapipe).
        model_images_experiment("models/fmnist_resnet/model.toml", 4, lossless),
        signed_exp("twos-complement"),
        signed_exp("sign-magnitude"),
    ];
    for exp in &exps {
        let params = &exp.points[0].params;
        let base = Workload::load(exp.network.as_ref().unwrap()).unwrap();
        let work = base.quantized(&params.layer.quantize).unwrap_or(base);
        let size = work.net.image_size();
        let want: Vec<Vec<f32>> = (0..work.count)
            .map(|i| work.net.infer(&work.data.pixels[i * size..(i + 1) * size]))
            .collect();
        for m in &exp.mappings {
            let sim = SimNetwork::new(&work, params, m, 4).unwrap();
            let got = zebra_cim::sweep::device::chip_logits(&sim, &work, 1, &mut gpu).unwrap();
            assert_eq!(
                got,
                want,
                "{} on {}",
                m.name,
                exp.network.as_ref().unwrap().model.display()
            );
        }
    }
}

/// With noise, a chip resident on the GPU is the chip the GPU engine
/// simulates layer by layer through the host, on every noise path (static
/// and dynamic mismatch, read noise, aggregated draws, stuck-at faults):
/// the same predictions, logits equal within float rounding. Against the
/// CPU engine predictions differ only where float rounding moves an ADC
/// code: at most one image in a hundred over all cases. Splitting the
/// images into small dispatches changes nothing.
#[test]
fn resident_gpu_networks_match_the_cpu_with_noise() {
    use zebra_cim::sweep::accuracy::{SimNetwork, Workload};
    let Some(mut gpu) = common::gpu_engine() else {
        return;
    };
    let noises = [
        "[noise]\ncell_sigma = 0.05\nread_sigma = 0.3\n",
        "[noise]\ncell_sigma = 0.05\nmode = \"dynamic\"\n",
        "[noise]\ncell_sigma = 0.05\nmode = \"dynamic\"\nsampling = \"aggregated\"\n",
        "[noise]\np_sa0 = 0.01\np_sa1 = 0.01\nread_sigma = 0.2\n",
    ];
    // A budget of a few images per dispatch gives the same chips: each
    // batch's random-number rows start after the images before it.
    let exp = model_images_experiment(SHIPPED, 24, &format!("[adc]\nbits = 6\n{}", noises[1]));
    let work = Workload::load(exp.network.as_ref().unwrap()).unwrap();
    let sim = SimNetwork::new(&work, &exp.points[0].params, &exp.mappings[0], 4).unwrap();
    let whole = zebra_cim::sweep::device::chip_logits(&sim, &work, 2, &mut gpu).unwrap();
    gpu.set_memory_budget(3 << 20);
    let (chips, batch) = zebra_cim::sweep::device::dispatch_size(&sim, &work, 4, &mut gpu).unwrap();
    assert!(
        batch < 24 && chips >= 1,
        "{chips} chips x {batch} images per dispatch"
    );
    let batched = zebra_cim::sweep::device::chip_logits(&sim, &work, 2, &mut gpu).unwrap();
    assert_eq!(batched, whole, "{batch} images per dispatch");
    gpu.set_memory_budget(512 << 20);
    let mut flips_total = 0;
    let mut images_total = 0;
    // The ResNet runs under the default kernel set only (slow on lavapipe).
    let mut check = |exp: &zebra_cim::experiment::Experiment, mappings: usize, both: bool| {
        let work = Workload::load(exp.network.as_ref().unwrap()).unwrap();
        let what = format!(
            "{} {:?}",
            exp.network.as_ref().unwrap().model.display(),
            exp.points[0].params.noise.mode
        );
        for m in &exp.mappings[..mappings] {
            let sim = SimNetwork::new(&work, &exp.points[0].params, m, 4).unwrap();
            let (flips, layered, diff) = resident_against(&work, &sim, &mut gpu, 1, both);
            eprintln!(
                "{what} {}: {flips} of {} predictions differ from the CPU's; logits within {diff} of the GPU's through the host",
                m.name, work.count
            );
            assert_eq!(layered, 0, "{what} {}", m.name);
            assert!(diff <= 1e-4, "{what} {}: logits differ by {diff}", m.name);
            flips_total += flips;
            images_total += work.count;
        }
    };
    for noise in [noises[0], noises[2], noises[3]] {
        check(
            &model_images_experiment(SHIPPED, 24, &format!("[adc]\nbits = 6\n{noise}")),
            3,
            true,
        );
    }
    let resnet = "models/fmnist_resnet/model.toml";
    let exp = model_images_experiment(resnet, 8, &format!("[adc]\nbits = 6\n{}", noises[0]));
    check(&exp, 2, false);
    // Per-cell dynamic draws on the small signed network, both codings.
    let dir = tempfile::tempdir().unwrap();
    let signed = signed_network(dir.path());
    for coding in ["twos-complement", "sign-magnitude"] {
        let text = format!(
            "{signed}[array]\nparallelism = 8\nsigned_inputs = \"{coding}\"\n[adc]\nbits = 4\n{}",
            noises[1]
        );
        let exp = zebra_cim::experiment::Experiment::parse(
            &text,
            &dir.path().join("e.toml"),
            Default::default(),
        )
        .unwrap();
        check(&exp, 5, true);
    }
    eprintln!("{flips_total} of {images_total} predictions differ from the CPU's");
    assert!(flips_total * 100 <= images_total);
}
