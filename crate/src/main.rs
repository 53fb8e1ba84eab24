//! The `sdweb` command line: `sdweb generate ...` and `sdweb bench ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::{DType, Device};
use clap::{Args, Parser, Subcommand};

use sdweb::kernels::KernelPolicy;
use sdweb::lora::select::{LoraRequest, parse_lora_arg};
use sdweb::options::{ChoiceParser, Precision, PromptSyntax};
use sdweb::pipeline::{
    GenerateRequest, InitImage, LoadOptions, Progress, StableDiffusion, StdClock,
};
use sdweb::png_meta::{GenerationParams, encode_png};
use sdweb::schedulers::SchedulerKind;
use sdweb::weights::{QuantPolicy, QuantType};

#[derive(Parser)]
#[command(
    name = "sdweb",
    version,
    about = "Stable Diffusion on WebGPU (natively through wgpu)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate one image and write it as PNG (with A1111 parameters and an AI-generated label).
    Generate {
        #[command(flatten)]
        opts: GenOpts,
        /// Where to write the PNG.
        #[arg(long)]
        output: PathBuf,
    },
    /// Time each stage and report peak GPU memory as one JSON line on stdout.
    Bench {
        #[command(flatten)]
        opts: GenOpts,
        /// Write the image too.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Stop after the UNet steps (no VAE decode, no image): for full-size models on slow
        /// devices where only the UNet step is being measured.
        #[arg(long, conflicts_with = "output")]
        no_decode: bool,
        /// Only load the model and report its sizes (bytes on disk, GPU bytes after load).
        #[arg(long, conflicts_with_all = ["output", "no_decode"])]
        load_only: bool,
        /// Load for real, then run the generation as a CubeCL dry run: every kernel is compiled
        /// and every buffer allocated as in a real run, but launches are dropped (autotune's
        /// own measurements still execute). Measures peak GPU memory of full-size models on
        /// slow devices in minutes; the timings are then compile + dispatch cost only.
        #[arg(long, conflicts_with_all = ["output", "load_only"])]
        dry_run: bool,
        /// Generations to run in this process: the first is cold (its compile pass included),
        /// the stage times reported are the last one's.
        #[arg(long, default_value_t = 2)]
        runs: usize,
        /// Time every kernel (one at a time, so the runs themselves are slower) and print the
        /// last run's most expensive ones to stderr.
        #[arg(long)]
        profile: bool,
    },
    /// Write a copy of a diffusers folder with q8_0/q4_0 layer weights (loads like any model).
    Quantize {
        /// A diffusers model folder.
        #[arg(long)]
        model: PathBuf,
        /// q8_0, q4_0, or f16 (no quantisation: an fp16 copy).
        #[arg(long)]
        to: String,
        /// Per-tensor overrides, PATTERN=q8_0|q4_0|f16 separated by commas; a pattern matches
        /// `component/tensor.name` by substring, e.g. `vae/=q8_0,attn=q8_0`.
        #[arg(long, default_value = "")]
        quant_override: String,
        /// The output folder.
        #[arg(long)]
        output: PathBuf,
    },
}

