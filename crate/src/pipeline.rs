//! StableDiffusionPipeline: a diffusers model folder → prompt → image, as diffusers does it.

use std::path::Path;

use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::checks;
use crate::config::{ConfigError, ConfigReader};
use crate::image_io::{self, RgbImage};
use crate::launches::{CompilePass, DispatchCounter};
use crate::layout;
use crate::models::autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
use crate::models::autoencoder_tiny::{AutoencoderTiny, AutoencoderTinyConfig};
use crate::models::clip_text_model::{ClipTextConfig, ClipTextModel};
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::noise::NoiseGenerator;
use crate::schedulers::{self, SchedulerConfig, SchedulerError, SchedulerKind};
use crate::tokenizer::{ClipTokenizer, TokenizerError};
use crate::weights::{QuantPolicy, TensorStore, WeightError, find_component_file};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("{0}")]
    Invalid(String),
    /// A stage produced NaN or infinity (the message names the stage).
    #[error("{0}")]
    NonFinite(String),
    #[error("GPU execution failed: {0}")]
    Execution(String),
    #[error("generation cancelled")]
    Cancelled,
}

impl PipelineError {
    /// A stable name for the kind of failure (the wasm boundary hands it to JS as `code`).
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Config(_) => "config",
            PipelineError::Weights(e) => e.code(),
            PipelineError::Tokenizer(_) => "tokenizer",
            PipelineError::Scheduler(_) => "scheduler",
            PipelineError::Invalid(_) => "invalid-request",
            PipelineError::NonFinite(_) => "non-finite",
            PipelineError::Execution(_) => "gpu",
            PipelineError::Cancelled => "cancelled",
        }
    }
}

/// Everything loaded from a diffusers `StableDiffusionPipeline` folder.
pub struct StableDiffusion {
    pub name: String,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub scheduler_config: SchedulerConfig,
    pub device: Device,
    pub dtype: DType,
    /// TAESD for step previews (optional; without it previews use a latent projection).
    pub preview_decoder: Option<AutoencoderTiny>,
    /// The request shapes whose pipelines [`StableDiffusion::compile`] has compiled.
    pub compiled: std::sync::Mutex<Vec<CompileKey>>,
}

/// Per-stage wall times in milliseconds (GPU work included: each stage ends with a readback)
/// and GPU dispatch counts.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timings {
    pub tokenize_ms: f64,
    /// The compile pass before the first step (0 when these shapes were compiled before).
    pub compile_ms: f64,
    /// Distinct pipelines that pass launched (0 when it did not run).
    pub compiled_pipelines: usize,
    pub text_encoder_ms: f64,
    pub text_encoder_dispatches: usize,
    pub unet_steps_ms: Vec<f64>,
    /// GPU dispatches of each step (UNet, guidance, readback).
    pub unet_step_dispatches: Vec<usize>,
    pub vae_decode_ms: f64,
    pub vae_decode_dispatches: usize,
    pub total_ms: f64,
}

/// What decides the pipelines a generation needs: its shapes and stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileKey {
    pub width: usize,
    pub height: usize,
    pub cfg: bool,
    /// An init image (the VAE encoder runs).
    pub init_image: bool,
}

#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance: f64,
    /// None: the model's own scheduler_config.json class.
    pub scheduler: Option<SchedulerKind>,
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    /// Unit-normal initial latents `[1, C, H/f, W/f]`, like diffusers' `latents=`.
    pub init_noise: Option<Vec<f32>>,
    /// img2img: start from this image instead of pure noise.
    pub init_image: Option<InitImage>,
}

/// The image img2img starts from, already at the request's width × height.
#[derive(Clone, Debug)]
pub struct InitImage {
    /// RGB8, row-major, `width * height * 3`.
    pub rgb: Vec<u8>,
    /// How much to change it, in (0, 1]: the share of the schedule that is run (diffusers'
    /// `strength`); 1 ignores the image's content (inpainting's default).
    pub strength: f64,
    /// Inpainting: grayscale `width * height`, white (≥ 128) = repaint, black = keep.
    pub mask: Option<Vec<u8>>,
}

impl InitImage {
    /// The init image (and mask) at the generation size, prepared by the same code natively
    /// and in the browser (which hands over the pixels at their own size), so one input gives
    /// one image everywhere. `strength`: None takes [`crate::options::default_strength`].
    pub fn prepare(
        image: &RgbImage,
        mask: Option<&RgbImage>,
        width: usize,
        height: usize,
        strength: Option<f64>,
    ) -> Self {
        let mask =
            mask.map(|m| image_io::to_gray(&image_io::resize_bilinear(m, width, height).rgb));
        InitImage {
            rgb: image_io::resize_bilinear(image, width, height).rgb,
            strength: strength.unwrap_or(crate::options::default_strength(mask.is_some())),
            mask,
        }
    }

