//! Scheduler tests: hand-derived values and error handling, then every case of the diffusers
//! reference fixture (`tests/fixtures/reference/schedulers.{json,safetensors}`, see
//! `tests/fixtures/FORMAT.md`). `SDWEB_FIXTURES` overrides the fixture directory.

use std::collections::HashMap;
use std::path::PathBuf;

use sdweb::noise::NoiseGenerator;
use sdweb::schedulers::{SchedulerConfig, SchedulerError, SchedulerKind, build, parse_json};
use serde_json::Value;

const SD15: &str = r#"{
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
}"#;

fn sd15() -> SchedulerConfig {
    SchedulerConfig::from_json(SD15).unwrap()
}

fn with(config: &str, key: &str, value: Value) -> SchedulerConfig {
    let mut v = parse_json(config).unwrap();
    v[key] = value;
    SchedulerConfig::from_value(&v).unwrap()
}

fn timesteps(kind: SchedulerKind, config: &SchedulerConfig, steps: usize) -> Vec<f64> {
    build(kind, config, steps).unwrap().timesteps().to_vec()
}

#[test]
fn kind_names_round_trip() {
    for kind in SchedulerKind::ALL {
        assert_eq!(SchedulerKind::from_name(kind.name()), Some(kind));
        assert_eq!(SchedulerKind::from_name(kind.a1111_name()), Some(kind));
    }
    assert_eq!(
        SchedulerKind::from_name("euler-a"),
        Some(SchedulerKind::EulerAncestral)
    );
    assert_eq!(SchedulerKind::Pndm.a1111_name(), "PLMS");
    assert_eq!(SchedulerKind::from_name("heun"), None);
}

#[test]
fn kind_from_class_name() {
    assert_eq!(sd15().kind(), Ok(SchedulerKind::Pndm));
    let dpm = with(SD15, "_class_name", "DPMSolverMultistepScheduler".into());
    assert_eq!(dpm.kind(), Ok(SchedulerKind::DpmPp2M));
    let karras = with(
        r#"{"_class_name": "DPMSolverMultistepScheduler"}"#,
        "use_karras_sigmas",
        true.into(),
    );
    assert_eq!(karras.kind(), Ok(SchedulerKind::DpmPp2MKarras));
    let unknown = with(SD15, "_class_name", "HeunDiscreteScheduler".into());
    let err = unknown.kind().unwrap_err();
    assert!(err.to_string().contains("HeunDiscreteScheduler"), "{err}");
    assert_eq!(
        SchedulerConfig::default().kind(),
        Err(SchedulerError::MissingClassName)
    );
}

