//! UNet and text-encoder output of a quantised model vs f32, for full-size checkpoints (the
//! tests enforce the same bounds on the fixtures):
//!
//!   cargo run --example quant_quality -- MODEL_DIR [LATENT_SIZE] [OVERRIDES]
//!
//! Runs one UNet call on seeded latents (default 8×8 latents, i.e. a 64×64 image, so that
//! full-size UNets finish on a CPU Vulkan driver) and one text-encoder call, with f32
//! weights, q8_0 and q4_0 (default policies, plus OVERRIDES as `--quant-override` takes them,
//! e.g. `ff.net=q4_0` to try a policy), and prints cosine similarities as JSON.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor, TensorData};
use sdweb::config::ConfigReader;
use sdweb::models::clip_text_model::{ClipTextConfig, ClipTextModel};
use sdweb::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use sdweb::noise::NoiseGenerator;
use sdweb::weights::{QuantPolicy, QuantType, TensorStore, find_component_file};

fn store(
    dir: &Path,
    component: &str,
    stem: &str,
    policy: Option<QuantPolicy>,
    device: &Device,
) -> TensorStore {
    let folder = dir.join(component);
    let mut store = TensorStore::new(device, DType::F32, folder.display().to_string());
    if let Some(policy) = policy {
        store.set_quantization(policy, component);
    }
    let file = find_component_file(&folder, stem, false).expect("weights file");
    store
        .load_safetensors_file(&file, &|n| Some(n.to_string()))
        .expect("load");
    store
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.cast(DType::F32)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .expect("usage: quant_quality MODEL_DIR [LATENT_SIZE]"),
    );
    let size: usize = args.next().map_or(8, |s| s.parse().expect("latent size"));
    let overrides = args.next().unwrap_or_default();
    let device = Device::wgpu_options().init().expect("a wgpu adapter");
    let unet_config = || {
        UNet2DConditionConfig::from_reader(
            ConfigReader::read(&dir.join("unet/config.json")).unwrap(),
        )
        .unwrap()
    };
    let te_config = || {
        ClipTextConfig::from_reader(
            ConfigReader::read(&dir.join("text_encoder/config.json")).unwrap(),
        )
        .unwrap()
    };
    let config = unet_config();
    let mut noise = NoiseGenerator::new(1);
    let sample: Vec<f32> = noise.normal(config.in_channels * size * size);
    let context: Vec<f32> = noise.normal(77 * config.cross_attention_dim);
    let ids: Vec<Vec<u32>> = vec![
        (0..77)
            .map(|i| [49406, 320, 1125, 539, 320, 2368, 49407][i.min(6)])
            .collect(),
    ];

    let mut results = Vec::new();
    let mut reference: Option<(Vec<f32>, Vec<f32>)> = None;
    for ty in [None, Some(QuantType::Q8_0), Some(QuantType::Q4_0)] {
        let policy = ty.map(|t| {
            QuantPolicy::new(t)
                .with_overrides(&overrides)
                .expect("overrides")
        });
        let t0 = std::time::Instant::now();
        let te_store = store(&dir, "text_encoder", "model", policy.clone(), &device);
        let te = ClipTextModel::load(&te_store.root(), te_config()).unwrap();
        let te_out = values(te.forward(&ids));
        drop((te, te_store));
        let unet_store = store(&dir, "unet", "diffusion_pytorch_model", policy, &device);
        let gpu_bytes = unet_store.gpu_bytes();
        let unet = UNet2DConditionModel::load(&unet_store.root(), unet_config()).unwrap();
        let x = Tensor::<4>::from_data(
            TensorData::new(sample.clone(), [1, config.in_channels, size, size]),
            &device,
        );
        let c = Tensor::<3>::from_data(
            TensorData::new(context.clone(), [1, 77, config.cross_attention_dim]),
            &device,
        );
        let unet_out = values(unet.forward(x, 500.0, c));
        let seconds = t0.elapsed().as_secs_f64();
        drop((unet, unet_store));
        let name = ty.map_or("f32", |t| t.name());
        let (unet_cos, te_cos) = match &reference {
            None => (1.0, 1.0),
            Some((u, t)) => (cosine(&unet_out, u), cosine(&te_out, t)),
        };
        eprintln!(
            "{name}: unet cosine {unet_cos:.6}, text encoder cosine {te_cos:.6}, unet weights {gpu_bytes} B, {seconds:.0} s"
        );
        results.push(serde_json::json!({"weights": name, "unet_cosine": unet_cos, "text_encoder_cosine": te_cos, "unet_gpu_weight_bytes": gpu_bytes}));
        if reference.is_none() {
            reference = Some((unet_out, te_out));
        }
    }
    println!(
        "{}",
        serde_json::json!({"model": dir.display().to_string(), "latent_size": size, "results": results})
    );
}