    /// diffusers' `get_timesteps`: the first step of the schedule that runs for `strength`.
    pub fn first_step(&self, steps: usize) -> Result<usize, PipelineError> {
        checks::check_strength(self.strength).map_err(PipelineError::Invalid)?;
        // Python's int() truncates, as diffusers does.
        let run = ((steps as f64 * self.strength) as usize).min(steps);
        if run == 0 {
            return Err(PipelineError::Invalid(format!(
                "strength {} with {steps} steps runs no step; raise the strength or the steps (at least {:.3})",
                self.strength,
                1.0 / steps as f64
            )));
        }
        Ok(steps - run)
    }
}

/// What [`StableDiffusion::compile`] did.
#[derive(Clone, Debug)]
pub struct CompileReport {
    pub pipelines: usize,
    pub ms: f64,
}

/// The final latents of [`StableDiffusion::denoise`], before the VAE.
pub struct DenoisedLatents {
    pub latents: Vec<f32>,
    pub shape: [usize; 4],
    pub scheduler: SchedulerKind,
    pub timings: Timings,
}

pub struct GenerateOutput {
    /// RGB8, row-major, `width * height * 3`.
    pub rgb: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub scheduler: SchedulerKind,
    pub timings: Timings,
}

#[derive(Clone, Debug)]
pub enum Progress {
    /// The compile pass starts: it compiles every pipeline the generation needs (first
    /// generation at a size only).
    Compiling,
    /// It ended: `pipelines` distinct compute pipelines in `ms`.
    Compiled {
        pipelines: usize,
        ms: f64,
    },
    Tokenized {
        truncated: bool,
        token_count: usize,
        max_length: usize,
    },
    TextEncoded,
    Step {
        index: usize,
        total: usize,
        ms: f64,
    },
    /// A preview of the image after step `index`: TAESD's decode at image size when a
    /// preview decoder is loaded, else the cheap latent projection at latent size.
    Preview {
        index: usize,
        total: usize,
        /// RGB8, `width * height * 3`.
        rgb: Vec<u8>,
        width: usize,
        height: usize,
    },
    Decoded,
}

/// A monotonic clock that also works in wasm (where `std::time::Instant` panics).
pub trait Clock {
    fn now_ms(&self) -> f64;
}

pub struct StdClock(std::time::Instant);

impl Default for StdClock {
    fn default() -> Self {
        Self(std::time::Instant::now())
    }
}

impl Clock for StdClock {
    fn now_ms(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1000.0
    }
}

/// The three weight-carrying components of a pipeline, by their diffusers folder names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    TextEncoder,
    Unet,
    Vae,
    /// Optional TAESD for previews (its own repository, e.g. madebyollin/taesd).
    PreviewDecoder,
}

impl Component {
    /// What every pipeline folder has.
    pub const ALL: [Component; 3] = [Component::TextEncoder, Component::Unet, Component::Vae];

    pub fn from_folder(name: &str) -> Option<Self> {
        [
            Self::TextEncoder,
            Self::Unet,
            Self::Vae,
            Self::PreviewDecoder,
        ]
        .into_iter()
        .find(|c| c.folder() == name)
    }

    pub fn folder(self) -> &'static str {
        match self {
            Self::TextEncoder => "text_encoder",
            Self::Unet => "unet",
            Self::Vae => "vae",
            Self::PreviewDecoder => "taesd",
        }
    }

    /// The weights file stem (`model.safetensors`, `diffusion_pytorch_model.fp16.safetensors`).
    pub fn weights_stem(self) -> &'static str {
        match self {
            Self::TextEncoder => "model",
            Self::Unet | Self::Vae | Self::PreviewDecoder => "diffusion_pytorch_model",
        }
    }
}

enum ComponentConfig {
    TextEncoder(ClipTextConfig),
    Unet(UNet2DConditionConfig),
    Vae(AutoencoderKLConfig),
    PreviewDecoder(AutoencoderTinyConfig),
}

/// One component whose config is parsed and whose weights are being received.
pub struct ComponentLoad {
    config: ComponentConfig,
    pub store: TensorStore,
}

/// Assembles a [`StableDiffusion`] from parts that arrive one by one: from a folder natively,
/// from network/cache streams in the browser. Each component is built (and its store
/// released) as soon as its weights are in, so only one component's loading state lives at once.
pub struct PipelineBuilder {
    name: String,
    device: Device,
    dtype: DType,
    tokenizer: Option<ClipTokenizer>,
    text_encoder: Option<ClipTextModel>,
    unet: Option<UNet2DConditionModel>,
    vae: Option<AutoencoderKL>,
    preview_decoder: Option<AutoencoderTiny>,
    scheduler_config: Option<SchedulerConfig>,
    quantization: Option<QuantPolicy>,
}

impl PipelineBuilder {
    pub fn new(name: impl Into<String>, device: &Device, dtype: DType) -> Self {
        Self {
            name: name.into(),
            device: device.clone(),
            dtype,
            tokenizer: None,
            text_encoder: None,
            unet: None,
            vae: None,
            preview_decoder: None,
            scheduler_config: None,
            quantization: None,
        }
    }

