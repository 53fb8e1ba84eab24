//! Browser bindings (wasm-bindgen), driven by `www/worker.js`.
//!
//! The worker owns networking and the IndexedDB cache; it hands us configs as text and
//! weights as a stream of chunks ([`ModelLoader::push_weights`]), so no file is ever whole in
//! wasm memory. [`Generator::generate`] is the same pipeline code as the CLI.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use burn::tensor::{DType, Device};
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::image_io::RgbImage;

use crate::options::{Precision, parse_quantize};
use crate::pipeline::{
    Clock, Component, ComponentLoad, GenerateRequest, InitImage, PipelineBuilder, PipelineError,
    Progress, StableDiffusion,
};
use crate::png_meta::encode_png;
use crate::schedulers::SchedulerKind;
use crate::tokenizer::{ClipTokenizer, TokenizerFiles};
use crate::weights::QuantPolicy;
use crate::weights::quantize_model::QuantizeStream;
use crate::weights::stream::SafetensorsStream;

thread_local! {
    // burn's wgpu runtime can be initialised once per thread; later models reuse it.
    static DEVICE: RefCell<Option<Device>> = const { RefCell::new(None) };
}

#[wasm_bindgen(start)]
pub fn start() {
    // Panics reach the page as readable errors (console + the worker's error event).
    console_error_panic_hook::set_once();
}

/// An error for JS: an `Error` whose `code` names its kind (the worker switches on the code,
/// never on the message); a cancelled generation is an `AbortError`.
#[derive(Debug)]
pub struct CodedError {
    code: &'static str,
    message: String,
}

impl CodedError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A caller's mistake (bad options, calls out of order).
    fn invalid(message: impl Into<String>) -> Self {
        Self::new("invalid-request", message)
    }
}

