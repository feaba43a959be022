//! AutoencoderKL (Rombach et al. 2022): an encoder to a diagonal-Gaussian posterior over a small
//! latent, and a decoder back to pixels. The lesson's "kl-f4" maps 1x32x32 to 4x8x8.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::vae_blocks::{AttnBlock, Downsample, ResnetBlock, Upsample};
use crate::nn::layers::{Conv2d, Conv2dConfig, GroupNorm};
use crate::parallel;
use crate::rng::Rng;
use crate::settings::Checks;

/// `[autoencoder]`: AutoencoderKL sizes. Defaults are the lesson's kl-f4 (1x32x32 -> 4x8x8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Base channel width.
    pub ch: usize,
    /// Width multiplier per level; each level after the first halves the resolution.
    pub ch_mult: Vec<usize>,
    /// Residual blocks per encoder level (the decoder has one more).
    pub num_res_blocks: usize,
    /// Resolutions (image side in pixels) that get a self-attention block.
    pub attn_resolutions: Vec<usize>,
    /// Channels of the latent z.
    pub z_channels: usize,
    /// Channels after quant_conv / before post_quant_conv.
    pub embed_dim: usize,
    /// Dropout inside residual blocks.
    pub dropout: f64,
    /// GroupNorm groups; every width must be divisible by it.
    pub norm_groups: usize,
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        Self {
            ch: 128,
            ch_mult: vec![1, 1, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![16, 8],
            z_channels: 4,
            embed_dim: 4,
            dropout: 0.0,
            norm_groups: 32,
        }
    }
}

/// Channels and side of a latent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatentShape {
    pub channels: usize,
    pub side: usize,
}

impl AutoencoderConfig {
    /// Times the encoder halves the image.
    pub fn halvings(&self) -> usize {
        self.ch_mult.len().max(1) - 1
    }

    /// The latent an image of side `image_size` is encoded to.
    pub fn latent_shape(&self, image_size: usize) -> LatentShape {
        LatentShape {
            channels: self.embed_dim,
            side: image_size >> self.halvings(),
        }
    }

    /// Channel width of every level.
    pub fn widths(&self) -> Vec<usize> {
        self.ch_mult
            .iter()
            .map(|m| self.ch.saturating_mul(*m))
            .collect()
    }

    /// The checks that need nothing but these settings (sizes against the image are the
    /// configuration's, which knows both).
    pub fn check(&self) -> Checks {
        let mut c = Checks::new();
        c.count_in("ch", self.ch, 1, MAX_WIDTH);
        c.all_positive("ch_mult", &self.ch_mult);
        c.count_in("ch_mult", self.ch_mult.len(), 1, MAX_LEVELS);
        for m in &self.ch_mult {
            c.count_in("ch_mult", *m, 1, MAX_MULT);
        }
        c.count_in("num_res_blocks", self.num_res_blocks, 0, MAX_BLOCKS);
        c.count_in("z_channels", self.z_channels, 1, MAX_LATENT_CHANNELS);
        c.count_in("embed_dim", self.embed_dim, 1, MAX_LATENT_CHANNELS);
        c.count_in("norm_groups", self.norm_groups, 1, MAX_WIDTH);
        c.probability("dropout", self.dropout);
        c.divisible(
            "norm_groups",
            &self.widths(),
            "ch x ch_mult",
            self.norm_groups,
        );
        c
    }
}

/// Widest channel count accepted for any network width.
pub const MAX_WIDTH: usize = 65_536;
/// Most resolution levels of a network (each halves the resolution).
pub const MAX_LEVELS: usize = 8;
/// Largest width multiplier of a level.
pub const MAX_MULT: usize = 64;
/// Most residual blocks per level.
pub const MAX_BLOCKS: usize = 64;
/// Most latent channels.
pub const MAX_LATENT_CHANNELS: usize = 1024;

/// One step of an encoder or decoder level.
#[derive(Debug, Clone)]
enum Layer {
    Res(ResnetBlock),
    Attn(AttnBlock),
    Down(Downsample),
    Up(Upsample),
}

