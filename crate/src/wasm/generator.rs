//! [`Generator`]: a loaded model's `generate()`, the same pipeline code as the CLI.

use std::cell::Cell;
use std::rc::Rc;

use burn::tensor::DType;
use wasm_bindgen::prelude::*;

use super::error::{CodedError, internal};
use super::js_types::{GenerateOptions, GenerateResult, ModelInfo, from_js, timings_for_js, to_js};
use crate::image_io::RgbImage;
use crate::options::PromptSyntax;
use crate::pipeline::{Clock, GenerateRequest, InitImage, Progress, StableDiffusion};
use crate::png_meta::encode_png;
use crate::schedulers::SchedulerKind;

struct DateClock;

impl Clock for DateClock {
    fn now_ms(&self) -> f64 {
        js_sys::Date::now()
    }
}

/// A loaded model; `free()` (wasm-bindgen) releases its GPU memory.
#[wasm_bindgen]
pub struct Generator {
    pub(super) sd: Rc<StableDiffusion>,
    pub(super) cancel: Rc<Cell<bool>>,
    /// The LoRAs merged at load: prompt tags must name them; the parameters text records them.
    pub(super) loras: Rc<crate::lora::LoraSet>,
}

#[wasm_bindgen]
impl Generator {
    /// {name, steps, guidance, width, height, sizeMultiple, scheduler, f16, kernels}: the
    /// model's native size and recommended settings.
    pub fn info(&self) -> Result<JsValue, CodedError> {
        let sd = &self.sd;
        let native = sd.default_size();
        let (steps, guidance) = sd.recommended_steps_guidance();
        to_js(&ModelInfo {
            name: sd.name().to_string(),
            steps,
            guidance,
            width: native,
            height: native,
            size_multiple: sd.vae_scale_factor(),
            scheduler: sd
                .scheduler_config()
                .kind()
                .map(|k| k.name().to_string())
                .unwrap_or_default(),
            f16: sd.dtype() == DType::F16,
            kernels: sd.kernels().name(),
        })
    }

    /// Stops the running generation before its next step.
    pub fn cancel(&self) {
        self.cancel.set(true);
    }

    /// `options`: {prompt, negativePrompt, steps, guidance, scheduler?, width, height, seed,
    /// strength?, initImageSize?, maskSize?, previewEvery?}; `init_rgba`: img2img pixels at
    /// initImageSize (RGBA8), or undefined; `mask_rgba`: inpainting mask at maskSize (white =
    /// repaint), or undefined. `on_progress(event, pixels?)` gets event objects (`{type:
    /// "step", step: 3, steps: 20, ms}`); `preview` events come with RGBA8 pixels.
    /// Resolves to {png: Uint8Array, width, height, seed, scheduler, parameters, timings,
    /// mode, strength}.
    pub fn generate(
        &self,
        options: JsValue,
        init_rgba: Option<Vec<u8>>,
        mask_rgba: Option<Vec<u8>>,
        on_progress: js_sys::Function,
    ) -> js_sys::Promise {
        let sd = self.sd.clone();
        let cancel = self.cancel.clone();
        let loras = self.loras.clone();
        cancel.set(false);
        wasm_bindgen_futures::future_to_promise(async move {
            let request = parse_request(options, init_rgba.as_deref(), mask_rgba.as_deref())?;
            run_generate(&sd, &loras, request, &on_progress, &cancel)
                .await
                .map_err(JsValue::from)
        })
    }
}

async fn run_generate(
    sd: &StableDiffusion,
    loras: &crate::lora::LoraSet,
    mut request: GenerateRequest,
    on_progress: &js_sys::Function,
    cancel: &Cell<bool>,
) -> Result<JsValue, CodedError> {
    // `<lora:NAME:WEIGHT>` tags name LoRAs merged at load; the text encoder reads the prompt
    // without them, the parameters text keeps them (as the CLI's does).
    let (prompt, tags) =
        crate::lora::prompt_tags::take_lora_tags(&request.prompt).map_err(CodedError::invalid)?;
    loras.check_tags(&tags).map_err(CodedError::invalid)?;
    let written_prompt = std::mem::replace(&mut request.prompt, prompt);
    let mut progress = |p: Progress| emit_progress(on_progress, p);
    let out = sd
        .generate_cancellable(&request, &DateClock, &mut progress, &|| cancel.get())
        .await?;
    let mut params = request.a1111_parameters(out.scheduler, sd.name(), None);
    if let Some(field) = loras.a1111_hashes() {
        params.prompt = loras.prompt_with_tags(&written_prompt, &tags);
        params.extra.push(field);
    }
    let png =
        encode_png(&out.rgb, out.width as u32, out.height as u32, &params).map_err(internal)?;
    // What the result is, so the page never re-derives it from the parameters text.
    let mode = match &request.init_image {
        None => "txt2img",
        Some(init) if init.mask.is_some() => "inpaint",
        Some(_) => "img2img",
    };
    let result = to_js(&GenerateResult {
        width: out.width,
        height: out.height,
        seed: request.seed,
        scheduler: out.scheduler.name(),
        parameters: params.to_a1111(),
        timings: timings_for_js(&out.timings)?,
        mode,
        strength: request.init_image.as_ref().map(|i| i.strength),
    })?;
    let png = js_sys::Uint8Array::from(png.as_slice());
    js_sys::Reflect::set(&result, &JsValue::from_str("png"), &png)
        .map_err(|_| internal("could not set the result's png"))?;
    Ok(result)
}

/// The JS API's options (and the init image / mask pixels) as a request.
fn parse_request(
    options: JsValue,
    init_rgba: Option<&[u8]>,
    mask_rgba: Option<&[u8]>,
) -> Result<GenerateRequest, CodedError> {
    let req: GenerateOptions = from_js(options, "generate() options")?;
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
    let prompt_syntax = match req.prompt_syntax.as_deref() {
        None | Some("") => PromptSyntax::default(),
        Some(name) => name.parse().map_err(CodedError::invalid)?,
    };
    let init_image = init_image(&req, init_rgba, mask_rgba)?;
    Ok(GenerateRequest {
        prompt: req.prompt,
        negative_prompt: req.negative_prompt,
        prompt_syntax,
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

/// The request's init image and mask, prepared as the CLI prepares them.
fn init_image(
    req: &GenerateOptions,
    init_rgba: Option<&[u8]>,
    mask_rgba: Option<&[u8]>,
) -> Result<Option<InitImage>, CodedError> {
    let image = |rgba: &[u8], size: Option<[usize; 2]>, what: &str| {
        let [w, h] = size
            .ok_or_else(|| CodedError::invalid(format!("{what} pixels came without their size")))?;
        RgbImage::from_rgba(rgba, w, h).map_err(|e| CodedError::invalid(format!("{what}: {e}")))
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

/// One progress event to the worker's callback: (event object[, RGBA8 pixels of a preview]).
fn emit_progress(on_progress: &js_sys::Function, p: Progress) {
    let Ok(event) = to_js(&p) else { return };
    // A throwing progress handler must not abort the generation.
    let _ = match &p {
        Progress::Preview { rgb, .. } => {
            let rgba: Vec<u8> = rgb
                .chunks_exact(3)
                .flat_map(|px| [px[0], px[1], px[2], 255])
                .collect();
            let pixels = js_sys::Uint8Array::from(rgba.as_slice());
            on_progress.call2(&JsValue::NULL, &event, &pixels)
        }
        _ => on_progress.call1(&JsValue::NULL, &event),
    };
}
