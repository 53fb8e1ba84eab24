//! The CLI as users and the browser tests drive it: `sdweb generate` writes a PNG equal to
//! diffusers' within tolerance, carrying its parameters and the AI-generated label.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;
use sdweb::png_meta::{GenerationParams, read_png_text};

fn sdweb(case: &Case, extra: &[&str], output: &PathBuf) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sdweb"))
        .arg("generate")
        .arg("--model")
        .arg(fixtures().join(&case.model))
        .args([
            "--prompt",
            &case.prompt,
            "--negative-prompt",
            &case.negative_prompt,
        ])
        .args([
            "--steps",
            &case.steps.to_string(),
            "--guidance",
            &case.guidance.to_string(),
        ])
        .args(["--scheduler", &case.scheduler])
        .args([
            "--width",
            &case.width.to_string(),
            "--height",
            &case.height.to_string(),
        ])
        .args(["--seed", &case.seed.to_string()])
        // The tolerance of the engine issue is the f32 path's; auto would pick f16 on lavapipe.
        .args(["--precision", "f32"])
        .args(extra)
        .arg("--output")
        .arg(output)
        .output()
        .unwrap()
}

#[test]
fn generate_with_init_noise_writes_the_diffusers_image_with_metadata() {
    let case = e2e_cases()
        .into_iter()
        .find(|c| c.name == "sd1-dpmpp-2m-karras-cfg")
        .unwrap();
    let output = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-case.png");
    let noise = reference_dir().join("e2e").join(&case.init_noise);
    let result = sdweb(&case, &["--init-noise", noise.to_str().unwrap()], &output);
    assert!(
        result.status.success(),
        "sdweb failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("step 4/4"), "progress on stderr: {stderr}");

    let png = std::fs::read(&output).unwrap();
    let (rgb, ..) = decode_rgb(&png);
    assert_image_close(&case.name, &rgb, &reference_rgb(&case));

    let chunks = read_png_text(&png).unwrap();
    let text = &chunks
        .iter()
        .find(|(k, _)| k == "parameters")
        .expect("parameters chunk")
        .1;
    let params = GenerationParams::parse_a1111(text).unwrap();
    assert_eq!(params.prompt, case.prompt);
    assert_eq!(params.negative_prompt, case.negative_prompt);
    assert_eq!((params.steps, params.seed), (case.steps, case.seed));
    assert_eq!(params.sampler, "DPM++ 2M Karras");
    assert_eq!(params.cfg_scale, case.guidance);
    let noise_field = ("Initial noise".to_string(), case.init_noise.clone());
    assert!(
        params.extra.contains(&noise_field),
        "the noise's source: {:?}",
        params.extra
    );
    assert_eq!(
        (params.width as usize, params.height as usize),
        (case.width, case.height)
    );
    assert!(
        chunks
            .iter()
            .any(|(_, v)| v.contains("trainedAlgorithmicMedia")),
        "AI-generated label"
    );
}

/// burn's ops (`--kernels burn`, the baseline the bench compares sdweb's kernels with) give the
/// diffusers image too: SD 2.x's linear-projection UNet, CLIP and the VAE through burn's
/// matmul, conv, attention and norms.
#[test]
fn burn_kernels_give_the_diffusers_image() {
    let case = e2e_cases()
        .into_iter()
        .find(|c| c.name == "sd2-ddim-cfg")
        .unwrap();
    let output = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("burn-kernels.png");
    let noise = reference_dir().join("e2e").join(&case.init_noise);
    let extra = ["--init-noise", noise.to_str().unwrap(), "--kernels", "burn"];
    let result = sdweb(&case, &extra, &output);
    assert!(
        result.status.success(),
        "sdweb failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let (rgb, ..) = decode_rgb(&std::fs::read(&output).unwrap());
    assert_image_close(
        "sd2-ddim-cfg with burn's kernels",
        &rgb,
        &reference_rgb(&case),
    );
}

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let case = e2e_cases().into_iter().next().unwrap();
    let output = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-bad.png");
    let _ = std::fs::remove_file(&output);
    for (extra, expect) in [
        (vec!["--scheduler", "heun"], "unknown scheduler heun"),
        (vec!["--width", "62"], "nearest valid width: 64"),
        (vec!["--init-noise", "/nonexistent.npy"], "/nonexistent.npy"),
    ] {
        let mut c = case.clone();
        if extra[0] == "--scheduler" {
            c.scheduler = extra[1].to_string();
        }
        if extra[0] == "--width" {
            c.width = 62;
        }
        let args: Vec<&str> = if extra[0] == "--init-noise" {
            extra.clone()
        } else {
            vec![]
        };
        let result = sdweb(&c, &args, &output);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{extra:?} should fail");
        assert!(
            stderr.contains(expect),
            "{extra:?}: expected '{expect}' in: {stderr}"
        );
        assert!(!output.exists(), "no PNG is written on failure");
    }
    let missing = Command::new(env!("CARGO_BIN_EXE_sdweb"))
        .args([
            "generate",
            "--model",
            "/nonexistent",
            "--prompt",
            "x",
            "--output",
        ])
        .arg(&output)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("model_index.json"));
}

