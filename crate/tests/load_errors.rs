//! Bad model folders fail with errors that name the problem.

mod common;

use burn::tensor::DType;
use common::*;
use sdweb::config::ConfigReader;
use sdweb::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use sdweb::weights::{StorageDType, TensorStore};

fn sd1_unet_config_text() -> String {
    std::fs::read_to_string(fixtures().join("sd1_tiny/unet/config.json")).unwrap()
}

fn parse_unet(text: &str) -> Result<UNet2DConditionConfig, String> {
    UNet2DConditionConfig::from_reader(ConfigReader::parse(text, "unet/config.json").unwrap())
        .map_err(|e| e.to_string())
}

fn with_key(key: &str, value: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&sd1_unet_config_text()).unwrap();
    v[key] = value;
    v.to_string()
}

#[test]
fn config_keys_that_change_the_math_are_errors() {
    assert!(parse_unet(&sd1_unet_config_text()).is_ok());
    let err = parse_unet(&with_key("center_input_sample", true.into())).unwrap_err();
    assert!(
        err.contains("center_input_sample = true is not supported"),
        "{err}"
    );
    let err = parse_unet(&with_key("time_embedding_dim", 256.into())).unwrap_err();
    assert!(err.contains("time_embedding_dim = 256"), "{err}");
    // An LCM-distilled UNet's guidance embedding is read (and must be a size).
    let lcm = parse_unet(&with_key("time_cond_proj_dim", 256.into())).unwrap();
    assert_eq!(lcm.time_cond_proj_dim, Some(256));
    let err = parse_unet(&with_key("time_cond_proj_dim", "wide".into())).unwrap_err();
    assert!(err.contains("time_cond_proj_dim"), "{err}");
    let err = parse_unet(&with_key("some_new_knob", 3.into())).unwrap_err();
    assert!(
        err.contains("unknown config key some_new_knob = 3"),
        "{err}"
    );
    let err = parse_unet(&with_key("attention_head_dim", serde_json::json!([2, 4]))).unwrap_err();
    assert!(
        err.contains("attention_head_dim") && err.contains("3 levels"),
        "{err}"
    );
    // Irrelevant-for-inference keys and nulls are fine.
    assert!(parse_unet(&with_key("dropout", 0.1.into())).is_ok());
    assert!(parse_unet(&with_key("some_new_knob", serde_json::Value::Null)).is_ok());
}

/// The store's own messages (the real loader's, from a weights file, are in bad_inputs.rs).
#[test]
fn missing_and_misshaped_tensors_name_tensor_and_shapes() {
    let config = parse_unet(&sd1_unet_config_text()).unwrap();
    let mut store = TensorStore::new(
        &device(),
        DType::F32,
        "unet/diffusion_pytorch_model.safetensors",
    );
    let err = UNet2DConditionModel::load(&store.root(), config.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("missing tensor down_blocks.0.resnets.0.norm1.weight (expected shape [32])")
            && err.contains("unet/diffusion_pytorch_model.safetensors"),
        "{err}"
    );
    store.insert_bytes(
        "down_blocks.0.resnets.0.norm1.weight",
        StorageDType::F32,
        &[2, 16],
        &[0u8; 32 * 4],
    );
    let err = UNet2DConditionModel::load(&store.root(), config)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(
            "tensor down_blocks.0.resnets.0.norm1.weight in unet/diffusion_pytorch_model.safetensors has shape [2, 16], expected [32]"
        ),
        "{err}"
    );
}