    /// Quantise float weights of the text encoder, UNet and VAE as they load (weights that
    /// arrive already quantised stay so either way).
    pub fn set_quantization(&mut self, policy: Option<QuantPolicy>) {
        self.quantization = policy;
    }

    pub fn set_tokenizer(&mut self, tokenizer: ClipTokenizer) {
        self.tokenizer = Some(tokenizer);
    }

    pub fn set_scheduler_config(&mut self, json: &str) -> Result<(), PipelineError> {
        self.scheduler_config = Some(SchedulerConfig::from_json(json)?);
        Ok(())
    }

    /// Parses a component's config.json (`source` names it in errors) and opens its store.
    pub fn begin_component(
        &self,
        component: Component,
        config_json: &str,
        source: &str,
    ) -> Result<ComponentLoad, PipelineError> {
        let reader = ConfigReader::parse(config_json, source)?;
        let (config, dtype) = match component {
            Component::TextEncoder => (
                ComponentConfig::TextEncoder(ClipTextConfig::from_reader(reader)?),
                self.dtype,
            ),
            Component::Unet => (
                ComponentConfig::Unet(UNet2DConditionConfig::from_reader(reader)?),
                self.dtype,
            ),
            Component::Vae => {
                let config = AutoencoderKLConfig::from_reader(reader)?;
                // diffusers runs SD's VAE in f32 (`force_upcast`): f16 overflows in the decoder.
                let dtype = if config.force_upcast {
                    DType::F32
                } else {
                    self.dtype
                };
                (ComponentConfig::Vae(config), dtype)
            }
            Component::PreviewDecoder => (
                ComponentConfig::PreviewDecoder(AutoencoderTinyConfig::from_reader(reader)?),
                DType::F32,
            ),
        };
        let mut store = TensorStore::new(&self.device, dtype, source.to_string());
        if let Some(policy) = &self.quantization
            && component != Component::PreviewDecoder
        {
            store.set_quantization(policy.clone(), component.folder());
        }
        Ok(ComponentLoad { config, store })
    }

    /// Builds the component from its received weights; the store is dropped afterwards.
    pub fn finish_component(&mut self, load: ComponentLoad) -> Result<(), PipelineError> {
        let root = load.store.root();
        match load.config {
            ComponentConfig::TextEncoder(c) => {
                self.text_encoder = Some(ClipTextModel::load(&root, c)?)
            }
            ComponentConfig::Unet(c) => self.unet = Some(UNet2DConditionModel::load(&root, c)?),
            ComponentConfig::Vae(c) => self.vae = Some(AutoencoderKL::load(&root, c, true)?),
            ComponentConfig::PreviewDecoder(c) => {
                self.preview_decoder = Some(AutoencoderTiny::load(&root, c)?)
            }
        }
        Ok(())
    }

    pub fn build(self) -> Result<StableDiffusion, PipelineError> {
        let name = self.name;
        let missing =
            |what: &str| PipelineError::Invalid(format!("model {name}: {what} was not loaded"));
        let tokenizer = self.tokenizer.ok_or_else(|| missing("tokenizer"))?;
        let text_encoder = self.text_encoder.ok_or_else(|| missing("text_encoder"))?;
        let unet = self.unet.ok_or_else(|| missing("unet"))?;
        let vae = self.vae.ok_or_else(|| missing("vae"))?;
        let scheduler_config = self
            .scheduler_config
            .ok_or_else(|| missing("scheduler/scheduler_config.json"))?;
        Ok(StableDiffusion {
            name,
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
            device: self.device,
            dtype: self.dtype,
            preview_decoder: self.preview_decoder,
            compiled: Default::default(),
        })
    }
}

