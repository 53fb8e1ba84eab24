//! `model_index.json`: which diffusers pipeline a folder holds, checked before anything else
//! is read, so an SD3 or non-diffusers folder is refused with its name, not with a config
//! error deep in a component; and what the pipeline needs (SDXL's second text encoder).

use serde_json::Value;

use crate::layout::{TOKENIZER_2_FOLDER, TOKENIZER_FOLDER};
use crate::pipeline::Component;

/// The pipeline families sdweb runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelineFamily {
    /// SD 1.x / 2.x: one CLIP text encoder.
    StableDiffusion,
    /// SDXL (and SDXL-Turbo): CLIP ViT-L plus OpenCLIP bigG with projection.
    StableDiffusionXl,
}

/// The pipeline classes whose folders sdweb runs, by family (txt2img, img2img and inpainting
/// exports, LCM-scheduled ones).
pub const SUPPORTED_PIPELINES: &[(&str, PipelineFamily)] = &[
    ("StableDiffusionPipeline", PipelineFamily::StableDiffusion),
    (
        "StableDiffusionImg2ImgPipeline",
        PipelineFamily::StableDiffusion,
    ),
    (
        "StableDiffusionInpaintPipeline",
        PipelineFamily::StableDiffusion,
    ),
    (
        "LatentConsistencyModelPipeline",
        PipelineFamily::StableDiffusion,
    ),
    (
        "StableDiffusionXLPipeline",
        PipelineFamily::StableDiffusionXl,
    ),
    (
        "StableDiffusionXLImg2ImgPipeline",
        PipelineFamily::StableDiffusionXl,
    ),
    (
        "StableDiffusionXLInpaintPipeline",
        PipelineFamily::StableDiffusionXl,
    ),
];

const TOKENIZERS: &[&str] = &["CLIPTokenizer", "CLIPTokenizerFast"];

/// The component classes a family needs (any of them; the first is named in errors).
fn components(family: PipelineFamily) -> &'static [(&'static str, &'static [&'static str])] {
    match family {
        PipelineFamily::StableDiffusion => &[
            ("text_encoder", &["CLIPTextModel"]),
            ("tokenizer", TOKENIZERS),
            ("unet", &["UNet2DConditionModel"]),
            ("vae", &["AutoencoderKL"]),
        ],
        PipelineFamily::StableDiffusionXl => &[
            ("text_encoder", &["CLIPTextModel"]),
            ("text_encoder_2", &["CLIPTextModelWithProjection"]),
            ("tokenizer", TOKENIZERS),
            ("tokenizer_2", TOKENIZERS),
            ("unet", &["UNet2DConditionModel"]),
            ("vae", &["AutoencoderKL"]),
        ],
    }
}

/// What a known but unsupported pipeline is.
fn unsupported_family(class: &str) -> Option<&'static str> {
    let families = [
        ("StableDiffusionXLControlNet", "SDXL ControlNet"),
        ("StableDiffusionXLInstructPix2Pix", "SDXL InstructPix2Pix"),
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

/// A checked model_index.json.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelIndex {
    pub family: PipelineFamily,
    /// SDXL: an empty negative prompt is encoded as zeros, not as the text "" (diffusers'
    /// default for StableDiffusionXLPipeline is true).
    pub force_zeros_for_empty_prompt: bool,
}