impl From<PipelineError> for CodedError {
    fn from(e: PipelineError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

/// Any pipeline-stage error (weights, config, tokenizer, scheduler), with its kind.
fn coded(e: impl Into<PipelineError>) -> CodedError {
    CodedError::from(e.into())
}

impl From<CodedError> for JsValue {
    fn from(e: CodedError) -> Self {
        let error = js_sys::Error::new(&e.message);
        if e.code == "cancelled" {
            error.set_name("AbortError");
        }
        let _ = js_sys::Reflect::set(
            &error,
            &JsValue::from_str("code"),
            &JsValue::from_str(e.code),
        );
        error.into()
    }
}

/// Errors of the other kinds, by their message.
fn internal(e: impl std::fmt::Display) -> CodedError {
    CodedError::new("internal", e.to_string())
}

async fn device() -> Result<Device, CodedError> {
    if let Some(device) = DEVICE.with(|d| d.borrow().clone()) {
        return Ok(device);
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| CodedError::invalid(&format!("WebGPU could not be initialised: {e:?}")))?;
    DEVICE.with(|d| *d.borrow_mut() = Some(device.clone()));
    Ok(device)
}

/// Whether this adapter can compute in f16 (`shader-f16`).
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
    let json = serde_json::to_string(&crate::layout::browser_layout(quant)).map_err(internal)?;
    js_sys::JSON::parse(&json).map_err(|_| internal("layout JSON"))
}

#[wasm_bindgen(js_name = gpuInfo)]
pub async fn gpu_info() -> Result<String, CodedError> {
    let device = device().await?;
    Ok(serde_json::json!({ "f16": device.supports_dtype(DType::F16) }).to_string())
}

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

#[wasm_bindgen]
impl ModelLoader {
    /// `precision`: "auto" (f16 where the adapter has shader-f16), "f32" or "f16".
    /// `quantize`: "q8_0" or "q4_0" quantises layer weights as they stream in (kept quantised
    /// on the GPU); absent or "none" keeps them f16/f32. Weights that arrive quantised (from
    /// `sdweb quantize`) stay so either way.
    pub async fn create(
        name: String,
        precision: String,
        quantize: Option<String>,
    ) -> Result<ModelLoader, CodedError> {
        // "f16" here means no quantisation (weights stay f16/f32), as the page's picker says.
        let quantize = quantize.filter(|q| q != "f16");
        let policy = parse_quantize(quantize.as_deref())
            .map_err(CodedError::invalid)?
            .map(QuantPolicy::new);
        let precision: Precision = precision.parse().map_err(CodedError::invalid)?;
        let device = device().await?;
        let dtype = precision
            .resolve(device.supports_dtype(DType::F16))
            .map_err(CodedError::invalid)?;
        let mut builder = PipelineBuilder::new(name, &device, dtype);
        builder.set_quantization(policy);
        Ok(ModelLoader {
            builder: Some(builder),
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

    /// The files of a diffusers `tokenizer/` folder (absent ones as undefined).
    pub fn set_tokenizer(
        &mut self,
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
        self.builder()?.set_tokenizer(tokenizer);
        Ok(())
    }

    pub fn set_scheduler_config(&mut self, json: &str) -> Result<(), CodedError> {
        self.builder()?.set_scheduler_config(json).map_err(coded)
    }

    /// Starts a component (`text_encoder`, `unet`, `vae`, or `taesd` for previews): its config.json text, then the
    /// weights file's name (for errors) and byte size.
    pub fn begin_weights(
        &mut self,
        component: &str,
        config_json: &str,
        file: &str,
        size: f64,
    ) -> Result<(), CodedError> {
        let kind = Component::from_folder(component).ok_or_else(|| {
            CodedError::invalid(&format!("unknown model component {component:?}"))
        })?;
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
    pub fn push_weights(&mut self, bytes: &[u8]) -> Result<(), CodedError> {
        let flight = self
            .in_flight
            .as_mut()
            .ok_or_else(|| CodedError::invalid("push_weights before begin_weights"))?;
        flight
            .stream
            .push(&mut flight.load.store, bytes)
            .map_err(coded)
    }

    /// Checks the file was complete and builds the component (shape errors surface here).
    pub fn end_weights(&mut self) -> Result<(), CodedError> {
        let WeightsInFlight { mut load, stream } = self
            .in_flight
            .take()
            .ok_or_else(|| CodedError::invalid("end_weights before begin_weights"))?;
        stream.finish(&mut load.store).map_err(coded)?;
        self.builder()?.finish_component(load).map_err(coded)
    }

    pub fn build(&mut self) -> Result<Generator, CodedError> {
        let builder = self
            .builder
            .take()
            .ok_or_else(|| CodedError::invalid("this loader was already built"))?;
        let sd = builder.build().map_err(coded)?;
        Ok(Generator {
            sd: Rc::new(sd),
            cancel: Rc::new(Cell::new(false)),
        })
    }
}

/// What the page asks for; field names as in the JS API.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsRequest {
    prompt: String,
    #[serde(default)]
    negative_prompt: String,
    steps: usize,
    guidance: f64,
    #[serde(default)]
    scheduler: Option<String>,
    width: usize,
    height: usize,
    seed: f64,
    /// img2img strength; the pixels come as the `init_rgba` argument.
    #[serde(default)]
    strength: Option<f64>,
    /// [width, height] of `init_rgba` / `mask_rgba` (at their own size: resized here, by the
    /// code the CLI uses).
    #[serde(default)]
    init_image_size: Option<[usize; 2]>,
    #[serde(default)]
    mask_size: Option<[usize; 2]>,
    /// A preview after every this many steps (default 1; 0 turns them off).
    #[serde(default)]
    preview_every: Option<usize>,
}

struct DateClock;

impl Clock for DateClock {
    fn now_ms(&self) -> f64 {
        js_sys::Date::now()
    }
}

/// A loaded model; `free()` (wasm-bindgen) releases its GPU memory.
#[wasm_bindgen]
pub struct Generator {
    sd: Rc<StableDiffusion>,
    cancel: Rc<Cell<bool>>,
}

#[wasm_bindgen]
impl Generator {
    /// JSON: native size, size multiple, default scheduler, precision.
    pub fn info(&self) -> String {
        let sd = &self.sd;
        let native = sd.default_size();
        let scheduler = sd
            .scheduler_config
            .kind()
            .map(|k| k.name().to_string())
            .unwrap_or_default();
        let (steps, guidance) = sd.recommended_steps_guidance();
        serde_json::json!({
            "name": sd.name,
            "steps": steps,
            "guidance": guidance,
            "width": native,
            "height": native,
            "sizeMultiple": sd.vae_scale_factor(),
            "scheduler": scheduler,
            "f16": sd.dtype == DType::F16,
        })
        .to_string()
    }

    /// Stops the running generation before its next step.
    pub fn cancel(&self) {
        self.cancel.set(true);
    }

    /// `request_json`: {prompt, negativePrompt, steps, guidance, scheduler?, width, height, seed,
    /// strength?}; `init_rgba`: img2img pixels at width × height (RGBA8), or undefined;
    /// `mask_rgba`: inpainting mask at the same size (white = repaint), or undefined.
    /// `on_progress(json, pixels?)` gets JSON strings (`{"type":"step","step":3,"steps":20}`);
    /// `preview` events come with RGBA8 pixels at latent resolution.
    /// Resolves to {png: Uint8Array, width, height, seed, parameters, timings (JSON)}.
    pub fn generate(
        &self,
        request_json: String,
        init_rgba: Option<Vec<u8>>,
        mask_rgba: Option<Vec<u8>>,
        on_progress: js_sys::Function,
    ) -> js_sys::Promise {
        let sd = self.sd.clone();
        let cancel = self.cancel.clone();
        cancel.set(false);
        wasm_bindgen_futures::future_to_promise(async move {
            run_generate(
                &sd,
                &request_json,
                init_rgba,
                mask_rgba,
                &on_progress,
                &cancel,
            )
            .await
            .map_err(JsValue::from)
        })
    }
}

/// The request's init image and mask, prepared as the CLI prepares them.
fn init_image(
    req: &JsRequest,
    init_rgba: Option<&[u8]>,
    mask_rgba: Option<&[u8]>,
) -> Result<Option<InitImage>, CodedError> {
    let image = |rgba: &[u8], size: Option<[usize; 2]>, what: &str| {
        let [w, h] = size.ok_or_else(|| {
            CodedError::invalid(&format!("{what} pixels came without their size"))
        })?;
        RgbImage::from_rgba(rgba, w, h).map_err(|e| CodedError::invalid(&format!("{what}: {e}")))
    };
    let mask = mask_rgba
        .map(|m| image(m, req.mask_size, "mask"))
        .transpose()?;
    match init_rgba {
        Some(rgba) => {
            let init = image(rgba, req.init_image_size, "initImage")?;
            Ok(Some(InitImage::prepare(
                &init,
                mask.as_ref(),
                req.width,
                req.height,
                req.strength,
            )))
        }
        None if mask.is_some() => Err(CodedError::invalid(
            "a mask needs an init image (initImage) to inpaint",
        )),
        None => Ok(None),
    }
}

async fn run_generate(
    sd: &StableDiffusion,
    request_json: &str,
    init_rgba: Option<Vec<u8>>,
    mask_rgba: Option<Vec<u8>>,
    on_progress: &js_sys::Function,
    cancel: &Cell<bool>,
) -> Result<JsValue, CodedError> {
    let request = parse_request(request_json, init_rgba.as_deref(), mask_rgba.as_deref())?;
    let mut progress = |p: Progress| emit_progress(on_progress, p);
    let out = sd
        .generate_cancellable(&request, &DateClock, &mut progress, &|| cancel.get())
        .await?;
    let params = request.a1111_parameters(out.scheduler, &sd.name, None);
    let png =
        encode_png(&out.rgb, out.width as u32, out.height as u32, &params).map_err(internal)?;
    let strength = request.init_image.as_ref().map(|i| i.strength);
    // What the result is, so the page never re-derives it from the parameters text.
    let mode = match &request.init_image {
        None => "txt2img",
        Some(init) if init.mask.is_some() => "inpaint",
        Some(_) => "img2img",
    };
    let result = js_sys::Object::new();
    let set = |key: &str, value: JsValue| {
        js_sys::Reflect::set(&result, &JsValue::from_str(key), &value).map(|_| ())
    };
    let timings = serde_json::to_string(&out.timings).map_err(internal)?;
    set("png", js_sys::Uint8Array::from(png.as_slice()).into())
        .and_then(|_| set("width", (out.width as f64).into()))
        .and_then(|_| set("height", (out.height as f64).into()))
        .and_then(|_| set("seed", (request.seed as f64).into()))
        .and_then(|_| set("scheduler", out.scheduler.name().into()))
        .and_then(|_| set("parameters", params.to_a1111().into()))
        .and_then(|_| set("timings", timings.into()))
        .and_then(|_| set("mode", mode.into()))
        .and_then(|_| set("strength", strength.map_or(JsValue::NULL, JsValue::from)))
        .map_err(|_| internal("could not build the result object"))?;
    Ok(result.into())
}

/// The JS API's options (and the init image / mask pixels) as a request.
fn parse_request(
    request_json: &str,
    init_rgba: Option<&[u8]>,
    mask_rgba: Option<&[u8]>,
) -> Result<GenerateRequest, CodedError> {
    let req: JsRequest = serde_json::from_str(request_json)
        .map_err(|e| CodedError::invalid(format!("invalid generate() options: {e}")))?;
    if !(req.seed >= 0.0 && req.seed.fract() == 0.0 && req.seed <= 9_007_199_254_740_991.0) {
        return Err(CodedError::invalid(format!(
            "seed {} must be a whole number from 0 to 2^53-1",
            req.seed
        )));
    }
    let scheduler = match req.scheduler.as_deref() {
        None | Some("") => None,
        Some(name) => Some(name.parse::<SchedulerKind>().map_err(CodedError::invalid)?),
    };
    let init_image = init_image(&req, init_rgba, mask_rgba)?;
    Ok(GenerateRequest {
        prompt: req.prompt,
        negative_prompt: req.negative_prompt,
        steps: req.steps,
        guidance: req.guidance,
        scheduler,
        width: req.width,
        height: req.height,
        seed: req.seed as u64,
        init_noise: None,
        init_image,
        preview_every: Some(req.preview_every.unwrap_or(1)).filter(|&n| n > 0),
    })
}

/// One progress event to the worker's callback: (JSON text[, RGBA pixels of a preview]).
fn emit_progress(on_progress: &js_sys::Function, p: Progress) {
    // A throwing progress handler must not abort the generation.
    let emit = |value: serde_json::Value| {
        let _ = on_progress.call1(&JsValue::NULL, &JsValue::from_str(&value.to_string()));
    };
    match p {
        Progress::Compiling => emit(serde_json::json!({ "type": "compiling" })),
        Progress::Compiled { pipelines, ms } => emit(serde_json::json!({
            "type": "compiled", "pipelines": pipelines, "ms": ms,
        })),
        Progress::Tokenized {
            truncated,
            token_count,
            max_length,
        } => emit(serde_json::json!({
            "type": "tokenized", "truncated": truncated,
            "tokens": token_count, "maxTokens": max_length,
        })),
        Progress::TextEncoded => emit(serde_json::json!({ "type": "text-encoded" })),
        Progress::Step { index, total, ms } => emit(serde_json::json!({
            "type": "step", "step": index, "steps": total, "ms": ms,
        })),
        Progress::Preview {
            index,
            total,
            rgb,
            width: w,
            height: h,
        } => {
            let rgba: Vec<u8> = rgb
                .chunks_exact(3)
                .flat_map(|px| [px[0], px[1], px[2], 255])
                .collect();
            let event = serde_json::json!({
                "type": "preview", "step": index, "steps": total, "width": w, "height": h,
            });
            let _ = on_progress.call2(
                &JsValue::NULL,
                &JsValue::from_str(&event.to_string()),
                &js_sys::Uint8Array::from(rgba.as_slice()),
            );
        }
        Progress::Decoded => emit(serde_json::json!({ "type": "decoded" })),
    }
}

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
