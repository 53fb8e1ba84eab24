//! The diffusers pipeline folder layout, in one place: the native folder loader reads it, and
//! the browser's worker asks for it through wasm (`modelLayout()`) to know what to fetch.

use serde::Serialize;

use crate::pipeline::Component;
use crate::weights::QuantType;

pub const MODEL_INDEX: &str = "model_index.json";
pub const SCHEDULER_CONFIG: &str = "scheduler/scheduler_config.json";
pub const TOKENIZER_FOLDER: &str = "tokenizer";
/// SDXL's second tokenizer (OpenCLIP bigG's, padding with "!").
pub const TOKENIZER_2_FOLDER: &str = "tokenizer_2";
/// Inside [`TOKENIZER_FOLDER`]: the fast layout (one file) or the original SD layout (two).
pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const VOCAB_JSON: &str = "vocab.json";
pub const MERGES_TXT: &str = "merges.txt";
/// Optional settings files next to them.
pub const TOKENIZER_CONFIG_JSON: &str = "tokenizer_config.json";
pub const SPECIAL_TOKENS_MAP_JSON: &str = "special_tokens_map.json";

/// `unet/config.json`.
pub fn config_path(component: Component) -> String {
    format!("{}/config.json", component.folder())
}

/// A weights file stem's files, the preferred first: the fp16 variant (half the download) or
/// the full-precision file, as diffusers picks one when asked for either.
pub fn weights_file_names(stem: &str, prefer_fp16: bool) -> [String; 2] {
    let (plain, fp16) = (
        format!("{stem}.safetensors"),
        format!("{stem}.fp16.safetensors"),
    );
    if prefer_fp16 {
        [fp16, plain]
    } else {
        [plain, fp16]
    }
}

/// [`weights_file_names`] of a component, as paths inside the pipeline folder.
pub fn weights_candidates(component: Component, prefer_fp16: bool) -> [String; 2] {
    weights_file_names(component.weights_stem(), prefer_fp16)
        .map(|f| format!("{}/{f}", component.folder()))
}

/// Where the browser cache keeps its quantised copy of a component's weights (a name no
/// server has, so it can never be mistaken for a download).
pub fn quantized_copy(component: Component, quant: QuantType) -> String {
    format!(
        "{}/{}.sdweb-{}.safetensors",
        component.folder(),
        component.weights_stem(),
        quant.name()
    )
}

/// The layout as the worker reads it (`modelLayout(quantize)` in wasm). Parts marked `xl`
/// belong to SDXL pipelines only; a folder is SDXL when it has `xlMarker` (the worker probes
/// it before the download is planned, so the whole plan is known before its first byte).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowserLayout {
    pub model_index: &'static str,
    pub scheduler_config: &'static str,
    pub xl_marker: String,
    pub tokenizers: Vec<BrowserTokenizer>,
    pub components: Vec<BrowserComponent>,
    /// TAESD's repository (madebyollin/taesd): a config and the weights at its root.
    pub preview_config: &'static str,
    pub preview_weights: String,
}

/// One tokenizer folder's files.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowserTokenizer {
    pub folder: &'static str,
    /// Fast layout first; the original SD layout (vocab + merges) when it is absent.
    pub json: String,
    pub vocab: [String; 2],
    pub optional: [String; 2],
    pub xl: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowserComponent {
    pub name: &'static str,
    pub config: String,
    /// Weights files in order of preference (the browser always prefers the fp16 variant).
    pub weights: [String; 2],
    /// The quantised copy's name when the load quantises.
    pub quantized_copy: Option<String>,
    pub xl: bool,
}

pub fn browser_layout(quant: Option<QuantType>) -> BrowserLayout {
    let tokenizer = |folder: &'static str, xl: bool| {
        let file = |name: &str| format!("{folder}/{name}");
        BrowserTokenizer {
            folder,
            json: file(TOKENIZER_JSON),
            vocab: [file(VOCAB_JSON), file(MERGES_TXT)],
            optional: [file(TOKENIZER_CONFIG_JSON), file(SPECIAL_TOKENS_MAP_JSON)],
            xl,
        }
    };
    BrowserLayout {
        model_index: MODEL_INDEX,
        scheduler_config: SCHEDULER_CONFIG,
        xl_marker: config_path(Component::TextEncoder2),
        tokenizers: vec![
            tokenizer(TOKENIZER_FOLDER, false),
            tokenizer(TOKENIZER_2_FOLDER, true),
        ],
        components: Component::ALL_XL
            .into_iter()
            .map(|c| BrowserComponent {
                name: c.folder(),
                config: config_path(c),
                weights: weights_candidates(c, true),
                quantized_copy: quant.map(|q| quantized_copy(c, q)),
                xl: !Component::ALL.contains(&c),
            })
            .collect(),
        preview_config: "config.json",
        preview_weights: format!("{}.safetensors", Component::PreviewDecoder.weights_stem()),
    }
}