impl StableDiffusion {
    /// Loads a diffusers folder. `dtype`: F32 (always works) or F16 (needs shader-f16).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, PipelineError> {
        Self::load_quantized(dir, device, dtype, None)
    }

    /// [`Self::load`], quantising weights as `quantization` says while they stream in.
    pub fn load_quantized(
        dir: &Path,
        device: &Device,
        dtype: DType,
        quantization: Option<QuantPolicy>,
    ) -> Result<Self, PipelineError> {
        let index = dir.join(layout::MODEL_INDEX);
        if !index.is_file() {
            return Err(PipelineError::Invalid(format!(
                "{} is not a diffusers model folder (no model_index.json)",
                dir.display()
            )));
        }
        crate::model_index::check_model_index(&read_text(&index)?, &index.display().to_string())
            .map_err(PipelineError::Invalid)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let mut builder = PipelineBuilder::new(name, device, dtype);
        builder.set_quantization(quantization);
        builder.set_tokenizer(ClipTokenizer::from_dir(
            &dir.join(layout::TOKENIZER_FOLDER),
        )?);
        for component in Component::ALL {
            let config_path = dir.join(layout::config_path(component));
            let config_text = read_text(&config_path)?;
            let mut load = builder.begin_component(
                component,
                &config_text,
                &config_path.display().to_string(),
            )?;
            let weights = find_component_file(
                &dir.join(component.folder()),
                component.weights_stem(),
                dtype == DType::F16,
            )?;
            load.store
                .load_safetensors_file(&weights, &|n| Some(n.to_string()))?;
            builder.finish_component(load)?;
        }
        builder.set_scheduler_config(&read_text(&dir.join(layout::SCHEDULER_CONFIG))?)?;
        builder.build()
    }

    /// Loads TAESD (a diffusers `AutoencoderTiny` folder: config.json + weights) for previews.
    pub fn load_preview_decoder(&mut self, dir: &Path) -> Result<(), PipelineError> {
        let config_path = dir.join("config.json");
        let text = read_text(&config_path)?;
        let config = AutoencoderTinyConfig::from_reader(ConfigReader::parse(
            &text,
            &config_path.display().to_string(),
        )?)?;
        let mut store = TensorStore::new(&self.device, DType::F32, dir.display().to_string());
        let weights = find_component_file(dir, "diffusion_pytorch_model", false)?;
        // Previews need the decoder only.
        store.load_safetensors_file(&weights, &|n| {
            (!n.starts_with("encoder.")).then(|| n.to_string())
        })?;
        self.preview_decoder = Some(AutoencoderTiny::load(&store.root(), config)?);
        Ok(())
    }

    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config().scale_factor()
    }

    /// The model's native resolution: UNet sample_size × VAE factor (512 for SD 1.5, 768 for 2.1).
    pub fn default_size(&self) -> usize {
        self.unet.config().sample_size * self.vae_scale_factor()
    }

    /// Steps and guidance suited to the model, read from its scheduler config: LCM-distilled
    /// models want 4 steps at guidance 1, trailing-timestep (SD-Turbo-style) models 1 step
    /// without guidance, everything else diffusers' 20 steps at 7.5 (our CLI default is 20).
    pub fn recommended_steps_guidance(&self) -> (usize, f64) {
        recommended_steps_guidance(&self.scheduler_config)
    }

    /// Everything about `req` that can be wrong, checked before any GPU work: steps, guidance,
    /// size (a multiple of the VAE factor up to `checks::MAX_SIDE`, activations within the
    /// adapter's binding limit), strength, the init noise's length and values.
    pub fn check_request(&self, req: &GenerateRequest) -> Result<(), PipelineError> {
        let f = self.vae_scale_factor();
        checks::check_steps(req.steps).map_err(PipelineError::Invalid)?;
        checks::check_guidance(req.guidance).map_err(PipelineError::Invalid)?;
        checks::check_side("width", req.width, f).map_err(PipelineError::Invalid)?;
        checks::check_side("height", req.height, f).map_err(PipelineError::Invalid)?;
        let batch = if req.guidance > 1.0 { 2 } else { 1 };
        let max_binding = crate::kernels::device_max_binding_bytes(&self.device);
        let channels = &self.unet.config().block_out_channels;
        checks::check_activations(
            req.width,
            req.height,
            f,
            channels,
            batch,
            self.dtype.size(),
            max_binding,
        )
        .map_err(PipelineError::Invalid)?;
        if let Some(init) = &req.init_image {
            checks::check_strength(init.strength).map_err(PipelineError::Invalid)?;
        }
        if let Some(noise) = &req.init_noise {
            let n = self.vae.config().latent_channels * (req.width / f) * (req.height / f);
            if noise.len() != n {
                return Err(PipelineError::Invalid(format!(
                    "initial noise has {} values, expected {n} for {}x{}",
                    noise.len(),
                    req.width,
                    req.height
                )));
            }
            checks::check_finite("initial noise", noise).map_err(PipelineError::Invalid)?;
        }
        Ok(())
    }

    /// Token ids for the text encoder: with CFG `[negative, prompt]`, as diffusers stacks them.
    pub fn tokenize(
        &self,
        prompt: &str,
        negative: &str,
        cfg: bool,
        progress: &mut dyn FnMut(Progress),
    ) -> Vec<Vec<u32>> {
        let encoded = self.tokenizer.encode(prompt);
        progress(Progress::Tokenized {
            truncated: encoded.truncated,
            token_count: encoded.token_count,
            max_length: self.tokenizer.max_length(),
        });
        let mut rows = Vec::new();
        if cfg {
            rows.push(self.tokenizer.encode(negative).ids);
        }
        rows.push(encoded.ids);
        rows
    }

    /// Runs the whole pipeline. Async because browsers can only read GPU results asynchronously.
    pub async fn generate(
        &self,
        req: &GenerateRequest,
        clock: &dyn Clock,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<GenerateOutput, PipelineError> {
        self.generate_cancellable(req, clock, progress, &|| false)
            .await
    }

    /// [`Self::generate`] that checks `cancelled` before each step and before decoding, so a
    /// cancel takes effect within one step ([`PipelineError::Cancelled`]).
    pub async fn generate_cancellable(
        &self,
        req: &GenerateRequest,
        clock: &dyn Clock,
        progress: &mut dyn FnMut(Progress),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<GenerateOutput, PipelineError> {
        let t_start = clock.now_ms();
        let denoised = self.denoise(req, clock, progress, cancelled).await?;
        let mut timings = denoised.timings;
        if cancelled() {
            return Err(PipelineError::Cancelled);
        }
        let t_dec = clock.now_ms();
        let counter = DispatchCounter::start();
        let rgb = self
            .decode_to_rgb(&denoised.latents, denoised.shape)
            .await?;
        timings.vae_decode_dispatches = counter.count();
        drop(counter);
        timings.vae_decode_ms = clock.now_ms() - t_dec;
        progress(Progress::Decoded);
        timings.total_ms = clock.now_ms() - t_start;
        Ok(GenerateOutput {
            rgb,
            width: req.width,
            height: req.height,
            scheduler: denoised.scheduler,
            timings,
        })
    }

    /// Everything up to the VAE: prompt encoding and the denoising loop (the benchmark's
    /// `--no-decode` stops here). Timings hold the text encoder and step times.
    pub async fn denoise(
        &self,
        req: &GenerateRequest,
        clock: &dyn Clock,
        progress: &mut dyn FnMut(Progress),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<DenoisedLatents, PipelineError> {
        self.check_request(req)?;
        let mut timings = Timings::default();
        let cfg = req.guidance > 1.0;
        let kind = match req.scheduler {
            Some(kind) => kind,
            None => self.scheduler_config.kind()?,
        };
        let mut scheduler = schedulers::build(kind, &self.scheduler_config, req.steps)?;
        if let Some(report) = self.compile(req, clock, progress).await? {
            timings.compile_ms = report.ms;
            timings.compiled_pipelines = report.pipelines;
        }

        let t0 = clock.now_ms();
        let ids = self.tokenize(&req.prompt, &req.negative_prompt, cfg, progress);
        timings.tokenize_ms = clock.now_ms() - t0;
        let t1 = clock.now_ms();
        let counter = DispatchCounter::start();
        let context = self.text_encoder.forward(&ids);
        // Reading one value waits for the encoder, so its time is not billed to the first step.
        read_back(context.clone().slice([0..1, 0..1, 0..1])).await?;
        timings.text_encoder_dispatches = counter.count();
        drop(counter);
        timings.text_encoder_ms = clock.now_ms() - t1;
        progress(Progress::TextEncoded);

        let f = self.vae_scale_factor();
        let channels = self.vae.config().latent_channels;
        let shape = [1, channels, req.height / f, req.width / f];
        let unet_channels = self.unet.config().in_channels;
        let inpaint_unet = unet_channels == 2 * channels + 1;
        if unet_channels != channels && !inpaint_unet {
            return Err(PipelineError::Invalid(format!(
                "the UNet takes {unet_channels} input channels; expected {channels} (text-to-image) or {} (inpainting)",
                2 * channels + 1
            )));
        }
        if inpaint_unet
            && req
                .init_image
                .as_ref()
                .and_then(|i| i.mask.as_ref())
                .is_none()
        {
            return Err(PipelineError::Invalid(
                "this is an inpainting model (9-channel UNet): give an image and a mask".into(),
            ));
        }
        let n: usize = shape.iter().product();
        // One generator per image, drawn in diffusers' order: txt2img takes the initial noise
        // first (so a seed reproduces the --init-noise image); img2img the VAE posterior sample,
        // then the noise added to it; then any per-step noise (Euler a, LCM).
        let mut generator = NoiseGenerator::new(req.seed);
        let mut inpaint: Option<Inpainting> = None;
        let (first_step, mut latents) = match &req.init_image {
            Some(init) if init.mask.is_some() => {
                // StableDiffusionInpaintPipeline: image latents (4-channel UNet or strength < 1),
                // noise, then the masked image's latents, each from the generator in that order.
                let first = init.first_step(req.steps)?;
                let strength_max = init.strength == 1.0;
                let pixels = rgb_to_unit(&init.rgb, req.width, req.height)?;
                let image_latents = if !inpaint_unet || !strength_max {
                    Some(
                        self.encode_pixels(&pixels, req.width, req.height, &mut generator)
                            .await?,
                    )
                } else {
                    None
                };
                let noise = generator.normal(n);
                let latents = match &image_latents {
                    Some(image) if !strength_max => scheduler.add_noise(image, &noise, first),
                    _ => {
                        let sigma = scheduler.init_noise_sigma() as f32;
                        noise.iter().map(|v| v * sigma).collect()
                    }
                };
                let mask = binarize_mask(
                    init.mask.as_deref().unwrap_or_default(),
                    req.width,
                    req.height,
                )?;
                let masked: Vec<f32> = pixels
                    .iter()
                    .enumerate()
                    .map(|(k, v)| if mask[k / 3] { 0.0 } else { *v })
                    .collect();
                let masked_latents = self
                    .encode_pixels(&masked, req.width, req.height, &mut generator)
                    .await?;
                inpaint = Some(Inpainting {
                    latent_mask: downsample_mask(&mask, req.width, req.height, shape[3], shape[2]),
                    image_latents,
                    masked_latents,
                    noise,
                });
                (first, latents)
            }
            Some(init) => {
                let first = init.first_step(req.steps)?;
                let image_latents = self
                    .encode_image(&init.rgb, req.width, req.height, &mut generator)
                    .await?;
                let noise = generator.normal(n);
                (first, scheduler.add_noise(&image_latents, &noise, first))
            }
            None => {
                let generated = generator.normal(n);
                let noise = match &req.init_noise {
                    Some(values) => values.clone(),
                    None => generated,
                };
                let sigma = scheduler.init_noise_sigma() as f32;
                (0, noise.iter().map(|v| v * sigma).collect())
            }
        };

        let timesteps = scheduler.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate().skip(first_step) {
            if cancelled() {
                return Err(PipelineError::Cancelled);
            }
            let t_step = clock.now_ms();
            let counter = DispatchCounter::start();
            let scale = scheduler.input_scale(i) as f32;
            let mut scaled: Vec<f32> = latents.iter().map(|v| v * scale).collect();
            let mut input_shape = shape;
            if let (true, Some(inp)) = (inpaint_unet, &inpaint) {
                // [latents, mask, masked image latents] along channels (batch 1: plane order).
                scaled.extend(inp.latent_mask.iter().copied());
                scaled.extend_from_slice(&inp.masked_latents);
                input_shape[1] = unet_channels;
            }
            let x = Tensor::<4>::from_data(TensorData::new(scaled, input_shape), &self.device);
            let noise_pred = self.guided_noise(x, t, &context, cfg.then_some(req.guidance));
            let model_output = read_back(noise_pred).await?;
            let what = format!(
                "the UNet's output at step {} of {}",
                i + 1 - first_step,
                timesteps.len() - first_step
            );
            checks::check_finite(&what, &model_output).map_err(|m| non_finite(m, self.dtype))?;
            timings.unet_step_dispatches.push(counter.count());
            drop(counter);
            latents = scheduler.step(&model_output, i, &latents, &mut generator);
            if let (false, Some(inp)) = (inpaint_unet, &inpaint) {
                // Keep the unmasked area on the image, noised to the next step's level.
                let image = inp.image_latents.as_deref().unwrap_or_default();
                let proper = if i + 1 < timesteps.len() {
                    scheduler.add_noise(image, &inp.noise, i + 1)
                } else {
                    image.to_vec()
                };
                let plane = shape[2] * shape[3];
                for (k, v) in latents.iter_mut().enumerate() {
                    let m = inp.latent_mask[k % plane];
                    *v = (1.0 - m) * proper[k] + m * *v;
                }
            }
            let ms = clock.now_ms() - t_step;
            timings.unet_steps_ms.push(ms);
            progress(Progress::Step {
                index: i + 1 - first_step,
                total: timesteps.len() - first_step,
                ms,
            });
            let (rgb, width, height) = self.preview(&latents, shape).await?;
            progress(Progress::Preview {
                index: i + 1 - first_step,
                total: timesteps.len() - first_step,
                rgb,
                width,
                height,
            });
        }

        Ok(DenoisedLatents {
            latents,
            shape,
            scheduler: kind,
            timings,
        })
    }

    /// The UNet's noise prediction for f32 latents `x` at timestep `t`, with classifier-free
    /// guidance at `guidance` when given (the batch is then [unconditional, text]), as f32.
    fn guided_noise(
        &self,
        x: Tensor<4>,
        t: f64,
        context: &Tensor<3>,
        guidance: Option<f64>,
    ) -> Tensor<4> {
        let x = x.cast(self.dtype);
        let x = if guidance.is_some() {
            Tensor::cat(vec![x.clone(), x], 0)
        } else {
            x
        };
        let out = self.unet.forward(x, t, context.clone()).cast(DType::F32);
        match guidance {
            Some(scale) => {
                let uncond = out.clone().narrow(0, 0, 1);
                let text = out.narrow(0, 1, 1);
                uncond.clone() + (text - uncond) * scale
            }
            None => out,
        }
    }

    /// Compiles every pipeline a generation of `req` needs (text encoder, a UNet step with its
    /// guidance, VAE decode, and the encoder / TAESD where they run) as a CubeCL dry run at
    /// its shapes, so that no step waits for a compile. None when these shapes were compiled
    /// before; emits [`Progress::Compiling`] / [`Progress::Compiled`] otherwise.
    pub async fn compile(
        &self,
        req: &GenerateRequest,
        clock: &dyn Clock,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<CompileReport>, PipelineError> {
        let key = CompileKey {
            width: req.width,
            height: req.height,
            cfg: req.guidance > 1.0,
            init_image: req.init_image.is_some(),
        };
        if self
            .compiled
            .lock()
            .map_err(|_| PipelineError::Execution("poisoned".into()))?
            .contains(&key)
        {
            return Ok(None);
        }
        progress(Progress::Compiling);
        let t0 = clock.now_ms();
        let pass = CompilePass::start();
        self.compile_pass(key);
        let pipelines = pass.finish();
        // Compilation happens where the launches are processed: wait for it.
        read_back(Tensor::<1>::zeros([1], &self.device)).await?;
        let report = CompileReport {
            pipelines,
            ms: clock.now_ms() - t0,
        };
        self.compiled
            .lock()
            .map_err(|_| PipelineError::Execution("poisoned".into()))?
            .push(key);
        progress(Progress::Compiled {
            pipelines,
            ms: report.ms,
        });
        Ok(Some(report))
    }

    /// The launches of a generation at `key`'s shapes, on placeholder values (see `compile`).
    fn compile_pass(&self, key: CompileKey) {
        let f = self.vae_scale_factor();
        let (h, w) = (key.height / f, key.width / f);
        let rows = if key.cfg { 2 } else { 1 };
        let ids = vec![vec![0; self.tokenizer.max_length()]; rows];
        let context = self.text_encoder.forward(&ids);
        let unet_in = self.unet.config().in_channels;
        let x = Tensor::<4>::zeros([1, unet_in, h, w], &self.device);
        drop(self.guided_noise(x, 999.0, &context, key.cfg.then_some(7.5)));
        let latents = self.vae.config().latent_channels;
        let z = Tensor::<4>::zeros([1, latents, h, w], &self.device);
        drop(self.decode_tensor(z.clone()));
        if key.init_image && self.vae.has_encoder() {
            let image = Tensor::<4>::zeros([1, 3, key.height, key.width], &self.device);
            drop(self.vae.encode(image.cast(self.vae_dtype())));
        }
        if let Some(taesd) = &self.preview_decoder {
            drop(taesd.decode_preview(z));
        }
    }

    /// The VAE's compute dtype: f32 when its config says `force_upcast`, as diffusers.
    fn vae_dtype(&self) -> DType {
        if self.vae.config().force_upcast {
            DType::F32
        } else {
            self.dtype
        }
    }

    /// img2img's start: RGB8 → [-1, 1] → VAE posterior sample (mean + std · noise from
    /// `generator`) × scaling_factor, as diffusers' `retrieve_latents(sample_mode="sample")`.
    pub async fn encode_image(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        generator: &mut NoiseGenerator,
    ) -> Result<Vec<f32>, PipelineError> {
        let pixels = rgb_to_unit(rgb, width, height)?;
        self.encode_pixels(&pixels, width, height, generator).await
    }

    /// [`Self::encode_image`] from HWC pixels already in [-1, 1].
    pub async fn encode_pixels(
        &self,
        pixels: &[f32],
        width: usize,
        height: usize,
        generator: &mut NoiseGenerator,
    ) -> Result<Vec<f32>, PipelineError> {
        let pixels = pixels.to_vec();
        let vae_dtype = self.vae_dtype();
        let image =
            Tensor::<3>::from_data(TensorData::new(pixels, [height, width, 3]), &self.device)
                .permute([2, 0, 1])
                .reshape([1, 3, height, width])
                .cast(vae_dtype);
        let (mean, logvar) = self.vae.encode(image);
        let mean = read_back(mean).await?;
        let logvar = read_back(logvar).await?;
        let noise = generator.normal(mean.len());
        let scale = self.vae.config().scaling_factor as f32;
        let shift = self.vae.config().shift_factor as f32;
        Ok(mean
            .iter()
            .zip(&logvar)
            .zip(&noise)
            .map(|((m, lv), e)| (m + (0.5 * lv).exp() * e - shift) * scale)
            .collect())
    }

    /// A preview of `latents` as (RGB8, width, height), see [`Progress::Preview`].
    pub async fn preview(
        &self,
        latents: &[f32],
        shape: [usize; 4],
    ) -> Result<(Vec<u8>, usize, usize), PipelineError> {
        let Some(taesd) = &self.preview_decoder else {
            return Ok(crate::preview::latents_to_rgb(latents, shape));
        };
        let z = Tensor::<4>::from_data(TensorData::new(latents.to_vec(), shape), &self.device);
        let image = taesd.decode_preview(z);
        let [_, c, h, w] = image.dims();
        let values = read_back(image.reshape([c, h, w]).permute([1, 2, 0])).await?;
        let rgb = values.iter().map(|v| (v * 255.0).round() as u8).collect();
        Ok((rgb, w, h))
    }

    /// Unscaled f32 latents `[1, C, h, w]` → the image as f32 HWC, [0, 1] before clamping
    /// (clamped on the CPU after the non-finite check: a GPU clamp may hide NaN).
    fn decode_tensor(&self, z: Tensor<4>) -> Tensor<3> {
        let image = self.vae.decode(z.cast(self.vae_dtype())).cast(DType::F32);
        let image = image / 2.0 + 0.5;
        let [_, c, h, w] = image.dims();
        image.reshape([c, h, w]).permute([1, 2, 0])
    }

    /// Latents → RGB8 exactly like diffusers' postprocess: `round(clamp(x/2 + 0.5, 0, 1) * 255)` (numpy rounds half to even).
    pub async fn decode_to_rgb(
        &self,
        latents: &[f32],
        shape: [usize; 4],
    ) -> Result<Vec<u8>, PipelineError> {
        let scale = self.vae.config().scaling_factor as f32;
        let shift = self.vae.config().shift_factor as f32;
        let z: Vec<f32> = latents.iter().map(|v| v / scale + shift).collect();
        let z = Tensor::<4>::from_data(TensorData::new(z, shape), &self.device);
        let hwc = self.decode_tensor(z);
        let values = read_back(hwc).await?;
        checks::check_finite("the VAE's decoded image", &values)
            .map_err(|m| non_finite(m, self.vae_dtype()))?;
        Ok(values
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8)
            .collect())
    }
}

/// A NaN/inf result, with what usually causes it at `dtype`.
fn non_finite(message: String, dtype: DType) -> PipelineError {
    let hint = if dtype == DType::F16 {
        "f16 overflows easily here (the classic case is the SD VAE); generate in f32 precision"
    } else {
        "the weights or the inputs hold NaN/inf values, or they are not this model's"
    };
    PipelineError::NonFinite(format!("{message}: {hint}"))
}

/// See [`StableDiffusion::recommended_steps_guidance`].
pub fn recommended_steps_guidance(config: &SchedulerConfig) -> (usize, f64) {
    let trailing = config.timestep_spacing.as_deref() == Some("trailing");
    match config.kind() {
        Ok(SchedulerKind::Lcm) => (4, 1.0),
        _ if trailing => (1, 0.0),
        _ => (20, 7.5),
    }
}

/// What inpainting carries through the denoising loop.
struct Inpainting {
    /// The mask at latent resolution, 1 = repaint.
    latent_mask: Vec<f32>,
    /// The whole image's latents (4-channel UNets blend them back in after each step).
    image_latents: Option<Vec<f32>>,
    /// The masked image's latents (9-channel inpainting UNets take them as input).
    masked_latents: Vec<f32>,
    noise: Vec<f32>,
}

/// RGB8 → [-1, 1], as diffusers' image processor normalises.
fn rgb_to_unit(rgb: &[u8], width: usize, height: usize) -> Result<Vec<f32>, PipelineError> {
    if rgb.len() != width * height * 3 {
        return Err(PipelineError::Invalid(format!(
            "init image has {} bytes, expected {width}x{height} RGB ({})",
            rgb.len(),
            width * height * 3
        )));
    }
    Ok(rgb.iter().map(|&v| v as f32 / 255.0 * 2.0 - 1.0).collect())
}

/// diffusers' mask processor: grayscale / 255, binarised at 0.5 (true = repaint).
fn binarize_mask(mask: &[u8], width: usize, height: usize) -> Result<Vec<bool>, PipelineError> {
    if mask.len() != width * height {
        return Err(PipelineError::Invalid(format!(
            "mask has {} pixels, expected {width}x{height} ({})",
            mask.len(),
            width * height
        )));
    }
    Ok(mask.iter().map(|&v| v as f32 / 255.0 >= 0.5).collect())
}

/// torch's `interpolate(mode="nearest")`: source index floor(dst · in / out).
fn downsample_mask(mask: &[bool], width: usize, height: usize, w: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let sy = (y * height / h).min(height - 1);
        for x in 0..w {
            let sx = (x * width / w).min(width - 1);
            out.push(if mask[sy * width + sx] { 1.0 } else { 0.0 });
        }
    }
    out
}

fn read_text(path: &Path) -> Result<String, PipelineError> {
    std::fs::read_to_string(path).map_err(|error| {
        PipelineError::Config(ConfigError::Io {
            file: path.display().to_string(),
            error,
        })
    })
}

/// Reads a tensor back as f32; the only way to read in a browser is asynchronously.
pub async fn read_back<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, PipelineError> {
    let data = t
        .cast(DType::F32)
        .into_data_async()
        .await
        .map_err(|e| PipelineError::Execution(format!("{e:?}")))?;
    data.try_into_vec::<f32>()
        .map_err(|e| PipelineError::Execution(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(json: &str) -> (usize, f64) {
        recommended_steps_guidance(&SchedulerConfig::from_json(json).unwrap())
    }

    #[test]
    fn few_step_defaults_come_from_the_scheduler_config() {
        // stabilityai/sd-turbo's scheduler_config.json (abridged): Euler, trailing timesteps.
        let turbo = r#"{"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "num_train_timesteps": 1000, "prediction_type": "epsilon",
            "steps_offset": 1, "timestep_spacing": "trailing"}"#;
        assert_eq!(defaults(turbo), (1, 0.0));
        // An LCM-distilled model ships LCMScheduler.
        let lcm = r#"{"_class_name": "LCMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "num_train_timesteps": 1000, "original_inference_steps": 50}"#;
        assert_eq!(defaults(lcm), (4, 1.0));
        // SD 1.5: PNDM, leading.
        let sd15 = r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "num_train_timesteps": 1000, "skip_prk_steps": true, "steps_offset": 1}"#;
        assert_eq!(defaults(sd15), (20, 7.5));
    }
}