fn run(layers: &[Layer], mut h: Tensor, mut rng: Option<&mut Rng>) -> Result<Tensor> {
    for layer in layers {
        h = match layer {
            Layer::Res(b) => b.forward(&h, rng.as_deref_mut())?,
            Layer::Attn(b) => b.forward(&h)?,
            Layer::Down(b) => b.forward(&h)?,
            Layer::Up(b) => b.forward(&h)?,
        };
    }
    Ok(h)
}

/// The middle of both networks: Res, Attn, Res at the lowest resolution.
fn middle(c: usize, cfg: &AutoencoderConfig, vb: VarBuilder) -> Result<Vec<Layer>> {
    let g = cfg.norm_groups;
    Ok(vec![
        Layer::Res(ResnetBlock::new(c, c, g, cfg.dropout, vb.pp("block_1"))?),
        Layer::Attn(AttnBlock::new(c, g, vb.pp("attn_1"))?),
        Layer::Res(ResnetBlock::new(c, c, g, cfg.dropout, vb.pp("block_2"))?),
    ])
}

/// Block `j` of a level at resolution `res`: a ResNet block from `c` to `out` channels, then
/// self-attention where `cfg.attn_resolutions` names `res`.
fn level_block(
    c: usize,
    out: usize,
    res: usize,
    cfg: &AutoencoderConfig,
    vb_level: &VarBuilder,
    j: usize,
) -> Result<Vec<Layer>> {
    let g = cfg.norm_groups;
    let mut layers = vec![Layer::Res(ResnetBlock::new(
        c,
        out,
        g,
        cfg.dropout,
        vb_level.pp(format!("block.{j}")),
    )?)];
    if cfg.attn_resolutions.contains(&res) {
        layers.push(Layer::Attn(AttnBlock::new(
            out,
            g,
            vb_level.pp(format!("attn.{j}")),
        )?));
    }
    Ok(layers)
}

/// Image (B, C, S, S) -> moments (B, 2 z, S/f, S/f).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    layers: Vec<Layer>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn new(
        cfg: &AutoencoderConfig,
        channels: usize,
        size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let g = cfg.norm_groups;
        let conv_in = Conv2d::new(channels, cfg.ch, Conv2dConfig::SAME3, vb.pp("conv_in"))?;
        let mut layers = Vec::new();
        let (mut c, mut res) = (cfg.ch, size);
        for (i, m) in cfg.ch_mult.iter().enumerate() {
            let vb_level = vb.pp(format!("down.{i}"));
            for j in 0..cfg.num_res_blocks {
                let out = cfg.ch * m;
                layers.extend(level_block(c, out, res, cfg, &vb_level, j)?);
                c = out;
            }
            if i + 1 != cfg.ch_mult.len() {
                layers.push(Layer::Down(Downsample::new(c, vb_level.pp("downsample"))?));
                res /= 2;
            }
        }
        layers.extend(middle(c, cfg, vb.pp("mid"))?);
        Ok(Self {
            conv_in,
            layers,
            norm_out: GroupNorm::new(g, c, 1e-6, vb.pp("norm_out"))?,
            conv_out: Conv2d::new(
                c,
                2 * cfg.z_channels,
                Conv2dConfig::SAME3,
                vb.pp("conv_out"),
            )?,
        })
    }

    pub fn forward(&self, x: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let h = run(&self.layers, self.conv_in.forward(x)?, rng)?;
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

/// Latent (B, z, s, s) -> image (B, C, S, S). No output non-linearity, as in the paper.
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    layers: Vec<Layer>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(
        cfg: &AutoencoderConfig,
        channels: usize,
        size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let g = cfg.norm_groups;
        let levels = cfg.ch_mult.len();
        let mut c = cfg.ch * cfg.ch_mult[levels - 1];
        let mut res = size >> (levels - 1);
        let conv_in = Conv2d::new(cfg.z_channels, c, Conv2dConfig::SAME3, vb.pp("conv_in"))?;
        let mut layers = middle(c, cfg, vb.pp("mid"))?;
        for i in (0..levels).rev() {
            let vb_level = vb.pp(format!("up.{i}"));
            for j in 0..=cfg.num_res_blocks {
                let out = cfg.ch * cfg.ch_mult[i];
                layers.extend(level_block(c, out, res, cfg, &vb_level, j)?);
                c = out;
            }
            if i != 0 {
                layers.push(Layer::Up(Upsample::new(c, vb_level.pp("upsample"))?));
                res *= 2;
            }
        }
        Ok(Self {
            conv_in,
            layers,
            norm_out: GroupNorm::new(g, c, 1e-6, vb.pp("norm_out"))?,
            conv_out: Conv2d::new(c, channels, Conv2dConfig::SAME3, vb.pp("conv_out"))?,
        })
    }

    pub fn forward(&self, z: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let h = run(&self.layers, self.conv_in.forward(z)?, rng)?;
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }

    /// The last convolution's weight (the adaptive GAN weight balances gradients there).
    pub fn last_weight(&self) -> &Tensor {
        self.conv_out.weight()
    }
}

