//! A frozen CLIP text encoder loaded from local files: the `tokenizer.json` of a CLIP model and
//! its text tower in safetensors with the Hugging Face `CLIPTextModel` names
//! (`text_model.embeddings.token_embedding.weight`, `text_model.encoder.layers.<i>.self_attn.
//! q_proj.weight`, ...). Causal pre-LayerNorm blocks with QuickGELU (OpenAI's CLIP, as Stable
//! Diffusion 1.x uses); 64-wide heads. The context is the last hidden state after the final
//! LayerNorm, every position of the padded prompt, as in Stable Diffusion. Nothing is downloaded
//! and nothing here is trained.

use std::path::Path;

use anyhow::{Context, bail};
use candle_core::{D, Device, Tensor};

use crate::nn::layers::{LayerNorm, Linear};
use crate::nn::weights_file::{WeightsError, WeightsFile};

/// What a CLIP weights file must hold, for a missing tensor's message.
pub const NAMING: &str = "it needs Hugging Face CLIPTextModel names \
                          (text_model.embeddings.token_embedding.weight, ...)";

/// Width of one attention head.
const HEAD_DIM: usize = 64;

#[derive(Clone)]
struct Layer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// The text tower and its tokenizer.
#[derive(Clone)]
pub struct ClipText {
    tokenizer: tokenizers::Tokenizer,
    pad: u32,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    /// Width of the hidden states (the UNet's `context_dim` must match).
    pub width: usize,
}

impl std::fmt::Debug for ClipText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClipText {{ width: {}, layers: {} }}",
            self.width,
            self.layers.len()
        )
    }
}

fn quick_gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
}

impl ClipText {
    /// Opens a CLIP text tower's weights file onto `device`.
    pub fn open(weights: &Path, device: &Device) -> Result<WeightsFile, WeightsError> {
        WeightsFile::open(weights, "CLIP weights file", NAMING, device)
    }