#[derive(Args, Clone)]
struct GenOpts {
    /// A diffusers model folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value = "")]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Default: the model's (20; 4 for LCM; 1 for SD-Turbo-style trailing schedules).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale, finite and ≥ 0; ≤ 1 skips the unconditional pass (0 is
    /// SD-Turbo's); an LCM-distilled UNet embeds it instead. Default: the model's (7.5; 8.5
    /// for LCM-distilled UNets; 1 for LCM schedulers; 0 for SD-Turbo-style).
    #[arg(long, allow_negative_numbers = true)]
    guidance: Option<f64>,
    /// The sampler (default: the model's own).
    #[arg(long, value_parser = ChoiceParser::<SchedulerKind>::default())]
    scheduler: Option<SchedulerKind>,
    /// How the prompts are read: A1111's emphasis, BREAK and long prompts, or diffusers' plain
    /// text cut at 77 tokens.
    #[arg(long, default_value = "a1111", value_parser = ChoiceParser::<PromptSyntax>::default())]
    prompt_syntax: PromptSyntax,
    /// A positive multiple of the VAE factor (8 for SD), at most 2048. Default: the model's
    /// native size (UNet sample_size × VAE factor).
    #[arg(long, value_parser = pixels, allow_negative_numbers = true)]
    width: Option<usize>,
    #[arg(long, value_parser = pixels, allow_negative_numbers = true)]
    height: Option<usize>,
    /// Default: random (printed to stderr).
    #[arg(long)]
    seed: Option<u64>,
    /// float32 .npy of unit-normal latents [1, 4, H/f, W/f], used as diffusers' `latents=`.
    #[arg(long)]
    init_noise: Option<PathBuf>,
    /// img2img: start from this PNG (resized to --width/--height when given, else its own
    /// size rounded down to the VAE factor).
    #[arg(long, conflicts_with = "init_noise")]
    init_image: Option<PathBuf>,
    /// img2img/inpainting: how much to change the init image, in (0, 1] (diffusers' defaults:
    /// 0.8 for img2img, 1.0 for inpainting).
    #[arg(long, requires = "init_image", allow_negative_numbers = true)]
    strength: Option<f64>,
    /// Inpainting: a PNG mask (white = repaint, black = keep), with --init-image.
    #[arg(long, requires = "init_image")]
    mask: Option<PathBuf>,
    /// Write a preview after every step to DIR/step-NNN.png (TAESD with --taesd, else a cheap
    /// latent projection).
    #[arg(long)]
    preview_dir: Option<PathBuf>,
    /// A TAESD folder (diffusers AutoencoderTiny, e.g. madebyollin/taesd) for the previews.
    #[arg(long, requires = "preview_dir")]
    taesd: Option<PathBuf>,
    /// Compute precision; auto: f16 where the adapter has shader-f16, else f32.
    #[arg(long, default_value_t = Precision::Auto, value_parser = ChoiceParser::<Precision>::default())]
    precision: Precision,
    /// A single-file checkpoint (.safetensors with LDM names, or a stable-diffusion.cpp .gguf)
    /// whose weights replace the --model folder's; the folder still gives configs, tokenizer
    /// and scheduler.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Quantise layer weights while loading (kept quantised in GPU memory).
    #[arg(long, value_parser = ChoiceParser::<QuantType>::default())]
    quantize: Option<QuantType>,
    /// Per-tensor overrides for --quantize, PATTERN=q8_0|q4_0|f16 separated by commas.
    #[arg(long, default_value = "", requires = "quantize")]
    quant_override: String,
    /// Which kernels SD's hot ops run: `sdweb` (our WGSL kernels: flash attention, tiled GEMM and
    /// implicit-GEMM conv, fused norms; no autotune, no subgroups) or `burn` (burn's ops, with
    /// quantised weights dequantised first: the reference and the baseline).
    #[arg(long, default_value = "sdweb", value_parser = ChoiceParser::<KernelPolicy>::default())]
    kernels: KernelPolicy,
    /// A LoRA (.safetensors, kohya/A1111 or diffusers/PEFT names) merged into the weights as
    /// they load, FILE[:WEIGHT] (default weight 1); repeatable, the LoRAs add up.
    #[arg(long = "lora", value_name = "FILE[:WEIGHT]", value_parser = parse_lora_arg, allow_hyphen_values = true)]
    loras: Vec<LoraRequest>,
    /// Where the prompt's `<lora:NAME:WEIGHT>` tags find NAME.safetensors (they also name
    /// --lora files by their stem).
    #[arg(long)]
    lora_dir: Option<PathBuf>,
}

/// A width or height: a positive number of pixels (the model's VAE factor is checked once its
/// config is read).
fn pixels(text: &str) -> Result<usize, String> {
    match text.parse::<i64>() {
        Ok(v) if v > 0 => Ok(v as usize),
        Ok(v) => Err(format!(
            "{v} is no size; sizes are positive multiples of 8, e.g. 512"
        )),
        Err(_) => Err(format!("{text:?} is not a number of pixels, e.g. 512")),
    }
}

/// Everything about the command line that can be wrong without the model, checked before
/// the GPU is touched or a weight is read.
fn check_settings(opts: &GenOpts, output: Option<&PathBuf>) -> Result<(), String> {
    use sdweb::checks;
    if let Some(steps) = opts.steps {
        checks::check_steps(steps)?;
    }
    if let Some(guidance) = opts.guidance {
        checks::check_guidance(guidance)?;
    }
    if let Some(strength) = opts.strength {
        checks::check_strength(strength)?;
    }
    for (what, side) in [("width", opts.width), ("height", opts.height)] {
        if let Some(side) = side {
            checks::check_side(what, side, 1)?;
        }
    }
    if let Some(dir) = &opts.preview_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if let Some(path) = output {
        sdweb::files::check_writable(path)?;
    }
    Ok(())
}

