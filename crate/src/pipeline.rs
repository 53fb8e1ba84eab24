//! StableDiffusionPipeline: a diffusers model folder → prompt → image, as diffusers does it.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::config::{ConfigError, ConfigReader};
use crate::models::autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
use crate::models::clip_text_model::{ClipTextConfig, ClipTextModel};
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::noise::NoiseGenerator;
use crate::schedulers::{self, SchedulerConfig, SchedulerError, SchedulerKind};
use crate::tokenizer::{ClipTokenizer, TokenizerError};
use crate::weights::{TensorStore, WeightError, find_component_file};

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
    #[error("GPU execution failed: {0}")]
    Execution(String),
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
}

/// Per-stage wall times in milliseconds (GPU work included: each stage ends with a readback).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timings {
    pub tokenize_ms: f64,
    pub text_encoder_ms: f64,
    pub unet_steps_ms: Vec<f64>,
    pub vae_decode_ms: f64,
    pub total_ms: f64,
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

fn component(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

impl StableDiffusion {
    /// Loads a diffusers folder. `dtype`: F32 (always works) or F16 (needs shader-f16).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, PipelineError> {
        if !dir.join("model_index.json").is_file() {
            return Err(PipelineError::Invalid(format!(
                "{} is not a diffusers model folder (no model_index.json)",
                dir.display()
            )));
        }
        let prefer_fp16 = dtype == DType::F16;
        let tokenizer = ClipTokenizer::from_dir(&component(dir, "tokenizer"))?;

        let te_dir = component(dir, "text_encoder");
        let te_config =
            ClipTextConfig::from_reader(ConfigReader::read(&te_dir.join("config.json"))?)?;
        let mut store = TensorStore::new(device, dtype, te_dir.display().to_string());
        store
            .load_safetensors_file(&find_component_file(&te_dir, "model", prefer_fp16)?, &|n| {
                Some(n.to_string())
            })?;
        let text_encoder = ClipTextModel::load(&store.root(), te_config)?;
        drop(store);

        let unet_dir = component(dir, "unet");
        let unet_config =
            UNet2DConditionConfig::from_reader(ConfigReader::read(&unet_dir.join("config.json"))?)?;
        let mut store = TensorStore::new(device, dtype, unet_dir.display().to_string());
        store.load_safetensors_file(
            &find_component_file(&unet_dir, "diffusion_pytorch_model", prefer_fp16)?,
            &|n| Some(n.to_string()),
        )?;
        let unet = UNet2DConditionModel::load(&store.root(), unet_config)?;
        drop(store);

        let vae_dir = component(dir, "vae");
        let vae_config =
            AutoencoderKLConfig::from_reader(ConfigReader::read(&vae_dir.join("config.json"))?)?;
        let vae_dtype = if vae_config.force_upcast {
            DType::F32
        } else {
            dtype
        };
        let mut store = TensorStore::new(device, vae_dtype, vae_dir.display().to_string());
        store.load_safetensors_file(
            &find_component_file(&vae_dir, "diffusion_pytorch_model", prefer_fp16)?,
            &|n| Some(n.to_string()),
        )?;
        let vae = AutoencoderKL::load(&store.root(), vae_config, true)?;
        drop(store);

        let sched_path = dir.join("scheduler").join("scheduler_config.json");
        let sched_text = std::fs::read_to_string(&sched_path).map_err(|error| ConfigError::Io {
            file: sched_path.display().to_string(),
            error,
        })?;
        let scheduler_config = SchedulerConfig::from_json(&sched_text)?;

        Ok(Self {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string()),
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
            device: device.clone(),
            dtype,
        })
    }

    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config().scale_factor()
    }

    /// The model's native resolution: UNet sample_size × VAE factor (512 for SD 1.5, 768 for 2.1).
    pub fn default_size(&self) -> usize {
        self.unet.config().sample_size * self.vae_scale_factor()
    }

    /// Checks width/height: multiples of the VAE factor, naming the nearest valid size.
    pub fn check_size(&self, width: usize, height: usize) -> Result<(), PipelineError> {
        let f = self.vae_scale_factor();
        for (what, v) in [("width", width), ("height", height)] {
            if v == 0 || v % f != 0 {
                let nearest = ((v + f / 2) / f).max(1) * f;
                return Err(PipelineError::Invalid(format!(
                    "{what} {v} is not a multiple of {f} (the VAE scale factor); nearest valid {what}: {nearest}"
                )));
            }
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
        self.check_size(req.width, req.height)?;
        if req.steps == 0 {
            return Err(PipelineError::Invalid("steps must be at least 1".into()));
        }
        let t_start = clock.now_ms();
        let mut timings = Timings::default();
        let cfg = req.guidance > 1.0;
        let kind = match req.scheduler {
            Some(kind) => kind,
            None => self.scheduler_config.kind()?,
        };
        let mut scheduler = schedulers::build(kind, &self.scheduler_config, req.steps)?;

        let t0 = clock.now_ms();
        let ids = self.tokenize(&req.prompt, &req.negative_prompt, cfg, progress);
        timings.tokenize_ms = clock.now_ms() - t0;
        let t1 = clock.now_ms();
        let context = self.text_encoder.forward(&ids);
        // Reading one value waits for the encoder, so its time (first call: shader compilation
        // included) is not billed to the first UNet step.
        read_back(context.clone().slice([0..1, 0..1, 0..1])).await?;
        timings.text_encoder_ms = clock.now_ms() - t1;
        progress(Progress::TextEncoded);

        let f = self.vae_scale_factor();
        let channels = self.unet.config().in_channels;
        let shape = [1, channels, req.height / f, req.width / f];
        let n: usize = shape.iter().product();
        // The generator yields the initial noise first, then any per-step noise, so a given seed
        // reproduces the same image with or without --init-noise holding those same values.
        let mut generator = NoiseGenerator::new(req.seed);
        let generated = generator.normal(n);
        let noise = match &req.init_noise {
            Some(values) if values.len() != n => {
                return Err(PipelineError::Invalid(format!(
                    "initial noise has {} values, expected {n} for shape {shape:?}",
                    values.len()
                )));
            }
            Some(values) => values.clone(),
            None => generated,
        };
        let sigma = scheduler.init_noise_sigma() as f32;
        let mut latents: Vec<f32> = noise.iter().map(|v| v * sigma).collect();

        let timesteps = scheduler.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            let t_step = clock.now_ms();
            let scale = scheduler.input_scale(i) as f32;
            let scaled: Vec<f32> = latents.iter().map(|v| v * scale).collect();
            let x = Tensor::<4>::from_data(TensorData::new(scaled, shape), &self.device)
                .cast(self.dtype);
            let x = if cfg {
                Tensor::cat(vec![x.clone(), x], 0)
            } else {
                x
            };
            let out = self.unet.forward(x, t, context.clone()).cast(DType::F32);
            let noise_pred = if cfg {
                let uncond = out.clone().narrow(0, 0, 1);
                let text = out.narrow(0, 1, 1);
                uncond.clone() + (text - uncond) * req.guidance
            } else {
                out
            };
            let model_output = read_back(noise_pred).await?;
            latents = scheduler.step(&model_output, i, &latents, &mut generator);
            let ms = clock.now_ms() - t_step;
            timings.unet_steps_ms.push(ms);
            progress(Progress::Step {
                index: i + 1,
                total: timesteps.len(),
                ms,
            });
        }

        let t_dec = clock.now_ms();
        let rgb = self.decode_to_rgb(&latents, shape).await?;
        timings.vae_decode_ms = clock.now_ms() - t_dec;
        progress(Progress::Decoded);
        timings.total_ms = clock.now_ms() - t_start;
        Ok(GenerateOutput {
            rgb,
            width: req.width,
            height: req.height,
            scheduler: kind,
            timings,
        })
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
        let vae_dtype = if self.vae.config().force_upcast {
            DType::F32
        } else {
            self.dtype
        };
        let z = Tensor::<4>::from_data(TensorData::new(z, shape), &self.device).cast(vae_dtype);
        let image = self.vae.decode(z).cast(DType::F32);
        let image = (image / 2.0 + 0.5).clamp(0.0, 1.0);
        let [_, c, h, w] = image.dims();
        let hwc = image.reshape([c, h, w]).permute([1, 2, 0]);
        let values = read_back(hwc).await?;
        Ok(values
            .iter()
            .map(|v| (v * 255.0).round_ties_even() as u8)
            .collect())
    }
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
