//! SDXL on the tiny fixture (`tests/fixtures/sdxl_tiny`, made with diffusers'
//! StableDiffusionXLPipeline): both text encoders (penultimate states, pooled projection), the
//! UNet with its added text_time conditions, and whole generations against diffusers' images.
//! One process, so the compiled pipelines are shared.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use common::*;
use sdweb::config::ConfigReader;
use sdweb::models::clip_text_model::{ClipTextConfig, ClipTextModel};
use sdweb::models::unet_2d_condition::{
    AddedConditions, UNet2DConditionConfig, UNet2DConditionModel,
};
use sdweb::pipeline::{StableDiffusion, StdClock};
use sdweb::weights::{TensorStore, find_component_file};

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
    let time_ids = reference["unet.time_ids"]
        .values
        .chunks(6)
        .map(|r| std::array::from_fn(|i| r[i] as f64))
        .collect();
    let added = AddedConditions {
        text_embeds: reference["unet.text_embeds"].tensor(&d),
        time_ids,
    };
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

/// A1111 prompt syntax on both encoders (each emphasised on its own penultimate states, the
/// pooled embedding from the first chunk) against make_fixtures.py's implementation.
#[test]
fn a1111_prompt_syntax_matches_the_reference_on_sdxl() {
    let reference = load_reference("prompt_syntax.safetensors");
    let model = StableDiffusion::load(&fixtures().join(MODEL), &device(), DType::F32).unwrap();
    for case in &prompt_syntax_cases() {
        let req = prompt_syntax_request(case);
        let prefix = format!("sdxl_tiny.{}", case.name);
        let rows = model.tokenize(&req, true, &mut |_| {}).unwrap();
        assert_eq!(
            rows,
            reference_rows(&reference[&format!("{prefix}.ids")]),
            "{prefix}"
        );
        let (context, pooled) = model.text_condition(&req, true).unwrap();
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
