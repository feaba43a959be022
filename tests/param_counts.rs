//! The seed's networks have exactly the lesson's parameter counts.

use candle_core::Device;
use ldm_run::models::autoencoder::AutoencoderConfig;
use ldm_run::models::autoencoder::AutoencoderKl;
use ldm_run::models::unet::UnetConfig;
use ldm_run::models::unet::{UNet, UnetShape};
use ldm_run::nn::params::ParamStore;

#[test]
fn seed_autoencoder_has_16_747_237_parameters() {
    let store = ParamStore::seeded(0, &Device::Cpu);
    AutoencoderKl::new(&AutoencoderConfig::default(), 1, 32, store.vb()).unwrap();
    assert_eq!(store.count(), 16_747_237);
}

#[test]
fn seed_unet_has_the_lessons_parameter_count() {
    let shape = UnetShape {
        latent_channels: 4,
        latent_size: 8,
        context_dim: Some(768),
    };
    let lesson = UnetConfig {
        lesson_skip_layers: true,
        ..UnetConfig::default()
    };
    let store = ParamStore::seeded(0, &Device::Cpu);
    UNet::new(&lesson, shape, store.vb()).unwrap();
    assert_eq!(store.count(), 25_847_424);
    let store = ParamStore::seeded(0, &Device::Cpu);
    UNet::new(&UnetConfig::default(), shape, store.vb()).unwrap();
    assert_eq!(store.count(), 25_485_440, "without the unused skip layers");
}
