//! The latent diffusion UNet: predicts the noise (or v) in a noisy latent, given per-sample
//! timesteps and an optional cross-attention context. Layout as in the lesson: average-pool
//! down, nearest up, skip concatenation last-in first-out.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::autoencoder::{MAX_BLOCKS, MAX_LATENT_CHANNELS, MAX_LEVELS, MAX_MULT, MAX_WIDTH};
use super::unet_blocks::{
    ResBlock, ResBlockConfig, SpatialTransformer, TransformerConfig, timestep_embedding,
};
use crate::nn::kernels;
use crate::nn::layers::{Conv2d, Conv2dConfig, GroupNorm, Linear};
use crate::rng::Rng;
use crate::settings::Checks;

/// `[unet]`: diffusion UNet sizes. Defaults are the lesson's (128 features, [1,2,2], attention
/// at 4x4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UnetConfig {
    /// Base channel width (the time embedding is 4x this).
    pub model_channels: usize,
    /// Width multiplier per level; each level after the first halves the resolution.
    pub channel_mult: Vec<usize>,
    /// Residual blocks per down level (the up path has one more).
    pub num_res_blocks: usize,
    /// Latent resolutions that get a spatial transformer (cross-attention) block.
    pub attention_resolutions: Vec<usize>,
    /// Attention heads in each transformer block.
    pub num_heads: usize,
    /// Channels per attention head (the transformer's width is heads x this).
    pub head_channels: usize,
    /// Width of the conditioning context the cross-attention reads.
    pub context_dim: usize,
    /// Dropout in residual blocks and attention outputs.
    pub dropout: f64,
    /// GroupNorm groups; every width must be divisible by it.
    pub norm_groups: usize,
    /// Build the skip Linear of every residual block, even where channels do not change and
    /// it goes unused, as the lesson does (only changes the parameter count).
    pub lesson_skip_layers: bool,
    /// Side of the latent the UNet sees; must equal the autoencoder's. Unset: taken from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latent_size: Option<usize>,
    /// Channels of the latent the UNet sees; must equal `autoencoder.embed_dim`. Unset: taken
    /// from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latent_channels: Option<usize>,
}

impl Default for UnetConfig {
    fn default() -> Self {
        Self {
            model_channels: 128,
            channel_mult: vec![1, 2, 2],
            num_res_blocks: 2,
            attention_resolutions: vec![4],
            num_heads: 1,
            head_channels: 64,
            context_dim: 768,
            dropout: 0.1,
            norm_groups: 32,
            lesson_skip_layers: false,
            latent_size: None,
            latent_channels: None,
        }
    }
}

/// Most attention heads of a transformer block.
pub const MAX_HEADS: usize = 1024;

impl UnetConfig {
    /// Times the UNet halves its input.
    pub fn halvings(&self) -> usize {
        self.channel_mult.len().max(1) - 1
    }

    /// Channel width of every level.
    pub fn widths(&self) -> Vec<usize> {
        self.channel_mult
            .iter()
            .map(|m| self.model_channels.saturating_mul(*m))
            .collect()
    }

    /// The checks that need nothing but these settings.
    pub fn check(&self) -> Checks {
        let mut c = Checks::new();
        c.count_in("model_channels", self.model_channels, 1, MAX_WIDTH);
        if !self.model_channels.is_multiple_of(2) {
            c.fail(
                "model_channels",
                format!(
                    "{} is odd; the sinusoidal time embedding needs an even width",
                    self.model_channels
                ),
            );
        }
        c.all_positive("channel_mult", &self.channel_mult);
        c.count_in("channel_mult", self.channel_mult.len(), 1, MAX_LEVELS);
        for m in &self.channel_mult {
            c.count_in("channel_mult", *m, 1, MAX_MULT);
        }
        c.count_in("num_res_blocks", self.num_res_blocks, 0, MAX_BLOCKS);
        c.count_in("num_heads", self.num_heads, 1, MAX_HEADS);
        c.count_in("head_channels", self.head_channels, 1, MAX_WIDTH);
        c.count_in("context_dim", self.context_dim, 1, MAX_WIDTH);
        c.count_in("norm_groups", self.norm_groups, 1, MAX_WIDTH);
        c.probability("dropout", self.dropout);
        c.divisible(
            "norm_groups",
            &self.widths(),
            "model_channels x channel_mult",
            self.norm_groups,
        );
        if let Some(n) = self.latent_channels {
            c.count_in("latent_channels", n, 1, MAX_LATENT_CHANNELS);
        }
        c
    }
}

#[derive(Debug, Clone)]
enum Block {
    Res(ResBlock),
    Transformer(SpatialTransformer),
    Pool,
    Up,
}

