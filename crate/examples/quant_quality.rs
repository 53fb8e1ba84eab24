//! UNet and text-encoder output of a quantised model vs f32, for full-size checkpoints (the
//! tests enforce the same bounds on the fixtures):
//!
//!   cargo run --example quant_quality -- MODEL_DIR [LATENT_SIZE (0: text encoders only)] [OVERRIDES]
//!
//! Runs one UNet call on seeded latents (default 8×8 latents, i.e. a 64×64 image, so that
//! full-size UNets finish on a CPU Vulkan driver) and one text-encoder call, with f32
//! weights, q8_0 and q4_0 (default policies, plus OVERRIDES as `--quant-override` takes them,
//! e.g. `ff.net=q4_0` to try a policy), and prints cosine similarities as JSON. SDXL folders
//! (with `text_encoder_2/`) also get the second encoder's cosine (penultimate states and pooled
//! projection) and the UNet run with random added conditions.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor, TensorData};
use sdweb::config::ConfigReader;
use sdweb::models::clip_text_model::{ClipTextConfig, ClipTextModel};
use sdweb::models::unet_2d_condition::{
    AddedConditions, UNet2DConditionConfig, UNet2DConditionModel,
};
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

    let xl = dir.join("text_encoder_2/config.json").is_file();
    let pooled: Vec<f32> = config.text_time.map_or(Vec::new(), |tt| {
        noise.normal(tt.input_dim - 6 * tt.time_embed_dim)
    });
    let added = |device: &Device| {
        config.text_time.map(|_| {
            let n = pooled.len();
            let px = (size * 8) as f64;
            AddedConditions {
                text_embeds: Tensor::<2>::from_data(
                    TensorData::new(pooled.clone(), [1, n]),
                    device,
                ),
                time_ids: vec![[px, px, 0.0, 0.0, px, px]],
            }
        })
    };
    // SDXL's encoders: penultimate states (and the second's pooled projection), concatenated.
    let encode = |component: &str, policy: Option<QuantPolicy>| -> Vec<f32> {
        let te_store = store(&dir, component, "model", policy, &device);
        let config = ClipTextConfig::from_reader(
            ConfigReader::read(&dir.join(component).join("config.json")).unwrap(),
        )
        .unwrap();
        let te = ClipTextModel::load(&te_store.root(), config).unwrap();
        let out = te.encode(&ids);
        let mut values_out = values(out.penultimate_hidden_state);
        if let Some(pooled) = out.text_embeds {
            values_out.extend(values(pooled));
        }
        values_out
    };

    let mut results = Vec::new();
    let mut reference: Option<(Vec<f32>, Vec<f32>)> = None;
    let mut reference_2: Option<Vec<f32>> = None;
    for ty in [None, Some(QuantType::Q8_0), Some(QuantType::Q4_0)] {
        let policy = ty.map(|t| {
            QuantPolicy::new(t)
                .with_overrides(&overrides)
                .expect("overrides")
        });
        let t0 = std::time::Instant::now();
        let te_out = if xl {
            encode("text_encoder", policy.clone())
        } else {
            let te_store = store(&dir, "text_encoder", "model", policy.clone(), &device);
            let te = ClipTextModel::load(&te_store.root(), te_config()).unwrap();
            values(te.forward(&ids))
        };
        let te2_out = xl.then(|| encode("text_encoder_2", policy.clone()));
        let te2_cos = match (&te2_out, &reference_2) {
            (Some(out), Some(r)) => Some(cosine(out, r)),
            (Some(_), None) => Some(1.0),
            _ => None,
        };
        if reference_2.is_none() {
            reference_2 = te2_out;
        }
        let name = ty.map_or("f32", |t| t.name());
        if size == 0 {
            // LATENT_SIZE 0: the text encoders only (a full-size SDXL UNet takes minutes).
            let te_cos = reference.as_ref().map_or(1.0, |(_, t)| cosine(&te_out, t));
            eprintln!("{name}: text encoder cosine {te_cos:.6}, text_encoder_2 cosine {te2_cos:?}");
            results.push(serde_json::json!({"weights": name, "text_encoder_cosine": te_cos, "text_encoder_2_cosine": te2_cos}));
            reference.get_or_insert((Vec::new(), te_out));
            continue;
        }
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
        let unet_out = values(unet.forward_with(x, 500.0, c, added(&device).as_ref()));
        let seconds = t0.elapsed().as_secs_f64();
        drop((unet, unet_store));
        let (unet_cos, te_cos) = match &reference {
            None => (1.0, 1.0),
            Some((u, t)) => (cosine(&unet_out, u), cosine(&te_out, t)),
        };
        eprintln!(
            "{name}: unet cosine {unet_cos:.6}, text encoder cosine {te_cos:.6}, text_encoder_2 cosine {te2_cos:?}, unet weights {gpu_bytes} B, {seconds:.0} s"
        );
        results.push(serde_json::json!({"weights": name, "unet_cosine": unet_cos, "text_encoder_cosine": te_cos, "text_encoder_2_cosine": te2_cos, "unet_gpu_weight_bytes": gpu_bytes}));
        if reference.is_none() {
            reference = Some((unet_out, te_out));
        }
    }
    println!(
        "{}",
        serde_json::json!({"model": dir.display().to_string(), "latent_size": size, "results": results})
    );
}
