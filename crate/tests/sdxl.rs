//! SDXL on the tiny fixture (`tests/fixtures/sdxl_tiny`, made with diffusers'
//! StableDiffusionXLPipeline): both text encoders (penultimate states, pooled projection), the
//! UNet with its added text_time conditions, and whole generations against diffusers' images.
//! One process, so the compiled pipelines are shared.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use common::checkpoint_files::{Tensors, write_gguf_f16, write_safetensors};
use common::*;
use sdweb::checkpoint::{BaseFolder, load_single_file_with_report};
use sdweb::config::ConfigReader;
use sdweb::models::clip_text_model::{ClipTextConfig, ClipTextModel};
use sdweb::models::unet_2d_condition::{
    AddedConditions, UNet2DConditionConfig, UNet2DConditionModel,
};
use sdweb::pipeline::{LoadOptions, StableDiffusion, StdClock};
use sdweb::weights::ldm_keys::{CheckpointLayout, LdmKeyMap, Transform};
use sdweb::weights::safetensors::SafetensorsHeader;
use sdweb::weights::{StorageDType, TensorStore, find_component_file, to_f32};

const MODEL: &str = "sdxl_tiny";

fn store(component: &str, stem: &str) -> TensorStore {
    let dir = fixtures().join(MODEL).join(component);
    let mut store = TensorStore::new(&device(), DType::F32, dir.display().to_string());
    let file = find_component_file(&dir, stem, false).unwrap();
    store
        .load_safetensors_file(&file, &|n| Some(n.to_string()))
        .unwrap();
    store
}

fn config(component: &str) -> ConfigReader {
    ConfigReader::read(&fixtures().join(MODEL).join(component).join("config.json")).unwrap()
}

fn text_encoder(component: &str) -> ClipTextModel {
    let store = store(component, "model");
    ClipTextModel::load(
        &store.root(),
        ClipTextConfig::from_reader(config(component)).unwrap(),
    )
    .unwrap()
}

/// The UNet reference's added conditions (pooled text embeddings and time ids).
fn reference_added(reference: &HashMap<String, RefTensor>) -> AddedConditions {
    let time_ids = reference["unet.time_ids"]
        .values
        .chunks(6)
        .map(|r| std::array::from_fn(|i| r[i] as f64))
        .collect();
    AddedConditions {
        text_embeds: reference["unet.text_embeds"].tensor(&device()),
        time_ids,
    }
}

fn rows(reference: &RefTensor) -> Vec<Vec<u32>> {
    reference
        .values
        .chunks(reference.shape[1])
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect()
}

#[test]
fn sdxl_text_encoders_match_transformers() {
    let reference = load_reference("sdxl_modules.safetensors");
    let first = text_encoder("text_encoder").encode(&rows(&reference["text.input_ids"]));
    assert_close(
        "sdxl text_encoder hidden_states[-2]",
        &to_vec(first.penultimate_hidden_state),
        &reference["text.penultimate_hidden_state"].values,
        1e-4,
    );
    assert!(
        first.text_embeds.is_none(),
        "CLIPTextModel has no projection"
    );
    let second = text_encoder("text_encoder_2").encode(&rows(&reference["text_2.input_ids"]));
    assert_close(
        "sdxl text_encoder_2 hidden_states[-2]",
        &to_vec(second.penultimate_hidden_state),
        &reference["text_2.penultimate_hidden_state"].values,
        1e-4,
    );
    assert_close(
        "sdxl text_encoder_2 text_embeds",
        &to_vec(second.text_embeds.expect("projection")),
        &reference["text_2.text_embeds"].values,
        1e-4,
    );
}

