#!/usr/bin/env python3
"""sdweb against diffusers on one GPU: full-size random-weight SD 1.5 and SD 2.1, 512x512, CFG.

    python tests/gpu/bench.py --sdweb PATH/TO/sdweb --work /tmp/gpubench [--steps 20]

1. Builds SD 1.5 and SD 2.1 diffusers folders with the published configs (tests/fixtures/
   make_fixtures.py: FULL) and random fp16 weights from a fixed seed (torch on the GPU; nothing
   is downloaded), then q8_0 / q4_0 copies with `sdweb quantize`.
2. Runs `sdweb bench` (f16 compute, dense f16 / q8_0 / q4_0 weights, VAE decode included, two
   generations in one process: cold with its compile pass, then warm), each with an empty
   CubeCL cache (XDG_CACHE_HOME), so the cold figure includes every compile.
3. Runs diffusers' StableDiffusionPipeline on the same fp16 folders, same prompt, steps,
   guidance, size and scheduler: torch fp16, SDPA attention.
4. Prints one table and writes the JSON (--json, default WORK/results.json).

Every stage is timed against --budget-s: when the first sdweb run shows that the rest would
not fit, later sdweb runs use fewer steps (recorded per row). Random weights give meaningless
images (often NaN in fp16); the work per step is the real model's.
"""

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
NEGATIVE = "blurry, low quality"
SEED = 1
# The tokenizer folders of the test fixtures are the real CLIP vocabulary (SD 2.x pads with "!").
TOKENIZERS = {"sd15": "sd1_tiny", "sd21": "sd2_tiny"}


def fixture_configs(which):
    """make_fixtures.py's FULL (published SD 1.5 / 2.1 configs) or TINY (the test fixtures'
    architectures, for a smoke test of this script on a CPU)."""
    spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(FIXTURES, "make_fixtures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if which == "full":
        return module.FULL
    return {"sd15": module.TINY["sd1"], "sd21": module.TINY["sd2"]}


def torch_device():
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_model(name, spec, out):
    """A diffusers folder with random fp16 weights (seeded), built on the GPU."""
    import torch
    import diffusers
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if os.path.exists(os.path.join(out, "model_index.json")):
        return
    t0 = time.time()
    torch.manual_seed(SEED)
    with torch.device(torch_device()):
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"])).half()
        unet = UNet2DConditionModel(**spec["unet"]).half()
        vae = AutoencoderKL(**spec["vae"]).half()
    cls_name, sched_cfg = spec["scheduler"]
    scheduler = getattr(diffusers, cls_name).from_config(sched_cfg)
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(FIXTURES, TOKENIZERS[name], "tokenizer"))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    os.replace(tmp, out)
    log(f"{name}: random fp16 folder in {time.time() - t0:.0f} s")


