//! The networks: autoencoder, UNet, text encoder, discriminator, classifier.

pub mod autoencoder;
pub mod classifier;
pub mod clip_text;
pub mod discriminator;
pub mod lpips;
pub mod text_encoder;
pub mod unet;
pub mod unet_blocks;
pub mod vae_blocks;