#[test]
fn sdxl_unet_with_added_conditions_matches_diffusers() {
    let reference = load_reference("sdxl_modules.safetensors");
    let store = store("unet", "diffusion_pytorch_model");
    let config = UNet2DConditionConfig::from_reader(config("unet")).unwrap();
    assert!(config.text_time.is_some());
    let unet = UNet2DConditionModel::load(&store.root(), config).unwrap();
    let d = device();
    let added = reference_added(&reference);
    let out = unet.forward_with(
        reference["unet.sample"].tensor(&d),
        reference["unet.timestep"].values[0] as f64,
        reference["unet.encoder_hidden_states"].tensor(&d),
        Some(&added),
    );
    assert_close(
        "sdxl unet",
        &to_vec(out),
        &reference["unet.out"].values,
        1e-4,
    );
}

/// `dir` with its scheduler config replaced by `config` (other components linked, not copied).
fn with_scheduler_config(dir: &Path, name: &str, config: &serde_json::Value) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("scheduler")).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "scheduler" {
            std::os::unix::fs::symlink(entry.path(), out.join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(
        out.join("scheduler/scheduler_config.json"),
        serde_json::to_string(config).unwrap(),
    )
    .unwrap();
    out
}

/// Each sdxl_tiny case of `e2e/cases.json` (CFG with a negative prompt, CFG with the empty
/// negative zeroed, Turbo-style one step without guidance on trailing spacing), non-square.
#[test]
fn sdxl_txt2img_matches_diffusers() {
    let text = std::fs::read_to_string(reference_dir().join("e2e/cases.json")).unwrap();
    let raw = sdweb::schedulers::parse_json(&text).unwrap();
    let cases: Vec<(Case, serde_json::Value)> = e2e_cases()
        .into_iter()
        .zip(raw.as_array().unwrap().iter().cloned())
        .filter(|(c, _)| c.model == MODEL)
        .collect();
    assert!(cases.len() >= 3, "expected the fixture's SDXL cases");
    let folder = StableDiffusion::load(&fixtures().join(MODEL), &device(), DType::F32).unwrap();
    assert!(folder.text_encoder_2().is_some());
    for (case, json) in &cases {
        let own = with_scheduler_config(
            &fixtures().join(MODEL),
            &case.name,
            &json["scheduler_config"],
        );
        let model = StableDiffusion::load(&own, &device(), DType::F32).unwrap();
        let request = case_request(case);
        let out = pollster::block_on(model.generate(&request, &StdClock::default(), &mut |_| {}))
            .unwrap();
        assert_image_close(&case.name, &out.rgb, &reference_rgb(case));
    }
}

// ---------------------------------------------------------------------------------------------
// Single-file SDXL checkpoints
// ---------------------------------------------------------------------------------------------

/// `[rows, cols]` f16 bytes transposed.
fn transpose_f16(bytes: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len()];
    for r in 0..rows {
        for c in 0..cols {
            let (from, to) = (2 * (r * cols + c), 2 * (c * rows + r));
            out[to..to + 2].copy_from_slice(&bytes[from..from + 2]);
        }
    }
    out
}