/// `--init-image --mask --preview-dir`: the CLI's inpainting equals diffusers' (4-channel UNet,
/// strength defaulting to 1.0 with a mask) and writes one preview per step.
#[test]
fn inpaint_with_previews_through_the_cli() {
    let dir = reference_dir().join("inpaint");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let case = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "inpaint-sd1_tiny-ddim-s1.0")
        .unwrap();
    assert_eq!(case["strength"], 1.0);
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-inpaint");
    let _ = std::fs::remove_dir_all(&out_dir);
    let output = out_dir.join("inpaint.png");
    let previews = out_dir.join("previews");
    let s = |key: &str| case[key].as_str().unwrap().to_string();
    let n = |key: &str| case[key].to_string();
    let result = Command::new(env!("CARGO_BIN_EXE_sdweb"))
        .args(["generate", "--model"])
        .arg(fixtures().join(s("model")))
        .args([
            "--prompt",
            &s("prompt"),
            "--negative-prompt",
            &s("negative_prompt"),
        ])
        .args([
            "--steps",
            &n("steps"),
            "--guidance",
            &n("guidance"),
            "--scheduler",
            &s("scheduler"),
        ])
        .args(["--seed", &n("seed"), "--precision", "f32"])
        .arg("--init-image")
        .arg(dir.join(s("init_image")))
        .arg("--mask")
        .arg(dir.join(s("mask")))
        .arg("--preview-dir")
        .arg(&previews)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "sdweb failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    // No --width/--height: the init image's size.
    let (rgb, w, h) = decode_rgb(&std::fs::read(&output).unwrap());
    assert_eq!(
        (w as u64, h as u64),
        (
            case["width"].as_u64().unwrap(),
            case["height"].as_u64().unwrap()
        )
    );
    let (want, ..) = decode_rgb(&std::fs::read(dir.join(s("png"))).unwrap());
    assert_image_close(&s("name"), &rgb, &want);
    let text = read_png_text(&std::fs::read(&output).unwrap()).unwrap();
    let params = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(params.contains("Denoising strength: 1"), "{params}");
    for step in 1..=case["steps"].as_u64().unwrap() {
        let preview = previews.join(format!("step-{step:03}.png"));
        let (_, pw, ph) = decode_rgb(&std::fs::read(&preview).expect("a preview per step"));
        assert_eq!((pw, ph), (w, h), "previews are enlarged to the image size");
    }

    // A mask without an init image is refused by the argument parser, naming the flag.
    let result = Command::new(env!("CARGO_BIN_EXE_sdweb"))
        .args(["generate", "--model"])
        .arg(fixtures().join("sd1_tiny"))
        .arg("--mask")
        .arg(dir.join(s("mask")))
        .args(["--output", "/dev/null"])
        .output()
        .unwrap();
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("--init-image"));
}

/// `--lora FILE:WEIGHT` and a `<lora:NAME:WEIGHT>` prompt tag found in `--lora-dir`: diffusers'
/// image with both LoRAs fused, and the parameters text records them as A1111 does.
#[test]
fn lora_flag_and_prompt_tag_give_the_diffusers_image() {
    let base = e2e_cases()
        .into_iter()
        .find(|c| c.name == "sd1-euler-cfg")
        .unwrap();
    let case = Case {
        prompt: format!("{} <lora:sd1_peft:0.6>", base.prompt),
        ..base.clone()
    };
    let loras = fixtures().join("lora");
    let kohya = format!(
        "{}:0.8",
        loras.join("sd1_kohya_locon.safetensors").display()
    );
    let noise = reference_dir().join("e2e").join(&case.init_noise);
    let output = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-lora.png");
    let result = sdweb(
        &case,
        &[
            "--init-noise",
            noise.to_str().unwrap(),
            "--lora",
            &kohya,
            "--lora-dir",
            loras.to_str().unwrap(),
        ],
        &output,
    );
    assert!(
        result.status.success(),
        "sdweb failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let png = std::fs::read(&output).unwrap();
    let want = std::fs::read(reference_dir().join("lora/sd1-kohya-0.8-peft-0.6.png")).unwrap();
    assert_image_close(
        "cli sd1-kohya-0.8-peft-0.6",
        &decode_rgb(&png).0,
        &decode_rgb(&want).0,
    );
    let chunks = read_png_text(&png).unwrap();
    let text = &chunks.iter().find(|(k, _)| k == "parameters").unwrap().1;
    let params = GenerationParams::parse_a1111(text).unwrap();
    assert_eq!(
        params.prompt,
        format!("{} <lora:sd1_kohya_locon:0.8>", case.prompt)
    );
    let hashes = params
        .extra
        .iter()
        .find(|(k, _)| k == "Lora hashes")
        .unwrap();
    // A1111's short hash: sha256 of the bytes after the safetensors header (checked with
    // hashlib on the fixture files).
    assert_eq!(
        hashes.1,
        "sd1_kohya_locon: 0806055fda62, sd1_peft: 630757e50d77"
    );
}

#[test]
fn an_unknown_lora_tag_lists_the_available_ones() {
    let mut case = e2e_cases().remove(0);
    case.prompt = "a cat <lora:sd1_pef:1>".into();
    let loras = fixtures().join("lora");
    let output = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-lora-unknown.png");
    let result = sdweb(&case, &["--lora-dir", loras.to_str().unwrap()], &output);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        stderr.contains(
            "<lora:sd1_pef>: no such LoRA; available: sd1_kohya_locon, sd1_peft, sdxl_kohya"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("compute precision"),
        "refused before the GPU: {stderr}"
    );
}
