//! GPT-2 and Mamba weights from small checkpoints written here under the real tensor
//! names: every tensor lands in its field, the configuration is inferred from the
//! shapes, and a wrong, missing or cut-off tensor is an error naming it.

use flashscan::checkpoint::CheckpointWriter;
use flashscan::models::{Gpt2Config, Gpt2Weights, MambaConfig, MambaWeights};
use flashscan::{DType, Error, bf16};
use ndarray::ArrayD;
use std::collections::BTreeMap;

mod io_common;
use io_common::{TempDir, err_of, pattern};

/// Tensors by checkpoint name, each with distinct values.
type Tensors = BTreeMap<String, ArrayD<f32>>;

fn add(t: &mut Tensors, name: &str, shape: &[usize]) {
    let tag = t.len();
    t.insert(name.to_string(), pattern(shape, tag));
}

fn write(dir: &TempDir, file: &str, t: &Tensors) -> std::path::PathBuf {
    let mut w = CheckpointWriter::new();
    w.metadata("format", "pt");
    for (name, a) in t {
        w.add(name, a, DType::F32).unwrap();
    }
    let path = dir.join(file);
    w.write(&path).unwrap();
    path
}

fn assert_names_tensor(e: &Error, tensor: &str) {
    let named = match e {
        Error::Checkpoint { tensor: Some(t), .. } => t,
        Error::TensorShape { tensor: t, .. } => t,
        other => panic!("expected an error naming `{tensor}`, got {other:?}"),
    };
    assert_eq!(named, tensor, "{e}");
    assert!(e.to_string().contains(tensor), "{e}");
}

// ---------------------------------------------------------------- GPT-2

const D: usize = 64;

/// A 2-layer GPT-2 with vocab 11, n_ctx 7, d 64, under `prefix`.
fn gpt2_tensors(prefix: &str) -> Tensors {
    let mut t = Tensors::new();
    let p = |s: &str| format!("{prefix}{s}");
    add(&mut t, &p("wte.weight"), &[11, D]);
    add(&mut t, &p("wpe.weight"), &[7, D]);
    for i in 0..2 {
        let h = |s: &str| p(&format!("h.{i}.{s}"));
        for (name, shape) in [
            ("ln_1.weight", vec![D]),
            ("ln_1.bias", vec![D]),
            ("attn.c_attn.weight", vec![D, 3 * D]),
            ("attn.c_attn.bias", vec![3 * D]),
            ("attn.c_proj.weight", vec![D, D]),
            ("attn.c_proj.bias", vec![D]),
            ("ln_2.weight", vec![D]),
            ("ln_2.bias", vec![D]),
            ("mlp.c_fc.weight", vec![D, 4 * D]),
            ("mlp.c_fc.bias", vec![4 * D]),
            ("mlp.c_proj.weight", vec![4 * D, D]),
            ("mlp.c_proj.bias", vec![D]),
        ] {
            add(&mut t, &h(name), &shape);
        }
    }
    add(&mut t, &p("ln_f.weight"), &[D]);
    add(&mut t, &p("ln_f.bias"), &[D]);
    t
}

fn check_gpt2_fields(w: &Gpt2Weights, t: &Tensors, prefix: &str) {
    let get = |s: &str| t[&format!("{prefix}{s}")].clone();
    assert_eq!(w.wte.clone().into_dyn(), get("wte.weight"));
    assert_eq!(w.wpe.clone().into_dyn(), get("wpe.weight"));
    assert_eq!(w.ln_f.weight.clone().into_dyn(), get("ln_f.weight"));
    assert_eq!(w.ln_f.bias.clone().into_dyn(), get("ln_f.bias"));
    for (i, b) in w.blocks.iter().enumerate() {
        let h = |s: &str| get(&format!("h.{i}.{s}"));
        assert_eq!(b.ln_1.weight.clone().into_dyn(), h("ln_1.weight"));
        assert_eq!(b.ln_1.bias.clone().into_dyn(), h("ln_1.bias"));
        assert_eq!(b.attn_c_attn.weight.clone().into_dyn(), h("attn.c_attn.weight"));
        assert_eq!(b.attn_c_attn.bias.clone().into_dyn(), h("attn.c_attn.bias"));
        assert_eq!(b.attn_c_proj.weight.clone().into_dyn(), h("attn.c_proj.weight"));
        assert_eq!(b.attn_c_proj.bias.clone().into_dyn(), h("attn.c_proj.bias"));
        assert_eq!(b.ln_2.weight.clone().into_dyn(), h("ln_2.weight"));
        assert_eq!(b.ln_2.bias.clone().into_dyn(), h("ln_2.bias"));
        assert_eq!(b.mlp_c_fc.weight.clone().into_dyn(), h("mlp.c_fc.weight"));
        assert_eq!(b.mlp_c_fc.bias.clone().into_dyn(), h("mlp.c_fc.bias"));
        assert_eq!(b.mlp_c_proj.weight.clone().into_dyn(), h("mlp.c_proj.weight"));
        assert_eq!(b.mlp_c_proj.bias.clone().into_dyn(), h("mlp.c_proj.bias"));
    }
}

