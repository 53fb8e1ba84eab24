//! [`WeightsQuantizer`]: the cache's q8_0/q4_0 copies, made in the browser.

use wasm_bindgen::prelude::*;

use super::error::{CodedError, coded};
use crate::weights::QuantPolicy;
use crate::weights::quantize_model::QuantizeStream;

/// Converts a cached fp16/f32 weights file into its q8_0/q4_0 copy chunk by chunk (the same
/// bytes `sdweb quantize` writes), so the cache can keep the small copy for later loads.
#[wasm_bindgen]
pub struct WeightsQuantizer {
    stream: Option<QuantizeStream>,
}

#[wasm_bindgen]
impl WeightsQuantizer {
    /// `component`: text_encoder, unet or vae; `quantize`: q8_0 or q4_0; `file`/`size`: the input.
    #[wasm_bindgen(constructor)]
    pub fn new(
        component: &str,
        quantize: &str,
        file: &str,
        size: f64,
    ) -> Result<WeightsQuantizer, CodedError> {
        let ty: crate::weights::QuantType = quantize.parse().map_err(CodedError::invalid)?;
        Ok(WeightsQuantizer {
            stream: Some(QuantizeStream::new(
                file,
                size as u64,
                component,
                Some(QuantPolicy::new(ty)),
            )),
        })
    }

    /// Feeds input bytes; returns the output bytes completed by them (often empty).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, CodedError> {
        self.stream
            .as_mut()
            .ok_or_else(|| CodedError::invalid("push after finish"))?
            .push(bytes)
            .map_err(coded)
    }

    /// The output size in bytes, known once the input's header has arrived (else undefined).
    #[wasm_bindgen(js_name = outputSize)]
    pub fn output_size(&self) -> Option<f64> {
        self.stream.as_ref()?.output_size().map(|n| n as f64)
    }

    /// Checks the input was complete; returns the last output bytes.
    pub fn finish(&mut self) -> Result<Vec<u8>, CodedError> {
        let stream = self
            .stream
            .take()
            .ok_or_else(|| CodedError::invalid("finish called twice"))?;
        stream.finish().map(|(tail, _)| tail).map_err(coded)
    }
}
