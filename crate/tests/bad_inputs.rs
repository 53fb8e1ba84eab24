//! Bad inputs through the `sdweb` CLI, as a hostile user gives them: each fails with a message
//! that names the problem, before slow work where it can, and loses nothing (an existing
//! output stays as it was, no fragment is left). The README's bad-input table lists these
//! cases.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sdweb::weights::safetensors::SafetensorsHeader;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bad-inputs-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `sdweb ARGS`: (success, stderr).
fn sdweb(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sdweb"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a safetensors file of `tensors` (name, dtype name, shape, little-endian bytes).
fn write_safetensors(path: &Path, tensors: &[(String, &str, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let entry = serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()] });
        header.insert(name.clone(), entry);
        data.extend_from_slice(bytes);
    }
    let header = serde_json::Value::Object(header).to_string().into_bytes();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend(data);
    std::fs::write(path, file).unwrap();
}

/// The fixture's `component` weights as (name, dtype, shape, bytes).
fn fixture_tensors(
    model: &str,
    component: &str,
) -> Vec<(String, &'static str, Vec<usize>, Vec<u8>)> {
    let file = fixtures()
        .join(model)
        .join(component)
        .join(match component {
            "text_encoder" => "model.safetensors",
            _ => "diffusion_pytorch_model.safetensors",
        });
    let mut reader = std::fs::File::open(&file).unwrap();
    let header = SafetensorsHeader::read(&mut reader, &file.display().to_string()).unwrap();
    header
        .tensors
        .iter()
        .map(|(name, entry)| {
            let bytes = header.read_tensor(&mut reader, entry, "fixture").unwrap();
            (
                name.clone(),
                entry.dtype.safetensors_name(),
                entry.shape.clone(),
                bytes,
            )
        })
        .collect()
}