#[test]
fn gpt2_loads_every_tensor_and_infers_the_config() {
    let dir = TempDir::new("gpt2-load");
    let mut t = gpt2_tensors("");
    // A mask buffer of old exports: ignored.
    add(&mut t, "h.0.attn.bias", &[1, 1, 7, 7]);
    let w = Gpt2Weights::load(write(&dir, "g.safetensors", &t), None).unwrap();
    let expected =
        Gpt2Config { vocab_size: 11, n_ctx: 7, d_model: D, n_layer: 2, n_head: D / 64, layer_norm_eps: 1e-5 };
    assert_eq!(w.config, expected);
    assert_eq!(w.blocks.len(), 2);
    check_gpt2_fields(&w, &t, "");
    assert!(w.lm_head.is_none());
    assert_eq!(w.lm_head(), &w.wte, "tied");
    assert_eq!(w.named_tensors().len(), t.len() - 1, "every tensor but the mask buffer");

    let w = Gpt2Weights::load(dir.join("g.safetensors"), Some(4)).unwrap();
    assert_eq!((w.config.n_head, w.config.head_dim()), (4, 16));
}

#[test]
fn gpt2_with_transformer_prefix_and_lm_head() {
    let dir = TempDir::new("gpt2-prefix");
    let mut t = gpt2_tensors("transformer.");
    add(&mut t, "lm_head.weight", &[11, D]);
    let w = Gpt2Weights::load(write(&dir, "g.safetensors", &t), Some(2)).unwrap();
    assert_eq!((w.config.n_layer, w.config.vocab_size, w.config.n_head), (2, 11, 2));
    check_gpt2_fields(&w, &t, "transformer.");
    assert_eq!(w.lm_head().clone().into_dyn(), t["lm_head.weight"]);
}

#[test]
fn gpt2_wrong_shape_names_the_tensor() {
    let dir = TempDir::new("gpt2-shape");
    let mut t = gpt2_tensors("");
    t.insert("h.1.attn.c_attn.weight".into(), pattern(&[D, 3 * D - 1], 50));
    let e = err_of(Gpt2Weights::load(write(&dir, "g.safetensors", &t), None));
    assert_names_tensor(&e, "h.1.attn.c_attn.weight");
    assert!(
        matches!(&e, Error::TensorShape { got, expected, .. } if got == &vec![D, 3 * D - 1] && expected == "[64, 192]")
    );

    // GPT-2's Conv1D layout is [in, out]: a transposed (nn.Linear) weight is refused.
    let mut t = gpt2_tensors("");
    t.insert("h.0.mlp.c_fc.weight".into(), pattern(&[4 * D, D], 50));
    let e = err_of(Gpt2Weights::load(write(&dir, "h.safetensors", &t), None));
    assert_names_tensor(&e, "h.0.mlp.c_fc.weight");

    let mut t = gpt2_tensors("");
    t.insert("wte.weight".into(), pattern(&[11, D, 1], 50));
    let e = err_of(Gpt2Weights::load(write(&dir, "i.safetensors", &t), None));
    assert_names_tensor(&e, "wte.weight");
    assert!(e.to_string().contains("[vocab_size, d_model]"), "{e}");
}