#[test]
fn sd15_timesteps_by_hand() {
    let c = with(SD15, "timestep_spacing", "leading".into());
    let leading: Vec<f64> = (0..10).rev().map(|i| (i * 100 + 1) as f64).collect();
    assert_eq!(timesteps(SchedulerKind::Ddim, &c, 10), leading);
    assert_eq!(timesteps(SchedulerKind::Euler, &c, 10), leading);
    assert_eq!(timesteps(SchedulerKind::EulerAncestral, &c, 10), leading);
    // PLMS repeats the second timestep.
    let mut plms = leading.clone();
    plms.insert(1, 801.0);
    assert_eq!(timesteps(SchedulerKind::Pndm, &c, 10), plms);
    // DPM-Solver spaces steps + 1 points: ratio 1000 // 11 = 90.
    let dpm: Vec<f64> = (1..=10).rev().map(|i| (i * 90 + 1) as f64).collect();
    assert_eq!(timesteps(SchedulerKind::DpmPp2M, &c, 10), dpm);
    // LCM ignores the spacing: every 5th of its 50 distillation timesteps 999, 979, ...
    let lcm: Vec<f64> = (0..10).map(|i| (999 - 100 * i) as f64).collect();
    assert_eq!(timesteps(SchedulerKind::Lcm, &c, 10), lcm);
    assert_eq!(
        timesteps(SchedulerKind::Lcm, &c, 4),
        [999.0, 759.0, 499.0, 259.0]
    );

    let trailing = with(SD15, "timestep_spacing", "trailing".into());
    let t: Vec<f64> = (0..10).map(|i| (999 - 100 * i) as f64).collect();
    assert_eq!(timesteps(SchedulerKind::Ddim, &trailing, 10), t);
    let linspace = with(SD15, "timestep_spacing", "linspace".into());
    // 999 * k / 9 = 111 k exactly.
    let l: Vec<f64> = (0..10).rev().map(|k| (111 * k) as f64).collect();
    assert_eq!(timesteps(SchedulerKind::Ddim, &linspace, 10), l);
    // 999 * k / 6 hits 166.5, 499.5 and 832.5: numpy rounds half to even.
    assert_eq!(
        timesteps(SchedulerKind::Ddim, &linspace, 7),
        [999.0, 832.0, 666.0, 500.0, 333.0, 166.0, 0.0]
    );

    // The SD 1.5 file has no timestep_spacing: each class uses its own default, `leading`
    // for DDIM and PNDM, `linspace` for Euler and DPM-Solver (over 11 points for DPM-Solver).
    let c = sd15();
    assert_eq!(timesteps(SchedulerKind::Ddim, &c, 10), leading);
    assert_eq!(timesteps(SchedulerKind::Euler, &c, 10), l);
    assert_eq!(
        timesteps(SchedulerKind::DpmPp2M, &c, 10),
        [
            999.0, 899.0, 799.0, 699.0, 599.0, 500.0, 400.0, 300.0, 200.0, 100.0
        ]
    );
}

#[test]
fn trailing_keeps_requested_step_count() {
    // numpy's float arange gives 62 values for 61 steps (the last one -1); we keep 61.
    let c = with(SD15, "timestep_spacing", "trailing".into());
    for kind in [
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::DpmPp2M,
    ] {
        let t = timesteps(kind, &c, 61);
        assert_eq!(t.len(), 61, "{kind}");
        assert!(t.iter().all(|&t| t >= 0.0), "{kind}: {t:?}");
    }
}

#[test]
fn sd15_sigmas_and_scales() {
    let leading = with(SD15, "timestep_spacing", "leading".into());
    let s = build(SchedulerKind::Euler, &leading, 10).unwrap();
    // Leading spacing: sqrt(sigma(901)^2 + 1), the fixture's value.
    assert!((s.init_noise_sigma() - 8.450066566467285).abs() < 1e-6);
    let linspace = with(SD15, "timestep_spacing", "linspace".into());
    let s = build(SchedulerKind::Euler, &linspace, 10).unwrap();
    let sigma_max = 14.614646911621094;
    assert!((s.init_noise_sigma() - sigma_max).abs() < 1e-6);
    let expect = 1.0 / (sigma_max * sigma_max + 1.0f64).sqrt();
    assert!((s.input_scale(0) - expect).abs() < 1e-9);
    for kind in [
        SchedulerKind::Ddim,
        SchedulerKind::DpmPp2M,
        SchedulerKind::Lcm,
    ] {
        let s = build(kind, &sd15(), 10).unwrap();
        assert_eq!((s.init_noise_sigma(), s.input_scale(3)), (1.0, 1.0));
    }
}

#[test]
fn ddim_final_step_returns_x0_with_alpha_one() {
    // With set_alpha_to_one the last DDIM step (prev timestep < 0) returns the x0 estimate.
    let c = with(SD15, "set_alpha_to_one", true.into());
    let mut s = build(SchedulerKind::Ddim, &c, 10).unwrap();
    let eps = vec![0.25f32; 8];
    let x = vec![1.0f32; 8];
    let out = s.step(&eps, 9, &x, &mut NoiseGenerator::new(0));
    // alphas_cumprod[1] of the scaled_linear schedule, from its betas.
    let b =
        |i: f64| (0.00085f64.sqrt() + i * (0.012f64.sqrt() - 0.00085f64.sqrt()) / 999.0).powi(2);
    let a1 = (1.0 - b(0.0)) * (1.0 - b(1.0));
    let x0 = (1.0 - (1.0 - a1).sqrt() * 0.25) / a1.sqrt();
    assert!((out[0] as f64 - x0).abs() < 1e-5, "{} vs {x0}", out[0]);
}

