//! Checks on a generation's settings, run before any slow work (loading weights, compiling,
//! denoising) by the CLI, the wasm core and the pipeline itself. Each message names the
//! setting, the value, and what would be valid.

/// The largest width or height accepted: SD 1.x/2.x were trained at 512–768; 2048 already
/// needs 16× the activations of 512 (checked against the adapter by `check_activations`).
pub const MAX_SIDE: usize = 2048;
/// diffusers' schedulers take at most `num_train_timesteps` (1000 for every SD) steps.
pub const MAX_STEPS: usize = 1000;

/// Classifier-free guidance scale: finite and ≥ 0. Values ≤ 1 run no unconditional pass
/// (diffusers' `do_classifier_free_guidance` is `guidance_scale > 1`); 0 is what SD-Turbo
/// uses.
pub fn check_guidance(guidance: f64) -> Result<(), String> {
    if guidance.is_finite() && guidance >= 0.0 {
        return Ok(());
    }
    Err(format!(
        "guidance {guidance} must be a finite number ≥ 0 (≤ 1 turns classifier-free guidance off; 7.5 is SD's usual)"
    ))
}

/// img2img/inpainting strength: the share of the schedule that runs, in (0, 1].
pub fn check_strength(strength: f64) -> Result<(), String> {
    if strength > 0.0 && strength <= 1.0 {
        return Ok(());
    }
    Err(format!(
        "strength {strength} must be in (0, 1] (img2img's usual is 0.8, inpainting's 1.0)"
    ))
}

pub fn check_steps(steps: usize) -> Result<(), String> {
    if (1..=MAX_STEPS).contains(&steps) {
        return Ok(());
    }
    Err(format!("steps {steps} must be between 1 and {MAX_STEPS}"))
}

/// Width or height: a multiple of the VAE factor `f`, from `f` to [`MAX_SIDE`]; the message
/// names the nearest valid value.
pub fn check_side(what: &str, value: usize, f: usize) -> Result<(), String> {
    let nearest = (((value + f / 2) / f) * f).clamp(f, MAX_SIDE / f * f);
    if value > MAX_SIDE {
        return Err(format!(
            "{what} {value} is larger than {MAX_SIDE}, the most sdweb accepts; nearest valid {what}: {nearest}"
        ));
    }
    if value == 0 || value % f != 0 {
        return Err(format!(
            "{what} {value} must be a positive multiple of {f} (the VAE scale factor); nearest valid {what}: {nearest}"
        ));
    }
    Ok(())
}

/// Fails on the first NaN or infinity in `values`, naming `what` and how many there are.
pub fn check_finite(what: &str, values: &[f32]) -> Result<(), String> {
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if bad == 0 {
        return Ok(());
    }
    Err(format!(
        "{what} has {bad} of {} values NaN or infinite",
        values.len()
    ))
}

/// The most bytes one UNet activation binds at `tokens` latent pixels (h/f · w/f) for a batch
/// (2 with CFG): the first up block's ResNet input (the widest concatenation at full
/// resolution, e.g. 960 channels for SD 1.5) or an attention projection. The GEGLU input
/// (8× the width) runs in row chunks (`models::attention::FF_HIDDEN_CHUNK_BYTES`) and the VAE
/// in row bands, so neither bounds the size.
pub fn unet_activation_bytes(
    block_out_channels: &[usize],
    tokens: usize,
    batch: usize,
    value_bytes: usize,
) -> usize {
    let first = block_out_channels.first().copied().unwrap_or(0);
    let second = block_out_channels.get(1).copied().unwrap_or(first);
    batch * tokens * (first + second) * value_bytes
}

/// [`unet_activation_bytes`] against the adapter's storage-binding limit: names the largest
/// square size that fits.
pub fn check_activations(
    width: usize,
    height: usize,
    f: usize,
    block_out_channels: &[usize],
    batch: usize,
    value_bytes: usize,
    max_binding: usize,
) -> Result<(), String> {
    let bytes = |w: usize, h: usize| {
        unet_activation_bytes(block_out_channels, (w / f) * (h / f), batch, value_bytes)
    };
    if bytes(width, height) <= max_binding {
        return Ok(());
    }
    let mut side = MAX_SIDE / f * f;
    while side > f && bytes(side, side) > max_binding {
        side -= f;
    }
    Err(format!(
        "{width}x{height} needs {} MB in one GPU buffer binding, over this adapter's limit of {} MB; the largest square size that fits is {side}x{side} (f16 precision or no guidance halves the need)",
        bytes(width, height) / 1_000_000,
        max_binding / 1_000_000
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guidance_must_be_finite_and_not_negative() {
        for ok in [0.0, 1.0, 7.5, 30.0] {
            assert!(check_guidance(ok).is_ok(), "{ok}");
        }
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let message = check_guidance(bad).unwrap_err();
            assert!(
                message.starts_with(&format!("guidance {bad} must be a finite number")),
                "{message}"
            );
        }
    }

    #[test]
    fn strength_is_in_zero_to_one() {
        assert!(check_strength(1.0).is_ok() && check_strength(0.01).is_ok());
        for bad in [0.0, 1.5, -0.5, f64::NAN] {
            assert!(
                check_strength(bad)
                    .unwrap_err()
                    .contains("must be in (0, 1]"),
                "{bad}"
            );
        }
    }

    #[test]
    fn sides_name_the_nearest_valid_value() {
        assert!(check_side("width", 512, 8).is_ok());
        assert_eq!(
            check_side("width", 0, 8).unwrap_err(),
            "width 0 must be a positive multiple of 8 (the VAE scale factor); nearest valid width: 8"
        );
        assert!(
            check_side("height", 515, 8)
                .unwrap_err()
                .ends_with("nearest valid height: 512")
        );
        assert!(
            check_side("height", 100000, 8)
                .unwrap_err()
                .contains("larger than 2048")
        );
        assert!(
            check_side("height", 100000, 8)
                .unwrap_err()
                .ends_with("nearest valid height: 2048")
        );
        assert!(check_steps(0).is_err() && check_steps(1001).is_err() && check_steps(20).is_ok());
    }

    #[test]
    fn activations_are_checked_against_the_binding_limit() {
        let sd15 = [320, 640, 1280, 1280];
        let limit = 128 << 20;
        // 512² with CFG in f32: 2 · 4096 · 960 · 4 = 31 MB.
        assert_eq!(unet_activation_bytes(&sd15, 64 * 64, 2, 4), 31_457_280);
        assert!(check_activations(1024, 1024, 8, &sd15, 2, 4, limit).is_ok());
        let message = check_activations(2048, 2048, 8, &sd15, 2, 4, limit).unwrap_err();
        assert!(
            message.contains("the largest square size that fits is 1056x1056"),
            "{message}"
        );
        assert!(check_activations(1488, 1488, 8, &sd15, 2, 2, limit).is_ok());
        // SDXL base at its native 1024² with CFG fits in f32 and f16 (2 · 16384 · 960 · 4 = 126 MB).
        let sdxl = [320, 640, 1280];
        assert!(check_activations(1024, 1024, 8, &sdxl, 2, 4, limit).is_ok());
        assert!(check_activations(1024, 1024, 8, &sdxl, 2, 2, limit).is_ok());
        assert!(
            check_finite("x", &[1.0, f32::NAN, f32::INFINITY])
                .unwrap_err()
                .contains("2 of 3")
        );
    }
}
