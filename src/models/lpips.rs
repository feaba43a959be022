//! LPIPS (Zhang et al., 2018), the perceptual distance of the LDM autoencoder's loss: VGG16
//! features at five depths, unit-normalised over channels, their squared differences weighted
//! per channel by learned 1x1 layers, averaged over space and summed over depths.
//!
//! The weights come from a local safetensors file the user provides (nothing is downloaded):
//! torchvision's VGG16 convolutions as `features.<i>.weight` / `features.<i>.bias` and the
//! LPIPS linear layers as `lin<k>.model.1.weight`, the names of the `lpips` package. The network
//! is frozen: gradients flow to the images only.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::nn::kernels;
use crate::nn::weights_file::{WeightsError, WeightsFile};

/// VGG16's 3x3 convolutions as (index in `features`, input channels, output channels), grouped
/// by the block whose last ReLU LPIPS taps; a 2x2 max pool precedes every block but the first.
/// Block k's linear layer `lin<k>.model.1.weight` is (1, C, 1, 1) for its last output width C.
pub const BLOCKS: [&[(usize, usize, usize)]; 5] = [
    &[(0, 3, 64), (2, 64, 64)],
    &[(5, 64, 128), (7, 128, 128)],
    &[(10, 128, 256), (12, 256, 256), (14, 256, 256)],
    &[(17, 256, 512), (19, 512, 512), (21, 512, 512)],
    &[(24, 512, 512), (26, 512, 512), (28, 512, 512)],
];

/// The input normalisation LPIPS applies to images in [-1, 1].
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// What an LPIPS weights file must hold, for a missing tensor's message.
pub const NAMING: &str = "it needs torchvision's VGG16 `features.<i>.weight`/`.bias` and the \
                          lpips package's `lin<k>.model.1.weight`";

/// The frozen LPIPS network.
pub struct Lpips {
    convs: Vec<Vec<(Tensor, Tensor)>>,
    lins: Vec<Tensor>,
    shift: Tensor,
    scale: Tensor,
}

impl Lpips {
    /// Opens an LPIPS weights file onto `device`.
    pub fn open(path: &Path, device: &Device) -> Result<WeightsFile, WeightsError> {
        WeightsFile::open(path, "LPIPS weights file", NAMING, device)
    }

    /// The network of the weights in `file` (a header-only file checks names and shapes).
    pub fn load(file: &WeightsFile) -> Result<Self, WeightsError> {
        let mut convs = Vec::new();
        let mut lins = Vec::new();
        for (k, block) in BLOCKS.iter().enumerate() {
            let mut layers = Vec::new();
            for &(i, c_in, c_out) in block.iter() {
                layers.push((
                    file.get(&format!("features.{i}.weight"), &[c_out, c_in, 3, 3])?,
                    file.get(&format!("features.{i}.bias"), &[c_out])?,
                ));
            }
            let c = block[block.len() - 1].2;
            lins.push(file.get(&format!("lin{k}.model.1.weight"), &[1, c, 1, 1])?);
            convs.push(layers);
        }
        let channel = |v: [f32; 3]| {
            Tensor::from_vec(v.to_vec(), (1, 3, 1, 1), file.device()).map_err(|e| {
                WeightsError::Read {
                    what: "LPIPS weights file",
                    path: file.path().to_path_buf(),
                    why: e.to_string(),
                }
            })
        };
        Ok(Self {
            convs,
            lins,
            shift: channel(SHIFT)?,
            scale: channel(SCALE)?,
        })
    }

    /// The five tapped feature maps of images (B, 1 or 3, H, W) in [-1, 1].
    fn features(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let x = if x.dim(1)? == 1 {
            x.repeat((1, 3, 1, 1))?
        } else {
            x.clone()
        };
        let mut h = x.broadcast_sub(&self.shift)?.broadcast_div(&self.scale)?;
        let mut taps = Vec::with_capacity(self.convs.len());
        for (k, block) in self.convs.iter().enumerate() {
            if k > 0 {
                h = h.max_pool2d(2)?;
            }
            for (w, b) in block {
                h = kernels::conv2d(&h, w, Some(b), 1, 1)?.relu()?;
            }
            taps.push(h.clone());
        }
        Ok(taps)
    }

    /// The distance between each pair of images of `a` and `b` (B, C, H, W), shaped (B,).
    /// H and W must be at least 16 (four poolings).
    pub fn distance(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        let unit = |f: &Tensor| -> candle_core::Result<Tensor> {
            let norm = (f.sqr()?.sum_keepdim(1)?.sqrt()? + 1e-10)?;
            f.broadcast_div(&norm)
        };
        let (fa, fb) = (self.features(a)?, self.features(b)?);
        let mut total: Option<Tensor> = None;
        for ((x, y), lin) in fa.iter().zip(&fb).zip(&self.lins) {
            let d = (unit(x)? - unit(y)?)?.sqr()?;
            let weighted = kernels::conv2d(&d, lin, None, 1, 0)?;
            let per_image = weighted.mean((1, 2, 3))?;
            total = Some(match total {
                Some(t) => (t + per_image)?,
                None => per_image,
            });
        }
        total.ok_or_else(|| candle_core::Error::Msg("LPIPS has no layers".into()))
    }
}