/// A copy of sd1_tiny (links to its files) whose `component` weights are `edit`ed.
fn broken_copy(
    dir: &Path,
    component: &str,
    edit: impl FnOnce(&mut Vec<(String, &'static str, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let source = fixtures().join("sd1_tiny");
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != component {
            let from = std::path::absolute(entry.path()).unwrap();
            std::os::unix::fs::symlink(from, model.join(entry.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(model.join(component)).unwrap();
    std::fs::copy(
        source.join(component).join("config.json"),
        model.join(component).join("config.json"),
    )
    .unwrap();
    let mut tensors = fixture_tensors("sd1_tiny", component);
    edit(&mut tensors);
    let name = if component == "text_encoder" {
        "model.safetensors"
    } else {
        "diffusion_pytorch_model.safetensors"
    };
    write_safetensors(&model.join(component).join(name), &tensors);
    model
}

/// Runs `generate` on `model` with `extra` arguments into `dir/out.png` (which holds "old"
/// before): it must fail naming `expect` and leave out.png as it was.
fn refused(dir: &Path, model: &Path, extra: &[&str], expect: &str) {
    let output = dir.join("out.png");
    std::fs::write(&output, b"old").unwrap();
    let model = model.to_str().unwrap();
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--prompt",
        "a red circle",
        "--precision",
        "f32",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--steps") {
        args.extend(["--steps", "2"]);
    }
    if !extra.contains(&"--output") {
        args.extend(["--output", output.to_str().unwrap()]);
    }
    let (ok, stderr) = sdweb(&args);
    assert!(!ok, "{extra:?} should fail; stderr: {stderr}");
    assert!(
        stderr.contains(expect),
        "{extra:?}: expected {expect:?} in: {stderr}"
    );
    assert_eq!(
        std::fs::read(&output).unwrap(),
        b"old",
        "{extra:?}: the existing output is kept"
    );
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().contains("partial")),
        "{extra:?}: fragments {left:?}"
    );
}

/// A PNG signature and header claiming `width` × `height`, without pixel data (~60 bytes).
fn png_header_only(path: &Path, width: u32, height: u32) {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    let mut writer = encoder.write_header().unwrap();
    // An IDAT with an empty zlib stream: decoders read the header up to the first one.
    writer
        .write_chunk(
            png::chunk::IDAT,
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        )
        .unwrap();
    drop(writer);
    std::fs::write(path, bytes).unwrap();
}

fn npy_f32(path: &Path, shape: &[usize], values: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

/// Settings the CLI refuses before loading the model (no GPU work at all).
#[test]
fn bad_settings_are_refused_before_any_slow_work() {
    let dir = scratch("settings");
    let model = fixtures().join("sd1_tiny");
    let huge = dir.join("huge.png");
    png_header_only(&huge, 60000, 60000);
    let huge = huge.to_str().unwrap();
    let missing_dir = dir.join("missing").join("x.png");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--guidance", "inf"],
            "guidance inf must be a finite number ≥ 0",
        ),
        (
            &["--guidance", "NaN"],
            "guidance NaN must be a finite number ≥ 0",
        ),
        (
            &["--guidance", "-1"],
            "guidance -1 must be a finite number ≥ 0",
        ),
        (
            &["--width", "-32"],
            "-32 is no size; sizes are positive multiples of 8",
        ),
        (&["--width", "0"], "0 is no size"),
        (
            &["--height", "100000"],
            "height 100000 is larger than 2048, the most sdweb accepts; nearest valid height: 2048",
        ),
        (&["--steps", "0"], "steps 0 must be between 1 and 1000"),
        (
            &["--init-image", huge],
            "huge.png: the PNG is 60000x60000; init images and masks may be at most 8192 pixels per side",
        ),
        (
            &["--init-image", huge, "--strength", "1.5"],
            "strength 1.5 must be in (0, 1]",
        ),
        (
            &["--output", missing_dir.to_str().unwrap()],
            "x.png: cannot be written",
        ),
        (
            &["--output", dir.to_str().unwrap()],
            "is a folder; give a file name",
        ),
    ];
    for (extra, expect) in cases {
        refused(&dir, &model, extra, expect);
    }
}

/// Sizes, noise and model folders that fail once the model's configs are read.
#[test]
fn bad_sizes_noise_and_folders_name_the_problem() {
    let dir = scratch("model");
    let fixture = fixtures().join("sd1_tiny");
    let nan_noise = dir.join("nan.npy");
    // The fixture's VAE factor is 4: 64×64 images have 16×16 latents.
    let mut values = vec![0.5f32; 4 * 16 * 16];
    values[17] = f32::NAN;
    npy_f32(&nan_noise, &[1, 4, 16, 16], &values);
    refused(
        &dir,
        &fixture,
        &["--width", "62"],
        "width 62 must be a positive multiple of 4 (the VAE scale factor); nearest valid width: 64",
    );
    let noise = nan_noise.to_str().unwrap();
    let size = ["--width", "64", "--height", "64", "--init-noise", noise];
    refused(
        &dir,
        &fixture,
        &size,
        "initial noise has 1 of 1024 values NaN or infinite",
    );

    for (json, expect) in [
        (
            r#"{"_class_name": "StableDiffusion3Pipeline"}"#,
            "StableDiffusion3Pipeline (Stable Diffusion 3) is not supported yet",
        ),
        (
            r#"{"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}"#,
            "no text_encoder entry; StableDiffusionXLPipeline needs a CLIPTextModel",
        ),
        ("garbage", "model_index.json: not valid JSON"),
    ] {
        let folder = dir.join("index-only");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("model_index.json"), json).unwrap();
        refused(&dir, &folder, &[], expect);
    }
}

