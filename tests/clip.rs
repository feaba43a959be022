//! `conditioning.kind = "clip"`: a frozen CLIP text encoder from local files. A tiny tokenizer
//! and random weights with the Hugging Face names stand in for a real CLIP model (no downloads).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{ldm_run, repo, text};
use ldm_run::models::clip_text::ClipText;
use ldm_run::rng::Rng;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::template::TemplateProcessing;

const WORDS: [&str; 23] = [
    "<|startoftext|>",
    "<|endoftext|>",
    "<unk>",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
];
const WIDTH: usize = 64;
const POSITIONS: usize = 8;

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A word-level `tokenizer.json` that wraps prompts in start and end tokens, as CLIP's does.
fn write_tokenizer(path: &Path) {
    let vocab = WORDS
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), i as u32))
        .collect();
    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token("<unk>".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    tok.with_post_processor(Some(
        TemplateProcessing::builder()
            .try_single("<|startoftext|> $A <|endoftext|>")
            .unwrap()
            .special_tokens(vec![("<|startoftext|>", 0), ("<|endoftext|>", 1)])
            .build()
            .unwrap(),
    ));
    tok.save(path, false).unwrap();
}

/// Random weights of a 2-layer, 64-wide text tower with `CLIPTextModel`'s names.
fn write_weights(path: &Path) {
    let mut rng = Rng::new(9);
    let mut map = HashMap::new();
    let mut put = |name: String, shape: &[usize], scale: f32, offset: f32| {
        let v: Vec<f32> = rng
            .normal_vec(shape.iter().product())
            .iter()
            .map(|x| x * scale + offset)
            .collect();
        map.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
    };
    let p = "text_model";
    put(
        format!("{p}.embeddings.token_embedding.weight"),
        &[WORDS.len(), WIDTH],
        0.5,
        0.0,
    );
    put(
        format!("{p}.embeddings.position_embedding.weight"),
        &[POSITIONS, WIDTH],
        0.1,
        0.0,
    );
    for i in 0..2 {
        let l = format!("{p}.encoder.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            put(
                format!("{l}.self_attn.{proj}.weight"),
                &[WIDTH, WIDTH],
                0.1,
                0.0,
            );
            put(format!("{l}.self_attn.{proj}.bias"), &[WIDTH], 0.01, 0.0);
        }
        for (name, shape) in [
            ("mlp.fc1", [4 * WIDTH, WIDTH]),
            ("mlp.fc2", [WIDTH, 4 * WIDTH]),
        ] {
            put(format!("{l}.{name}.weight"), &shape, 0.05, 0.0);
            put(format!("{l}.{name}.bias"), &[shape[0]], 0.01, 0.0);
        }
        for norm in ["layer_norm1", "layer_norm2"] {
            put(format!("{l}.{norm}.weight"), &[WIDTH], 0.0, 1.0);
            put(format!("{l}.{norm}.bias"), &[WIDTH], 0.0, 0.0);
        }
    }
    put(format!("{p}.final_layer_norm.weight"), &[WIDTH], 0.0, 1.0);
    put(format!("{p}.final_layer_norm.bias"), &[WIDTH], 0.0, 0.0);
    candle_core::safetensors::save(&map, path).unwrap();
}

fn clip_files(dir: &Path) -> (PathBuf, PathBuf) {
    let (w, t) = (dir.join("clip.safetensors"), dir.join("tokenizer.json"));
    write_weights(&w);
    write_tokenizer(&t);
    (w, t)
}

fn rows(t: &Tensor, b: usize) -> Vec<Vec<f32>> {
    let t = t.get(b).unwrap();
    t.to_vec2().unwrap()
}

