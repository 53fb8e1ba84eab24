//! Each model against diffusers/transformers on the tiny fixture pipelines (f32 path).

mod common;

use burn::tensor::{DType, Device, Tensor, TensorData};
use common::*;
use sdweb::config::ConfigReader;
use sdweb::models::autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
use sdweb::models::clip_text_model::{ClipTextConfig, ClipTextModel};
use sdweb::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use sdweb::weights::{TensorStore, find_component_file};

fn store(model: &str, component: &str, stem: &str) -> TensorStore {
    store_as(model, component, stem, DType::F32)
}

fn store_as(model: &str, component: &str, stem: &str, dtype: DType) -> TensorStore {
    let dir = fixtures().join(model).join(component);
    let mut store = TensorStore::new(&device(), dtype, dir.display().to_string());
    let file = find_component_file(&dir, stem, false).unwrap();
    store
        .load_safetensors_file(&file, &|n| Some(n.to_string()))
        .unwrap();
    store
}

fn config(model: &str, component: &str) -> ConfigReader {
    ConfigReader::read(&fixtures().join(model).join(component).join("config.json")).unwrap()
}

fn check_text_encoder(model: &str) {
    let reference = load_reference(&format!("{model}_modules.safetensors"));
    let store = store(&format!("{model}_tiny"), "text_encoder", "model");
    let te = ClipTextModel::load(
        &store.root(),
        ClipTextConfig::from_reader(config(&format!("{model}_tiny"), "text_encoder")).unwrap(),
    )
    .unwrap();
    let out = to_vec(te.forward(&token_rows(&reference["text.input_ids"])));
    assert_close(
        &format!("{model} text encoder"),
        &out,
        &reference["text.last_hidden_state"].values,
        1e-4,
    );
}

fn check_unet(model: &str) {
    let reference = load_reference(&format!("{model}_modules.safetensors"));
    let store = store(&format!("{model}_tiny"), "unet", "diffusion_pytorch_model");
    let unet = UNet2DConditionModel::load(
        &store.root(),
        UNet2DConditionConfig::from_reader(config(&format!("{model}_tiny"), "unet")).unwrap(),
    )
    .unwrap();
    let d = device();
    let t = reference["unet.timestep"].values[0] as f64;
    let out = unet.forward(
        reference["unet.sample"].tensor(&d),
        t,
        reference["unet.encoder_hidden_states"].tensor(&d),
    );
    assert_close(
        &format!("{model} unet"),
        &to_vec(out),
        &reference["unet.out"].values,
        1e-4,
    );
}

fn check_vae(model: &str) {
    let reference = load_reference(&format!("{model}_modules.safetensors"));
    let store = store(&format!("{model}_tiny"), "vae", "diffusion_pytorch_model");
    let vae = AutoencoderKL::load(
        &store.root(),
        AutoencoderKLConfig::from_reader(config(&format!("{model}_tiny"), "vae")).unwrap(),
        true,
    )
    .unwrap();
    let d = device();
    let decoded = vae.decode(reference["vae.decode.latents"].tensor(&d));
    assert_close(
        &format!("{model} vae decode"),
        &to_vec(decoded),
        &reference["vae.decode.out"].values,
        1e-4,
    );
    let (mean, logvar) = vae.encode(reference["vae.encode.image"].tensor(&d));
    assert_close(
        &format!("{model} vae encode mean"),
        &to_vec(mean),
        &reference["vae.encode.mean"].values,
        1e-4,
    );
    assert_close(
        &format!("{model} vae encode logvar"),
        &to_vec(logvar),
        &reference["vae.encode.logvar"].values,
        1e-4,
    );
    check_vae_bands(model, &vae, &reference);
    assert!(
        store.unused().is_empty(),
        "unused VAE tensors: {:?}",
        store.unused()
    );
}

