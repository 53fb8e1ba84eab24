//! Latent preparation per mode, as diffusers' `prepare_latents` / `get_timesteps` /
//! `prepare_mask_latents`, each drawing from the one generator in diffusers' order.

use super::{GenerateRequest, InitImage, PipelineError, StableDiffusion};
use crate::noise::NoiseGenerator;
use crate::schedulers::Scheduler;

/// Where the denoising loop starts: the first step that runs (img2img skips the start of the
/// schedule), the latents and their shape, and what inpainting carries through the loop.
pub(super) struct StartLatents {
    pub first_step: usize,
    pub latents: Vec<f32>,
    pub shape: [usize; 4],
    pub inpaint: Option<Inpainting>,
}

impl StableDiffusion {
    /// The loop's start for `req`'s mode. The generator's draws, in order: txt2img the initial
    /// noise (so a seed reproduces the `--init-noise` image); img2img the VAE posterior sample,
    /// then the noise added to it; inpainting the image's posterior sample (4-channel UNets or
    /// strength < 1), the noise, then the masked image's sample.
    pub(super) async fn prepare_latents(
        &self,
        req: &GenerateRequest,
        scheduler: &dyn Scheduler,
        generator: &mut NoiseGenerator,
    ) -> Result<StartLatents, PipelineError> {
        let shape = self.latent_shape(req)?;
        let n: usize = shape.iter().product();
        let (first_step, latents, inpaint) = match &req.init_image {
            Some(init) if init.mask.is_some() => {
                self.prepare_mask_latents(req, init, shape, scheduler, generator)
                    .await?
            }
            Some(init) => {
                let first = init.first_step(req.steps)?;
                let image = self
                    .encode_image(&init.rgb, req.width, req.height, generator)
                    .await?;
                let noise = generator.normal(n);
                (first, scheduler.add_noise(&image, &noise, first), None)
            }
            None => {
                let generated = generator.normal(n);
                let noise = req.init_noise.clone().unwrap_or(generated);
                (0, scaled(&noise, scheduler.init_noise_sigma()), None)
            }
        };
        Ok(StartLatents {
            first_step,
            latents,
            shape,
            inpaint,
        })
    }

    /// `[1, C, H/f, W/f]`, after checking that the UNet fits the mode (4 channels, or 9 for an
    /// inpainting UNet, which needs a mask).
    fn latent_shape(&self, req: &GenerateRequest) -> Result<[usize; 4], PipelineError> {
        let f = self.vae_scale_factor();
        let channels = self.vae.config().latent_channels;
        let unet_channels = self.unet.config().in_channels;
        let inpaint_unet = unet_channels == 2 * channels + 1;
        if unet_channels != channels && !inpaint_unet {
            return Err(PipelineError::Invalid(format!(
                "the UNet takes {unet_channels} input channels; expected {channels} (text-to-image) or {} (inpainting)",
                2 * channels + 1
            )));
        }
        let has_mask = req.init_image.as_ref().is_some_and(|i| i.mask.is_some());
        if inpaint_unet && !has_mask {
            return Err(PipelineError::Invalid(
                "this is an inpainting model (9-channel UNet): give an image and a mask".into(),
            ));
        }
        Ok([1, channels, req.height / f, req.width / f])
    }

    /// StableDiffusionInpaintPipeline's latents, mask and masked-image latents.
    async fn prepare_mask_latents(
        &self,
        req: &GenerateRequest,
        init: &InitImage,
        shape: [usize; 4],
        scheduler: &dyn Scheduler,
        generator: &mut NoiseGenerator,
    ) -> Result<(usize, Vec<f32>, Option<Inpainting>), PipelineError> {
        let (width, height) = (req.width, req.height);
        let first = init.first_step(req.steps)?;
        let unet_takes_mask = self.unet.config().in_channels != shape[1];
        let strength_max = init.strength == 1.0;
        let pixels = rgb_to_unit(&init.rgb, width, height)?;
        let image_latents = if !unet_takes_mask || !strength_max {
            Some(
                self.encode_pixels(&pixels, width, height, generator)
                    .await?,
            )
        } else {
            None
        };
        let noise = generator.normal(shape.iter().product());
        let latents = match &image_latents {
            Some(image) if !strength_max => scheduler.add_noise(image, &noise, first),
            _ => scaled(&noise, scheduler.init_noise_sigma()),
        };
        let mask = binarize_mask(init.mask.as_deref().unwrap_or_default(), width, height)?;
        let masked: Vec<f32> = pixels
            .iter()
            .enumerate()
            .map(|(k, v)| if mask[k / 3] { 0.0 } else { *v })
            .collect();
        let masked_latents = self
            .encode_pixels(&masked, width, height, generator)
            .await?;
        let inpaint = Inpainting {
            latent_mask: downsample_mask(&mask, width, height, shape[3], shape[2]),
            image_latents,
            masked_latents,
            noise,
            unet_takes_mask,
        };
        Ok((first, latents, Some(inpaint)))
    }
}

fn scaled(noise: &[f32], sigma: f64) -> Vec<f32> {
    noise.iter().map(|v| v * sigma as f32).collect()
}

/// What inpainting carries through the denoising loop.
pub(super) struct Inpainting {
    /// The mask at latent resolution, 1 = repaint.
    pub(super) latent_mask: Vec<f32>,
    /// The whole image's latents (4-channel UNets blend them back in after each step).
    pub(super) image_latents: Option<Vec<f32>>,
    /// The masked image's latents (9-channel inpainting UNets take them as input).
    pub(super) masked_latents: Vec<f32>,
    pub(super) noise: Vec<f32>,
    /// A 9-channel inpainting UNet (else an ordinary one, blended after each step).
    pub(super) unet_takes_mask: bool,
}

impl Inpainting {
    /// After step `i` of an ordinary UNet: the unmasked area back to the image, noised to the
    /// next step's level (diffusers' latent-mask blend).
    pub(super) fn keep_unmasked(
        &self,
        latents: &mut [f32],
        scheduler: &dyn Scheduler,
        i: usize,
        shape: [usize; 4],
    ) {
        if self.unet_takes_mask {
            return;
        }
        let image = self.image_latents.as_deref().unwrap_or_default();
        let known = if i + 1 < scheduler.timesteps().len() {
            scheduler.add_noise(image, &self.noise, i + 1)
        } else {
            image.to_vec()
        };
        let plane = shape[2] * shape[3];
        for (k, v) in latents.iter_mut().enumerate() {
            let m = self.latent_mask[k % plane];
            *v = (1.0 - m) * known[k] + m * *v;
        }
    }
}

/// RGB8 → [-1, 1], as diffusers' image processor normalises.
pub(super) fn rgb_to_unit(
    rgb: &[u8],
    width: usize,
    height: usize,
) -> Result<Vec<f32>, PipelineError> {
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