/// sdxl_tiny's fp16 weights under `layout`'s names, made with the key table's diffusers → LDM
/// direction, and checked against `manifest`: the names, shapes and first values of the
/// fixture script's own conversion (checked there with diffusers' single-file loader), so a
/// wrong name, stacking or transpose in the table fails here. Shapes are the manifest's.
fn ldm_tensors(
    layout: CheckpointLayout,
    manifest: &serde_json::Value,
) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let base = BaseFolder::read(&fixtures().join(MODEL)).unwrap();
    let map = LdmKeyMap::new(&base.unet, &base.vae, &base.text_encoders(), layout);
    let mut out = BTreeMap::new();
    let mut stacked: BTreeMap<String, [Vec<u8>; 3]> = BTreeMap::new();
    for &component in base.index.components() {
        let dir = fixtures().join(MODEL).join(component.folder());
        let path = find_component_file(&dir, component.weights_stem(), true).unwrap();
        let file = path.display().to_string();
        let mut reader = std::fs::File::open(&path).unwrap();
        let header = SafetensorsHeader::read(&mut reader, &file).unwrap();
        for (name, entry) in &header.tensors {
            assert_eq!(entry.dtype, StorageDType::F16, "{name}");
            let pair = map
                .to_ldm(component, name)
                .unwrap_or_else(|| panic!("{component:?} {name}: no {layout:?} name"));
            let bytes = header.read_tensor(&mut reader, entry, &file).unwrap();
            match (pair.transform, entry.shape.as_slice()) {
                (Transform::QkvPart(part), _) => {
                    stacked.entry(pair.ldm.clone()).or_default()[part] = bytes
                }
                (Transform::Transpose, &[rows, cols]) => {
                    out.insert(pair.ldm.clone(), transpose_f16(&bytes, rows, cols));
                }
                _ => {
                    out.insert(pair.ldm.clone(), bytes);
                }
            }
        }
    }
    out.extend(
        stacked
            .into_iter()
            .map(|(name, parts)| (name, parts.concat())),
    );
    let manifest = manifest.as_object().unwrap();
    let missing: Vec<_> = manifest.keys().filter(|k| !out.contains_key(*k)).collect();
    let unknown: Vec<_> = out.keys().filter(|k| !manifest.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{layout:?}: the fixture script's names lack {unknown:?}; ours lack {missing:?}"
    );
    out.into_iter()
        .map(|(name, bytes)| {
            let [shape, first] = [0, 1].map(|i| manifest[&name][i].as_array().unwrap().clone());
            let shape: Vec<usize> = shape.iter().map(|d| d.as_u64().unwrap() as usize).collect();
            assert_eq!(bytes.len(), 2 * shape.iter().product::<usize>(), "{name}");
            let ours = to_f32(&bytes[..2 * first.len()], StorageDType::F16);
            for (o, f) in ours.iter().zip(&first) {
                assert!(
                    (o - f.as_f64().unwrap() as f32).abs() < 1e-5,
                    "{name}: {ours:?} vs {first:?}"
                );
            }
            (name, (shape, bytes))
        })
        .collect()
}

/// Text encoders, UNet and VAE of `model` against diffusers' module references.
fn check_modules(what: &str, model: &StableDiffusion) {
    let reference = load_reference("sdxl_modules.safetensors");
    let first = model
        .text_encoder()
        .encode(&rows(&reference["text.input_ids"]));
    let second = model
        .text_encoder_2()
        .expect("SDXL")
        .encode(&rows(&reference["text_2.input_ids"]));
    let d = device();
    let added = reference_added(&reference);
    let unet = model.unet().forward_with(
        reference["unet.sample"].tensor(&d),
        reference["unet.timestep"].values[0] as f64,
        reference["unet.encoder_hidden_states"].tensor(&d),
        Some(&added),
    );
    let decoded = model
        .vae()
        .decode(reference["vae.decode.latents"].tensor(&d));
    for (name, ours, key) in [
        (
            "text_encoder",
            to_vec(first.penultimate_hidden_state),
            "text.penultimate_hidden_state",
        ),
        (
            "text_encoder_2",
            to_vec(second.penultimate_hidden_state),
            "text_2.penultimate_hidden_state",
        ),
        ("unet", to_vec(unet), "unet.out"),
    ] {
        assert_close(
            &format!("{what} {name}"),
            &ours,
            &reference[key].values,
            1e-4,
        );
    }
    assert_close(
        &format!("{what} text_embeds"),
        &to_vec(second.text_embeds.expect("projection")),
        &reference["text_2.text_embeds"].values,
        1e-4,
    );
    assert_close(
        &format!("{what} vae decode"),
        &to_vec(decoded),
        &reference["vae.decode.out"].values,
        1e-4,
    );
}

