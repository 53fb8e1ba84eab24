//! What crosses the wasm boundary, as serde types: plain JS objects in and out
//! (serde-wasm-bindgen), with the camelCase names the JS API (`www/sdweb.js`) documents.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;

use super::error::{CodedError, internal};
use crate::pipeline::Timings;

/// `value` as a plain JS object (maps as objects, 64-bit integers as numbers).
pub fn to_js(value: &impl Serialize) -> Result<JsValue, CodedError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(internal)
}

/// A JS object as `T`; `what` names it in the error (unknown fields are errors too).
pub fn from_js<T: DeserializeOwned>(value: JsValue, what: &str) -> Result<T, CodedError> {
    serde_wasm_bindgen::from_value(value)
        .map_err(|e| CodedError::invalid(format!("invalid {what}: {e}")))
}

/// How `createGenerator` asks for the model to be held (its `precision`, `quantize`, `kernels`
/// options; their values are parsed by `crate::options`).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoaderOptions {
    #[serde(default)]
    pub precision: Option<String>,
    #[serde(default)]
    pub quantize: Option<String>,
    #[serde(default)]
    pub kernels: Option<String>,
}

/// What `generate()` asks for; the init image and mask pixels come as separate arguments.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateOptions {
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    /// "a1111" (default) or "plain".
    #[serde(default)]
    pub prompt_syntax: Option<String>,
    pub steps: usize,
    pub guidance: f64,
    #[serde(default)]
    pub scheduler: Option<String>,
    pub width: usize,
    pub height: usize,
    pub seed: f64,
    /// img2img strength.
    #[serde(default)]
    pub strength: Option<f64>,
    /// [width, height] of the init image / mask pixels (at their own size: resized here, by
    /// the code the CLI uses).
    #[serde(default)]
    pub init_image_size: Option<[usize; 2]>,
    #[serde(default)]
    pub mask_size: Option<[usize; 2]>,
    /// A preview after every this many steps (default 1; 0 turns them off).
    #[serde(default)]
    pub preview_every: Option<usize>,
}

/// A loaded model's defaults, as `Generator.info`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub name: String,
    pub steps: usize,
    pub guidance: f64,
    pub width: usize,
    pub height: usize,
    pub size_multiple: usize,
    pub scheduler: String,
    pub f16: bool,
    pub kernels: &'static str,
}

/// A generation's result, less its PNG bytes (set beside these as a `Uint8Array`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResult {
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    pub scheduler: &'static str,
    pub parameters: String,
    pub timings: serde_json::Value,
    pub mode: &'static str,
    pub strength: Option<f64>,
}

/// [`Timings`] with camelCase field names (`totalMs`, `unetStepsMs`, …); the CLI's bench JSON
/// keeps Rust's names.
pub fn timings_for_js(timings: &Timings) -> Result<serde_json::Value, CodedError> {
    let value = serde_json::to_value(timings).map_err(internal)?;
    let serde_json::Value::Object(fields) = value else {
        return Err(internal("timings are not an object"));
    };
    let camel = fields
        .into_iter()
        .map(|(name, v)| (camel_case(&name), v))
        .collect();
    Ok(serde_json::Value::Object(camel))
}

fn camel_case(snake: &str) -> String {
    let mut parts = snake.split('_');
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}