/// What the UNet is built for, beyond its own `[unet]` sizes.
#[derive(Debug, Clone, Copy)]
pub struct UnetShape {
    pub latent_channels: usize,
    pub latent_size: usize,
    /// Width of the conditioning context; `None` for an unconditional model.
    pub context_dim: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct UNet {
    time_in: Linear,
    time_out: Linear,
    conv_in: Conv2d,
    downs: Vec<Vec<Block>>,
    mid: Vec<Block>,
    ups: Vec<Vec<Block>>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    model_channels: usize,
}

impl UNet {
    pub fn new(cfg: &UnetConfig, shape: UnetShape, vb: VarBuilder) -> Result<Self> {
        let ch = cfg.model_channels;
        let time_dim = 4 * ch;
        let res = |c_in, c_out, vb| {
            let rc = ResBlockConfig {
                c_in,
                c_out,
                time_dim,
                groups: cfg.norm_groups,
                dropout: cfg.dropout,
                always_skip: cfg.lesson_skip_layers,
            };
            ResBlock::new(rc, vb).map(Block::Res)
        };
        let transformer = |c, vb| {
            let tc = TransformerConfig {
                channels: c,
                heads: cfg.num_heads,
                head_channels: cfg.head_channels,
                context_dim: shape.context_dim,
                groups: cfg.norm_groups,
                dropout: cfg.dropout,
            };
            SpatialTransformer::new(tc, vb).map(Block::Transformer)
        };
        let no_bias = Conv2dConfig {
            bias: false,
            ..Conv2dConfig::SAME3
        };
        let conv_in = Conv2d::new(shape.latent_channels, ch, no_bias, vb.pp("conv_in"))?;

        let levels = cfg.channel_mult.len();
        let (mut c, mut r) = (ch, shape.latent_size);
        let mut skips = vec![ch];
        let mut downs = Vec::new();
        for (i, m) in cfg.channel_mult.iter().enumerate() {
            for _ in 0..cfg.num_res_blocks {
                let vb_b = vb.pp(format!("down.{}", downs.len()));
                let mut blocks = vec![res(c, ch * m, vb_b.pp("res"))?];
                c = ch * m;
                if cfg.attention_resolutions.contains(&r) {
                    blocks.push(transformer(c, vb_b.pp("attn"))?);
                }
                downs.push(blocks);
                skips.push(c);
            }
            if i + 1 != levels {
                downs.push(vec![Block::Pool]);
                skips.push(c);
                r /= 2;
            }
        }
        let mid = vec![
            res(c, c, vb.pp("mid.res1"))?,
            transformer(c, vb.pp("mid.attn"))?,
            res(c, c, vb.pp("mid.res2"))?,
        ];
        let mut ups = Vec::new();
        for i in (0..levels).rev() {
            for j in 0..=cfg.num_res_blocks {
                let vb_b = vb.pp(format!("up.{}", ups.len()));
                let skip = skips.pop().unwrap_or(0);
                let mut blocks = vec![res(c + skip, ch * cfg.channel_mult[i], vb_b.pp("res"))?];
                c = ch * cfg.channel_mult[i];
                if cfg.attention_resolutions.contains(&r) {
                    blocks.push(transformer(c, vb_b.pp("attn"))?);
                }
                if i != 0 && j == cfg.num_res_blocks {
                    blocks.push(Block::Up);
                    r *= 2;
                }
                ups.push(blocks);
            }
        }
        Ok(Self {
            time_in: Linear::new(ch, time_dim, true, vb.pp("time_embed.0"))?,
            time_out: Linear::new(time_dim, time_dim, true, vb.pp("time_embed.2"))?,
            conv_in,
            downs,
            mid,
            ups,
            norm_out: GroupNorm::new(cfg.norm_groups, c, 1e-5, vb.pp("norm_out"))?,
            conv_out: Conv2d::new(c, shape.latent_channels, no_bias, vb.pp("conv_out"))?,
            model_channels: ch,
        })
    }

    fn run(
        blocks: &[Block],
        mut h: Tensor,
        temb: &Tensor,
        context: Option<&Tensor>,
        mut rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        for block in blocks {
            h = match block {
                Block::Res(b) => b.forward(&h, temb, rng.as_deref_mut())?,
                Block::Transformer(b) => b.forward(&h, context, rng.as_deref_mut())?,
                Block::Pool => h.avg_pool2d(2)?,
                Block::Up => kernels::upsample_nearest2x(&h)?,
            };
        }
        Ok(h)
    }

    /// x (B, z, s, s), t (B) timesteps, context (B, S, context_dim) -> (B, z, s, s).
    /// `rng` drives dropout in training; `None` evaluates.
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        context: Option<&Tensor>,
        mut rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        let temb = timestep_embedding(t, self.model_channels)?;
        let temb = self
            .time_out
            .forward(&self.time_in.forward(&temb)?.silu()?)?;
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for blocks in &self.downs {
            h = Self::run(blocks, h, &temb, context, rng.as_deref_mut())?;
            skips.push(h.clone());
        }
        h = Self::run(&self.mid, h, &temb, context, rng.as_deref_mut())?;
        for blocks in &self.ups {
            let skip = skips
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("UNet skip stack ran out".into()))?;
            h = Self::run(
                blocks,
                Tensor::cat(&[&h, &skip], 1)?,
                &temb,
                context,
                rng.as_deref_mut(),
            )?;
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}
