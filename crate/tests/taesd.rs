//! TAESD (diffusers' AutoencoderTiny) against diffusers on tests/fixtures/taesd_tiny (f32).

mod common;

use burn::tensor::{DType, Tensor, TensorData};
use common::*;
use sdweb::config::{ConfigError, ConfigReader};
use sdweb::models::autoencoder_tiny::{AutoencoderTiny, AutoencoderTinyConfig};
use sdweb::weights::{TensorStore, find_component_file};

fn store() -> TensorStore {
    let dir = fixtures().join("taesd_tiny");
    let mut store = TensorStore::new(&device(), DType::F32, dir.display().to_string());
    let file = find_component_file(&dir, "diffusion_pytorch_model", false).unwrap();
    store
        .load_safetensors_file(&file, &|n| Some(n.to_string()))
        .unwrap();
    store
}

fn config() -> AutoencoderTinyConfig {
    let path = fixtures().join("taesd_tiny").join("config.json");
    AutoencoderTinyConfig::from_reader(ConfigReader::read(&path).unwrap()).unwrap()
}

fn parse(json: &str) -> Result<AutoencoderTinyConfig, ConfigError> {
    AutoencoderTinyConfig::from_reader(ConfigReader::parse(json, "config.json").unwrap())
}

#[test]
fn taesd_matches_diffusers() {
    let reference = load_reference("taesd.safetensors");
    let store = store();
    let taesd = AutoencoderTiny::load_with_encoder(&store.root(), config()).unwrap();
    assert!(store.unused().is_empty(), "unused: {:?}", store.unused());
    let d = device();

    let latents = reference["decode.latents"].tensor::<4>(&d);
    let decoded = taesd.decode(latents.clone());
    assert_eq!(decoded.dims(), [1, 3, 48, 64]);
    let expected = &reference["decode.out"].values;
    assert_close("taesd decode", &to_vec(decoded), expected, 1e-4);

    // The preview helper: scaling_factor is 1.0, so it is decode → [0, 1].
    let preview = to_vec(taesd.decode_preview(latents));
    let want: Vec<f32> = expected
        .iter()
        .map(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0))
        .collect();
    assert_close("taesd preview", &preview, &want, 1e-4);

    let encoded = taesd.encode(reference["encode.image"].tensor(&d));
    assert_close(
        "taesd encode",
        &to_vec(encoded),
        &reference["encode.latents"].values,
        1e-4,
    );

    // On bands of rows (what keeps 768×768 under a 128 MiB binding): one-row bands, so
    // every conv reads its halo rows from both neighbours.
    let banded = taesd.decode_in_bands(reference["decode.latents"].tensor(&d), 1);
    assert_close(
        "taesd decode (one-row bands)",
        &to_vec(banded),
        expected,
        1e-4,
    );
    let banded = taesd.encode_in_bands(reference["encode.image"].tensor(&d), 1);
    assert_close(
        "taesd encode (one-row bands)",
        &to_vec(banded),
        &reference["encode.latents"].values,
        1e-4,
    );
}

#[test]
fn decoder_only_load_leaves_encoder_unused() {
    let store = store();
    let taesd = AutoencoderTiny::load(&store.root(), config()).unwrap();
    assert!(!taesd.has_encoder());
    let unused = store.unused();
    assert!(!unused.is_empty());
    assert!(
        unused.iter().all(|n| n.starts_with("encoder.")),
        "{unused:?}"
    );
}

/// tanh(z/3)·3 must saturate, not overflow, on the GPU: huge latents give finite pixels, and
/// ±1e3 and ±1e4 both clamp to exactly ±3, hence the same image.
#[test]
fn huge_latents_saturate() {
    let store = store();
    let taesd = AutoencoderTiny::load(&store.root(), config()).unwrap();
    let d = device();
    let signs: Vec<f32> = (0..4 * 6 * 8)
        .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
        .collect();
    let latents = |scale: f32| {
        let values = signs.iter().map(|s| s * scale).collect::<Vec<_>>();
        Tensor::<4>::from_data(TensorData::new(values, [1, 4, 6, 8]), &d)
    };
    let a = to_vec(taesd.decode(latents(1e3)));
    let b = to_vec(taesd.decode(latents(1e4)));
    let (max, _) = errors(&a, &b);
    assert!(max <= 1e-5, "saturated decodes differ by {max}");
}

/// madebyollin/taesd's published config (as diffusers prints it) is accepted.
#[test]
fn published_taesd_config_parses() {
    let c = parse(
        r#"{"_class_name": "AutoencoderTiny", "_diffusers_version": "0.30.0", "act_fn": "relu",
            "decoder_block_out_channels": [64, 64, 64, 64],
            "encoder_block_out_channels": [64, 64, 64, 64], "force_upcast": false,
            "in_channels": 3, "latent_channels": 4, "latent_magnitude": 3, "latent_shift": 0.5,
            "num_decoder_blocks": [3, 3, 3, 1], "num_encoder_blocks": [1, 3, 3, 3],
            "out_channels": 3, "scaling_factor": 1.0, "shift_factor": 0.0,
            "upsample_fn": "nearest", "upsampling_scaling_factor": 2}"#,
    )
    .unwrap();
    assert_eq!(c.scaling_factor, 1.0);
    assert_eq!(c.num_decoder_blocks, [3, 3, 3, 1]);
    assert_eq!(c.scale_factor(), 8);
}

#[test]
fn math_changing_config_keys_are_rejected() {
    let base = r#""decoder_block_out_channels": [8, 8, 8, 8], "num_decoder_blocks": [3, 3, 3, 1]"#;
    let cases = [
        // unknown key: refuse to guess what it does
        (
            r#""use_midblock_attention": true"#,
            "use_midblock_attention",
        ),
        (r#""upsample_fn": "bilinear""#, "upsample_fn"),
        (
            r#""upsampling_scaling_factor": 4"#,
            "upsampling_scaling_factor",
        ),
        (r#""act_fn": "mish""#, "act_fn"),
    ];
    for (extra, key) in cases {
        let err = parse(&format!("{{{base}, {extra}}}"))
            .err()
            .unwrap_or_else(|| panic!("{extra} accepted"));
        let msg = err.to_string();
        assert!(msg.contains(key), "{extra}: {msg}");
    }
    assert!(matches!(
        parse(r#"{"use_midblock_attention": true}"#),
        Err(ConfigError::UnknownKey { .. })
    ));
    // Unequal channels per level cannot run in diffusers either.
    let err = parse(r#"{"decoder_block_out_channels": [8, 16, 16, 16]}"#).unwrap_err();
    assert!(
        err.to_string().contains("decoder_block_out_channels"),
        "{err}"
    );
    // Mismatched level counts, as diffusers' __init__ refuses.
    assert!(parse(r#"{"num_encoder_blocks": [1, 3, 3]}"#).is_err());
    // Case-insensitive act_fn, as diffusers' get_activation.
    assert!(parse(r#"{"act_fn": "ReLU"}"#).is_ok());
}