#[test]
fn gpt2_missing_tensor_names_it() {
    let dir = TempDir::new("gpt2-missing");
    for missing in ["h.1.ln_2.bias", "h.0.attn.c_proj.weight", "ln_f.weight", "wpe.weight", "wte.weight"] {
        let mut t = gpt2_tensors("");
        t.remove(missing);
        let e = err_of(Gpt2Weights::load(write(&dir, "g.safetensors", &t), None));
        assert_names_tensor(&e, missing);
    }
    // No layers at all.
    let mut t = gpt2_tensors("");
    t.retain(|k, _| !k.starts_with("h."));
    assert_names_tensor(&err_of(Gpt2Weights::load(write(&dir, "n.safetensors", &t), None)), "h.0.ln_1.weight");
    // A hole: layer 0 missing entirely while layer 1 is there.
    let mut t = gpt2_tensors("");
    t.retain(|k, _| !k.starts_with("h.0."));
    assert_names_tensor(&err_of(Gpt2Weights::load(write(&dir, "o.safetensors", &t), None)), "h.0.ln_1.weight");
}

#[test]
fn gpt2_truncated_file_names_the_tensor() {
    let dir = TempDir::new("gpt2-truncated");
    let t = gpt2_tensors("");
    let path = write(&dir, "g.safetensors", &t);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    // The writer wrote the tensors in name order: the last one is cut.
    let last = t.keys().last().unwrap();
    let e = err_of(Gpt2Weights::load(&path, None));
    assert_names_tensor(&e, last);
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn gpt2_head_count_errors() {
    let dir = TempDir::new("gpt2-heads");
    let path = write(&dir, "g.safetensors", &gpt2_tensors(""));
    assert!(matches!(err_of(Gpt2Weights::load(&path, Some(5))), Error::Value { arg: "n_head", .. }));
    assert!(matches!(err_of(Gpt2Weights::load(&path, Some(0))), Error::Value { arg: "n_head", .. }));
    // d_model 48 is not a multiple of 64: the head count must be given.
    let mut t = Tensors::new();
    add(&mut t, "wte.weight", &[5, 48]);
    add(&mut t, "wpe.weight", &[3, 48]);
    add(&mut t, "h.0.ln_1.weight", &[48]);
    let e = err_of(Gpt2Weights::load(write(&dir, "s.safetensors", &t), None));
    assert!(matches!(e, Error::Value { arg: "n_head", .. }), "{e:?}");
}

#[test]
fn gpt2_random_is_seeded_and_saves() {
    let config = Gpt2Config { vocab_size: 50, n_ctx: 16, d_model: 64, n_layer: 3, n_head: 4, layer_norm_eps: 1e-5 };
    let a = Gpt2Weights::random(config.clone(), 7).unwrap();
    assert_eq!(a, Gpt2Weights::random(config.clone(), 7).unwrap(), "same seed, same weights");
    assert_ne!(a.wte, Gpt2Weights::random(config.clone(), 8).unwrap().wte, "another seed");
    assert_eq!(a.blocks.len(), 3);
    assert_eq!(a.blocks[2].mlp_c_proj.weight.shape(), &[256, 64]);
    let std = (a.wte.iter().map(|x| x * x).sum::<f32>() / a.wte.len() as f32).sqrt();
    assert!((0.015..0.025).contains(&std), "wte std {std}");
    let ln_mean = a.blocks[0].ln_1.weight.mean().unwrap();
    assert!((ln_mean - 1.0).abs() < 0.01 && a.blocks[0].ln_1.weight.iter().any(|&x| x != 1.0), "{ln_mean}");

    let dir = TempDir::new("gpt2-random");
    a.save(dir.join("r.safetensors"), DType::F32).unwrap();
    assert_eq!(Gpt2Weights::load(dir.join("r.safetensors"), Some(4)).unwrap(), a);

    let bad = Gpt2Config { n_head: 5, ..config.clone() };
    assert!(matches!(err_of(Gpt2Weights::random(bad, 0)), Error::Value { arg: "n_head", .. }));
    let bad = Gpt2Config { n_layer: 0, ..config.clone() };
    assert!(matches!(err_of(Gpt2Weights::random(bad, 0)), Error::Value { arg: "n_layer", .. }));
    let huge = Gpt2Config { vocab_size: usize::MAX / 2, ..config };
    assert!(matches!(err_of(Gpt2Weights::random(huge, 0)), Error::Value { arg: "config", .. }));
    Gpt2Config::gpt2_124m().validate().unwrap();
}

// ---------------------------------------------------------------- Mamba

/// vocab 10, d 8, 2 layers, d_inner 16, d_state 4, d_conv 3, dt_rank 2.
fn mamba_tensors(embedding: &str) -> Tensors {
    let mut t = Tensors::new();
    add(&mut t, embedding, &[10, 8]);
    for i in 0..2 {
        let m = |s: &str| format!("backbone.layers.{i}.mixer.{s}");
        add(&mut t, &m("in_proj.weight"), &[32, 8]);
        add(&mut t, &m("conv1d.weight"), &[16, 1, 3]);
        add(&mut t, &m("conv1d.bias"), &[16]);
        add(&mut t, &m("x_proj.weight"), &[2 + 2 * 4, 16]);
        add(&mut t, &m("dt_proj.weight"), &[16, 2]);
        add(&mut t, &m("dt_proj.bias"), &[16]);
        add(&mut t, &m("A_log"), &[16, 4]);
        add(&mut t, &m("D"), &[16]);
        add(&mut t, &m("out_proj.weight"), &[8, 16]);
        add(&mut t, &format!("backbone.layers.{i}.norm.weight"), &[8]);
    }
    add(&mut t, "backbone.norm_f.weight", &[8]);
    t
}

const EMBEDDING: &str = "backbone.embedding.weight";

fn check_mamba_fields(w: &MambaWeights, t: &Tensors, embedding: &str) {
    assert_eq!(w.embedding.clone().into_dyn(), t[embedding]);
    assert_eq!(w.norm_f_weight.clone().into_dyn(), t["backbone.norm_f.weight"]);
    for (i, b) in w.blocks.iter().enumerate() {
        let m = |s: &str| t[&format!("backbone.layers.{i}.mixer.{s}")].clone();
        assert_eq!(b.norm_weight.clone().into_dyn(), t[&format!("backbone.layers.{i}.norm.weight")]);
        let x = &b.mixer;
        assert_eq!(x.in_proj_weight.clone().into_dyn(), m("in_proj.weight"));
        assert_eq!(x.conv1d_weight.clone().into_dyn(), m("conv1d.weight"));
        assert_eq!(x.conv1d_bias.clone().into_dyn(), m("conv1d.bias"));
        assert_eq!(x.x_proj_weight.clone().into_dyn(), m("x_proj.weight"));
        assert_eq!(x.dt_proj_weight.clone().into_dyn(), m("dt_proj.weight"));
        assert_eq!(x.dt_proj_bias.clone().into_dyn(), m("dt_proj.bias"));
        assert_eq!(x.a_log.clone().into_dyn(), m("A_log"));
        assert_eq!(x.d.clone().into_dyn(), m("D"));
        assert_eq!(x.out_proj_weight.clone().into_dyn(), m("out_proj.weight"));
        assert!(x.in_proj_bias.is_none() && x.out_proj_bias.is_none());
    }
}

#[test]
fn mamba_loads_every_tensor_and_infers_the_config() {
    let dir = TempDir::new("mamba-load");
    let t = mamba_tensors(EMBEDDING);
    let w = MambaWeights::load(write(&dir, "m.safetensors", &t)).unwrap();
    let expected = MambaConfig {
        vocab_size: 10,
        d_model: 8,
        n_layer: 2,
        d_inner: 16,
        d_state: 4,
        d_conv: 3,
        dt_rank: 2,
        norm_eps: 1e-5,
    };
    assert_eq!(w.config, expected);
    check_mamba_fields(&w, &t, EMBEDDING);
    assert!(w.lm_head.is_none());
    assert_eq!(w.lm_head(), &w.embedding, "tied");
    assert_eq!(w.named_tensors().len(), t.len());
}

#[test]
fn mamba_huggingface_names_lm_head_and_biases() {
    let dir = TempDir::new("mamba-hf");
    let emb = "backbone.embeddings.weight";
    let mut t = mamba_tensors(emb);
    add(&mut t, "lm_head.weight", &[10, 8]);
    add(&mut t, "backbone.layers.1.mixer.in_proj.bias", &[32]);
    add(&mut t, "backbone.layers.1.mixer.out_proj.bias", &[8]);
    let w = MambaWeights::load(write(&dir, "m.safetensors", &t)).unwrap();
    assert_eq!(w.embedding.clone().into_dyn(), t[emb]);
    assert_eq!(w.lm_head().clone().into_dyn(), t["lm_head.weight"]);
    let m = &w.blocks[1].mixer;
    assert_eq!(m.in_proj_bias.clone().unwrap().into_dyn(), t["backbone.layers.1.mixer.in_proj.bias"]);
    assert_eq!(m.out_proj_bias.clone().unwrap().into_dyn(), t["backbone.layers.1.mixer.out_proj.bias"]);
    assert!(w.blocks[0].mixer.in_proj_bias.is_none());
}

#[test]
fn mamba_wrong_shapes_name_the_tensor() {
    let dir = TempDir::new("mamba-shape");
    let cases: [(&str, &[usize]); 5] = [
        ("backbone.layers.1.mixer.x_proj.weight", &[11, 16]),
        ("backbone.layers.1.mixer.conv1d.weight", &[16, 2, 3]),
        ("backbone.layers.0.mixer.in_proj.weight", &[31, 8]),
        ("backbone.layers.1.mixer.A_log", &[16, 5]),
        ("backbone.layers.0.mixer.out_proj.weight", &[16, 8]),
    ];
    for (name, shape) in cases {
        let mut t = mamba_tensors(EMBEDDING);
        t.insert(name.into(), pattern(shape, 60));
        let e = err_of(MambaWeights::load(write(&dir, "m.safetensors", &t)));
        assert_names_tensor(&e, name);
        assert!(matches!(&e, Error::TensorShape { got, .. } if got == shape), "{e:?}");
    }
}

#[test]
fn mamba_missing_and_truncated_name_the_tensor() {
    let dir = TempDir::new("mamba-missing");
    for missing in ["backbone.layers.1.mixer.D", "backbone.layers.0.norm.weight", "backbone.norm_f.weight", EMBEDDING] {
        let mut t = mamba_tensors(EMBEDDING);
        t.remove(missing);
        assert_names_tensor(&err_of(MambaWeights::load(write(&dir, "m.safetensors", &t))), missing);
    }
    let mut t = mamba_tensors(EMBEDDING);
    t.retain(|k, _| !k.starts_with("backbone.layers."));
    let e = err_of(MambaWeights::load(write(&dir, "n.safetensors", &t)));
    assert_names_tensor(&e, "backbone.layers.0.mixer.in_proj.weight");

    let t = mamba_tensors(EMBEDDING);
    let path = write(&dir, "t.safetensors", &t);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let e = err_of(MambaWeights::load(&path));
    assert_names_tensor(&e, t.keys().last().unwrap());
}

#[test]
fn mamba_random_follows_the_init_and_saves() {
    let config = MambaConfig { n_layer: 3, ..MambaConfig::mamba_130m() };
    let config = MambaConfig { vocab_size: 100, d_model: 32, d_inner: 64, dt_rank: 2, ..config };
    let a = MambaWeights::random(config.clone(), 1).unwrap();
    assert_eq!(a, MambaWeights::random(config.clone(), 1).unwrap());
    assert_ne!(a.embedding, MambaWeights::random(config.clone(), 2).unwrap().embedding);
    let m = &a.blocks[2].mixer;
    assert_eq!(m.x_proj_weight.shape(), &[2 + 32, 64]);
    assert_eq!(m.conv1d_weight.shape(), &[64, 1, 4]);
    assert_eq!(m.a_log.row(5).to_vec(), (1..=16).map(|n| (n as f32).ln()).collect::<Vec<_>>());
    assert!(m.d.iter().all(|&x| x == 1.0));
    // softplus(dt_bias) is the dt drawn in [0.001, 0.1].
    for &b in &m.dt_proj_bias {
        let dt = (b as f64).exp().ln_1p();
        assert!((0.00099..0.1001).contains(&dt), "dt {dt}");
    }
    // in_proj: U(±1/sqrt(fan_in)), fan_in = d_model.
    let bound = 1.0 / (config.d_model as f32).sqrt();
    let max = m.in_proj_weight.iter().fold(0.0f32, |acc, x| acc.max(x.abs()));
    assert!(max <= bound && max > 0.9 * bound, "max |in_proj| {max}, bound {bound}");

    // Saved as bf16, loaded back: the bf16-rounded weights and the same config.
    let dir = TempDir::new("mamba-random");
    a.save(dir.join("r.safetensors"), DType::BF16).unwrap();
    let b = MambaWeights::load(dir.join("r.safetensors")).unwrap();
    assert_eq!(b.config, config);
    let round = |x: &f32| bf16::from_f32(*x).to_f32();
    assert_eq!(b.blocks[1].mixer.x_proj_weight, a.blocks[1].mixer.x_proj_weight.map(round));
    assert_eq!(b.embedding, a.embedding.map(round));

    let bad = MambaConfig { d_state: 0, ..config };
    assert!(matches!(err_of(MambaWeights::random(bad, 0)), Error::Value { arg: "d_state", .. }));
    MambaConfig::mamba_130m().validate().unwrap();
}
