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
