//! The VAE side of the pipeline (encode an init image, decode latents, previews) and the
//! compile pass that builds every GPU pipeline before the first step.

use burn::tensor::{DType, Tensor, TensorData};

use super::latents::rgb_to_unit;
use super::{
    Clock, CompileKey, CompileReport, GenerateRequest, PipelineError, Progress, StableDiffusion,
    non_finite, read_back,
};
use crate::checks;
use crate::launches::CompilePass;
use crate::noise::NoiseGenerator;

impl StableDiffusion {
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
        let cfg = self.uses_cfg(req.guidance);
        let key = CompileKey {
            width: req.width,
            height: req.height,
            cfg,
            zero_negative: self.zero_negative(&req.negative_prompt, cfg),
            init_image: req.init_image.is_some(),
            prompt_chunks: self.prompt_rows(req, cfg, &mut |_| {})?.chunk_count(),
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
        let condition = self.condition(&self.placeholder_rows(key), key.width, key.height);
        let unet_in = self.unet.config().in_channels;
        let x = Tensor::<4>::zeros([1, unet_in, h, w], &self.device);
        let guidance = self.guidance(if key.cfg { 7.5 } else { 1.0 });
        drop(self.guided_noise(x, 999.0, &condition, &guidance));
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

    /// The latent → RGB projection of cheap previews for this model's latent space.
    pub fn latent_rgb(&self) -> &'static [[f32; 3]; 4] {
        match self.xl {
            Some(_) => &crate::preview::SDXL_LATENT_RGB,
            None => &crate::preview::SD_LATENT_RGB,
        }
    }

    /// The VAE's compute dtype: f32 when its config says `force_upcast`, as diffusers.
    fn vae_dtype(&self) -> DType {
        self.vae.config().compute_dtype(self.dtype)
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
            return Ok(crate::preview::latents_to_rgb(
                latents,
                shape,
                self.latent_rgb(),
            ));
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
