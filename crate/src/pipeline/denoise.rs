//! The denoising loop and the text encoder: diffusers' `__call__` up to the VAE.

use burn::tensor::{Tensor, TensorData};

use super::latents::Inpainting;
use super::prompt::Condition;
use super::*;
use crate::checks;
use crate::launches::DispatchCounter;
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
        let cfg = req.guidance > 1.0;
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
            let noise_pred =
                read_back(self.guided_noise(x, t, &condition, cfg.then_some(req.guidance))).await?;
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

    /// The UNet's noise prediction for f32 latents `x` at timestep `t`, with classifier-free
    /// guidance at `guidance` when given (the batch is then [unconditional, text]), as f32.
    pub(super) fn guided_noise(
        &self,
        x: Tensor<4>,
        t: f64,
        condition: &Condition,
        guidance: Option<f64>,
    ) -> Tensor<4> {
        let x = x.cast(self.dtype);
        let x = if guidance.is_some() {
            Tensor::cat(vec![x.clone(), x], 0)
        } else {
            x
        };
        let out = self
            .unet
            .forward_with(x, t, condition.context.clone(), condition.added.as_ref())
            .cast(DType::F32);
        match guidance {
            Some(scale) => {
                let uncond = out.clone().narrow(0, 0, 1);
                let text = out.narrow(0, 1, 1);
                uncond.clone() + (text - uncond) * scale
            }
            None => out,
        }
    }
}
