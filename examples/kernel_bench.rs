//! Times the `nn::kernels` ops against candle's stock compositions at the model's shapes.
//!
//! cargo run --release --example kernel_bench -- [FILTER] [--runs N] [--torch FILE] [--fast-only] [--tune-alloc]
//!
//! For every case: median ms over N runs (after one warm-up) of the forward alone and of
//! forward + backward (y.backward(r) for a fixed r, gradients for every input), for the
//! stock op and the fast one. With `--torch FILE` (the JSON that `benches/torch_ops.py --json
//! FILE` writes) it also prints the fast op's time over PyTorch's. `--tune-alloc` first calls
//! `kernels::tune_cpu_allocator()` (glibc malloc keeps freed memory), as a binary can.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor, Var};
use ldm_run::nn::kernels as k;
use std::collections::HashMap;
use std::time::Instant;

type Op = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

struct Case {
    name: String,
    shapes: Vec<Vec<usize>>,
    fast: Op,
    stock: Op,
}

fn case(name: &str, shapes: &[&[usize]], fast: Op, stock: Op) -> Case {
    Case {
        name: name.to_string(),
        shapes: shapes.iter().map(|s| s.to_vec()).collect(),
        fast,
        stock,
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let conv = |b: usize, cin: usize, cout: usize, h: usize, kk: usize, s: usize, p: usize| {
        case(
            &format!("conv{kk}x{kk}s{s}p{p} {b}x{cin}x{h}x{h}->{cout}"),
            &[&[b, cin, h, h], &[cout, cin, kk, kk], &[cout]],
            Box::new(move |t| k::conv2d(&t[0], &t[1], Some(&t[2]), s, p)),
            Box::new(move |t| k::conv2d_reference(&t[0], &t[1], Some(&t[2]), s, p)),
        )
    };
    // Autoencoder at batch 16 (32x32 -> 8x8, widths 128/256).
    v.push(conv(16, 1, 128, 32, 3, 1, 1));
    v.push(conv(16, 128, 128, 32, 3, 1, 1));
    v.push(conv(16, 128, 128, 33, 3, 2, 0)); // stride-2 down after pad_with_zeros
    v.push(conv(16, 256, 256, 16, 3, 1, 1));
    v.push(conv(16, 128, 256, 16, 1, 1, 0));
    v.push(conv(16, 256, 256, 8, 3, 1, 1));
    // UNet at batch 64 (latent 4x8x8, widths 128/256).
    v.push(conv(64, 4, 128, 8, 3, 1, 1));
    v.push(conv(64, 128, 128, 8, 3, 1, 1));
    v.push(conv(64, 256, 256, 4, 3, 1, 1));
    v.push(conv(64, 128, 256, 8, 1, 1, 0));
    // Small widths for CPU experiments.
    v.push(conv(16, 32, 32, 32, 3, 1, 1));
    v.push(conv(64, 64, 64, 8, 3, 1, 1));
    // The seed UNet's shapes per batch shard (batch 64 over two cores).
    v.push(conv(32, 128, 128, 8, 3, 1, 1));
    v.push(conv(32, 256, 256, 4, 3, 1, 1));
    v.push(conv(32, 256, 256, 2, 3, 1, 1));
    let gn = |b: usize, c: usize, h: usize, silu: bool| {
        case(
            &format!(
                "groupnorm32{} {b}x{c}x{h}x{h}",
                if silu { "+silu" } else { "" }
            ),
            &[&[b, c, h, h], &[c], &[c]],
            Box::new(move |t| k::group_norm(&t[0], &t[1], &t[2], 32, 1e-6, silu)),
            Box::new(move |t| k::group_norm_reference(&t[0], &t[1], &t[2], 32, 1e-6, silu)),
        )
    };
    v.push(gn(16, 128, 32, true));
    v.push(gn(16, 128, 32, false));
    v.push(gn(16, 256, 16, true));
    v.push(gn(64, 128, 8, true));
    v.push(gn(64, 256, 4, true));
    let up = |b: usize, c: usize, h: usize| {
        case(
            &format!("upsample2x {b}x{c}x{h}x{h}"),
            &[&[b, c, h, h]],
            Box::new(|t| k::upsample_nearest2x(&t[0])),
            Box::new(|t| k::upsample_nearest2x_reference(&t[0])),
        )
    };
    v.push(up(16, 256, 16));
    v.push(up(64, 256, 4));
    let attn = |b: usize, t: usize, s: usize, d: usize| {
        let scale = 1.0 / (d as f64).sqrt();
        case(
            &format!("attention b{b} t{t} s{s} d{d}"),
            &[&[b, t, d], &[b, s, d], &[b, s, d]],
            Box::new(move |x| k::attention(&x[0], &x[1], &x[2], scale)),
            Box::new(move |x| k::attention_reference(&x[0], &x[1], &x[2], scale)),
        )
    };
    v.push(attn(16, 256, 256, 256));
    v.push(attn(16, 64, 64, 256));
    v.push(attn(64, 64, 64, 64));
    v.push(attn(64, 64, 77, 64));
    v.push(attn(64, 16, 77, 64));
    // Not a kernel: one candle elementwise op (y = x·1 + 0), to show what candle's own autograd
    // costs per tensor of this size (each gradient is added into a fresh zero tensor).
    v.push(case(
        "candle affine (overhead probe) 16x128x32x32",
        &[&[16, 128, 32, 32]],
        Box::new(|t| t[0].affine(1.0, 0.0)),
        Box::new(|t| t[0].affine(1.0, 0.0)),
    ));
    v.push(case(
        "softmax 16x256x256",
        &[&[16, 256, 256]],
        Box::new(|t| k::softmax_last_dim(&t[0])),
        Box::new(|t| k::softmax_last_dim_reference(&t[0])),
    ));
    v
}

/// A scalar "loss" whose backward hands exactly `r` to its input: `y.apply_op1(Seed(r))
/// .backward()` is PyTorch's `y.backward(r)`, with no extra elementwise work to time.
struct Seed(Tensor);

impl CustomOp1 for Seed {
    fn name(&self) -> &'static str {
        "seed-gradient"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(vec![0.0]), Shape::from(())))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, _grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.0.clone()))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut ts = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        f()?;
        ts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(ts))
}