/// An init image or mask, decoded (with its size limits) before anything slow runs.
fn read_png(path: &std::path::Path) -> Result<sdweb::image_io::RgbImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    sdweb::image_io::decode_png_rgb(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The policy for `--quantize TYPE --quant-override SPEC`.
fn quant_policy(to: &str, overrides: &str) -> Result<QuantPolicy, String> {
    let ty = QuantType::parse(to)
        .ok_or_else(|| format!("unknown quantisation {to}; choose q8_0 or q4_0"))?;
    QuantPolicy::new(ty).with_overrides(overrides)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate { opts, output } => run(&opts, Some(&output), None),
        Command::Bench {
            opts,
            output,
            no_decode,
            load_only,
            dry_run,
            runs,
            profile,
        } => run(
            &opts,
            output.as_ref(),
            Some(BenchMode {
                decode: !no_decode,
                load_only,
                dry_run,
                runs,
                profile,
            }),
        ),
        Command::Quantize {
            model,
            to,
            quant_override,
            output,
        } => quantize(&model, &to, &quant_override, &output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

struct BenchMode {
    decode: bool,
    load_only: bool,
    dry_run: bool,
    runs: usize,
    profile: bool,
}

/// What `sdweb bench` prints about a run.
struct BenchReport<'a> {
    opts: &'a GenOpts,
    width: usize,
    height: usize,
    dtype: DType,
    mode: &'a BenchMode,
    steps: usize,
    /// Whether the unconditional batch row ran.
    cfg: bool,
    /// The first generation (compile pass included) and the last one.
    cold: &'a sdweb::pipeline::Timings,
    warm: &'a sdweb::pipeline::Timings,
    scheduler: &'a str,
    load_ms: f64,
    weight_bytes: Option<u64>,
    peak: Option<u64>,
}

/// The bench's JSON line: per-stage times of the warm run (the UNet step as its median),
/// dispatch counts, and the cold first image (compile included) apart from the warm one.
fn bench_json(r: &BenchReport) -> serde_json::Value {
    let (opts, warm) = (r.opts, r.warm);
    let mut steps = warm.unet_steps_ms.clone();
    steps.sort_by(f64::total_cmp);
    let median = steps.get(steps.len() / 2).copied().unwrap_or(0.0);
    let per_step = warm.unet_step_dispatches.first().copied().unwrap_or(0);
    serde_json::json!({
        "model": opts.model.display().to_string(),
        "width": r.width, "height": r.height, "steps": r.steps, "cfg": r.cfg,
        "precision": format!("{:?}", r.dtype), "scheduler": r.scheduler,
        "quantize": opts.quantize.map_or("none", QuantType::name),
        "kernels": opts.kernels.name(),
        "dry_run": r.mode.dry_run,
        "runs": r.mode.runs,
        "weights_on_disk_bytes": model_bytes_on_disk(&opts.model, r.dtype == DType::F16),
        "gpu_bytes_after_load": r.weight_bytes,
        "load_ms": r.load_ms,
        "compile_ms": r.cold.compile_ms,
        "compiled_pipelines": r.cold.compiled_pipelines,
        // The compile pass runs inside the first generation.
        "cold_first_image_ms": r.cold.total_ms,
        "warm_image_ms": warm.total_ms,
        "tokenize_ms": warm.tokenize_ms,
        "text_encoder_ms": warm.text_encoder_ms,
        "unet_step_ms": warm.unet_steps_ms,
        "unet_step_median_ms": median,
        "cold_first_step_ms": r.cold.unet_steps_ms.first(),
        "vae_decode_ms": r.mode.decode.then_some(warm.vae_decode_ms),
        "dispatches": {
            "text_encoder": warm.text_encoder_dispatches,
            "unet_step": per_step,
            "vae_decode": r.mode.decode.then_some(warm.vae_decode_dispatches),
        },
        "total_ms": warm.total_ms,
        "peak_gpu_bytes": r.peak,
    })
}

fn run(
    opts: &GenOpts,
    output: Option<&PathBuf>,
    bench: Option<BenchMode>,
) -> Result<(), Box<dyn std::error::Error>> {
    check_settings(opts, output)?;
    let loras = LoraChoice::resolve(opts)?;
    let init = opts.init_image.as_deref().map(read_png).transpose()?;
    let mask = opts.mask.as_deref().map(read_png).transpose()?;
    let clock = StdClock::default();
    let t0 = clock_ms(&clock);
    let device = Device::wgpu_options()
        .init()
        .map_err(|e| format!("no usable GPU adapter: {e:?}"))?;
    let dtype = opts.precision.resolve(device.supports_dtype(DType::F16))?;
    eprintln!("compute precision: {dtype:?}");
    let model = load_model(opts, &device, dtype, loras.set.clone())?;
    let weight_bytes = reserved_bytes(&device);
    let load_ms = clock_ms(&clock) - t0;
    eprintln!("loaded {} in {:.0} ms", opts.model.display(), load_ms);
    if bench.as_ref().is_some_and(|b| b.load_only) {
        let line = serde_json::json!({
            "model": opts.model.display().to_string(),
            "precision": format!("{dtype:?}"),
            "quantize": opts.quantize.map_or("none", QuantType::name),
            "load_ms": load_ms,
            "weights_on_disk_bytes": model_bytes_on_disk(&opts.model, dtype == DType::F16),
            "gpu_bytes_after_load": weight_bytes,
        });
        println!("{line}");
        return Ok(());
    }
    let mut request = build_request(opts, &model, init, mask.as_ref())?;
    request.prompt = loras.prompt.clone();
    eprintln!(
        "seed {}, {}x{}, {} steps, guidance {}",
        request.seed, request.width, request.height, request.steps, request.guidance
    );
    // The pool's reservation can shrink, so the peak is sampled after every stage.
    let peak = std::cell::Cell::new(weight_bytes);
    let sample_peak = || peak.set(peak.get().max(reserved_bytes(&device)));
    let mut report = cli_progress(opts, request.width);
    let mut on_progress = |p: Progress| {
        sample_peak();
        report(p)
    };
    let dry_run = bench
        .as_ref()
        .is_some_and(|b| b.dry_run)
        .then(burn::cubecl::dry_run::DryRun::new);
    let mut outputs = generate_runs(&model, &request, bench.as_ref(), &clock, &mut on_progress)?;
    let cold = outputs.first().expect("at least one run").timings.clone();
    let out = outputs.pop().expect("at least one run");
    sample_peak();
    drop(dry_run);

    if let Some(path) = output {
        let noise_source = opts.init_noise.as_deref().map(file_name);
        let mut params =
            request.a1111_parameters(out.scheduler, model.name(), noise_source.as_deref());
        loras.record(&mut params, &opts.prompt);
        let png = encode_png(&out.rgb, out.width as u32, out.height as u32, &params)?;
        sdweb::files::write_atomically(path, &png)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(mode) = bench {
        let line = bench_json(&BenchReport {
            opts,
            width: request.width,
            height: request.height,
            dtype,
            mode: &mode,
            steps: request.steps,
            cfg: model.uses_cfg(request.guidance),
            cold: &cold,
            warm: &out.timings,
            scheduler: out.scheduler.name(),
            load_ms,
            weight_bytes,
            peak: peak.get(),
        });
        println!("{line}");
    }
    Ok(())
}

/// The LoRAs of --lora and the prompt's `<lora:…>` tags, read before the GPU is touched.
struct LoraChoice {
    /// The prompt without its tags (what the text encoder reads).
    prompt: String,
    tags: Vec<sdweb::lora::prompt_tags::LoraTag>,
    set: sdweb::lora::LoraSet,
}

impl LoraChoice {
    fn resolve(opts: &GenOpts) -> Result<Self, Box<dyn std::error::Error>> {
        let (prompt, tags) = sdweb::lora::prompt_tags::take_lora_tags(&opts.prompt)?;
        let chosen = sdweb::lora::select::resolve(&opts.loras, opts.lora_dir.as_deref(), &tags)?;
        let mut set = sdweb::lora::LoraSet::default();
        for lora in &chosen {
            let file = sdweb::lora::LoraFile::read(&lora.path)?;
            set.push(std::sync::Arc::new(file), lora.weight);
        }
        Ok(Self { prompt, tags, set })
    }

    /// The parameters text as A1111 writes it: the prompt with its tags (one added for each
    /// --lora no tag names) and `Lora hashes`.
    fn record(&self, params: &mut GenerationParams, original_prompt: &str) {
        if let Some(field) = self.set.a1111_hashes() {
            params.prompt = self.set.prompt_with_tags(original_prompt, &self.tags);
            params.extra.push(field);
        }
    }
}

/// The model: the --model folder, or its configs with a single-file checkpoint's weights;
/// quantised while loading with --quantize; TAESD for previews with --taesd.
fn load_model(
    opts: &GenOpts,
    device: &Device,
    dtype: DType,
    loras: sdweb::lora::LoraSet,
) -> Result<StableDiffusion, Box<dyn std::error::Error>> {
    let options = LoadOptions {
        quantization: opts
            .quantize
            .map(|to| QuantPolicy::new(to).with_overrides(&opts.quant_override))
            .transpose()?,
        kernels: opts.kernels,
        loras,
    };
    let mut model = match &opts.checkpoint {
        Some(file) => {
            let (model, report) = sdweb::checkpoint::load_single_file_with_report(
                file,
                &opts.model,
                device,
                dtype,
                options,
            )?;
            eprintln!(
                "{}: {} tensors used, {} ignored, storage {:?}",
                file.display(),
                report.used,
                report.ignored.len(),
                report.storage_types
            );
            model
        }
        None => StableDiffusion::load_with(&opts.model, device, dtype, options)?,
    };
    if let Some(dir) = &opts.taesd {
        model.load_preview_decoder(dir)?;
    }
    Ok(model)
}

/// The request the options describe: the size (an init image sets the default, rounded down
/// to the VAE factor, as diffusers), the init image and mask at that size, the noise.
fn build_request(
    opts: &GenOpts,
    model: &StableDiffusion,
    init: Option<sdweb::image_io::RgbImage>,
    mask: Option<&sdweb::image_io::RgbImage>,
) -> Result<GenerateRequest, Box<dyn std::error::Error>> {
    let f = model.vae_scale_factor();
    let fit = |side: usize| (side / f).max(1) * f;
    let native = model.default_size();
    let width = opts
        .width
        .or(init.as_ref().map(|i| fit(i.width)))
        .unwrap_or(native);
    let height = opts
        .height
        .or(init.as_ref().map(|i| fit(i.height)))
        .unwrap_or(native);
    let init_image =
        init.map(|image| InitImage::prepare(&image, mask, width, height, opts.strength));
    let init_noise = match &opts.init_noise {
        Some(path) => Some(read_init_noise(path, model, width, height)?),
        None => None,
    };
    let recommended = model.recommended_steps_guidance();
    Ok(GenerateRequest {
        prompt: opts.prompt.clone(),
        negative_prompt: opts.negative_prompt.clone(),
        prompt_syntax: opts.prompt_syntax,
        steps: opts.steps.unwrap_or(recommended.0),
        guidance: opts.guidance.unwrap_or(recommended.1),
        scheduler: opts.scheduler,
        width,
        height,
        seed: opts.seed.unwrap_or_else(random_seed),
        init_noise,
        init_image,
        preview_every: opts.preview_dir.is_some().then_some(1),
    })
}

/// `--init-noise`: unit-normal latents of exactly the request's latent shape.
fn read_init_noise(
    path: &std::path::Path,
    model: &StableDiffusion,
    width: usize,
    height: usize,
) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (shape, values) =
        sdweb::npy::read_npy_f32(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let f = model.vae_scale_factor();
    let expected = [1, model.unet().config().in_channels, height / f, width / f];
    if shape != expected {
        return Err(format!(
            "{}: shape {shape:?}, expected {expected:?} for {width}x{height}",
            path.display()
        ));
    }
    Ok(values)
}

/// Progress on stderr, and the previews into --preview-dir.
fn cli_progress(opts: &GenOpts, width: usize) -> impl FnMut(Progress) + '_ {
    move |p: Progress| match p {
        Progress::Tokenized {
            truncated: true,
            token_count,
            max_length,
        } => eprintln!(
            "warning: the prompt has {token_count} tokens and was cut to {max_length} (CLIP's limit)"
        ),
        Progress::Compiled { pipelines, ms } => {
            eprintln!("compiled {pipelines} pipelines in {ms:.0} ms")
        }
        Progress::Step { index, total, ms } => eprintln!("step {index}/{total} ({ms:.0} ms)"),
        Progress::Preview {
            index,
            rgb,
            width: w,
            height: h,
            ..
        } => {
            if let Some(dir) = &opts.preview_dir
                && let Err(e) = write_preview(dir, index, &rgb, w, h, width / w.max(1))
            {
                eprintln!("warning: preview {index} not written: {e}");
            }
        }
        Progress::Decoded => eprintln!("decoded"),
        _ => {}
    }
}

/// The generation, `runs` times for a bench (the first is cold: compile included), with a
/// kernel profile of the last; `--no-decode` stops before the VAE.
fn generate_runs(
    model: &StableDiffusion,
    request: &GenerateRequest,
    bench: Option<&BenchMode>,
    clock: &StdClock,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Vec<sdweb::pipeline::GenerateOutput>, Box<dyn std::error::Error>> {
    let decode = bench.is_none_or(|b| b.decode);
    let runs = bench.map_or(1, |b| b.runs.max(1));
    let profile = bench.is_some_and(|b| b.profile) && sdweb::launches::enable_profiling();
    let mut outputs = Vec::with_capacity(runs);
    for run in 0..runs {
        if profile && run + 1 == runs {
            sdweb::launches::take_profile();
        }
        let t_generate = clock_ms(clock);
        outputs.push(if decode {
            pollster::block_on(model.generate(request, clock, on_progress))?
        } else {
            let denoised =
                pollster::block_on(model.denoise(request, clock, on_progress, &|| false))?;
            sdweb::pipeline::GenerateOutput {
                rgb: Vec::new(),
                width: request.width,
                height: request.height,
                scheduler: denoised.scheduler,
                timings: sdweb::pipeline::Timings {
                    total_ms: clock_ms(clock) - t_generate,
                    ..denoised.timings
                },
            }
        });
    }
    if profile {
        eprintln!("kernel profile of the last run (ms, launches):");
        for (name, launches, ms) in sdweb::launches::take_profile().iter().take(25) {
            eprintln!("{ms:10.1} ms {launches:6}  {name}");
        }
    }
    Ok(outputs)
}

/// A latent-projection preview, enlarged to the image size, as DIR/step-NNN.png.
fn write_preview(
    dir: &std::path::Path,
    step: usize,
    rgb: &[u8],
    w: usize,
    h: usize,
    factor: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let factor = factor.max(1);
    let rgb = sdweb::preview::upscale_nearest(rgb, w, h, factor);
    let params = GenerationParams {
        prompt: format!("preview of step {step}"),
        ..Default::default()
    };
    let png = encode_png(&rgb, (w * factor) as u32, (h * factor) as u32, &params)?;
    sdweb::files::write_atomically(&dir.join(format!("step-{step:03}.png")), &png)?;
    Ok(())
}

fn quantize(
    model: &std::path::Path,
    to: &str,
    overrides: &str,
    output: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let policy = match to {
        "f16" => None,
        _ => Some(quant_policy(to, overrides)?),
    };
    let reports = sdweb::weights::quantize_model::quantize_folder(model, output, policy.as_ref())?;
    for r in &reports {
        eprintln!(
            "{}: {} -> {} bytes ({:?})",
            r.component, r.input_bytes, r.output_bytes, r.tensors
        );
    }
    println!(
        "{}",
        serde_json::json!({ "output": output.display().to_string(), "to": to, "components": reports })
    );
    Ok(())
}

/// Bytes of the weight files a load reads (the fp16 variant first on the f16 path, as the loader).
fn model_bytes_on_disk(dir: &std::path::Path, prefer_fp16: bool) -> u64 {
    let Ok(index) = sdweb::model_index::ModelIndex::read(dir) else {
        return 0;
    };
    index
        .components()
        .iter()
        .filter_map(|c| {
            sdweb::weights::find_component_file(
                &dir.join(c.folder()),
                c.weights_stem(),
                prefer_fp16,
            )
            .ok()
        })
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn clock_ms(clock: &StdClock) -> f64 {
    use sdweb::pipeline::Clock;
    clock.now_ms()
}

fn reserved_bytes(device: &Device) -> Option<u64> {
    device.memory_pool_usage().map(|u| u.bytes_reserved as u64)
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos % 4_294_967_296
}
