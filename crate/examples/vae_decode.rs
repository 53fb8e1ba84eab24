//! A real (not dry-run) VAE decode of a full-size model at a given image size, on the default
//! adapter with its own storage-binding limit (lavapipe: 128 MiB, like WebGPU's default):
//! shows that the decoder's bands keep every buffer under the limit, and reports time and
//! peak GPU memory as one JSON line.
//!
//!   cargo run --example vae_decode -- MODEL_DIR [SIZE] [f32|f16] [MAX_BAND_BYTES]
//!
//! MODEL_DIR is a diffusers folder (or an `sdweb quantize` output: quantised layers stay
//! quantised); SIZE defaults to 512; MAX_BAND_BYTES to the pipeline's (`row_bands`), `whole`
//! for no bands (fails where an activation outgrows the binding limit). Latents are seeded
//! unit-normal noise.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{DType, Device, Tensor, TensorData};
use sdweb::config::ConfigReader;
use sdweb::models::autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
use sdweb::noise::NoiseGenerator;
use sdweb::weights::{TensorStore, find_component_file};

fn reserved(device: &Device) -> u64 {
    device.memory_pool_usage().map_or(0, |u| u.bytes_reserved)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .expect("usage: vae_decode MODEL_DIR [SIZE] [f32|f16]"),
    );
    let size: usize = args.next().map_or(512, |s| s.parse().expect("image size"));
    let dtype = match args.next().as_deref() {
        None | Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some(other) => panic!("precision {other}: f32 or f16"),
    };
    let band_bytes = match args.next().as_deref() {
        None => sdweb::models::row_bands::MAX_BAND_BYTES,
        Some("whole") => usize::MAX,
        Some(n) => n.parse().expect("MAX_BAND_BYTES"),
    };
    let (device, setup) = Device::wgpu_options()
        .init_with_setup()
        .expect("a wgpu adapter");
    let limits = setup.device.limits();

    let folder = dir.join("vae");
    let mut store = TensorStore::new(&device, dtype, folder.display().to_string());
    let file = find_component_file(&folder, "diffusion_pytorch_model", false).expect("vae weights");
    store
        .load_safetensors_file(&file, &|n| Some(n.to_string()))
        .expect("load");
    let config =
        AutoencoderKLConfig::from_reader(ConfigReader::read(&folder.join("config.json")).unwrap())
            .unwrap();
    let (factor, channels) = (config.scale_factor(), config.latent_channels);
    let vae = AutoencoderKL::load(&store.root(), config, false).expect("vae");
    let after_load = reserved(&device);

    let latent = size / factor;
    let mut noise = NoiseGenerator::new(1);
    let z = Tensor::<4>::from_data(
        TensorData::new(
            noise.normal(channels * latent * latent),
            [1, channels, latent, latent],
        ),
        &device,
    )
    .cast(dtype);
    let t0 = Instant::now();
    let image = vae.decode_in_bands(z, band_bytes);
    let pixels = image
        .cast(DType::F32)
        .into_data()
        .try_into_vec::<f32>()
        .expect("decoded image");
    let seconds = t0.elapsed().as_secs_f64();
    let finite = pixels.iter().all(|v| v.is_finite());
    println!(
        "{}",
        serde_json::json!({
            "model": dir.display().to_string(), "size": size, "precision": format!("{dtype:?}"),
            "max_storage_buffer_binding_size": limits.max_storage_buffer_binding_size,
            "max_buffer_size": limits.max_buffer_size,
            "max_band_bytes": band_bytes, "decode_s": seconds, "gpu_bytes_after_load": after_load,
            "peak_gpu_bytes": reserved(&device), "pixels_finite": finite,
        })
    );
}
