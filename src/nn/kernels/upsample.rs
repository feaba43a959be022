//! Nearest-neighbour 2x upsampling of (B, C, H, W) on the CPU in f32, and its adjoint (the sum
//! of each 2x2 block). Each is the other's gradient, so any order of derivative stays here.
//! candle adds the gradient this returns to whatever else flows into the input, so an input
//! used elsewhere too gets the sum of all its gradients.

use super::util::{multiversion, par_chunks_mut, slice, uninit_vec};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Planes handed to one pool task at least.
fn min_planes(hw: usize) -> usize {
    (16_384 / hw.max(1)).max(1)
}

multiversion! {
    fn up_planes(x: &[f32], y: &mut [f32], h: usize, w: usize) {
        for (xp, yp) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(4 * h * w)) {
            for (xr, yr) in xp.chunks_exact(w).zip(yp.chunks_exact_mut(4 * w)) {
                let (top, bottom) = yr.split_at_mut(2 * w);
                for (pair, v) in top.chunks_exact_mut(2).zip(xr) {
                    pair[0] = *v;
                    pair[1] = *v;
                }
                bottom.copy_from_slice(top);
            }
        }
    }
}

multiversion! {
    fn down_planes(dy: &[f32], dx: &mut [f32], h: usize, w: usize) {
        for (yp, xp) in dy.chunks_exact(4 * h * w).zip(dx.chunks_exact_mut(h * w)) {
            for (yr, xr) in yp.chunks_exact(4 * w).zip(xp.chunks_exact_mut(w)) {
                let (top, bottom) = yr.split_at(2 * w);
                for ((o, t), b) in xr.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                    *o = (t[0] + t[1]) + (b[0] + b[1]);
                }
            }
        }
    }
}

/// (B, C, H, W) -> (B, C, 2H, 2W)
pub(crate) struct Up2x;

impl CustomOp1 for Up2x {
    fn name(&self) -> &'static str {
        "kernels-upsample-nearest2x"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let x = slice(s, l, "upsample")?;
        let mut y = uninit_vec(4 * x.len());
        let hw = h * w;
        if hw > 0 {
            let k = min_planes(hw);
            par_chunks_mut(&mut y, 4 * hw * k, |i, yc| {
                up_planes(&x[i * hw * k..(i * hw * k + yc.len() / 4)], yc, h, w)
            });
        }
        Ok((CpuStorage::F32(y), (b, c, 2 * h, 2 * w).into()))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1(Down2x)?))
    }
}

/// (B, C, 2H, 2W) -> (B, C, H, W): the sum of each 2x2 block.
pub(crate) struct Down2x;

impl CustomOp1 for Down2x {
    fn name(&self) -> &'static str {
        "kernels-upsample-nearest2x-grad"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h2, w2) = l.shape().dims4()?;
        if h2 % 2 != 0 || w2 % 2 != 0 {
            candle_core::bail!("upsample grad: odd size {h2}x{w2}");
        }
        let (h, w) = (h2 / 2, w2 / 2);
        let dy = slice(s, l, "upsample")?;
        let mut dx = uninit_vec(dy.len() / 4);
        let hw = h * w;
        if hw > 0 {
            let k = min_planes(hw);
            par_chunks_mut(&mut dx, hw * k, |i, xc| {
                down_planes(&dy[4 * i * hw * k..4 * (i * hw * k + xc.len())], xc, h, w)
            });
        }
        Ok((CpuStorage::F32(dx), (b, c, h, w).into()))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1(Up2x)?))
    }
}
