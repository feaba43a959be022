//! Random horizontal flips, for training data augmentation.
//!
//! Deciding is apart from doing: [`FlipStream`] draws one decision per image from its own
//! seeded stream (a stage's [`STREAM`] stream), whose whole state a checkpoint saves, so a
//! resumed run flips exactly the images an uninterrupted one would have; [`flip_horizontal`]
//! mirrors the chosen images of a batch in place.
//!
//! Digits are never flipped: a mirrored 2, 3, 4, 5, 6, 7 or 9 is not a digit (and a 1 or 8
//! that still is one teaches nothing), so MNIST refuses flips ([`check_flip`]). Fashion-MNIST,
//! CIFAR-10 and photographs mirror into plausible images; an image folder is the user's call.

use serde::{Deserialize, Serialize};

use super::settings::DatasetName;
use crate::rng::Rng;

/// The name of the flip decisions' stream.
pub const STREAM: &str = "flip";

/// Whether flips suit the data set `name`; the error says why not.
pub fn check_flip(name: DatasetName) -> Result<(), String> {
    if matches!(name, DatasetName::Mnist) {
        Err(format!(
            "{} holds digits, and a mirrored digit is not one; leave flips off for it",
            name.as_str()
        ))
    } else {
        Ok(())
    }
}

/// The stream of flip decisions of a run. Serialise it to save its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlipStream {
    rng: Rng,
}

impl FlipStream {
    /// Flip decisions drawn from `rng` (a stage's [`STREAM`] stream, used for nothing else).
    pub fn new(rng: Rng) -> Self {
        Self { rng }
    }

    /// Whether to flip each of the next `n` images: each true with probability 1/2.
    pub fn next(&mut self, n: usize) -> Vec<bool> {
        (0..n).map(|_| self.rng.uniform() < 0.5).collect()
    }
}

/// Mirrors left and right of the images of `batch` (B x C x H x W, `image` = (C, H, W)) whose
/// entry of `flips` is true. Works on pixels and latents alike.
///
/// Panics if `batch` is not `flips.len()` images of that shape (shapes come from the data
/// set, never from a user).
pub fn flip_horizontal<T>(
    batch: &mut [T],
    (channels, height, width): (usize, usize, usize),
    flips: &[bool],
) {
    let image = channels * height * width;
    assert_eq!(
        batch.len(),
        flips.len() * image,
        "flip_horizontal: {} values are not {} images of {channels}x{height}x{width}",
        batch.len(),
        flips.len()
    );
    if width == 0 {
        return;
    }
    for (img, _) in batch
        .chunks_exact_mut(image.max(1))
        .zip(flips)
        .filter(|(_, f)| **f)
    {
        for row in img.chunks_exact_mut(width) {
            row.reverse();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_only_the_chosen_images_every_row_of_every_channel() {
        // Two images of 2 channels x 2 rows x 3 columns.
        let mut batch: Vec<u8> = (0..24).collect();
        flip_horizontal(&mut batch, (2, 2, 3), &[false, true]);
        let want: Vec<u8> = (0..12)
            .chain([14, 13, 12, 17, 16, 15, 20, 19, 18, 23, 22, 21])
            .collect();
        assert_eq!(batch, want);
        flip_horizontal(&mut batch, (2, 2, 3), &[false, true]);
        assert_eq!(batch, (0..24).collect::<Vec<u8>>());
    }

    #[test]
    fn digits_are_refused() {
        assert!(
            check_flip(DatasetName::Mnist)
                .unwrap_err()
                .contains("mnist holds digits")
        );
        assert!(check_flip(DatasetName::FashionMnist).is_ok());
        assert!(check_flip(DatasetName::ImageFolder).is_ok());
    }

    #[test]
    fn half_the_images_are_flipped() {
        let flips = FlipStream::new(Rng::stream(3, STREAM)).next(10_000);
        let n = flips.iter().filter(|f| **f).count();
        assert!((4_800..5_200).contains(&n), "{n}");
    }
}