/// The diagonal Gaussian q(z | x) given by the encoder's moments.
#[derive(Debug, Clone)]
pub struct Posterior {
    pub mean: Tensor,
    pub logvar: Tensor,
}

impl Posterior {
    /// Splits moments (B, 2 z, h, w) into mean and log-variance, clamped to [-30, 20].
    pub fn from_moments(moments: &Tensor) -> Result<Self> {
        let z = moments.dim(1)? / 2;
        Ok(Self {
            mean: moments.narrow(1, 0, z)?,
            logvar: moments.narrow(1, z, z)?.clamp(-30f32, 20f32)?,
        })
    }

    pub fn std(&self) -> Result<Tensor> {
        (&self.logvar * 0.5)?.exp()
    }

    /// z = mean + std * eps with eps ~ N(0, 1) from `rng`.
    pub fn sample(&self, rng: &mut Rng) -> Result<Tensor> {
        let eps = Tensor::from_vec(
            rng.normal_vec(self.mean.elem_count()),
            self.mean.shape(),
            self.mean.device(),
        )?;
        self.mean.add(&self.std()?.mul(&eps)?)
    }

    /// KL(q || N(0, 1)) summed over (C, H, W), averaged over the batch.
    pub fn kl(&self) -> Result<Tensor> {
        let var = self.logvar.exp()?;
        let terms = ((self.mean.sqr()? + var)? - 1.0)?.sub(&self.logvar)?;
        (terms.flatten_from(1)?.sum(1)? * 0.5)?.mean_all()
    }
}

/// Encoder, decoder and the 1x1 convolutions between them and the latent.
#[derive(Debug, Clone)]
pub struct AutoencoderKl {
    pub encoder: Encoder,
    pub decoder: Decoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
}

impl AutoencoderKl {
    pub fn new(
        cfg: &AutoencoderConfig,
        channels: usize,
        size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let z = cfg.z_channels;
        let e = cfg.embed_dim;
        Ok(Self {
            encoder: Encoder::new(cfg, channels, size, vb.pp("encoder"))?,
            decoder: Decoder::new(cfg, channels, size, vb.pp("decoder"))?,
            quant_conv: Conv2d::new(2 * z, 2 * e, Conv2dConfig::POINT, vb.pp("quant_conv"))?,
            post_quant_conv: Conv2d::new(e, z, Conv2dConfig::POINT, vb.pp("post_quant_conv"))?,
        })
    }

    /// x (B, C, S, S) in [-1, 1] -> q(z | x) over (B, embed_dim, s, s).
    pub fn encode(&self, x: &Tensor, rng: Option<&mut Rng>) -> Result<Posterior> {
        let moments = self.quant_conv.forward(&self.encoder.forward(x, rng)?)?;
        Posterior::from_moments(&moments)
    }

    /// z (B, embed_dim, s, s) -> x_hat (B, C, S, S).
    pub fn decode(&self, z: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        self.decoder.forward(&self.post_quant_conv.forward(z)?, rng)
    }

    /// [`Self::decode`] without dropout, the batch split over the cores.
    pub fn decode_batched(&self, z: &Tensor) -> Result<Tensor> {
        parallel::batched(z.dim(0)?, z.device(), |r| {
            self.decode(&z.narrow(0, r.start, r.len())?, None)
        })
    }

    /// Decoded posterior means of x (deterministic reconstructions), the batch split over the
    /// cores.
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        parallel::batched(x.dim(0)?, x.device(), |r| {
            let x = x.narrow(0, r.start, r.len())?;
            self.decode(&self.encode(&x, None)?.mean, None)
        })
    }
}
