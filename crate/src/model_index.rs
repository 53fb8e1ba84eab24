//! `model_index.json`: which diffusers pipeline a folder holds, checked before anything else
//! is read, so an SDXL, SD3 or non-diffusers folder is refused with its name, not with a
//! config error deep in a component.

use serde_json::Value;

/// The pipeline classes whose folders sdweb runs (SD 1.x / 2.x, their img2img and inpainting
/// exports, and LCM-scheduled ones).
pub const SUPPORTED_PIPELINES: &[&str] = &[
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
    "LatentConsistencyModelPipeline",
];

/// The component classes each supported pipeline needs (any of them; the first is named in
/// errors).
const COMPONENTS: &[(&str, &[&str])] = &[
    ("text_encoder", &["CLIPTextModel"]),
    ("tokenizer", &["CLIPTokenizer", "CLIPTokenizerFast"]),
    ("unet", &["UNet2DConditionModel"]),
    ("vae", &["AutoencoderKL"]),
];

/// What a known but unsupported pipeline is.
fn unsupported_family(class: &str) -> Option<&'static str> {
    let families = [
        ("StableDiffusionXL", "SDXL"),
        ("StableDiffusion3", "Stable Diffusion 3"),
        ("Flux", "FLUX"),
        ("Kandinsky", "Kandinsky"),
        ("PixArt", "PixArt"),
        ("StableCascade", "Stable Cascade"),
        ("StableVideoDiffusion", "Stable Video Diffusion"),
        ("Wuerstchen", "Würstchen"),
    ];
    families
        .iter()
        .find(|(prefix, _)| class.starts_with(prefix))
        .map(|(_, name)| *name)
}

/// Checks `json` (the text of `source`, a model_index.json) names a pipeline sdweb runs, with
/// the components it needs.
pub fn check_model_index(json: &str, source: &str) -> Result<(), String> {
    let index: Value =
        serde_json::from_str(json).map_err(|e| format!("{source}: not valid JSON ({e})"))?;
    let class = index
        .get("_class_name")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            format!("{source}: no \"_class_name\"; is this a diffusers pipeline folder?")
        })?;
    if let Some(family) = unsupported_family(class) {
        return Err(format!(
            "{source}: {class} ({family}) is not supported yet; sdweb runs SD 1.x / 2.x pipelines"
        ));
    }
    if !SUPPORTED_PIPELINES.contains(&class) {
        return Err(format!(
            "{source}: {class} is not a pipeline sdweb runs; supported: {}",
            SUPPORTED_PIPELINES.join(", ")
        ));
    }
    for (component, classes) in COMPONENTS {
        // diffusers writes [library, class].
        let found = index
            .get(*component)
            .and_then(|v| v.get(1))
            .and_then(Value::as_str);
        let expected = classes[0];
        match found {
            Some(found) if classes.contains(&found) => {}
            Some(found) => {
                return Err(format!(
                    "{source}: {component} is a {found}; sdweb needs a {expected}"
                ));
            }
            None => {
                return Err(format!(
                    "{source}: no {component} entry; {class} needs a {expected}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SD: &str = r#"{"_class_name": "StableDiffusionPipeline", "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "PNDMScheduler"]}"#;

    #[test]
    fn sd_folders_pass_and_others_are_named() {
        check_model_index(SD, "m/model_index.json").unwrap();
        let xl = SD.replace("StableDiffusionPipeline", "StableDiffusionXLPipeline");
        assert_eq!(
            check_model_index(&xl, "m/model_index.json").unwrap_err(),
            "m/model_index.json: StableDiffusionXLPipeline (SDXL) is not supported yet; sdweb runs SD 1.x / 2.x pipelines"
        );
        let sd3 = SD.replace("StableDiffusionPipeline", "StableDiffusion3Pipeline");
        assert!(
            check_model_index(&sd3, "x")
                .unwrap_err()
                .contains("(Stable Diffusion 3) is not supported yet")
        );
        let other = SD.replace("StableDiffusionPipeline", "AudioLDMPipeline");
        assert!(
            check_model_index(&other, "x")
                .unwrap_err()
                .contains("AudioLDMPipeline is not a pipeline sdweb runs")
        );
        assert!(
            check_model_index("garbage", "x")
                .unwrap_err()
                .starts_with("x: not valid JSON")
        );
        assert!(
            check_model_index("{}", "x")
                .unwrap_err()
                .contains("no \"_class_name\"")
        );
        let t5 = SD.replace("\"CLIPTextModel\"", "\"T5EncoderModel\"");
        assert_eq!(
            check_model_index(&t5, "x").unwrap_err(),
            "x: text_encoder is a T5EncoderModel; sdweb needs a CLIPTextModel"
        );
    }
}