/// Weights that do not fit the config: messages name the file, the tensor and the shapes.
#[test]
fn bad_weights_name_the_file_and_tensor() {
    let cases: [(
        &str,
        fn(&mut Vec<(String, &'static str, Vec<usize>, Vec<u8>)>),
        &str,
    ); 3] = [
        (
            "missing",
            |t| t.retain(|(n, ..)| n != "conv_in.bias"),
            "missing tensor conv_in.bias (expected shape [32]) in ",
        ),
        (
            "shape",
            |t| {
                let bias = t.iter_mut().find(|(n, ..)| n == "conv_in.bias").unwrap();
                bias.2 = vec![16];
                bias.3.truncate(16 * 4);
            },
            "tensor conv_in.bias in ",
        ),
        (
            "integer",
            |t| t.iter_mut().find(|(n, ..)| n == "conv_in.bias").unwrap().1 = "I32",
            "tensor conv_in.bias holds integers",
        ),
    ];
    for (name, edit, expect) in cases {
        let dir = scratch(&format!("weights-{name}"));
        let model = broken_copy(&dir, "unet", edit);
        let file = "unet/diffusion_pytorch_model.safetensors";
        refused(&dir, &model, &["--width", "64", "--height", "64"], expect);
        refused(&dir, &model, &["--width", "64", "--height", "64"], file);
    }
}

/// NaN weights give an error naming the stage, never a black PNG with exit 0.
#[test]
fn non_finite_results_are_errors_naming_the_stage() {
    let nan_bias = |t: &mut Vec<(String, &'static str, Vec<usize>, Vec<u8>)>, name: &str| {
        let bias = t.iter_mut().find(|(n, ..)| n == name).unwrap();
        assert_eq!(bias.1, "F32");
        bias.3 = bias
            .3
            .chunks(4)
            .flat_map(|_| f32::NAN.to_le_bytes())
            .collect();
    };
    let size = [
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "1",
        "--scheduler",
        "ddim",
    ];
    let dir = scratch("nan-unet");
    let model = broken_copy(&dir, "unet", |t| nan_bias(t, "conv_out.bias"));
    refused(
        &dir,
        &model,
        &size,
        "the UNet's output at step 1 of 2 has 1024 of 1024 values NaN or infinite",
    );
    let dir = scratch("nan-vae");
    let model = broken_copy(&dir, "vae", |t| nan_bias(t, "decoder.conv_out.bias"));
    refused(
        &dir,
        &model,
        &size,
        "the VAE's decoded image has 12288 of 12288 values NaN or infinite",
    );
}

/// `sdweb quantize` never writes into its input, never over a folder, and leaves nothing
/// behind when it fails.
#[test]
fn quantize_refuses_its_input_and_existing_folders() {
    let dir = scratch("quantize");
    let model = dir.join("model");
    let status = Command::new("cp")
        .arg("-r")
        .arg(fixtures().join("sd1_tiny"))
        .arg(&model)
        .status()
        .unwrap();
    assert!(status.success());
    let config = std::fs::read(model.join("unet").join("config.json")).unwrap();
    let m = model.to_str().unwrap();
    let inside = model.join("q8");
    let existing = dir.join("existing");
    std::fs::create_dir_all(&existing).unwrap();
    for (output, expect) in [
        (
            m.to_string(),
            "or inside it; write the copy to another folder",
        ),
        (inside.display().to_string(), "or inside it"),
        (existing.display().to_string(), "exists already"),
    ] {
        let (ok, stderr) = sdweb(&[
            "quantize", "--model", m, "--to", "q8_0", "--output", &output,
        ]);
        assert!(!ok && stderr.contains(expect), "{output}: {stderr}");
    }
    assert_eq!(
        std::fs::read(model.join("unet").join("config.json")).unwrap(),
        config,
        "the model is intact"
    );
    assert!(!inside.exists());
    // A failing quantise (the UNet's weights are cut short) leaves no folder that looks like a model.
    let unet = model
        .join("unet")
        .join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&unet).unwrap();
    std::fs::write(&unet, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.join("q8");
    let (ok, stderr) = sdweb(&[
        "quantize",
        "--model",
        m,
        "--to",
        "q8_0",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("diffusion_pytorch_model.safetensors"),
        "{stderr}"
    );
    assert!(!out.exists(), "no half-written model");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "only model/ and existing/ are left: {left:?}"
    );
}