#[test]
fn add_noise_matches_forward_process() {
    let c = sd15();
    let ddim = build(SchedulerKind::Ddim, &c, 10).unwrap();
    // [sqrt(ᾱ), sqrt(1 - ᾱ)] at t = 901: variance preserving, and mostly noise.
    let v = ddim.add_noise(&[1.0, 0.0], &[0.0, 1.0], 0);
    assert!(((v[0] * v[0] + v[1] * v[1]) as f64 - 1.0).abs() < 1e-6);
    assert!(v[0] > 0.05 && v[0] < 0.2, "{v:?}");
    // Euler: x + sigma * noise, with sigma_0 from init_noise_sigma = sqrt(sigma_0² + 1).
    let leading = with(SD15, "timestep_spacing", "leading".into());
    let euler = build(SchedulerKind::Euler, &leading, 10).unwrap();
    let v = euler.add_noise(&[0.5], &[1.0], 0);
    let sigma = (euler.init_noise_sigma().powi(2) - 1.0).sqrt();
    assert!((v[0] as f64 - (0.5 + sigma)).abs() < 1e-4);
}

#[test]
fn bad_steps_are_errors() {
    let c = sd15();
    for kind in SchedulerKind::ALL {
        assert!(
            matches!(build(kind, &c, 0), Err(SchedulerError::InvalidSteps { .. })),
            "{kind}"
        );
        assert!(build(kind, &c, 1001).is_err(), "{kind}");
        assert!(build(kind, &c, 1).is_ok(), "{kind}");
    }
    // 1000 leading steps with steps_offset 1 reach timestep 1000.
    let err = build(SchedulerKind::Ddim, &c, 1000).err().unwrap();
    assert!(err.to_string().contains("1000"), "{err}");
    // LCM cannot take more steps than its distillation schedule has.
    assert!(build(SchedulerKind::Lcm, &c, 51).is_err());
    assert!(build(SchedulerKind::Lcm, &c, 50).is_ok());
}

#[test]
fn unsupported_config_values_are_errors() {
    let cases: [(SchedulerKind, &str, Value); 9] = [
        (SchedulerKind::Ddim, "thresholding", true.into()),
        (SchedulerKind::Ddim, "rescale_betas_zero_snr", true.into()),
        (SchedulerKind::Ddim, "beta_schedule", "sigmoid".into()),
        (
            SchedulerKind::EulerAncestral,
            "prediction_type",
            "sample".into(),
        ),
        (SchedulerKind::Euler, "use_exponential_sigmas", true.into()),
        (
            SchedulerKind::Euler,
            "interpolation_type",
            "log_linear".into(),
        ),
        (
            SchedulerKind::DpmPp2M,
            "algorithm_type",
            "sde-dpmsolver++".into(),
        ),
        (
            SchedulerKind::DpmPp2M,
            "prediction_type",
            "flow_prediction".into(),
        ),
        (SchedulerKind::Lcm, "thresholding", true.into()),
    ];
    for (kind, key, value) in cases {
        let c = with(SD15, key, value.clone());
        let err = build(kind, &c, 10).err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains(key), "{kind} {key}: {msg}");
        let shown = value
            .as_str()
            .map(str::to_string)
            .unwrap_or(value.to_string());
        assert!(msg.contains(&shown), "{kind} {key}: {msg}");
    }
    // Keys PNDM does not have are ignored by it, as diffusers' from_config does.
    let c = with(SD15, "rescale_betas_zero_snr", true.into());
    assert!(build(SchedulerKind::Pndm, &c, 10).is_ok());
    // Wrong JSON types name the key.
    let err = SchedulerConfig::from_value(&serde_json::json!({"steps_offset": "one"})).unwrap_err();
    assert!(err.to_string().contains("steps_offset"), "{err}");
    // timestep_spacing is parsed when the config is read: an unknown value fails there,
    // naming the key and the value.
    let err = SchedulerConfig::from_value(&serde_json::json!({"timestep_spacing": "karras"}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("timestep_spacing") && err.contains("karras"),
        "{err}"
    );
    assert!(SchedulerConfig::from_json("{").is_err());
}