#[test]
fn encoder_is_causal_pads_and_refuses_long_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let (w, t) = clip_files(dir.path());
    let clip = ClipText::load(ClipText::open(&w, &Device::Cpu).unwrap(), &t).unwrap();
    assert_eq!(clip.width, WIDTH);
    let out = clip
        .encode(&["seven", "seven 7", ""], 5, &Device::Cpu)
        .unwrap();
    assert_eq!(out.dims(), &[3, 5, WIDTH]);
    let (a, b) = (rows(&out, 0), rows(&out, 1));
    // Causal attention: "seven" and "seven 7" agree on <start> and "seven", and differ after.
    assert_eq!(a[0], b[0]);
    assert_eq!(a[1], b[1]);
    assert_ne!(a[2], b[2]);
    assert!(a.iter().flatten().all(|v| v.is_finite()));
    let err = clip
        .encode(&["one two three four"], 5, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is 6 CLIP tokens; at most 5 fit"), "{err}");
    let err = clip
        .encode(&["one"], 9, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more than the CLIP model's 8 positions"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, t) = clip_files(dir.path());
    let w = dir.path().join("empty.safetensors");
    let one = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&HashMap::from([("x".to_string(), one)]), &w).unwrap();
    let err = format!(
        "{:#}",
        ClipText::load(ClipText::open(&w, &Device::Cpu).unwrap(), &t)
            .err()
            .unwrap()
    );
    assert!(
        err.contains("no tensor `text_model.embeddings.token_embedding.weight`")
            && err.contains("empty.safetensors"),
        "{err}"
    );
}

#[test]
fn smoke_pipeline_runs_and_samples_with_clip() {
    let dir = tempfile::tempdir().unwrap();
    let (w, t) = clip_files(dir.path());
    let runs = dir.path().join("runs");
    let smoke = repo().join("experiments/smoke.toml");
    let sets = |context: usize| {
        vec![
            smoke.to_str().unwrap().to_string(),
            "--runs-dir".into(),
            runs.to_str().unwrap().into(),
            "--set".into(),
            "conditioning.kind=\"clip\"".into(),
            "--set".into(),
            format!("conditioning.clip_weights=\"{}\"", w.display()),
            "--set".into(),
            format!("conditioning.clip_tokenizer=\"{}\"", t.display()),
            "--set".into(),
            "conditioning.max_tokens=4".into(),
            "--set".into(),
            format!("unet.context_dim={context}"),
        ]
    };

    let unset = ldm_run(
        &repo(),
        &[
            smoke.to_str().unwrap(),
            "--set",
            "conditioning.kind=\"clip\"",
        ],
    );
    assert!(!unset.status.success());
    assert!(
        text(&unset).contains("key `conditioning.clip_weights`"),
        "{}",
        text(&unset)
    );

    let mut absent = sets(WIDTH);
    absent[6] = "conditioning.clip_weights=\"nowhere/clip.safetensors\"".into();
    let missing = ldm_run(&repo(), &args(&absent));
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("key `conditioning.clip_weights`: CLIP weights file")
            && text(&missing).contains("nowhere/clip.safetensors does not exist"),
        "{}",
        text(&missing)
    );

    let narrow = sets(32);
    let wrong = ldm_run(&repo(), &args(&narrow));
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("key `unet.context_dim`: 32 does not match the CLIP text encoder")
            && text(&wrong).contains("which is 64 wide; set unet.context_dim = 64"),
        "{}",
        text(&wrong)
    );
    assert!(!runs.exists(), "a bad experiment writes nothing");

    let ok = sets(WIDTH);
    let out = ldm_run(&repo(), &args(&ok));
    assert!(out.status.success(), "{}", text(&out));
    let run = std::fs::read_dir(runs.join("smoke"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .expect("the run");
    let png = dir.path().join("grid.png");
    let sample = ldm_run(
        &repo(),
        &[
            "sample",
            run.to_str().unwrap(),
            "--prompts",
            "one 7",
            "--steps",
            "3",
            "--out",
            png.to_str().unwrap(),
        ],
    );
    assert!(sample.status.success(), "{}", text(&sample));
    assert!(png.is_file());
}
