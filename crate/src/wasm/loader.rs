//! [`ModelLoader`]: a model's parts, streamed in by the worker, built into a [`Generator`].

use std::cell::Cell;
use std::rc::Rc;

use burn::tensor::DType;
use wasm_bindgen::prelude::*;

use super::error::{CodedError, coded};
use super::generator::Generator;
use super::js_types::{LoaderOptions, from_js};
use crate::kernels::KernelPolicy;
use crate::model_index::ModelIndex;
use crate::options::{Precision, parse_quantize};
use crate::pipeline::{Component, ComponentLoad, LoadOptions, PipelineBuilder};
use crate::tokenizer::{ClipTokenizer, TokenizerFiles};
use crate::weights::QuantPolicy;
use crate::weights::stream::SafetensorsStream;

struct WeightsInFlight {
    load: ComponentLoad,
    stream: SafetensorsStream<'static>,
}

/// Receives a model's parts one by one and builds a [`Generator`].
#[wasm_bindgen]
pub struct ModelLoader {
    builder: Option<PipelineBuilder>,
    in_flight: Option<WeightsInFlight>,
    f16: bool,
}

/// `options.quantize`: "q8_0"/"q4_0" quantises layer weights as they stream in (kept quantised
/// on the GPU); absent, "none" or "f16" keeps them f16/f32 (weights that arrive quantised, from
/// `sdweb quantize`, stay so either way). `options.kernels`: "sdweb" (default) or "burn".
fn load_options(options: &LoaderOptions) -> Result<LoadOptions, CodedError> {
    // "f16" here means no quantisation, as the page's picker says.
    let quantize = options.quantize.as_deref().filter(|q| *q != "f16");
    let quantization = parse_quantize(quantize)
        .map_err(CodedError::invalid)?
        .map(QuantPolicy::new);
    let kernels = match options.kernels.as_deref() {
        None => KernelPolicy::default(),
        Some(name) => name.parse().map_err(CodedError::invalid)?,
    };
    Ok(LoadOptions {
        quantization,
        kernels,
        ..Default::default()
    })
}

#[wasm_bindgen]
impl ModelLoader {
    /// `options`: {precision?: "auto" (f16 where the adapter has shader-f16) | "f32" | "f16",
    /// quantize?, kernels?} (see [`load_options`]).
    pub async fn create(name: String, options: JsValue) -> Result<ModelLoader, CodedError> {
        let options: LoaderOptions = if options.is_undefined() {
            LoaderOptions::default()
        } else {
            from_js(options, "model options")?
        };
        let load = load_options(&options)?;
        let precision: Precision = options
            .precision
            .as_deref()
            .unwrap_or("auto")
            .parse()
            .map_err(CodedError::invalid)?;
        let device = super::device().await?;
        let dtype = precision
            .resolve(device.supports_dtype(DType::F16))
            .map_err(CodedError::invalid)?;
        Ok(ModelLoader {
            builder: Some(PipelineBuilder::new(name, &device, dtype).with_options(load)),
            in_flight: None,
            f16: dtype == DType::F16,
        })
    }

    /// True when the model computes in f16.
    #[wasm_bindgen(getter)]
    pub fn f16(&self) -> bool {
        self.f16
    }

    fn builder(&mut self) -> Result<&mut PipelineBuilder, CodedError> {
        self.builder
            .as_mut()
            .ok_or_else(|| CodedError::invalid("this loader was already built"))
    }

    /// The checked model_index.json (SDXL's `force_zeros_for_empty_prompt`); throws with code
    /// `model-index` when it names no pipeline sdweb runs.
    #[wasm_bindgen(js_name = setModelIndex)]
    pub fn set_model_index(&mut self, json: &str, source: &str) -> Result<(), CodedError> {
        let index =
            ModelIndex::parse(json, source).map_err(|m| CodedError::new("model-index", m))?;
        let builder = self.builder()?;
        builder
            .check_lora_components(index.components())
            .map_err(coded)?;
        builder.set_model_index(index);
        Ok(())
    }