#[test]
fn from_config_defaults_are_per_class() {
    // No clip_sample key: DDIM defaults to clipping x0 to [-1, 1], as diffusers does.
    let c = SchedulerConfig::from_json(r#"{"_class_name": "EulerDiscreteScheduler"}"#).unwrap();
    let mut s = build(SchedulerKind::Ddim, &c, 10).unwrap();
    // Last step: t = 0 (no steps_offset), alpha_prev = 1 (set_alpha_to_one defaults to true),
    // x0 = sqrt(1e-4) * 1000 / sqrt(1 - 1e-4) ≈ 10 is clipped to 1.
    let out = s.step(&[-1000.0], 9, &[0.0], &mut NoiseGenerator::new(0));
    assert!((out[0] - 1.0).abs() < 1e-6, "{}", out[0]);
    // Keys listed in `_use_default_values` take the target class's default.
    let c = SchedulerConfig::from_json(
        r#"{"timestep_spacing": "linspace", "_use_default_values": ["timestep_spacing"]}"#,
    )
    .unwrap();
    assert_eq!(c.timestep_spacing, None);
    // Python's -Infinity is accepted.
    let c = SchedulerConfig::from_json(r#"{"lambda_min_clipped": -Infinity}"#).unwrap();
    assert_eq!(c.lambda_min_clipped, Some(f64::NEG_INFINITY));
}

#[test]
fn multistep_schedulers_restart_on_index_zero() {
    let c = sd15();
    for kind in [SchedulerKind::DpmPp2M, SchedulerKind::Pndm] {
        let mut s = build(kind, &c, 5).unwrap();
        let run = |s: &mut Box<dyn sdweb::schedulers::Scheduler>| {
            let mut x = vec![0.3f32, -0.7, 1.1];
            for i in 0..s.timesteps().len() {
                let m: Vec<f32> = x.iter().map(|v| 0.5 * v + 0.1).collect();
                x = s.step(&m, i, &x, &mut NoiseGenerator::new(0));
            }
            x
        };
        let first = run(&mut s);
        assert_eq!(first, run(&mut s), "{kind}");
        assert!(first.iter().all(|v| v.is_finite()), "{kind}");
    }
}

// ---------------------------------------------------------------------------------------------
// diffusers reference fixture
// ---------------------------------------------------------------------------------------------

fn fixture_dir() -> PathBuf {
    std::env::var_os("SDWEB_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
        })
}

/// Minimal safetensors reader for the f32 tensors of the fixture.
fn read_safetensors(path: &PathBuf) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut tensors = HashMap::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(info["dtype"], "F32", "{name}");
        let offsets = info["data_offsets"].as_array().unwrap();
        let (begin, end) = (
            offsets[0].as_u64().unwrap() as usize,
            offsets[1].as_u64().unwrap() as usize,
        );
        let values = data[begin..end]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        tensors.insert(name.clone(), values);
    }
    tensors
}

/// Max |a - b|; any non-finite value on either side fails (a NaN would otherwise read as 0).
fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |max: f64, (&x, &y)| {
        let d = (x as f64 - y as f64).abs();
        assert!(d.is_finite(), "non-finite value: ours {x}, reference {y}");
        max.max(d)
    })
}