def sdweb_cmd(sdweb, *args, env=None, timeout=None):
    t0 = time.time()
    proc = subprocess.run([sdweb, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"sdweb {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc, time.time() - t0


def quantize(sdweb, model_dir, to):
    out = f"{model_dir}-{to}"
    if not os.path.exists(os.path.join(out, "model_index.json")):
        _, seconds = sdweb_cmd(sdweb, "quantize", "--model", model_dir, "--to", to, "--output", out)
        log(f"{os.path.basename(out)}: quantized in {seconds:.0f} s")
    return out


def sdweb_bench(sdweb, model_dir, steps, size):
    """One `sdweb bench` process (cold then warm generation) with an empty CubeCL cache."""
    cache = tempfile.mkdtemp(prefix="cubecl-cache-")
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    args = ["bench", "--model", model_dir, "--prompt", PROMPT, "--negative-prompt", NEGATIVE,
            "--steps", str(steps), "--guidance", "7.5", "--width", str(size), "--height", str(size),
            "--seed", str(SEED), "--precision", "f16", "--runs", "2"]
    try:
        proc, seconds = sdweb_cmd(sdweb, *args, env=env)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["process_s"] = seconds
    return report


def torch_bench(model_dir, steps, size):
    """diffusers fp16 with SDPA on the same folder: text encoder, UNet step, VAE decode, cold."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    device = torch_device()
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t_load = time.time()
    # fp16 on the GPU; the CPU smoke test runs f32 (CPU fp16 kernels are partial).
    dtype = torch.float16 if cuda else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=dtype).to(device)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    pipe.set_progress_bar_config(disable=True)
    load_s = time.time() - t_load
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    stamps = []

    def on_step(p, i, t, kwargs):
        sync()
        stamps.append(time.perf_counter())
        return kwargs

    def generate():
        stamps.clear()
        generator = torch.Generator(device).manual_seed(SEED)
        sync()
        t0 = time.perf_counter()
        stamps.append(t0)
        latents = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=7.5,
                       width=size, height=size, generator=generator, output_type="latent",
                       callback_on_step_end=on_step).images
        t_dec = time.perf_counter()
        with torch.no_grad():
            pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        sync()
        t1 = time.perf_counter()
        steps_ms = [1000 * (b - a) for a, b in zip(stamps[1:], stamps[2:])]
        return dict(total_ms=1000 * (t1 - t0), vae_decode_ms=1000 * (t1 - t_dec), steps_ms=steps_ms)

    cold = generate()
    warm = generate()
    with torch.no_grad():
        times = []
        for _ in range(5):
            sync()
            t0 = time.perf_counter()
            pipe.encode_prompt(PROMPT, device, 1, True, NEGATIVE)
            sync()
            times.append(1000 * (time.perf_counter() - t0))
    report = dict(
        engine="diffusers", torch=torch.__version__, gpu=torch.cuda.get_device_name() if cuda else "cpu",
        load_s=load_s, cold_first_image_ms=cold["total_ms"], warm_image_ms=warm["total_ms"],
        text_encoder_ms=statistics.median(times),
        unet_step_median_ms=statistics.median(warm["steps_ms"]) if warm["steps_ms"] else None,
        vae_decode_ms=warm["vae_decode_ms"], peak_gpu_bytes=torch.cuda.max_memory_allocated() if cuda else None,
        steps=steps,
    )
    del pipe
    if cuda:
        torch.cuda.empty_cache()
    return report


def table(rows):
    head = ["model", "engine", "weights", "steps", "text enc ms", "UNet step ms", "VAE decode ms",
            "cold first image s", "warm image s", "peak GPU GB", "dispatches/step", "sdweb/torch step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v, f="{:.1f}": "—" if v is None else f.format(v)
    for r in rows:
        lines.append("| " + " | ".join([
            r["model"], r["engine"], r["weights"], str(r["steps"]), fmt(r.get("text_encoder_ms")),
            fmt(r.get("unet_step_median_ms")), fmt(r.get("vae_decode_ms")),
            fmt(r.get("cold_first_image_ms") and r["cold_first_image_ms"] / 1000, "{:.2f}"),
            fmt(r.get("warm_image_ms") and r["warm_image_ms"] / 1000, "{:.2f}"),
            fmt(r.get("peak_gpu_bytes") and r["peak_gpu_bytes"] / 1e9, "{:.2f}"),
            fmt(r.get("dispatches_per_step"), "{}"), fmt(r.get("step_ratio"), "{:.2f}"),
        ]) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdweb", required=True, help="the sdweb release binary")
    ap.add_argument("--work", required=True, help="folder for the models (about 12 GB)")
    ap.add_argument("--models", default="sd15,sd21")
    ap.add_argument("--weights", default="f16,q8_0,q4_0")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--budget-s", type=float, default=420, help="wall time to stay within")
    ap.add_argument("--no-torch-bench", action="store_true", help="skip diffusers (sdweb only)")
    ap.add_argument("--json", help="results file (default WORK/results.json)")
    ap.add_argument("--configs", choices=["full", "tiny"], default="full",
                    help="tiny: the fixtures' architectures, to smoke-test this script on a CPU")
    args = ap.parse_args()
    start = time.time()
    os.makedirs(args.work, exist_ok=True)
    configs = fixture_configs(args.configs)
    models = args.models.split(",")
    weights = args.weights.split(",")
    for name in models:
        make_model(name, configs[name], os.path.join(args.work, name))
    folders = {}
    for name in models:
        base = os.path.join(args.work, name)
        for w in weights:
            folders[(name, w)] = base if w == "f16" else quantize(args.sdweb, base, w)

    rows, torch_steps = [], {}
    runs = [(name, w) for name in models for w in weights]
    steps = args.steps
    for i, (name, w) in enumerate(runs):
        t0 = time.time()
        r = sdweb_bench(args.sdweb, folders[(name, w)], steps, args.size)
        rows.append(dict(model=name, engine="sdweb", weights=w, steps=steps, report=r,
                         text_encoder_ms=r["text_encoder_ms"], unet_step_median_ms=r["unet_step_median_ms"],
                         vae_decode_ms=r["vae_decode_ms"], cold_first_image_ms=r["cold_first_image_ms"],
                         warm_image_ms=r["warm_image_ms"], peak_gpu_bytes=r["peak_gpu_bytes"],
                         dispatches_per_step=r["dispatches"]["unet_step"]))
        log(f"sdweb {name} {w}: step {r['unet_step_median_ms']:.1f} ms, decode {r['vae_decode_ms']:.0f} ms, "
            f"cold {r['cold_first_image_ms'] / 1000:.1f} s ({time.time() - t0:.0f} s)")
        left = len(runs) - i - 1
        spent = time.time() - start
        reserve = 0 if args.no_torch_bench else 40 * len(models)
        if left and spent + left * (time.time() - t0) + reserve > args.budget_s and steps > 4:
            steps = max(4, int(steps * (args.budget_s - spent - reserve) / (left * (time.time() - t0))))
            log(f"over budget: the remaining sdweb runs use {steps} steps")
    if not args.no_torch_bench:
        for name in models:
            r = torch_bench(os.path.join(args.work, name), args.steps, args.size)
            torch_steps[name] = r["unet_step_median_ms"]
            rows.append(dict(model=name, engine="diffusers", weights="f16", report=r, **{
                k: r[k] for k in ("steps", "text_encoder_ms", "unet_step_median_ms", "vae_decode_ms",
                                  "cold_first_image_ms", "warm_image_ms", "peak_gpu_bytes")}))
            log(f"diffusers {name}: step {r['unet_step_median_ms']:.1f} ms, decode {r['vae_decode_ms']:.0f} ms")
    for r in rows:
        if r["engine"] == "sdweb" and torch_steps.get(r["model"]):
            r["step_ratio"] = r["unet_step_median_ms"] / torch_steps[r["model"]]
    print(table(rows))
    result = dict(size=args.size, guidance=7.5, prompt=PROMPT, wall_s=time.time() - start, rows=rows)
    path = args.json or os.path.join(args.work, "results.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"} | {
        "rows": [{k: v for k, v in r.items() if k != "report"} for r in rows]}))
    log(f"done in {time.time() - start:.0f} s; full reports in {path}")


if __name__ == "__main__":
    main()
