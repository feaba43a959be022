//! Gradients of gradients through the convolution kernels (their backward ops have their
//! own backward). candle detaches gradients unless CANDLE_GRAD_DO_NOT_DETACH is set, so this
//! lives in its own test binary that sets it before anything runs.

use candle_core::{Device, Tensor, Var};
use ldm_run::nn::kernels as k;

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (((i as u64 + 1) * (seed * 2654435761 + 97)) % 2003) as f32 / 1001.5 - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

#[test]
fn conv2d_gradients_of_gradients() {
    // SAFETY: set before this binary's only test starts any other thread.
    unsafe { std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1") };
    let x = Var::from_tensor(&rand(&[2, 3, 6, 5], 8)).unwrap();
    let w = Var::from_tensor(&rand(&[4, 3, 3, 3], 9)).unwrap();
    let r = rand(&[2, 4, 3, 3], 10);
    let s = rand(&[2, 3, 6, 5], 11);
    // L1 = sum(conv(x, w) · r); gx = dL1/dx = Gx(r, w), linear in w.
    let y = k::conv2d(x.as_tensor(), w.as_tensor(), None, 2, 1).unwrap();
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = g.get(x.as_tensor()).unwrap();
    let gw = g.get(w.as_tensor()).unwrap();
    // L2 = sum(gx · s): dL2/dw = Gw(s, r), the weight gradient of sum(conv(s, w) · r), taken
    // with the first-order path (checked against candle and finite differences elsewhere;
    // candle's own backward fails on this stride-2 shape).
    let g2 = (gx * &s).unwrap().sum_all().unwrap().backward().unwrap();
    let got = g2
        .get(w.as_tensor())
        .expect("no second-order gradient for w");
    let ws = Var::from_tensor(w.as_tensor()).unwrap();
    let yr = k::conv2d(&s, ws.as_tensor(), None, 2, 1).unwrap();
    let want = (&yr * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let want = want.get(ws.as_tensor()).unwrap();
    assert!(
        max_rel_diff(got, want) < 1e-4,
        "d2L/dw: {}",
        max_rel_diff(got, want)
    );
    // L3 = sum(gw · t): dL3/dx = Gx(r, t) = the input gradient of sum(conv(x, t) · r).
    let t = rand(&[4, 3, 3, 3], 12);
    let g3 = (gw * &t).unwrap().sum_all().unwrap().backward().unwrap();
    let got = g3
        .get(x.as_tensor())
        .expect("no second-order gradient for x");
    let xs = Var::from_tensor(x.as_tensor()).unwrap();
    let yr = k::conv2d(xs.as_tensor(), &t, None, 2, 1).unwrap();
    let want = (&yr * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let want = want.get(xs.as_tensor()).unwrap();
    assert!(
        max_rel_diff(got, want) < 1e-4,
        "d2L/dx: {}",
        max_rel_diff(got, want)
    );
}