impl ModelIndex {
    /// Parses `json` (the text of `source`), checking it names a pipeline sdweb runs, with
    /// the components it needs.
    pub fn parse(json: &str, source: &str) -> Result<Self, String> {
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
                "{source}: {class} ({family}) is not supported yet; sdweb runs SD 1.x / 2.x and SDXL pipelines"
            ));
        }
        let Some(&(_, family)) = SUPPORTED_PIPELINES.iter().find(|(c, _)| *c == class) else {
            let names: Vec<&str> = SUPPORTED_PIPELINES.iter().map(|(c, _)| *c).collect();
            return Err(format!(
                "{source}: {class} is not a pipeline sdweb runs; supported: {}",
                names.join(", ")
            ));
        };
        for (component, classes) in components(family) {
            check_component(&index, source, class, component, classes)?;
        }
        let force_zeros = index
            .get("force_zeros_for_empty_prompt")
            .and_then(Value::as_bool)
            .unwrap_or(family == PipelineFamily::StableDiffusionXl);
        Ok(Self {
            family,
            force_zeros_for_empty_prompt: force_zeros,
        })
    }

    /// Reads `dir`'s model_index.json (native folders; `BaseFolder::read` calls it on every
    /// target, so it is not cfg'd away from wasm, where it just fails).
    pub fn read(dir: &std::path::Path) -> Result<Self, String> {
        let path = dir.join(crate::layout::MODEL_INDEX);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e} (is this a diffusers model folder?)",
                path.display()
            )
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The weight-carrying components to load, in load order.
    pub fn components(&self) -> &'static [Component] {
        match self.family {
            PipelineFamily::StableDiffusion => &Component::ALL,
            PipelineFamily::StableDiffusionXl => &Component::ALL_XL,
        }
    }

    /// The tokenizer folders, the first encoder's first.
    pub fn tokenizer_folders(&self) -> &'static [&'static str] {
        match self.family {
            PipelineFamily::StableDiffusion => &[TOKENIZER_FOLDER],
            PipelineFamily::StableDiffusionXl => &[TOKENIZER_FOLDER, TOKENIZER_2_FOLDER],
        }
    }
}

fn check_component(
    index: &Value,
    source: &str,
    class: &str,
    component: &str,
    classes: &[&str],
) -> Result<(), String> {
    // diffusers writes [library, class].
    let found = index
        .get(component)
        .and_then(|v| v.get(1))
        .and_then(Value::as_str);
    let expected = classes[0];
    match found {
        Some(found) if classes.contains(&found) => Ok(()),
        Some(found) => Err(format!(
            "{source}: {component} is a {found}; sdweb needs a {expected}"
        )),
        None => Err(format!(
            "{source}: no {component} entry; {class} needs a {expected}"
        )),
    }
}

/// [`ModelIndex::parse`], for callers that only check.
pub fn check_model_index(json: &str, source: &str) -> Result<(), String> {
    ModelIndex::parse(json, source).map(|_| ())
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
        let cn = SD.replace(
            "StableDiffusionPipeline",
            "StableDiffusionXLControlNetPipeline",
        );
        assert_eq!(
            check_model_index(&cn, "m/model_index.json").unwrap_err(),
            "m/model_index.json: StableDiffusionXLControlNetPipeline (SDXL ControlNet) is not supported yet; sdweb runs SD 1.x / 2.x and SDXL pipelines"
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
        // SDXL needs its second encoder and tokenizer; an empty negative prompt is zeros.
        let xl = SD.replace("StableDiffusionPipeline", "StableDiffusionXLPipeline");
        assert_eq!(
            check_model_index(&xl, "x").unwrap_err(),
            "x: no text_encoder_2 entry; StableDiffusionXLPipeline needs a CLIPTextModelWithProjection"
        );
        let xl = xl.replace(
            r#""unet":"#,
            r#""text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet":"#,
        );
        let index = ModelIndex::parse(&xl, "x").unwrap();
        assert_eq!(index.family, PipelineFamily::StableDiffusionXl);
        assert!(index.force_zeros_for_empty_prompt);
        assert_eq!(index.tokenizer_folders(), ["tokenizer", "tokenizer_2"]);
        assert!(
            !ModelIndex::parse(SD, "x")
                .unwrap()
                .force_zeros_for_empty_prompt
        );
        let t5 = SD.replace("\"CLIPTextModel\"", "\"T5EncoderModel\"");
        assert_eq!(
            check_model_index(&t5, "x").unwrap_err(),
            "x: text_encoder is a T5EncoderModel; sdweb needs a CLIPTextModel"
        );
    }
}