#[test]
fn diffusers_reference_cases() {
    let dir = fixture_dir();
    let json_path = dir.join("schedulers.json");
    let text = std::fs::read_to_string(&json_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate it with tests/fixtures/make_fixtures.py)",
            json_path.display()
        )
    });
    let cases = parse_json(&text).unwrap();
    let tensors = read_safetensors(&dir.join("schedulers.safetensors"));
    let tensor = |name: String| -> &Vec<f32> {
        tensors
            .get(&name)
            .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
    };

    let mut failures = Vec::new();
    let mut worst_overall = 0.0f64;
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let kind = SchedulerKind::from_name(case["scheduler"].as_str().unwrap()).unwrap();
        let config = SchedulerConfig::from_value(&case["config"]).unwrap();
        assert_eq!(config.kind(), Ok(kind), "{name}: kind from _class_name");
        let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
        let mut s = build(kind, &config, steps).unwrap_or_else(|e| panic!("{name}: {e}"));

        let want_t: Vec<f64> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        let t_ok = want_t.len() == s.timesteps().len()
            && want_t
                .iter()
                .zip(s.timesteps())
                .all(|(a, b)| (a - b).abs() <= 1e-6);
        if !t_ok {
            failures.push(format!(
                "{name}: timesteps {:?} != diffusers {want_t:?}",
                s.timesteps()
            ));
            continue;
        }
        let want_sigma = case["init_noise_sigma"].as_f64().unwrap();
        let rel = (s.init_noise_sigma() - want_sigma).abs() / want_sigma;
        if rel > 1e-6 {
            failures.push(format!(
                "{name}: init_noise_sigma {} != diffusers {want_sigma}",
                s.init_noise_sigma()
            ));
        }

        // The fixture draws sample0 from NoiseGenerator(seed) and the step noise of the
        // stochastic schedulers from the same stream, as the pipeline does.
        let mut noise = NoiseGenerator::new(case["seed"].as_u64().unwrap());
        let mut sample = tensor(format!("{name}.sample0")).clone();
        let drawn: Vec<f32> = noise
            .normal(sample.len())
            .iter()
            .map(|&x| x * want_sigma as f32)
            .collect();
        assert!(
            max_abs_diff(&drawn, &sample) <= 1e-5,
            "{name}: sample0 is not NoiseGenerator(seed) * init_noise_sigma"
        );

        let (mut worst_scaled, mut worst_prev) = ((0.0f64, 0), (0.0f64, 0));
        let mut largest = 0.0f64;
        for i in 0..s.timesteps().len() {
            let scale = s.input_scale(i);
            let scaled: Vec<f32> = sample.iter().map(|&x| (x as f64 * scale) as f32).collect();
            let e = max_abs_diff(&scaled, tensor(format!("{name}.scaled_input.{i}")));
            if e > worst_scaled.0 {
                worst_scaled = (e, i);
            }
            let model_output = tensor(format!("{name}.model_output.{i}"));
            sample = s.step(model_output, i, &sample, &mut noise);
            let want = tensor(format!("{name}.prev_sample.{i}"));
            largest = want.iter().fold(largest, |m, &x| m.max(x.abs() as f64));
            let e = max_abs_diff(&sample, want);
            if e > worst_prev.0 {
                worst_prev = (e, i);
            }
        }
        println!(
            "{name:38} worst error: scaled_input {:.2e} (step {}), prev_sample {:.2e} (step {}); \
             max |prev_sample| {largest:.2}",
            worst_scaled.0, worst_scaled.1, worst_prev.0, worst_prev.1
        );
        worst_overall = worst_overall.max(worst_scaled.0).max(worst_prev.0);
        if worst_scaled.0 > 1e-4 || worst_prev.0 > 1e-4 || worst_prev.0.is_nan() {
            failures.push(format!(
                "{name}: worst scaled_input error {:.3e} at step {}, worst prev_sample error {:.3e} at step {}",
                worst_scaled.0, worst_scaled.1, worst_prev.0, worst_prev.1
            ));
        }
    }
    println!(
        "{} cases, worst error {worst_overall:.3e}",
        cases.as_array().unwrap().len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
