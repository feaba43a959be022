//! The fast CPU kernels of `nn::kernels` against candle's stock compositions (the
//! `*_reference` functions), a direct convolution loop, and finite differences.

use candle_core::{DType, Device, Result, Tensor, Var};
use ldm_run::nn::kernels as k;

const TOL: f32 = 1e-4;

/// Deterministic pseudo-random values in [-1, 1).
fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// |a - b| <= tol · (max |b| + |b|) elementwise, with a message naming `what`.
fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let (a, b) = (flat(a), flat(b));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (scale + y.abs()),
            "{what}: element {i}: {x} vs {y} (scale {scale})"
        );
    }
}

/// Direct 7-loop convolution in f64.
fn naive_conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: usize) -> Tensor {
    let (bn, cin, h, wd) = x.dims4().unwrap();
    let (cout, _, kh, kw) = w.dims4().unwrap();
    let (xv, wv) = (flat(x), flat(w));
    let bv = b.map(flat);
    let oh = (h + 2 * pad - kh) / stride + 1;
    let ow = (wd + 2 * pad - kw) / stride + 1;
    let mut y = vec![0f32; bn * cout * oh * ow];
    for bi in 0..bn {
        for co in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bv.as_ref().map_or(0.0, |b| b[co] as f64);
                    for ci in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((bi * cin + ci) * h + iy as usize) * wd + ix as usize;
                                let wi = ((co * cin + ci) * kh + ky) * kw + kx;
                                acc += xv[xi] as f64 * wv[wi] as f64;
                            }
                        }
                    }
                    y[((bi * cout + co) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    Tensor::from_vec(y, (bn, cout, oh, ow), &Device::Cpu).unwrap()
}

/// Gradients of sum(f(inputs) · r) for a fixed random r, for the fast and the reference op.
fn grads(
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    seed: u64,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    let r = rand(y.dims(), seed);
    let loss = (&y * &r).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let gs = ts
        .iter()
        .map(|t| g.get(t).expect("gradient missing").clone())
        .collect();
    (y, gs)
}

/// Compares fast vs reference values and gradients for every input.
fn check_against_reference(
    name: &str,
    inputs: &[Tensor],
    fast: impl Fn(&[Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[Tensor]) -> Result<Tensor>,
    tol: f32,
) {
    let (y1, g1) = grads(inputs, fast, 7);
    let (y2, g2) = grads(inputs, reference, 7);
    assert_close(&y1, &y2, tol, &format!("{name}: forward"));
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        assert_close(a, b, tol, &format!("{name}: gradient of input {i}"));
    }
}

/// Central finite differences in f64 through the public function (f64 takes the stock path)
/// at a few coordinates of each input, against the fast op's f32 gradient.
fn check_finite_differences(
    name: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    tol: f64,
) {
    let (y, g) = grads(inputs, &f, 11);
    let r = rand(y.dims(), 11).to_dtype(DType::F64).unwrap();
    let inputs64: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::F64).unwrap())
        .collect();
    let loss = |ts: &[Tensor]| -> f64 {
        (f(ts).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let eps = 1e-4;
    for (i, t) in inputs64.iter().enumerate() {
        let base: Vec<f64> = t.flatten_all().unwrap().to_vec1().unwrap();
        let gi = flat(&g[i]);
        let gscale = gi.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        let n = base.len();
        for j in (0..n).step_by((n / 7).max(1)) {
            let at = |d: f64| {
                let mut v = base.clone();
                v[j] += d;
                let mut ts = inputs64.clone();
                ts[i] = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
                loss(&ts)
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            let an = gi[j] as f64;
            assert!(
                (fd - an).abs() <= tol * (gscale + an.abs()),
                "{name}: input {i} coordinate {j}: finite difference {fd} vs gradient {an}"
            );
        }
    }
}

#[test]
fn conv2d_matches_reference_and_direct_loop() {
    let cases = [
        // (b, cin, cout, h, w, k, stride, pad)
        (3, 5, 7, 9, 11, 3, 1, 1),
        (3, 5, 7, 9, 11, 3, 1, 0),
        (3, 5, 7, 9, 11, 3, 2, 1),
        (3, 5, 7, 9, 11, 3, 2, 0),
        (3, 5, 7, 9, 11, 1, 1, 0),
        (3, 5, 7, 9, 11, 1, 2, 0),
        (3, 5, 7, 9, 11, 1, 1, 1),
        (1, 4, 6, 10, 8, 3, 2, 0), // one image: threaded GEMM
        (20, 6, 5, 4, 5, 3, 1, 1), // small maps: several images per GEMM
        (20, 6, 5, 4, 5, 1, 1, 0), // pointwise, several images per GEMM
        (2, 3, 4, 7, 6, 2, 1, 0),  // even kernel
        (2, 3, 4, 7, 6, 5, 2, 2),  // 5x5: candle's own backward fails on this one
    ];
    for (i, &(b, cin, cout, h, w, kk, stride, pad)) in cases.iter().enumerate() {
        let x = rand(&[b, cin, h, w], 10 + i as u64);
        let wt = rand(&[cout, cin, kk, kk], 20 + i as u64);
        let bias = rand(&[cout], 30 + i as u64);
        let name = format!("conv case {i} {:?}", cases[i]);
        if kk == 5 {
            // candle's conv_transpose2d-based backward gets the shape wrong here (it adds a
            // (2, 3, 7, 5) gradient to a (2, 3, 7, 6) input): check against differences only.
            check_finite_differences(
                &name,
                &[x.clone(), wt.clone(), bias.clone()],
                |t| k::conv2d(&t[0], &t[1], Some(&t[2]), stride, pad),
                1e-4,
            );
            continue;
        }
        let y = k::conv2d(&x, &wt, Some(&bias), stride, pad).unwrap();
        assert_close(
            &y,
            &naive_conv(&x, &wt, Some(&bias), stride, pad),
            TOL,
            &format!("{name} vs loop"),
        );
        let y = k::conv2d(&x, &wt, None, stride, pad).unwrap();
        assert_close(
            &y,
            &naive_conv(&x, &wt, None, stride, pad),
            TOL,
            &format!("{name} vs loop, no bias"),
        );
        check_against_reference(
            &name,
            &[x.clone(), wt.clone(), bias.clone()],
            |t| k::conv2d(&t[0], &t[1], Some(&t[2]), stride, pad),
            |t| k::conv2d_reference(&t[0], &t[1], Some(&t[2]), stride, pad),
            TOL,
        );
        check_against_reference(
            &format!("{name} no bias"),
            &[x, wt],
            |t| k::conv2d(&t[0], &t[1], None, stride, pad),
            |t| k::conv2d_reference(&t[0], &t[1], None, stride, pad),
            TOL,
        );
    }
}

#[test]
fn conv2d_takes_non_contiguous_inputs() {
    // x stored as (B, Cin, W, H) and transposed; weight narrowed out of a larger one.
    let xs = rand(&[3, 5, 11, 9], 1);
    let ws = rand(&[9, 5, 3, 3], 2);
    let f = |t: &[Tensor], fast: bool| {
        let x = t[0].transpose(2, 3)?;
        let w = t[1].narrow(0, 1, 7)?;
        if fast {
            k::conv2d(&x, &w, None, 2, 1)
        } else {
            k::conv2d_reference(&x, &w, None, 2, 1)
        }
    };
    check_against_reference(
        "conv non-contiguous",
        &[xs, ws],
        |t| f(t, true),
        |t| f(t, false),
        TOL,
    );
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    let x = rand(&[2, 3, 5, 6], 3);
    let w = rand(&[4, 3, 3, 3], 4);
    let b = rand(&[4], 5);
    for (stride, pad) in [(1, 1), (2, 0), (2, 1)] {
        check_finite_differences(
            &format!("conv stride {stride} pad {pad}"),
            &[x.clone(), w.clone(), b.clone()],
            |t| k::conv2d(&t[0], &t[1], Some(&t[2]), stride, pad),
            1e-4,
        );
    }
}

#[test]
fn conv2d_accumulates_gradients_of_shared_inputs() {
    // The same x feeds two convolutions and a plain sum; the same w is used twice.
    let x = rand(&[2, 3, 6, 5], 6);
    let w = rand(&[3, 3, 3, 3], 7);
    let f = |t: &[Tensor], fast: bool| {
        let c = |a: &Tensor, s| {
            if fast {
                k::conv2d(a, &t[1], None, s, 1)
            } else {
                k::conv2d_reference(a, &t[1], None, s, 1)
            }
        };
        let y = c(&t[0], 1)?;
        let z = c(&y, 1)?; // w twice, on a path through x twice
        (z + y)? + t[0].broadcast_mul(&Tensor::new(3f32, &Device::Cpu)?)?
    };
    check_against_reference(
        "conv shared inputs",
        &[x, w],
        |t| f(t, true),
        |t| f(t, false),
        TOL,
    );
}

#[test]
fn linear_matches_reference_and_finite_differences() {
    // (leading dims, d_in, d_out): rank 1 to 3, odd sizes, a context-like projection.
    let cases: [(&[usize], usize, usize); 5] = [
        (&[], 5, 3),
        (&[7], 13, 11),
        (&[3, 5], 17, 1),
        (&[2, 77], 96, 64),
        (&[4, 1], 1, 9),
    ];
    for (i, &(lead, d_in, d_out)) in cases.iter().enumerate() {
        let mut xs = lead.to_vec();
        xs.push(d_in);
        let x = rand(&xs, 40 + i as u64);
        let w = rand(&[d_out, d_in], 50 + i as u64);
        let b = rand(&[d_out], 60 + i as u64);
        let name = format!("linear {xs:?} -> {d_out}");
        check_against_reference(
            &name,
            &[x.clone(), w.clone(), b.clone()],
            |t| k::linear(&t[0], &t[1], Some(&t[2])),
            |t| k::linear_reference(&t[0], &t[1], Some(&t[2])),
            TOL,
        );
        check_against_reference(
            &format!("{name} no bias"),
            &[x.clone(), w.clone()],
            |t| k::linear(&t[0], &t[1], None),
            |t| k::linear_reference(&t[0], &t[1], None),
            TOL,
        );
        check_finite_differences(
            &name,
            &[x, w, b],
            |t| k::linear(&t[0], &t[1], Some(&t[2])),
            1e-4,
        );
    }
    // Mismatched shapes are errors, not panics.
    let (x, w) = (rand(&[3, 5], 1), rand(&[4, 5], 2));
    let e = k::linear(&x, &w, Some(&rand(&[3], 3))).unwrap_err();
    assert!(
        e.to_string().contains("bias has 3 elements for 4 outputs"),
        "{e}"
    );
    let e = k::linear(&rand(&[3, 6], 4), &w, None).unwrap_err();
    assert!(e.to_string().contains("weight's 5 inputs"), "{e}");
    // A transposed (non-contiguous) input.
    check_against_reference(
        "linear transposed input",
        &[rand(&[9, 6], 1), rand(&[4, 9], 2)],
        |t| k::linear(&t[0].t()?, &t[1], None),
        |t| k::linear_reference(&t[0].t()?, &t[1], None),
        TOL,
    );
}

#[test]
fn linear_skips_the_gradient_of_an_input_without_a_graph() {
    // A fixed context (no Var behind it) gets no gradient; the weight's is still exact.
    let ctx = rand(&[3, 7, 10], 1);
    let w = Var::from_tensor(&rand(&[4, 10], 2)).unwrap();
    let r = rand(&[3, 7, 4], 3);
    let y = k::linear(&ctx, w.as_tensor(), None).unwrap();
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(&ctx).is_none(), "a gradient for the fixed input");
    let want = r
        .reshape((21, 4))
        .unwrap()
        .t()
        .unwrap()
        .matmul(&ctx.reshape((21, 10)).unwrap())
        .unwrap();
    assert_close(g.get(w.as_tensor()).unwrap(), &want, TOL, "linear dw");
}

#[test]
fn gelu_and_geglu_match_reference_and_finite_differences() {
    // Values from -12 to 12 (both tails), odd sizes, more than one pool task.
    for (i, shape) in [&[7][..], &[3, 5, 33], &[2, 40000]].iter().enumerate() {
        let x = (rand(shape, 70 + i as u64) * 6.0).unwrap();
        let name = format!("gelu {shape:?}");
        check_against_reference(
            &name,
            std::slice::from_ref(&x),
            |t| k::gelu(&t[0]),
            |t| k::gelu_reference(&t[0]),
            TOL,
        );
        check_finite_differences(&name, &[x], |t| k::gelu(&t[0]), 1e-4);
    }
    for (i, shape) in [&[2][..], &[3, 5, 34], &[4, 16, 1024]].iter().enumerate() {
        let f = (rand(shape, 80 + i as u64) * 4.0).unwrap();
        let name = format!("geglu {shape:?}");
        check_against_reference(
            &name,
            std::slice::from_ref(&f),
            |t| k::geglu(&t[0]),
            |t| k::geglu_reference(&t[0]),
            TOL,
        );
        check_finite_differences(&name, &[f], |t| k::geglu(&t[0]), 1e-4);
    }
    let e = k::geglu(&rand(&[2, 5], 1)).unwrap_err();
    assert!(e.to_string().contains("must split into two halves"), "{e}");
}

#[test]
fn group_norm_matches_reference() {
    for (i, &(b, c, h, w, groups, silu)) in [
        (3, 8, 5, 7, 4, false),
        (3, 8, 5, 7, 4, true),
        (2, 6, 3, 5, 1, true),
        (2, 6, 3, 5, 6, false),
        (2, 6, 3, 5, 6, true),
        (2, 64, 4, 4, 32, true),
    ]
    .iter()
    .enumerate()
    {
        // Offset inputs check the variance is taken around the mean accurately.
        let x = rand(&[b, c, h, w], 40 + i as u64).affine(3.0, 5.0).unwrap();
        let gamma = (rand(&[c], 50 + i as u64) + 1.0).unwrap();
        let beta = rand(&[c], 60 + i as u64);
        let name = format!("group norm case {i}");
        check_against_reference(
            &name,
            &[x.clone(), gamma.clone(), beta.clone()],
            |t| k::group_norm(&t[0], &t[1], &t[2], groups, 1e-6, silu),
            |t| k::group_norm_reference(&t[0], &t[1], &t[2], groups, 1e-6, silu),
            TOL,
        );
        check_finite_differences(
            &name,
            &[x, gamma, beta],
            |t| k::group_norm(&t[0], &t[1], &t[2], groups, 1e-6, silu),
            2e-4,
        );
    }
}

#[test]
fn group_norm_other_ranks_and_layouts() {
    // (B, C) and (B, C, L), and a transposed input.
    for dims in [vec![4, 6], vec![3, 6, 10]] {
        let x = rand(&dims, 70);
        let (g, b) = (rand(&[6], 71), rand(&[6], 72));
        check_against_reference(
            &format!("group norm {dims:?}"),
            &[x, g, b],
            |t| k::group_norm(&t[0], &t[1], &t[2], 3, 1e-5, true),
            |t| k::group_norm_reference(&t[0], &t[1], &t[2], 3, 1e-5, true),
            TOL,
        );
    }
    let x = rand(&[2, 8, 7, 5], 73);
    let (g, b) = (rand(&[8], 74), rand(&[8], 75));
    check_against_reference(
        "group norm transposed",
        &[x, g, b],
        |t| k::group_norm(&t[0].transpose(2, 3)?, &t[1], &t[2], 4, 1e-6, false),
        |t| k::group_norm_reference(&t[0].transpose(2, 3)?, &t[1], &t[2], 4, 1e-6, false),
        TOL,
    );
}

#[test]
fn layer_norm_matches_reference_and_finite_differences() {
    // Odd widths (below, at and above the 16 lanes), rank 1 to 3, more rows than one task.
    for (i, shape) in [&[7][..], &[3, 5, 33], &[2, 130, 17], &[150, 64], &[4, 1]]
        .iter()
        .enumerate()
    {
        let d = *shape.last().unwrap();
        // Offset inputs check the variance is taken around the mean accurately.
        let x = rand(shape, 150 + i as u64).affine(3.0, 5.0).unwrap();
        let gamma = (rand(&[d], 160 + i as u64) + 1.0).unwrap();
        let beta = rand(&[d], 170 + i as u64);
        let name = format!("layer norm {shape:?}");
        check_against_reference(
            &name,
            &[x.clone(), gamma.clone(), beta.clone()],
            |t| k::layer_norm(&t[0], &t[1], &t[2], 1e-5),
            |t| k::layer_norm_reference(&t[0], &t[1], &t[2], 1e-5),
            TOL,
        );
        if d > 1 {
            check_finite_differences(
                &name,
                &[x, gamma, beta],
                |t| k::layer_norm(&t[0], &t[1], &t[2], 1e-5),
                2e-4,
            );
        }
    }
    check_against_reference(
        "layer norm transposed",
        &[rand(&[9, 6], 1), rand(&[9], 2), rand(&[9], 3)],
        |t| k::layer_norm(&t[0].t()?, &t[1], &t[2], 1e-5),
        |t| k::layer_norm_reference(&t[0].t()?, &t[1], &t[2], 1e-5),
        TOL,
    );
    let e = k::layer_norm(&rand(&[3, 5], 4), &rand(&[4], 5), &rand(&[5], 6), 1e-5).unwrap_err();
    assert!(e.to_string().contains("need 5 elements"), "{e}");
}

#[test]
fn upsample_matches_reference_and_accumulates() {
    let x = rand(&[3, 5, 7, 9], 80);
    check_against_reference(
        "upsample",
        std::slice::from_ref(&x),
        |t| k::upsample_nearest2x(&t[0]),
        |t| k::upsample_nearest2x_reference(&t[0]),
        TOL,
    );
    check_against_reference(
        "upsample transposed",
        std::slice::from_ref(&x),
        |t| k::upsample_nearest2x(&t[0].transpose(2, 3)?),
        |t| k::upsample_nearest2x_reference(&t[0].transpose(2, 3)?),
        TOL,
    );
    // loss = sum(up(x)) + 3 sum(x): every element gets 4 + 3 = 7.
    let v = Var::from_tensor(&x).unwrap();
    let loss = (k::upsample_nearest2x(v.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        + (v.as_tensor() * 3.0).unwrap().sum_all().unwrap())
    .unwrap();
    let g = loss.backward().unwrap();
    let g = flat(g.get(v.as_tensor()).unwrap());
    assert!(
        g.iter().all(|&e| e == 7.0),
        "accumulated gradient {:?}",
        &g[..4]
    );
    check_finite_differences("upsample", &[x], |t| k::upsample_nearest2x(&t[0]), 1e-5);
}

#[test]
fn softmax_matches_reference() {
    let x = (rand(&[3, 5, 13], 90) * 4.0).unwrap();
    check_against_reference(
        "softmax",
        std::slice::from_ref(&x),
        |t| k::softmax_last_dim(&t[0]),
        |t| k::softmax_last_dim_reference(&t[0]),
        TOL,
    );
    check_against_reference(
        "softmax transposed",
        std::slice::from_ref(&x),
        |t| k::softmax_last_dim(&t[0].transpose(1, 2)?),
        |t| k::softmax_last_dim_reference(&t[0].transpose(1, 2)?),
        TOL,
    );
    check_finite_differences("softmax", &[x], |t| k::softmax_last_dim(&t[0]), 1e-4);
}

#[test]
fn attention_matches_reference() {
    for (i, &(b, t, s, d)) in [(3, 7, 5, 9), (1, 16, 77, 8), (5, 9, 9, 4)]
        .iter()
        .enumerate()
    {
        let q = rand(&[b, t, d], 100 + i as u64);
        let kk = rand(&[b, s, d], 110 + i as u64);
        let v = rand(&[b, s, d], 120 + i as u64);
        let scale = 1.0 / (d as f64).sqrt();
        let name = format!("attention case {i}");
        check_against_reference(
            &name,
            &[q.clone(), kk.clone(), v.clone()],
            |x| k::attention(&x[0], &x[1], &x[2], scale),
            |x| k::attention_reference(&x[0], &x[1], &x[2], scale),
            TOL,
        );
        check_finite_differences(
            &name,
            &[q, kk, v],
            |x| k::attention(&x[0], &x[1], &x[2], scale),
            1e-4,
        );
    }
    // A fixed context (keys and values with no graph) gets no gradient; the queries' is exact.
    let q = Var::from_tensor(&rand(&[3, 5, 12], 140)).unwrap();
    let ctx = rand(&[3, 9, 12], 141);
    let r = rand(&[3, 5, 12], 142);
    let loss = |fast: bool| {
        let f = if fast {
            k::attention
        } else {
            k::attention_reference
        };
        let y = f(q.as_tensor(), &ctx, &ctx, 0.3).unwrap();
        (&y * &r).unwrap().sum_all().unwrap().backward().unwrap()
    };
    let (g, want) = (loss(true), loss(false));
    assert!(g.get(&ctx).is_none(), "a gradient for the fixed context");
    assert_close(
        g.get(q.as_tensor()).unwrap(),
        want.get(q.as_tensor()).unwrap(),
        TOL,
        "attention over a fixed context: dq",
    );
    // Self-attention with one tensor as q, k and v (accumulated gradient), given transposed.
    let x = rand(&[2, 6, 11], 130);
    check_against_reference(
        "self attention shared input",
        &[x],
        |t| {
            let a = t[0].transpose(1, 2)?;
            k::attention(&a, &a, &a, 0.3)
        },
        |t| {
            let a = t[0].transpose(1, 2)?;
            k::attention_reference(&a, &a, &a, 0.3)
        },
        TOL,
    );
}

#[test]
fn other_dtypes_take_the_stock_path() {
    let x = rand(&[2, 4, 5, 5], 140).to_dtype(DType::F64).unwrap();
    let w = rand(&[3, 4, 3, 3], 141).to_dtype(DType::F64).unwrap();
    let y = k::conv2d(&x, &w, None, 1, 1).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    let g = rand(&[4], 142).to_dtype(DType::F64).unwrap();
    let y = k::group_norm(&x, &g, &g, 2, 1e-6, true).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    assert_eq!(k::upsample_nearest2x(&x).unwrap().dims(), &[2, 4, 10, 10]);
}

/// Direct loops for the two gradients of sum(conv(x, w) · r): dx and dw, in f64.
fn naive_conv_grads(
    x: &Tensor,
    w: &Tensor,
    r: &Tensor,
    stride: usize,
    pad: usize,
) -> (Tensor, Tensor) {
    let (bn, cin, h, wd) = x.dims4().unwrap();
    let (cout, _, kh, kw) = w.dims4().unwrap();
    let (_, _, oh, ow) = r.dims4().unwrap();
    let (xv, wv, rv) = (flat(x), flat(w), flat(r));
    let mut dx = vec![0f64; xv.len()];
    let mut dw = vec![0f64; wv.len()];
    for bi in 0..bn {
        for co in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = rv[((bi * cout + co) * oh + oy) * ow + ox] as f64;
                    for ci in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((bi * cin + ci) * h + iy as usize) * wd + ix as usize;
                                let wi = ((co * cin + ci) * kh + ky) * kw + kx;
                                dx[xi] += g * wv[wi] as f64;
                                dw[wi] += g * xv[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    let to = |v: Vec<f64>, t: &Tensor| {
        Tensor::from_vec(
            v.into_iter().map(|e| e as f32).collect::<Vec<_>>(),
            t.dims(),
            &Device::Cpu,
        )
        .unwrap()
    };
    (to(dx, x), to(dw, w))
}

#[test]
fn conv2d_sweep_of_small_shapes_against_direct_loops() {
    // Deterministic pseudo-random sample of shapes, strides, paddings and kernel sizes
    // (including kernels larger than the input where padding allows, and strides of 3).
    let mut s = 12345u64;
    let mut next = |n: u64| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) % n) as usize
    };
    let mut checked = 0;
    while checked < 150 {
        let (b, cin, cout) = (1 + next(4), 1 + next(4), 1 + next(5));
        let (h, w) = (1 + next(7), 1 + next(7));
        let (kh, stride, pad) = (1 + next(3), 1 + next(3), next(3));
        if h + 2 * pad < kh || w + 2 * pad < kh {
            continue;
        }
        checked += 1;
        let name = format!("sweep b{b} cin{cin} cout{cout} {h}x{w} k{kh} s{stride} p{pad}");
        let x = rand(&[b, cin, h, w], checked as u64);
        let wt = rand(&[cout, cin, kh, kh], 1000 + checked as u64);
        let bias = rand(&[cout], 2000 + checked as u64);
        let (y, g) = grads(
            &[x.clone(), wt.clone(), bias.clone()],
            |t| k::conv2d(&t[0], &t[1], Some(&t[2]), stride, pad),
            7,
        );
        assert_close(
            &y,
            &naive_conv(&x, &wt, Some(&bias), stride, pad),
            TOL,
            &format!("{name}: forward"),
        );
        let r = rand(y.dims(), 7);
        let (dx, dw) = naive_conv_grads(&x, &wt, &r, stride, pad);
        assert_close(&g[0], &dx, TOL, &format!("{name}: dx"));
        assert_close(&g[1], &dw, TOL, &format!("{name}: dw"));
        let db = r.sum((0, 2, 3)).unwrap();
        assert_close(&g[2], &db, TOL, &format!("{name}: dbias"));
    }
}

#[test]
fn conv2d_winograd_shapes_against_direct_loops() {
    // Stride-1 padding-1 3x3 with >= 32 channels on maps of more than 4 pixels takes the
    // Winograd path: map sizes with odd sides (partial tiles), and wide channels for the
    // accumulated error.
    let mut shapes: Vec<(usize, usize, usize, usize, usize)> = Vec::new();
    for h in [1, 2, 3, 5, 6] {
        for w in [2, 3, 4, 7] {
            if h * w > 4 {
                shapes.push((2, 32, 33, h, w));
            }
        }
    }
    shapes.push((1, 256, 256, 8, 8));
    // 8 wide: the AVX2 transforms (odd and even heights, one row of tiles)
    for h in [1, 5, 8] {
        shapes.push((3, 33, 40, h, 8));
    }
    shapes.push((3, 64, 48, 17, 13));
    // rows of 8 and 16 tiles (the transforms' unrolled widths), even and odd sides
    shapes.push((2, 32, 40, 15, 16));
    shapes.push((1, 40, 32, 32, 31));
    for (i, &(b, cin, cout, h, w)) in shapes.iter().enumerate() {
        let name = format!("winograd b{b} cin{cin} cout{cout} {h}x{w}");
        let x = rand(&[b, cin, h, w], 300 + i as u64);
        let wt = (rand(&[cout, cin, 3, 3], 400 + i as u64) * 0.2).unwrap();
        let bias = rand(&[cout], 500 + i as u64);
        let (y, g) = grads(
            &[x.clone(), wt.clone(), bias],
            |t| k::conv2d(&t[0], &t[1], Some(&t[2]), 1, 1),
            7,
        );
        let r = rand(y.dims(), 7);
        let (dx, dw) = naive_conv_grads(&x, &wt, &r, 1, 1);
        assert_close(&g[0], &dx, TOL, &format!("{name}: dx"));
        assert_close(&g[1], &dw, TOL, &format!("{name}: dw"));
        let y0 = k::conv2d(&x, &wt, None, 1, 1).unwrap();
        assert_close(
            &y0,
            &naive_conv(&x, &wt, None, 1, 1),
            TOL,
            &format!("{name}: forward"),
        );
    }
}

#[test]
fn conv2d_small_map_shapes_against_direct_loops() {
    // Stride-1 "same" convolutions on maps of at most 4 pixels take per-tap GEMMs: every such
    // map shape, 3x3 and 5x5 kernels (a 1x4 map leaves taps outside the kernel), odd channels.
    let mut cases = Vec::new();
    for (h, w) in [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
        (1, 3),
        (3, 1),
        (1, 4),
        (4, 1),
    ] {
        cases.push((3, 33, 35, h, w, 3, 1));
        cases.push((2, 7, 5, h, w, 5, 2));
    }
    cases.push((5, 256, 256, 2, 2, 3, 1));
    for (i, &(b, cin, cout, h, w, kk, pad)) in cases.iter().enumerate() {
        let name = format!("small map b{b} cin{cin} cout{cout} {h}x{w} k{kk}");
        let x = rand(&[b, cin, h, w], 700 + i as u64);
        let wt = (rand(&[cout, cin, kk, kk], 800 + i as u64) * 0.2).unwrap();
        let bias = rand(&[cout], 900 + i as u64);
        let (y, g) = grads(
            &[x.clone(), wt.clone(), bias.clone()],
            |t| k::conv2d(&t[0], &t[1], Some(&t[2]), 1, pad),
            7,
        );
        assert_close(
            &y,
            &naive_conv(&x, &wt, Some(&bias), 1, pad),
            TOL,
            &format!("{name}: forward"),
        );
        let r = rand(y.dims(), 7);
        let (dx, dw) = naive_conv_grads(&x, &wt, &r, 1, pad);
        assert_close(&g[0], &dx, TOL, &format!("{name}: dx"));
        assert_close(&g[1], &dw, TOL, &format!("{name}: dw"));
        assert_close(
            &g[2],
            &r.sum((0, 2, 3)).unwrap(),
            TOL,
            &format!("{name}: dbias"),
        );
        let y0 = k::conv2d(&x, &wt, None, 1, pad).unwrap();
        assert_close(
            &y0,
            &naive_conv(&x, &wt, None, 1, pad),
            TOL,
            &format!("{name}: forward, no bias"),
        );
    }
    check_finite_differences(
        "small map 2x2 finite differences",
        &[
            rand(&[2, 3, 2, 2], 1),
            rand(&[4, 3, 3, 3], 2),
            rand(&[4], 3),
        ],
        |t| k::conv2d(&t[0], &t[1], Some(&t[2]), 1, 1),
        1e-4,
    );
}

/// This suite again in a child process with `var` set to `value`, without the tests that
/// start such children.
fn run_suite_with(var: &str, value: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(var, value)
        .args(["--skip", "the_suite_passes_"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{var}={value}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("test result: ok"), "{text}");
    assert!(!text.contains("running 0 tests"), "{text}");
}

/// The binary runs candle (and so the kernels) on one thread per batch shard, where the kernels
/// take their single-threaded paths (one work unit, no pool): this suite again in a child
/// process with CANDLE_NUM_THREADS=1.
#[test]
fn the_suite_passes_on_one_thread() {
    run_suite_with("CANDLE_NUM_THREADS", "1");
}

/// Every kernel has a path per instruction set (AVX-512, AVX2+FMA, the target's baseline),
/// chosen at run time: this suite ran on the best one the CPU has, and runs again here in a
/// child process for every lower one (LDM_CPU_ISA). A path the CPU lacks is skipped, and said.
#[test]
fn the_suite_passes_on_every_instruction_set_of_this_cpu() {
    use ldm_run::nn::cpu::{Isa, isa};
    for i in Isa::ALL {
        if !i.available() {
            println!("skipped {}: this CPU lacks it", i.name());
        } else if i == isa() {
            println!("{}: this process", i.name());
        } else {
            println!("{}: child process", i.name());
            run_suite_with("LDM_CPU_ISA", i.name());
        }
    }
}
