//! The denoising loop and the text encoder: diffusers' `__call__` up to the VAE.

use burn::tensor::{Tensor, TensorData};

use super::latents::Inpainting;
use super::prompt::Condition;
use super::*;
use crate::checks;
use crate::launches::DispatchCounter;
use crate::models::unet_2d_condition::{ExtraConditions, guidance_scale_embedding};
use crate::noise::NoiseGenerator;
use crate::schedulers;

impl StableDiffusion {
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
        let kind = match req.scheduler {
            Some(kind) => kind,
            None => self.scheduler_config.kind()?,
        };
        let mut scheduler = schedulers::build(kind, &self.scheduler_config, req.steps)?;
        if let Some(report) = self.compile(req, clock, progress).await? {
            timings.compile_ms = report.ms;
            timings.compiled_pipelines = report.pipelines;
        }
        let guidance = self.guidance(req.guidance);
        let cfg = matches!(guidance, Guidance::Cfg(_));
        let condition = self
            .encode_prompt(req, cfg, clock, &mut timings, progress)
            .await?;
        // One generator per image, drawn in diffusers' order (see `prepare_latents`), then any
        // per-step noise (Euler a, LCM).
        let mut generator = NoiseGenerator::new(req.seed);
        let start = self
            .prepare_latents(req, scheduler.as_ref(), &mut generator)
            .await?;
        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len() - start.first_step;
        let mut latents = start.latents;
        for (i, &t) in timesteps.iter().enumerate().skip(start.first_step) {
            if cancelled() {
                return Err(PipelineError::Cancelled);
            }
            let (t_step, counter) = (clock.now_ms(), DispatchCounter::start());
            let index = i + 1 - start.first_step;
            let x = self.unet_input(
                &latents,
                scheduler.input_scale(i) as f32,
                start.shape,
                start.inpaint.as_ref(),
            );
            let noise_pred = read_back(self.guided_noise(x, t, &condition, &guidance)).await?;
            checks::check_finite(
                &format!("the UNet's output at step {index} of {total}"),
                &noise_pred,
            )
            .map_err(|m| non_finite(m, self.dtype))?;
            timings.unet_step_dispatches.push(counter.count());
            drop(counter);
            latents = scheduler.step(&noise_pred, i, &latents, &mut generator);
            if let Some(inpaint) = &start.inpaint {
                inpaint.keep_unmasked(&mut latents, scheduler.as_ref(), i, start.shape);
            }
            let ms = clock.now_ms() - t_step;
            timings.unet_steps_ms.push(ms);
            progress(Progress::Step { index, total, ms });
            if req
                .preview_every
                .is_some_and(|every| index % every.max(1) == 0 || index == total)
            {
                let (rgb, width, height) = self.preview(&latents, start.shape).await?;
                progress(Progress::Preview {
                    index,
                    total,
                    rgb,
                    width,
                    height,
                });
            }
        }
        Ok(DenoisedLatents {
            latents,
            shape: start.shape,
            scheduler: kind,
            timings,
        })
    }

    /// The UNet's input at one step: the scaled latents, and for a 9-channel inpainting UNet
    /// `[latents, mask, masked image latents]` along channels (batch 1: plane order).
    fn unet_input(
        &self,
        latents: &[f32],
        scale: f32,
        shape: [usize; 4],
        inpaint: Option<&Inpainting>,
    ) -> Tensor<4> {
        let mut scaled: Vec<f32> = latents.iter().map(|v| v * scale).collect();
        let mut input_shape = shape;
        if let Some(inp) = inpaint.filter(|i| i.unet_takes_mask) {
            scaled.extend_from_slice(&inp.latent_mask);
            scaled.extend_from_slice(&inp.masked_latents);
            input_shape[1] = self.unet.config().in_channels;
        }
        Tensor::<4>::from_data(TensorData::new(scaled, input_shape), &self.device)
    }

    /// How a request's guidance scale is applied: classifier-free guidance above 1, nothing at
    /// or below; an LCM-distilled UNet takes it as an embedding instead (no CFG batch), as
    /// diffusers' LatentConsistencyModelPipeline does (w = scale − 1).
    pub(super) fn guidance(&self, scale: f64) -> Guidance {
        match self.unet.config().time_cond_proj_dim {
            Some(dim) => Guidance::Embedded(Box::new(
                Tensor::<2>::from_data(
                    TensorData::new(guidance_scale_embedding(scale - 1.0, dim), [1, dim]),
                    &self.device,
                )
                .cast(self.dtype),
            )),
            None if scale > 1.0 => Guidance::Cfg(scale),
            None => Guidance::None,
        }
    }

    /// Whether a request at guidance `scale` runs the unconditional batch row.
    pub fn uses_cfg(&self, scale: f64) -> bool {
        scale > 1.0 && self.unet.config().time_cond_proj_dim.is_none()
    }

    /// The UNet's noise prediction for f32 latents `x` at timestep `t` under `guidance` (with
    /// CFG the batch is [unconditional, text]), as f32.
    pub(super) fn guided_noise(
        &self,
        x: Tensor<4>,
        t: f64,
        condition: &Condition,
        guidance: &Guidance,
    ) -> Tensor<4> {
        let x = x.cast(self.dtype);
        let x = match guidance {
            Guidance::Cfg(_) => Tensor::cat(vec![x.clone(), x], 0),
            _ => x,
        };
        let extra = ExtraConditions {
            added: condition.added.as_ref(),
            timestep_cond: match guidance {
                Guidance::Embedded(w) => Some(w.as_ref()),
                _ => None,
            },
        };
        let out = self
            .unet
            .forward_conditioned(x, t, condition.context.clone(), extra)
            .cast(DType::F32);
        match guidance {
            Guidance::Cfg(scale) => {
                let uncond = out.clone().narrow(0, 0, 1);
                let text = out.narrow(0, 1, 1);
                uncond.clone() + (text - uncond) * *scale
            }
            _ => out,
        }
    }
}

/// A request's guidance as the UNet applies it ([`StableDiffusion::guidance`]).
pub(super) enum Guidance {
    None,
    Cfg(f64),
    /// The guidance-scale embedding `[1, time_cond_proj_dim]` of an LCM-distilled UNet.
    Embedded(Box<Tensor<2>>),
}