/// Row bands (what keeps 512×512 f32 activations under the 128 MiB binding limit) give the
/// whole-tensor result: one-row bands (every conv gathers halos from two neighbours, the
/// encoder's stride-2 convs leave bands empty) and three uneven bands.
fn check_vae_bands(
    model: &str,
    vae: &AutoencoderKL,
    reference: &std::collections::HashMap<String, RefTensor>,
) {
    let d = device();
    let latents = reference["vae.decode.latents"].tensor(&d);
    let image = reference["vae.encode.image"].tensor(&d);
    let whole_decode = to_vec(vae.decode_in_bands(latents.clone(), usize::MAX));
    let (whole_mean, whole_logvar) = vae.encode_in_bands(image.clone(), usize::MAX);
    let (whole_mean, whole_logvar) = (to_vec(whole_mean), to_vec(whole_logvar));
    let largest_decode = whole_decode.len() * 4 * 16 / 3; // ≥ any decoder activation here
    for (label, budget) in [("one-row bands", 1), ("3 bands", largest_decode / 3 + 1)] {
        let banded = to_vec(vae.decode_in_bands(latents.clone(), budget));
        let diff = max_abs_diff(&banded, &whole_decode);
        println!("{model} vae decode, {label}: max diff vs whole {diff:.2e}");
        assert!(diff <= 1e-5, "{model} vae decode in {label}: {diff}");
        assert_close(
            &format!("{model} vae decode ({label})"),
            &banded,
            &reference["vae.decode.out"].values,
            1e-4,
        );
        let (mean, logvar) = vae.encode_in_bands(image.clone(), budget);
        let (mean, logvar) = (to_vec(mean), to_vec(logvar));
        let diff = max_abs_diff(&mean, &whole_mean).max(max_abs_diff(&logvar, &whole_logvar));
        println!("{model} vae encode, {label}: max diff vs whole {diff:.2e}");
        assert!(diff <= 1e-5, "{model} vae encode in {label}: {diff}");
        assert_close(
            &format!("{model} vae encode mean ({label})"),
            &mean,
            &reference["vae.encode.mean"].values,
            1e-4,
        );
    }
}

/// A device on the same adapter whose storage bindings are capped at `max_binding` bytes
/// (buffers at twice that, WebGPU's default ratio), registered as a separate burn device.
fn device_with_binding_limit(max_binding: u64) -> Device {
    use burn::tensor::wgpu::{WgpuSetup, wgpu};
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter =
        pollster::block_on(instance.request_adapter(&Default::default())).expect("a wgpu adapter");
    let mut limits = adapter.limits();
    limits.max_storage_buffer_binding_size = max_binding;
    limits.max_buffer_size = 2 * max_binding;
    let (device, queue) = pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor {
            required_features: adapter
                .features()
                .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
            required_limits: limits,
            ..Default::default()
        }),
    )
    .expect("a device with lowered limits");
    let backend = adapter.get_info().backend;
    Device::wgpu_options()
        .setup(WgpuSetup {
            instance,
            adapter,
            device,
            queue,
            backend,
        })
        .init()
        .expect("registering the limited device")
}

/// The VAE at a size whose activations outgrow the storage-binding limit, as SD's full-size
/// VAE does at 512×512 in f32 (256 MiB vs WebGPU's default 128 MiB): on a device capped at
/// 8 MiB, the sd1 fixture VAE (8× fewer channels, 4× upsampling) decodes 96×96 latents
/// to 384×384 (largest activation: 9.4 MiB) and encodes it
/// back through bands of at most a quarter of the limit, and matches the whole-tensor result
/// computed on the unrestricted device.
#[test]
fn vae_runs_within_a_small_binding_limit() {
    const LIMIT: u64 = 8 << 20;
    let limited = device_with_binding_limit(LIMIT);
    let load = |device: &Device| {
        let dir = fixtures().join("sd1_tiny").join("vae");
        let mut store = TensorStore::new(device, DType::F32, dir.display().to_string());
        let file = find_component_file(&dir, "diffusion_pytorch_model", false).unwrap();
        store
            .load_safetensors_file(&file, &|n| Some(n.to_string()))
            .unwrap();
        let config = AutoencoderKLConfig::from_reader(config("sd1_tiny", "vae")).unwrap();
        AutoencoderKL::load(&store.root(), config, true).unwrap()
    };
    let (vae, vae_limited) = (load(&device()), load(&limited));
    let latents: Vec<f32> = (0..4 * 96 * 96)
        .map(|i| ((i as f32) * 0.37).sin() * 1.5)
        .collect();
    let tensor = |device: &Device| {
        Tensor::<4>::from_data(TensorData::new(latents.clone(), [1, 4, 96, 96]), device)
    };
    let band_bytes = (LIMIT / 4) as usize;
    let whole = to_vec(vae.decode(tensor(&device())));
    let banded_image = vae_limited.decode_in_bands(tensor(&limited), band_bytes);
    let banded = to_vec(banded_image.clone());
    let diff = max_abs_diff(&banded, &whole);
    println!("vae decode 384×384 under an 8 MiB binding limit: max diff vs whole {diff:.2e}");
    assert!(diff <= 1e-5, "decode under the limit differs by {diff}");

    let image = |device: &Device| {
        Tensor::<4>::from_data(TensorData::new(whole.clone(), [1, 3, 384, 384]), device)
    };
    let (mean, _) = vae.encode(image(&device()));
    let (mean_limited, _) = vae_limited.encode_in_bands(image(&limited), band_bytes);
    let diff = max_abs_diff(&to_vec(mean_limited), &to_vec(mean));
    println!("vae encode 384×384 under an 8 MiB binding limit: max diff vs whole {diff:.2e}");
    assert!(diff <= 1e-5, "encode under the limit differs by {diff}");
}