    /// The text tower of the weights in `file` and the tokenizer at `tokenizer` (a
    /// header-only file checks names and shapes).
    pub fn load(file: WeightsFile, tokenizer: &Path) -> anyhow::Result<Self> {
        let tok = tokenizers::Tokenizer::from_file(tokenizer)
            .map_err(|e| anyhow::anyhow!("CLIP tokenizer {}: {e}", tokenizer.display()))?;
        let pad = tok.token_to_id("<|endoftext|>").unwrap_or(0);
        let weights = file.path().to_path_buf();
        let shape = |name: &str| -> anyhow::Result<Vec<usize>> {
            file.shape(name).with_context(|| {
                format!(
                    "CLIP weights file {} has no tensor `{name}`; {NAMING}",
                    weights.display()
                )
            })
        };
        let two = |name: &str| -> anyhow::Result<(usize, usize)> {
            match shape(name)?.as_slice() {
                &[a, b] => Ok((a, b)),
                other => bail!(
                    "CLIP weights file {}: tensor `{name}` has shape {other:?}, expected 2 dimensions",
                    weights.display()
                ),
            }
        };
        let (vocab, width) = two("text_model.embeddings.token_embedding.weight")?;
        let (positions, _) = two("text_model.embeddings.position_embedding.weight")?;
        if width == 0 || width % HEAD_DIM != 0 {
            bail!(
                "CLIP weights file {}: width {width} is not a multiple of {HEAD_DIM}",
                weights.display()
            );
        }
        let depth = (0..)
            .take_while(|i| file.contains(&format!("text_model.encoder.layers.{i}.mlp.fc1.weight")))
            .count();
        let hidden: Vec<usize> = (0..depth)
            .map(|i| two(&format!("text_model.encoder.layers.{i}.mlp.fc1.weight")).map(|s| s.0))
            .collect::<anyhow::Result<_>>()?;
        let root = file.var_builder().pp("text_model");
        let layers = hidden
            .iter()
            .enumerate()
            .map(|(i, &hidden)| {
                let vb = root.pp(format!("encoder.layers.{i}"));
                let attn = vb.pp("self_attn");
                Ok(Layer {
                    ln1: LayerNorm::new(width, vb.pp("layer_norm1"))?,
                    q: Linear::new(width, width, true, attn.pp("q_proj"))?,
                    k: Linear::new(width, width, true, attn.pp("k_proj"))?,
                    v: Linear::new(width, width, true, attn.pp("v_proj"))?,
                    out: Linear::new(width, width, true, attn.pp("out_proj"))?,
                    ln2: LayerNorm::new(width, vb.pp("layer_norm2"))?,
                    fc1: Linear::new(width, hidden, true, vb.pp("mlp.fc1"))?,
                    fc2: Linear::new(hidden, width, true, vb.pp("mlp.fc2"))?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .with_context(|| format!("CLIP weights file {}", weights.display()))?;
        let emb = root.pp("embeddings");
        Ok(Self {
            tokenizer: tok,
            pad,
            token_embedding: emb.get((vocab, width), "token_embedding.weight")?,
            position_embedding: emb.get((positions, width), "position_embedding.weight")?,
            layers,
            final_ln: LayerNorm::new(width, root.pp("final_layer_norm"))
                .with_context(|| format!("CLIP weights file {}", weights.display()))?,
            width,
        })
    }

    /// Token ids of each prompt, padded with `<|endoftext|>` to `tokens` (longer prompts are
    /// an error).
    fn ids(&self, prompts: &[&str], tokens: usize) -> anyhow::Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(prompts.len() * tokens);
        for p in prompts {
            let enc = self
                .tokenizer
                .encode(*p, true)
                .map_err(|e| anyhow::anyhow!("CLIP tokenizer on \"{p}\": {e}"))?;
            let got = enc.get_ids();
            if got.len() > tokens {
                bail!(
                    "prompt \"{p}\" is {} CLIP tokens; at most {tokens} fit (conditioning.max_tokens)",
                    got.len()
                );
            }
            ids.extend_from_slice(got);
            ids.extend(std::iter::repeat_n(self.pad, tokens - got.len()));
        }
        Ok(ids)
    }

    /// The context (B, tokens, width) of `prompts`.
    pub fn encode(
        &self,
        prompts: &[&str],
        tokens: usize,
        device: &Device,
    ) -> anyhow::Result<Tensor> {
        let positions = self.position_embedding.dim(0)?;
        if tokens > positions {
            bail!(
                "conditioning.max_tokens {tokens} is more than the CLIP model's {positions} positions"
            );
        }
        let b = prompts.len();
        let ids = Tensor::from_vec(self.ids(prompts, tokens)?, b * tokens, device)?;
        let mut x = self
            .token_embedding
            .index_select(&ids, 0)?
            .reshape((b, tokens, self.width))?
            .broadcast_add(&self.position_embedding.narrow(0, 0, tokens)?)?;
        let mask: Vec<f32> = (0..tokens * tokens)
            .map(|i| {
                if i % tokens > i / tokens {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (tokens, tokens), device)?;
        let heads = self.width / HEAD_DIM;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, tokens, heads, HEAD_DIM))?
                .transpose(1, 2)?
                .contiguous()
        };
        for l in &self.layers {
            let h = l.ln1.forward(&x)?;
            let q = split((l.q.forward(&h)? * (HEAD_DIM as f64).powf(-0.5))?)?;
            let k = split(l.k.forward(&h)?)?;
            let v = split(l.v.forward(&h)?)?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&mask)?;
            let attn = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v)?;
            let attn = attn.transpose(1, 2)?.reshape((b, tokens, self.width))?;
            x = (x + l.out.forward(&attn)?)?;
            let m = l
                .fc2
                .forward(&quick_gelu(&l.fc1.forward(&l.ln2.forward(&x)?)?)?)?;
            x = (x + m)?;
        }
        Ok(self.final_ln.forward(&x)?)
    }
}