fn randn(shape: &[usize]) -> Result<Tensor> {
    Tensor::randn(0f32, 1f32, shape, &Device::Cpu)
}

/// (forward ms, forward+backward ms)
fn measure(op: &Op, shapes: &[Vec<usize>], runs: usize) -> Result<(f64, f64)> {
    let inputs: Vec<Tensor> = shapes.iter().map(|s| randn(s)).collect::<Result<_>>()?;
    let fwd = time(runs, || op(&inputs).map(|_| ()))?;
    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let r = randn(op(&ts)?.dims())?;
    let both = time(runs, || {
        let y = op(&ts)?;
        let g = y.apply_op1(Seed(r.clone()))?.backward()?;
        for t in &ts {
            std::hint::black_box(g.get(t).expect("gradient missing"));
        }
        Ok(())
    })?;
    Ok((fwd, both))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut filter, mut runs, mut torch, mut fast_only) =
        (String::new(), 7usize, None::<String>, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|s| s.parse().ok()).unwrap_or(7),
            "--torch" => torch = args.next(),
            "--fast-only" => fast_only = true,
            "--tune-alloc" => {
                assert!(k::tune_cpu_allocator(), "mallopt failed");
            }
            _ => filter = a,
        }
    }
    let torch: HashMap<String, (f64, f64)> = torch
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
            serde_json::from_str::<HashMap<String, (f64, f64)>>(&text)
                .unwrap_or_else(|e| panic!("{p}: {e}"))
        })
        .unwrap_or_default();
    println!(
        "threads {}  runs {runs}  (median ms; x = stock / fast{})",
        candle_core::utils::get_num_threads(),
        if torch.is_empty() {
            ""
        } else {
            "; /pt = fast / PyTorch"
        }
    );
    println!(
        "{:<40} {:>9} {:>9} {:>6} {:>10} {:>10} {:>6}{}",
        "case",
        "fwd stock",
        "fwd fast",
        "x",
        "f+b stock",
        "f+b fast",
        "x",
        if torch.is_empty() {
            ""
        } else {
            "   fwd pt  /pt    f+b pt  /pt"
        }
    );
    for c in cases().into_iter().filter(|c| c.name.contains(&filter)) {
        let (sf, sb) = if fast_only {
            (f64::NAN, f64::NAN)
        } else {
            measure(&c.stock, &c.shapes, runs)?
        };
        let (ff, fb) = measure(&c.fast, &c.shapes, runs)?;
        let mut line = format!(
            "{:<40} {:>9.2} {:>9.2} {:>6.1} {:>10.2} {:>10.2} {:>6.1}",
            c.name,
            sf,
            ff,
            sf / ff,
            sb,
            fb,
            sb / fb
        );
        if let Some(&(pf, pb)) = torch.get(&c.name) {
            line += &format!("   {pf:>6.2} {:>4.2}  {pb:>8.2} {:>4.2}", ff / pf, fb / pb);
        }
        println!("{line}");
    }
    Ok(())
}