/// Max abs difference (`errors` also checks both are finite).
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    errors(a, b).0
}

/// The kernel policy is each model's own, not the process's: the text encoder loaded with
/// burn's ops and with sdweb's kernels, used in turn in one process, each matches transformers
/// and each runs its own ops (sdweb's fused kernels launch fewer dispatches).
#[test]
fn each_model_runs_the_kernels_it_was_loaded_with() {
    use sdweb::kernels::KernelPolicy;
    let reference = load_reference("sd1_modules.safetensors");
    let dir = fixtures().join("sd1_tiny/text_encoder");
    let rows = token_rows(&reference["text.input_ids"]);
    let mut dispatches = Vec::new();
    for kernels in [KernelPolicy::Burn, KernelPolicy::Sdweb, KernelPolicy::Burn] {
        let mut store = TensorStore::new(&device(), DType::F32, dir.display().to_string());
        store.set_kernel_policy(kernels);
        let file = find_component_file(&dir, "model", false).unwrap();
        store
            .load_safetensors_file(&file, &|n| Some(n.to_string()))
            .unwrap();
        let config = ClipTextConfig::from_reader(config("sd1_tiny", "text_encoder")).unwrap();
        let te = ClipTextModel::load(&store.root(), config).unwrap();
        let counter = sdweb::launches::DispatchCounter::start();
        let out = to_vec(te.forward(&rows));
        dispatches.push(counter.count());
        assert_close(
            &format!("sd1 text encoder, {} kernels", kernels.name()),
            &out,
            &reference["text.last_hidden_state"].values,
            1e-4,
        );
    }
    // The first burn run includes its autotune's launches; the second is burn's own count.
    eprintln!("text encoder dispatches: burn (autotune), sdweb, burn = {dispatches:?}");
    assert!(
        dispatches[1] < dispatches[2],
        "sdweb's fused kernels launch fewer dispatches than burn's ops: {dispatches:?}"
    );
}

fn token_rows(ids: &RefTensor) -> Vec<Vec<u32>> {
    ids.values
        .chunks(ids.shape[1])
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect()
}

#[test]
fn sd1_text_encoder_matches_transformers() {
    check_text_encoder("sd1");
}

#[test]
fn sd2_text_encoder_matches_transformers() {
    check_text_encoder("sd2");
}

#[test]
fn sd1_unet_matches_diffusers() {
    check_unet("sd1");
}

#[test]
fn sd2_unet_matches_diffusers() {
    check_unet("sd2");
}

#[test]
fn sd1_vae_matches_diffusers() {
    check_vae("sd1");
}

#[test]
fn sd2_vae_matches_diffusers() {
    check_vae("sd2");
}

/// SDXL's VAE is SD's architecture (scaling_factor 0.13025, force_upcast).
#[test]
fn sdxl_vae_matches_diffusers() {
    check_vae("sdxl");
}

/// The f16 compute path (used when the adapter has shader-f16; lavapipe has it): the UNet
/// within 2e-2 of the reference's scale, i.e. f16 rounding through ~40 layers.
#[test]
fn sd2_unet_f16_path_within_tolerance() {
    let d = device();
    if !d.supports_dtype(DType::F16) {
        panic!("this adapter lacks shader-f16; the f16 path cannot be tested here");
    }
    let reference = load_reference("sd2_modules.safetensors");
    let store = store_as("sd2_tiny", "unet", "diffusion_pytorch_model", DType::F16);
    let unet = UNet2DConditionModel::load(
        &store.root(),
        UNet2DConditionConfig::from_reader(config("sd2_tiny", "unet")).unwrap(),
    )
    .unwrap();
    let t = reference["unet.timestep"].values[0] as f64;
    let sample = reference["unet.sample"].tensor::<4>(&d).cast(DType::F16);
    let context = reference["unet.encoder_hidden_states"]
        .tensor::<3>(&d)
        .cast(DType::F16);
    let out = unet.forward(sample, t, context).cast(DType::F32);
    assert_close(
        "sd2 unet f16",
        &to_vec(out),
        &reference["unet.out"].values,
        2e-2,
    );
}
