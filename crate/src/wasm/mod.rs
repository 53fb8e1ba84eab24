//! Browser bindings (wasm-bindgen), driven by `www/worker.js`.
//!
//! The worker owns networking and the IndexedDB cache; it hands us configs as text and
//! weights as a stream of chunks (`ModelLoader::pushWeights`), so no file is ever whole in
//! wasm memory. [`Generator::generate`] is the same pipeline code as the CLI.

use std::cell::RefCell;

use burn::tensor::Device;
use wasm_bindgen::prelude::*;

mod error;
mod generator;
mod js_types;
mod loader;
mod quantizer;

pub use error::CodedError;
pub use generator::Generator;
pub use loader::ModelLoader;
pub use quantizer::WeightsQuantizer;

use crate::options::parse_quantize;
use js_types::to_js;

thread_local! {
    // burn's wgpu runtime can be initialised once per thread; later models reuse it.
    static DEVICE: RefCell<Option<Device>> = const { RefCell::new(None) };
}

#[wasm_bindgen(start)]
pub fn start() {
    // Panics reach the page as readable errors (console + the worker's error event).
    console_error_panic_hook::set_once();
}

async fn device() -> Result<Device, CodedError> {
    if let Some(device) = DEVICE.with(|d| d.borrow().clone()) {
        return Ok(device);
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| CodedError::invalid(format!("WebGPU could not be initialised: {e:?}")))?;
    DEVICE.with(|d| *d.borrow_mut() = Some(device.clone()));
    Ok(device)
}

/// Throws unless `json` (a model_index.json) names a pipeline sdweb runs; the message names it.
#[wasm_bindgen(js_name = checkModelIndex)]
pub fn check_model_index(json: &str, source: &str) -> Result<(), CodedError> {
    crate::model_index::check_model_index(json, source)
        .map_err(|m| CodedError::new("model-index", m))
}

/// The diffusers folder layout (crate/src/layout.rs) as the worker fetches it; `quantize`
/// ("q8_0" / "q4_0") adds the names of the quantised copies the cache keeps.
#[wasm_bindgen(js_name = modelLayout)]
pub fn model_layout(quantize: Option<String>) -> Result<JsValue, CodedError> {
    let quant = parse_quantize(quantize.as_deref()).map_err(CodedError::invalid)?;
    to_js(&crate::layout::browser_layout(quant))
}