/// An A1111/ComfyUI-style single file (sgm names, OpenCLIP's stacked q/k/v and transposed
/// projection, f16 safetensors with the extras such files carry) and a stable-diffusion.cpp
/// GGUF (its renamed encoders, 1×1-conv proj_in/out) both load into sdxl_tiny's models.
#[test]
fn sdxl_single_files_in_sgm_and_stable_diffusion_cpp_names_match_diffusers() {
    let text = std::fs::read_to_string(reference_dir().join("sdxl_single_file.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let load = |path: &Path| {
        load_single_file_with_report(
            path,
            &fixtures().join(MODEL),
            &device(),
            DType::F32,
            LoadOptions::default(),
        )
        .unwrap()
    };

    let mut sgm: Tensors = ldm_tensors(CheckpointLayout::Sdxl, &manifest["sgm"])
        .into_iter()
        .map(|(name, (shape, bytes))| (name, (StorageDType::F16, shape, bytes)))
        .collect();
    let extras: Vec<String> = manifest["sgm_ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    for name in &extras {
        sgm.insert(name.clone(), (StorageDType::F16, vec![1], vec![0, 0]));
    }
    let path = dir.join("sdxl_tiny_sgm.safetensors");
    write_safetensors(&path, &sgm);
    let (model, report) = load(&path);
    assert_eq!(report.layout, CheckpointLayout::Sdxl);
    assert_eq!(report.ignored, extras);
    check_modules("sgm single file", &model);
    drop(model);

    let path = dir.join("sdxl_tiny_sdcpp.gguf");
    write_gguf_f16(
        &path,
        "sdxl",
        &ldm_tensors(CheckpointLayout::SdxlSdCpp, &manifest["sdcpp"]),
    );
    let (model, report) = load(&path);
    assert_eq!(report.layout, CheckpointLayout::SdxlSdCpp);
    assert!(report.ignored.is_empty(), "{:?}", report.ignored);
    check_modules("stable-diffusion.cpp gguf", &model);
}

/// A1111 prompt syntax on both encoders (each emphasised on its own penultimate states, the
/// pooled embedding from the first chunk) against make_fixtures.py's implementation.
#[test]
fn a1111_prompt_syntax_matches_the_reference_on_sdxl() {
    let reference = load_reference("prompt_syntax.safetensors");
    let model = StableDiffusion::load(&fixtures().join(MODEL), &device(), DType::F32).unwrap();
    for case in &prompt_syntax_cases() {
        let prefix = format!("sdxl_tiny.{}", case.name);
        let (context, pooled) = checked_prompt_condition(&model, case, &reference, &prefix);
        assert_eq!(context.dims()[..2], [2, 77 * case.chunks]);
        // Measured: max abs error 3.8e-6 (context, scale 2.3), 1.1e-6 (pooled).
        assert_close(
            &prefix,
            &to_vec(context),
            &reference[&format!("{prefix}.context")].values,
            1e-5,
        );
        assert_close(
            &format!("{prefix} pooled"),
            &to_vec(pooled.expect("SDXL's pooled embeddings")),
            &reference[&format!("{prefix}.pooled")].values,
            1e-5,
        );
    }
}

/// An LCM-distilled SDXL UNet (`time_cond_proj_dim`, as latent-consistency/lcm-sdxl): the
/// guidance scale embedded, no CFG batch, as StableDiffusionXLPipeline runs it.
#[test]
fn sdxl_lcm_distilled_unet_matches_diffusers() {
    let case = e2e_cases()
        .into_iter()
        .find(|c| c.model == "sdxl_tiny_lcm")
        .expect("the fixture's SDXL LCM case");
    let model =
        StableDiffusion::load(&fixtures().join(&case.model), &device(), DType::F32).unwrap();
    assert!(!model.uses_cfg(case.guidance));
    let out =
        pollster::block_on(model.generate(&case_request(&case), &StdClock::default(), &mut |_| {}))
            .unwrap();
    assert_image_close(&case.name, &out.rgb, &reference_rgb(&case));
}