    /// The files of a tokenizer folder (`folder`: `tokenizer`, or SDXL's `tokenizer_2`; absent
    /// files as undefined).
    #[wasm_bindgen(js_name = setTokenizer)]
    pub fn set_tokenizer(
        &mut self,
        folder: &str,
        tokenizer_json: Option<Vec<u8>>,
        vocab_json: Option<Vec<u8>>,
        merges_txt: Option<Vec<u8>>,
        tokenizer_config_json: Option<Vec<u8>>,
        special_tokens_map_json: Option<Vec<u8>>,
    ) -> Result<(), CodedError> {
        let tokenizer = ClipTokenizer::from_files(TokenizerFiles {
            tokenizer_json: tokenizer_json.as_deref(),
            vocab_json: vocab_json.as_deref(),
            merges_txt: merges_txt.as_deref(),
            tokenizer_config_json: tokenizer_config_json.as_deref(),
            special_tokens_map_json: special_tokens_map_json.as_deref(),
        })
        .map_err(coded)?;
        self.builder()?
            .set_tokenizer_of(folder, tokenizer)
            .map_err(coded)
    }

    /// A LoRA file's bytes (`name`: what prompt tags, `Lora hashes` and errors call it, e.g.
    /// `style.safetensors`), merged at `weight` into the weights streamed in after this call:
    /// add every LoRA before the first `beginWeights`.
    #[wasm_bindgen(js_name = addLora)]
    pub fn add_lora(&mut self, bytes: &[u8], name: &str, weight: f64) -> Result<(), CodedError> {
        if self.in_flight.is_some() {
            return Err(CodedError::invalid(
                "addLora after beginWeights: add LoRAs first",
            ));
        }
        let file = crate::lora::parse_lora(bytes, name).map_err(coded)?;
        self.builder()?
            .add_lora(std::sync::Arc::new(file), weight as f32);
        Ok(())
    }

    #[wasm_bindgen(js_name = setSchedulerConfig)]
    pub fn set_scheduler_config(&mut self, json: &str) -> Result<(), CodedError> {
        self.builder()?.set_scheduler_config(json).map_err(coded)
    }

    /// Starts a component (`text_encoder`, `unet`, `vae`, or `taesd` for previews): its
    /// config.json text, then the weights file's name (for errors) and byte size.
    #[wasm_bindgen(js_name = beginWeights)]
    pub fn begin_weights(
        &mut self,
        component: &str,
        config_json: &str,
        file: &str,
        size: f64,
    ) -> Result<(), CodedError> {
        let kind = Component::from_folder(component)
            .ok_or_else(|| CodedError::invalid(format!("unknown model component {component:?}")))?;
        let config_source = format!("{component}/config.json");
        let mut load = self
            .builder()?
            .begin_component(kind, config_json, &config_source)
            .map_err(coded)?;
        load.store.set_description(file);
        // TAESD previews need its decoder only.
        let skip_encoder = kind == Component::PreviewDecoder;
        let stream = SafetensorsStream::new(
            file,
            size as u64,
            Box::new(move |n| {
                (!(skip_encoder && n.starts_with("encoder."))).then(|| n.to_string())
            }),
        );
        self.in_flight = Some(WeightsInFlight { load, stream });
        Ok(())
    }

    /// The next bytes of the weights file begun with [`Self::begin_weights`].
    #[wasm_bindgen(js_name = pushWeights)]
    pub fn push_weights(&mut self, bytes: &[u8]) -> Result<(), CodedError> {
        let flight = self
            .in_flight
            .as_mut()
            .ok_or_else(|| CodedError::invalid("pushWeights before beginWeights"))?;
        flight
            .stream
            .push(&mut flight.load.store, bytes)
            .map_err(coded)
    }

    /// Checks the file was complete and builds the component (shape errors surface here).
    #[wasm_bindgen(js_name = endWeights)]
    pub fn end_weights(&mut self) -> Result<(), CodedError> {
        let WeightsInFlight { mut load, stream } = self
            .in_flight
            .take()
            .ok_or_else(|| CodedError::invalid("endWeights before beginWeights"))?;
        stream.finish(&mut load.store).map_err(coded)?;
        self.builder()?.finish_component(load).map_err(coded)
    }

    pub fn build(&mut self) -> Result<Generator, CodedError> {
        let builder = self
            .builder
            .take()
            .ok_or_else(|| CodedError::invalid("this loader was already built"))?;
        let loras = builder.loras().clone();
        let sd = builder.build().map_err(coded)?;
        Ok(Generator {
            sd: Rc::new(sd),
            cancel: Rc::new(Cell::new(false)),
            loras: Rc::new(loras),
        })
    }
}
