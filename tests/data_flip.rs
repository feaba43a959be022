//! Flip augmentation: deterministic for a seed, and a saved stream resumes to the same
//! decisions, so resumed runs train on byte-identical batches.

mod common;

use ldm_run::data::{BatchOrder, FlipStream, Split, check_flip, flip, flip_horizontal, load};
use ldm_run::data::{DatasetConfig, DatasetName};
use ldm_run::rng::Rng;

const SHAPE: (usize, usize, usize) = (1, 32, 32);

/// `steps` batches of MNIST-sized test images, flipped by `flips`, as raw bytes.
fn batches(
    data: &ldm_run::data::Dataset,
    order: &mut BatchOrder,
    flips: &mut FlipStream,
    steps: usize,
) -> Vec<Vec<u8>> {
    (0..steps)
        .map(|_| {
            let idx = order.next(8);
            let (mut x, _) = data.gather(&idx);
            flip_horizontal(&mut x, SHAPE, &flips.next(idx.len()));
            x.iter().flat_map(|v| v.to_le_bytes()).collect()
        })
        .collect()
}

fn fashion_like() -> ldm_run::data::Dataset {
    // Any images do: the shared MNIST files stand in for pixels (flips are refused for MNIST
    // as a data set, not as pixels).
    let cfg = DatasetConfig {
        name: DatasetName::Mnist,
        root: Some(common::data_dir().join("mnist")),
        download: false,
        ..DatasetConfig::default()
    };
    load(&cfg, Split::Test, None).unwrap()
}

/// The flip decisions of a stage `vae` seeded with `seed`, as a stage draws them.
fn stream(seed: u64) -> FlipStream {
    FlipStream::new(Rng::stream(seed, &format!("vae/{}", flip::STREAM)))
}

#[test]
fn same_seed_same_flips_and_seeds_differ() {
    let a = stream(7).next(64);
    assert_eq!(a, stream(7).next(64));
    assert_ne!(a, stream(8).next(64));
    // Its own stream: not the data order's nor any other stream of the same seed.
    let mut other = Rng::stream(7, "data-order-0");
    let from_other: Vec<bool> = (0..64).map(|_| other.uniform() < 0.5).collect();
    assert_ne!(a, from_other);
}

#[test]
fn resume_gives_byte_identical_batches() {
    let data = fashion_like();
    let seed = 42;
    let mut straight = (BatchOrder::new(seed, data.len()), stream(seed));
    let all = batches(&data, &mut straight.0, &mut straight.1, 10);

    let mut first = (BatchOrder::new(seed, data.len()), stream(seed));
    let head = batches(&data, &mut first.0, &mut first.1, 4);
    // The checkpoint: both positions as JSON; the run stops here.
    let saved = serde_json::to_string(&(&first.0, &first.1)).unwrap();
    drop(first);
    let (mut order, mut flips): (BatchOrder, FlipStream) = serde_json::from_str(&saved).unwrap();
    let tail = batches(&data, &mut order, &mut flips, 6);
    assert_eq!([head, tail].concat(), all);

    // Flips did change the batches: the unflipped ones differ.
    let mut plain = BatchOrder::new(seed, data.len());
    let unflipped: Vec<Vec<u8>> = (0..10)
        .map(|_| {
            let (x, _) = data.gather(&plain.next(8));
            x.iter().flat_map(|v| v.to_le_bytes()).collect()
        })
        .collect();
    assert_ne!(unflipped, all);
}

#[test]
fn flipped_images_are_mirrors() {
    let data = fashion_like();
    let mut x = data.image(0).to_vec();
    flip_horizontal(&mut x, SHAPE, &[true]);
    for r in 0..32 {
        for c in 0..32 {
            assert_eq!(x[r * 32 + c], data.image(0)[r * 32 + 31 - c]);
        }
    }
    assert!(check_flip(DatasetName::Mnist).is_err());
    assert!(check_flip(DatasetName::FashionMnist).is_ok());
}
