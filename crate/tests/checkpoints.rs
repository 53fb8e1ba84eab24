//! Single-file checkpoints: the LDM ↔ diffusers key table, the GGUF reader, and loading
//! `tests/fixtures/sd1_tiny_single/` (sd1_tiny's weights under LDM names: f16 safetensors, and a
//! GGUF with q8_0 2-D weights) against the diffusers-folder references.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use common::checkpoint_files::write_safetensors;
use common::*;
use sdweb::checkpoint::{
    BaseFolder, CheckpointFormat, load_single_file, load_single_file_with_report, read_single_file,
};
use sdweb::models::autoencoder_kl::AutoencoderKL;
use sdweb::models::clip_text_model::ClipTextModel;
use sdweb::models::unet_2d_condition::UNet2DConditionModel;
use sdweb::pipeline::{
    ComponentConfig, GenerateRequest, LoadOptions, PipelineBuilder, StableDiffusion, StdClock,
};
use sdweb::weights::gguf::{GgufFile, MetadataValue};
use sdweb::weights::ldm_keys::{
    CheckpointLayout, Component, LdmKeyMap, Transform, diffusers_to_ldm_shape,
};
use sdweb::weights::safetensors::SafetensorsHeader;
use sdweb::weights::{StorageDType, find_component_file, to_f32};

// ---------------------------------------------------------------------------------------------
// Largest allocation made by the current thread (malformed inputs must not allocate much).
// ---------------------------------------------------------------------------------------------
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|m| {
        if size > m.get() {
            m.set(size)
        }
    });
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

fn largest_allocation_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    let out = f();
    (out, LARGEST.with(|m| m.get()))
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------
fn single_dir() -> PathBuf {
    fixtures().join("sd1_tiny_single")
}

fn base(model: &str) -> BaseFolder {
    BaseFolder::read(&fixtures().join(model)).unwrap()
}

fn key_map(model: &str, layout: CheckpointLayout) -> LdmKeyMap {
    let b = base(model);
    LdmKeyMap::new(&b.unet, &b.vae, &b.text_encoders(), layout)
}

/// (name → (dtype, shape, bytes)) of a diffusers component's weights file.
fn component_tensors(
    model: &str,
    component: Component,
) -> BTreeMap<String, (StorageDType, Vec<usize>, Vec<u8>)> {
    let dir = fixtures().join(model).join(component.folder());
    read_safetensors(&find_component_file(&dir, component.weights_stem(), false).unwrap())
}

fn read_safetensors(path: &Path) -> BTreeMap<String, (StorageDType, Vec<usize>, Vec<u8>)> {
    let file = path.display().to_string();
    let mut reader = std::fs::File::open(path).unwrap();
    let header = SafetensorsHeader::read(&mut reader, &file).unwrap();
    header
        .tensors
        .iter()
        .map(|(name, e)| {
            (
                name.clone(),
                (
                    e.dtype,
                    e.shape.clone(),
                    header.read_tensor(&mut reader, e, &file).unwrap(),
                ),
            )
        })
        .collect()
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sdweb-checkpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn token_rows(reference: &HashMap<String, RefTensor>) -> Vec<Vec<u32>> {
    let ids = &reference["text.input_ids"];
    ids.values
        .chunks(ids.shape[1])
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect()
}

fn unet_out(unet: &UNet2DConditionModel, reference: &HashMap<String, RefTensor>) -> Vec<f32> {
    let d = device();
    let t = reference["unet.timestep"].values[0] as f64;
    to_vec(unet.forward(
        reference["unet.sample"].tensor(&d),
        t,
        reference["unet.encoder_hidden_states"].tensor(&d),
    ))
}

fn text_out(te: &ClipTextModel, reference: &HashMap<String, RefTensor>) -> Vec<f32> {
    to_vec(te.forward(&token_rows(reference)))
}

fn vae_out(vae: &AutoencoderKL, reference: &HashMap<String, RefTensor>) -> Vec<f32> {
    to_vec(vae.decode(reference["vae.decode.latents"].tensor(&device())))
}

// ---------------------------------------------------------------------------------------------
// (a) the key table
// ---------------------------------------------------------------------------------------------

/// Every weight of the fixture folder maps to an LDM name and back, the table has nothing the
/// folder lacks, and LDM names are unique except OpenCLIP's stacked q/k/v (exactly 3 parts).
fn check_round_trip(model: &str, layout: CheckpointLayout) {
    let map = key_map(model, layout);
    let mut total = 0;
    for component in [Component::TextEncoder, Component::Unet, Component::Vae] {
        let tensors = component_tensors(model, component);
        let mut file_names = BTreeSet::new();
        for (name, (_, shape, _)) in &tensors {
            if name.ends_with("position_ids") {
                continue;
            }
            let pair = map
                .to_ldm(component, name)
                .unwrap_or_else(|| panic!("{model} {component:?}: no LDM name for {name}"));
            let back = map.from_ldm(&pair.ldm);
            assert!(
                back.iter()
                    .any(|p| p.component == component && p.diffusers == pair.diffusers),
                "{model}: {name} → {} → {back:?}",
                pair.ldm
            );
            match pair.transform {
                Transform::QkvPart(_) => {
                    let parts: std::collections::HashSet<_> =
                        back.iter().map(|p| p.transform).collect();
                    assert_eq!(parts.len(), 3, "{}: {back:?}", pair.ldm);
                }
                _ => assert_eq!(back.len(), 1, "{} maps to {back:?}", pair.ldm),
            }
            // diffusers → LDM → diffusers shapes
            let ldm_shape = diffusers_to_ldm_shape(pair.transform, shape);
            let (d_shape, range) =
                sdweb::weights::ldm_keys::ldm_to_diffusers(pair.transform, &ldm_shape).unwrap();
            assert_eq!(&d_shape, shape, "{name}");
            assert_eq!(range.len(), shape.iter().product::<usize>(), "{name}");
            file_names.insert(pair.diffusers.clone());
            total += 1;
        }
        let table: BTreeSet<String> = map
            .pairs()
            .iter()
            .filter(|p| p.component == component)
            .map(|p| p.diffusers.clone())
            .collect();
        let extra: Vec<_> = table.difference(&file_names).collect();
        assert!(
            extra.is_empty(),
            "{model} {component:?}: table has names the folder lacks: {extra:?}"
        );
    }
    assert_eq!(total, map.pairs().len());
    eprintln!("{model} ({layout:?}): {total} tensors round-trip");
}

#[test]
fn ldm_key_table_round_trips_sd1_and_sd2_configs() {
    for model in ["sd1_tiny", "sd2_tiny"] {
        for layout in [CheckpointLayout::Sd1, CheckpointLayout::Sd2] {
            check_round_trip(model, layout);
        }
    }
    // An SD 1.5-sized config (4 levels, SD 1.5's LDM numbering) against names every SD 1.5
    // checkpoint has.
    let mut unet = base("sd1_tiny").unet;
    unet.block_out_channels = vec![320, 640, 1280, 1280];
    unet.layers_per_block = vec![2; 4];
    unet.transformer_layers_per_block = vec![1; 4];
    unet.num_attention_heads = vec![8; 4];
    use sdweb::models::unet_2d_condition::BlockType::{CrossAttention, Plain};
    unet.down_block_types = vec![CrossAttention, CrossAttention, CrossAttention, Plain];
    unet.up_block_types = vec![Plain, CrossAttention, CrossAttention, CrossAttention];
    let mut vae = base("sd1_tiny").vae;
    vae.block_out_channels = vec![128, 256, 512, 512];
    vae.layers_per_block = 2;
    let map = LdmKeyMap::new(
        &unet,
        &vae,
        &[&base("sd1_tiny").text_encoder],
        CheckpointLayout::Sd1,
    );
    for (ldm, diffusers) in [
        (
            "model.diffusion_model.input_blocks.11.0.out_layers.3.weight",
            "down_blocks.3.resnets.1.conv2.weight",
        ),
        (
            "model.diffusion_model.input_blocks.9.0.op.bias",
            "down_blocks.2.downsamplers.0.conv.bias",
        ),
        (
            "model.diffusion_model.output_blocks.2.1.conv.weight",
            "up_blocks.0.upsamplers.0.conv.weight",
        ),
        (
            "model.diffusion_model.output_blocks.8.2.conv.weight",
            "up_blocks.2.upsamplers.0.conv.weight",
        ),
        (
            "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight",
            "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight",
        ),
        (
            "model.diffusion_model.middle_block.2.emb_layers.1.weight",
            "mid_block.resnets.1.time_emb_proj.weight",
        ),
        (
            "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
            "decoder.up_blocks.3.resnets.0.conv_shortcut.weight",
        ),
        (
            "first_stage_model.decoder.up.1.block.0.nin_shortcut.bias",
            "decoder.up_blocks.2.resnets.0.conv_shortcut.bias",
        ),
        (
            "first_stage_model.encoder.mid.attn_1.proj_out.weight",
            "encoder.mid_block.attentions.0.to_out.0.weight",
        ),
        (
            "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.bias",
            "text_model.encoder.layers.1.mlp.fc2.bias",
        ),
    ] {
        let found = map.from_ldm(ldm);
        assert!(
            found.len() == 1 && found[0].diffusers == diffusers,
            "{ldm}: {found:?}"
        );
    }
    // no shortcut where channels stay (LDM up.3 = diffusers up_blocks.0, 512 → 512)
    assert!(
        map.from_ldm("first_stage_model.decoder.up.3.block.0.nin_shortcut.weight")
            .is_empty()
    );
    assert!(
        map.from_ldm("first_stage_model.encoder.down.0.block.0.nin_shortcut.weight")
            .is_empty()
    );
    // old transformers naming, and things that are not model weights
    assert_eq!(
        map.from_ldm("cond_stage_model.transformer.encoder.layers.0.self_attn.q_proj.weight")[0]
            .diffusers,
        "text_model.encoder.layers.0.self_attn.q_proj.weight"
    );
    for ignored in [
        "alphas_cumprod",
        "model_ema.decay",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
    ] {
        assert!(map.from_ldm(ignored).is_empty(), "{ignored}");
    }
}

/// The table's LDM names and shapes are exactly those of the fixture checkpoint, which was
/// written by the fixture script and checked with diffusers' own single-file loader.
#[test]
fn ldm_key_table_matches_the_fixture_checkpoint() {
    let map = key_map("sd1_tiny", CheckpointLayout::Sd1);
    let file = read_safetensors(&single_dir().join("sd1_tiny.safetensors"));
    let file_names: BTreeSet<&str> = file.keys().map(String::as_str).collect();
    let table_names: BTreeSet<&str> = map.pairs().iter().map(|p| p.ldm.as_str()).collect();
    let missing: Vec<_> = table_names.difference(&file_names).collect();
    let unknown: Vec<_> = file_names.difference(&table_names).collect();
    assert!(
        missing.is_empty(),
        "in the table, not the file: {missing:?}"
    );
    assert_eq!(
        unknown,
        vec![
            &"alphas_cumprod",
            &"cond_stage_model.transformer.text_model.embeddings.position_ids"
        ]
    );
    for component in [Component::TextEncoder, Component::Unet, Component::Vae] {
        for (name, (_, shape, _)) in component_tensors("sd1_tiny", component) {
            if let Some(pair) = map.to_ldm(component, &name) {
                assert_eq!(
                    file[&pair.ldm].1,
                    diffusers_to_ldm_shape(pair.transform, &shape),
                    "{name}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF reader
// ---------------------------------------------------------------------------------------------

/// Every type we dequantise against gguf-py's dequantisation (stored next to it as F32).
#[test]
fn gguf_types_match_gguf_py() {
    let path = single_dir().join("ggml_types.gguf");
    let file = path.display().to_string();
    let mut reader = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    let g = GgufFile::read(&mut reader, &file).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 64);
    assert_eq!(g.data_start % 64, 0);
    let md = &g.metadata;
    assert_eq!(md["test.u8"], MetadataValue::U8(200));
    assert_eq!(md["test.i8"], MetadataValue::I8(-100));
    assert_eq!(md["test.u16"], MetadataValue::U16(60000));
    assert_eq!(md["test.i16"], MetadataValue::I16(-30000));
    assert_eq!(md["test.u32"], MetadataValue::U32(4_000_000_000));
    assert_eq!(md["test.i32"], MetadataValue::I32(-2_000_000_000));
    assert_eq!(md["test.f32"], MetadataValue::F32(1.5));
    assert_eq!(md["test.bool"], MetadataValue::Bool(true));
    assert_eq!(md["test.string"].as_str(), Some("stable diffusion ✓"));
    assert_eq!(md["test.u64"], MetadataValue::U64((1 << 63) + 5));
    assert_eq!(md["test.i64"], MetadataValue::I64(-(1 << 62)));
    assert_eq!(md["test.f64"], MetadataValue::F64(-0.25));
    assert_eq!(
        md["test.array_i32"],
        MetadataValue::Array(vec![
            MetadataValue::I32(1),
            MetadataValue::I32(-2),
            MetadataValue::I32(3)
        ])
    );
    assert_eq!(
        md["test.array_str"],
        MetadataValue::Array(
            ["a", "bc", ""]
                .map(|s| MetadataValue::String(s.into()))
                .to_vec()
        )
    );
    assert_eq!(md["general.architecture"].as_str(), Some("sdweb-test"));

    let by_name: HashMap<&str, _> = g.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut checked = Vec::new();
    for t in &g.tensors {
        if t.name.ends_with(".ref") {
            continue;
        }
        let reference = by_name[format!("{}.ref", t.name).as_str()];
        assert_eq!(t.shape, reference.shape, "{}", t.name);
        let ours = g.read_f32(&mut reader, t, &file).unwrap();
        let theirs = g.read_f32(&mut reader, reference, &file).unwrap();
        assert_eq!(ours.len(), t.numel());
        let (max, _) = errors(&ours, &theirs);
        assert_eq!(max, 0.0, "{} differs from gguf-py by {max}", t.name);
        checked.push(format!("{}{:?}", t.ggml_type.name, t.shape));
    }
    eprintln!("gguf types bit-exact with gguf-py: {checked:?}");
    assert_eq!(checked.len(), 8);
}

// ---------------------------------------------------------------------------------------------
// (b) module outputs from the single files
// ---------------------------------------------------------------------------------------------

#[test]
fn single_file_safetensors_and_gguf_match_the_folder_references() {
    let reference = load_reference("sd1_modules.safetensors");
    let b = base("sd1_tiny");
    let d = device();
    for (file, format) in [
        ("sd1_tiny.safetensors", CheckpointFormat::Safetensors),
        ("sd1_tiny.gguf", CheckpointFormat::Gguf),
    ] {
        let path = single_dir().join(file);
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let stores = read_single_file(
            &mut reader,
            &path.display().to_string(),
            &b,
            &PipelineBuilder::new(file, &d, DType::F32),
        )
        .unwrap();
        let report = &stores.report;
        eprintln!(
            "{file}: {} used, ignored {:?}, storage {:?}",
            report.used, report.ignored, report.storage_types
        );
        assert_eq!(report.format, format);
        assert_eq!(report.layout, CheckpointLayout::Sd1);
        assert_eq!(report.used, 682);
        let mut ignored = report.ignored.clone();
        ignored.sort();
        assert_eq!(
            ignored,
            [
                "alphas_cumprod",
                "cond_stage_model.transformer.text_model.embeddings.position_ids"
            ]
        );
        let unet = stores.build_unet(b.unet.clone()).unwrap();
        let te = stores.build_text_encoder(b.text_encoder.clone()).unwrap();
        let vae = stores.build_vae(b.vae.clone(), true).unwrap();
        for store in
            [Component::Unet, Component::TextEncoder, Component::Vae].map(|c| stores.received(c))
        {
            assert!(
                store.unused().is_empty(),
                "{file}: unused {:?}",
                store.unused()
            );
        }
        let outputs = [
            ("unet", unet_out(&unet, &reference), "unet.out"),
            (
                "text encoder",
                text_out(&te, &reference),
                "text.last_hidden_state",
            ),
            ("vae decode", vae_out(&vae, &reference), "vae.decode.out"),
        ];
        for (what, ours, key) in outputs {
            let theirs = &reference[key].values;
            let cos = cosine(&ours, theirs);
            let (max, mean) = errors(&ours, theirs);
            eprintln!(
                "{file} {what}: cosine vs f32 reference {cos:.7}, max abs err {max:.3e}, mean {mean:.3e}"
            );
            match format {
                // f16 rounding of the weights alone
                CheckpointFormat::Safetensors => {
                    assert_close(&format!("{file} {what}"), &ours, theirs, 1e-2)
                }
                CheckpointFormat::Gguf => {
                    assert!(cos >= 0.999, "{file} {what}: cosine {cos} < 0.999")
                }
            }
        }
    }
}

/// SD 2.x layout (OpenCLIP with stacked q/k/v, linear proj_in/out), written here from sd2_tiny's
/// fp16 weights with the table's diffusers → LDM direction: the loader's LDM → diffusers
/// direction must give back exactly the folder's weights, so outputs match to 1e-4.
#[test]
fn sd2_openclip_layout_round_trips_through_a_single_file() {
    let map = key_map("sd2_tiny", CheckpointLayout::Sd2);
    let mut ldm: BTreeMap<String, (StorageDType, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let mut qkv: BTreeMap<String, [Option<(Vec<usize>, Vec<u8>)>; 3]> = BTreeMap::new();
    for component in [Component::TextEncoder, Component::Unet, Component::Vae] {
        for (name, (dtype, shape, bytes)) in component_tensors("sd2_tiny", component) {
            assert_eq!(dtype, StorageDType::F16);
            let Some(pair) = map.to_ldm(component, &name) else {
                panic!("{name} has no LDM name");
            };
            match pair.transform {
                Transform::QkvPart(p) => {
                    qkv.entry(pair.ldm.clone()).or_default()[p] = Some((shape, bytes))
                }
                t => {
                    ldm.insert(
                        pair.ldm.clone(),
                        (dtype, diffusers_to_ldm_shape(t, &shape), bytes),
                    );
                }
            }
        }
    }
    for (name, parts) in qkv {
        let parts: Vec<_> = parts.into_iter().map(|p| p.expect("q, k and v")).collect();
        let shape = diffusers_to_ldm_shape(Transform::QkvPart(0), &parts[0].0);
        let bytes = parts.into_iter().flat_map(|p| p.1).collect();
        ldm.insert(name, (StorageDType::F16, shape, bytes));
    }
    // What SD 2.x checkpoints carry and the pipeline must skip: the 24th layer (dropped for the
    // penultimate output), text_projection, logit_scale.
    let extra = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        (StorageDType::F16, shape, vec![0u8; 2 * n])
    };
    ldm.insert(
        "cond_stage_model.model.transformer.resblocks.2.ln_1.weight".into(),
        extra(vec![32]),
    );
    ldm.insert(
        "cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight".into(),
        extra(vec![96, 32]),
    );
    ldm.insert(
        "cond_stage_model.model.text_projection".into(),
        extra(vec![32, 32]),
    );
    ldm.insert("cond_stage_model.model.logit_scale".into(), extra(vec![]));
    let path = temp_path("sd2_tiny_ldm.safetensors");
    write_safetensors(&path, &ldm);

    let (model, report) = load_single_file_with_report(
        &path,
        &fixtures().join("sd2_tiny"),
        &device(),
        DType::F32,
        LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(report.layout, CheckpointLayout::Sd2);
    assert_eq!(report.ignored.len(), 4, "{:?}", report.ignored);
    let reference = load_reference("sd2_modules.safetensors");
    assert_close(
        "sd2 single-file unet",
        &unet_out(model.unet(), &reference),
        &reference["unet.out"].values,
        1e-4,
    );
    assert_close(
        "sd2 single-file text encoder",
        &text_out(model.text_encoder(), &reference),
        &reference["text.last_hidden_state"].values,
        1e-4,
    );
    assert_close(
        "sd2 single-file vae decode",
        &vae_out(model.vae(), &reference),
        &reference["vae.decode.out"].values,
        1e-4,
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn missing_and_misshapen_tensors_name_both_names() {
    let mut tensors = read_safetensors(&single_dir().join("sd1_tiny.safetensors"));
    tensors.remove("model.diffusion_model.input_blocks.1.0.in_layers.0.weight");
    let path = temp_path("sd1_missing.safetensors");
    write_safetensors(&path, &tensors);
    let err = load_single_file(&path, &fixtures().join("sd1_tiny"), &device(), DType::F32)
        .err()
        .expect("a tensor is missing")
        .to_string();
    eprintln!("{err}");
    for part in [
        "down_blocks.0.resnets.0.norm1.weight",
        "expected shape [32]",
        "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
    ] {
        assert!(err.contains(part), "'{part}' not in: {err}");
    }
    let _ = std::fs::remove_file(&path);

    // an SD 1.x checkpoint with SD 2.x configs: its 1×1-conv proj_in loads as the linear one
    // (the same map), so the first misfit is the VAE level sd1_tiny lacks
    let err = load_single_file(
        &single_dir().join("sd1_tiny.safetensors"),
        &fixtures().join("sd2_tiny"),
        &device(),
        DType::F32,
    )
    .err()
    .expect("configs do not fit")
    .to_string();
    eprintln!("{err}");
    assert!(
        err.contains("first_stage_model.encoder.down.2.downsample.conv.weight")
            && err.contains("encoder.down_blocks.2.downsamplers.0.conv.weight"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// (c) end to end
// ---------------------------------------------------------------------------------------------

fn run(model: &StableDiffusion, req: &GenerateRequest) -> Vec<u8> {
    pollster::block_on(model.generate(req, &StdClock::default(), &mut |_| {}))
        .unwrap()
        .rgb
}

/// sd1_tiny's diffusers folder with every weight rounded to f16 (what the single file holds).
fn folder_rounded_to_f16(model: &str) -> StableDiffusion {
    let b = base(model);
    let name = format!("{model} (f16-rounded)");
    let mut builder = PipelineBuilder::new(name, &device(), DType::F32);
    let configs = [
        (
            Component::TextEncoder,
            ComponentConfig::TextEncoder(b.text_encoder.clone()),
        ),
        (Component::Unet, ComponentConfig::Unet(b.unet.clone())),
        (Component::Vae, ComponentConfig::Vae(b.vae.clone())),
    ];
    for (component, config) in configs {
        let mut load = builder.begin_parsed(config, component.folder());
        for (name, (st, shape, bytes)) in component_tensors(model, component) {
            let values = to_f32(&bytes, st)
                .into_iter()
                .map(|v| half::f16::from_f32(v).to_f32())
                .collect();
            load.store.insert_f32(&name, &shape, values);
        }
        builder.finish_component(load).unwrap();
    }
    builder.set_tokenizer(b.tokenizer);
    builder.set_scheduler(b.scheduler);
    builder.build().unwrap()
}

#[test]
fn single_file_generates_the_diffusers_image() {
    let case = e2e_cases()
        .into_iter()
        .find(|c| c.name == "sd1-euler-cfg")
        .unwrap();
    let req = case_request(&case);
    let reference = reference_rgb(&case);
    let base_dir = fixtures().join(&case.model);

    let st = load_single_file(
        &single_dir().join("sd1_tiny.safetensors"),
        &base_dir,
        &device(),
        DType::F32,
    )
    .unwrap();
    assert_eq!(st.name(), "sd1_tiny");
    let st_image = run(&st, &req);
    drop(st);
    let (max, mean) = image_errors(&st_image, &reference);
    eprintln!(
        "{}: single-file f16 storage vs diffusers f32 reference PNG: max {max}/255, mean {mean:.3}/255",
        case.name
    );
    let rounded = run(&folder_rounded_to_f16(&case.model), &req);
    let (rmax, rmean) = image_errors(&st_image, &rounded);
    eprintln!(
        "{}: single-file vs diffusers folder with f16-rounded weights (ours): max {rmax}/255, mean {rmean:.3}/255",
        case.name
    );
    let (fmax, fmean) = image_errors(&rounded, &reference);
    eprintln!(
        "{}: f16 rounding of the weights alone (folder): max {fmax}/255, mean {fmean:.3}/255",
        case.name
    );
    // The same (f16-rounded) weights through both loaders.
    assert!(
        rmax <= 3 && rmean <= 0.5,
        "single-file vs rounded folder: max {rmax}, mean {rmean}"
    );
    // f16 rounding of these weights moves the image by at most 1/255 (measured), so the
    // single file also meets the f32 tolerance against diffusers' own image.
    assert_image_close(&format!("{} single file", case.name), &st_image, &reference);

    let gguf = load_single_file(
        &single_dir().join("sd1_tiny.gguf"),
        &base_dir,
        &device(),
        DType::F32,
    )
    .unwrap();
    let g_image = run(&gguf, &req);
    let (gmax, gmean) = image_errors(&g_image, &reference);
    eprintln!(
        "{}: gguf (q8_0 2-D weights) vs diffusers f32 reference PNG: max {gmax}/255, mean {gmean:.3}/255",
        case.name
    );
    // measured max 1/255, mean 0.1/255 on lavapipe
    assert!(
        gmax <= 6 && gmean <= 1.0,
        "gguf image: max {gmax}/255 (≤6), mean {gmean:.3}/255 (≤1)"
    );
}

// ---------------------------------------------------------------------------------------------
// (d) malformed GGUF
// ---------------------------------------------------------------------------------------------

/// A hand-built GGUF v3: `kv` pre-encoded entries, tensors (name, ggml dims, type, offset).
struct Gguf {
    version: u32,
    kv: Vec<Vec<u8>>,
    tensors: Vec<(Vec<u8>, Vec<u64>, u32, u64)>,
    data: usize,
}

fn gstr(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend(s.as_bytes());
    out
}

fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut out = gstr(key);
    out.extend(ty.to_le_bytes());
    out.extend(value);
    out
}

impl Gguf {
    fn new() -> Self {
        Self {
            version: 3,
            kv: vec![kv("general.architecture", 8, &gstr("sd1"))],
            tensors: vec![],
            data: 0,
        }
    }

    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        self.tensors.push((gstr(name), dims.to_vec(), ty, offset));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for e in &self.kv {
            out.extend(e);
        }
        for (name, dims, ty, offset) in &self.tensors {
            out.extend(name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        out.extend(std::iter::repeat_n(0x3Cu8, self.data));
        out
    }
}

/// Parses and reads every tensor; the error (if any) as text.
fn read_all(bytes: &[u8]) -> Result<usize, String> {
    let mut cursor = Cursor::new(bytes);
    let g = GgufFile::read(&mut cursor, "test.gguf").map_err(|e| e.to_string())?;
    for t in &g.tensors {
        g.read_f32(&mut cursor, t, "test.gguf")
            .map_err(|e| e.to_string())?;
    }
    Ok(g.tensors.len())
}

fn expect_error(what: &str, bytes: &[u8], expected: &str) {
    let (result, largest) = largest_allocation_during(|| read_all(bytes));
    let err = result.err().unwrap_or_else(|| panic!("{what}: parsed"));
    eprintln!("{what}: {err} (largest allocation {largest} bytes)");
    assert!(err.contains(expected), "{what}: '{expected}' not in: {err}");
    assert!(largest < 1 << 20, "{what}: allocated {largest} bytes");
}

#[test]
fn malformed_gguf_files_are_errors_not_panics() {
    let ok = Gguf {
        data: 512,
        ..Gguf::new()
    }
    .tensor("a", &[64], 0, 0)
    .tensor("b", &[32, 2], 8, 256);
    assert_eq!(read_all(&ok.bytes()), Ok(2));

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "file ends"),
        ("bad magic", b"GGUG\x03\0\0\0".to_vec(), "not a GGUF"),
        (
            "big-endian",
            Gguf {
                version: 3u32.swap_bytes(),
                ..Gguf::new()
            }
            .bytes(),
            "big-endian",
        ),
        (
            "version 1",
            Gguf {
                version: 1,
                ..Gguf::new()
            }
            .bytes(),
            "version 1",
        ),
        (
            "offset past the end",
            Gguf {
                data: 64,
                ..Gguf::new()
            }
            .tensor("a", &[16], 0, 1024)
            .bytes(),
            "ends past",
        ),
        (
            "size past the end",
            Gguf {
                data: 64,
                ..Gguf::new()
            }
            .tensor("a", &[17], 0, 0)
            .bytes(),
            "ends past",
        ),
        (
            "misaligned offset",
            Gguf {
                data: 64,
                ..Gguf::new()
            }
            .tensor("a", &[4], 0, 4)
            .bytes(),
            "alignment",
        ),
        (
            "overlapping tensors",
            Gguf {
                data: 128,
                ..Gguf::new()
            }
            .tensor("a", &[16], 0, 0)
            .tensor("b", &[16], 0, 32)
            .bytes(),
            "overlap",
        ),
        (
            "duplicate names",
            Gguf {
                data: 64,
                ..Gguf::new()
            }
            .tensor("a", &[4], 0, 0)
            .tensor("a", &[4], 0, 32)
            .bytes(),
            "twice",
        ),
        (
            "unknown type id",
            Gguf {
                data: 64,
                ..Gguf::new()
            }
            .tensor("weird", &[4], 99, 0)
            .bytes(),
            "tensor weird: unknown ggml type id 99",
        ),
        (
            "unsupported type",
            Gguf {
                data: 256,
                ..Gguf::new()
            }
            .tensor("k", &[256], 12, 0)
            .bytes(),
            "tensor k: ggml type Q4_K (id 12) is not supported",
        ),
        (
            "2^40 elements",
            Gguf {
                data: 64,
                ..Gguf::new()
            }
            .tensor("big", &[1 << 20, 1 << 20], 0, 0)
            .bytes(),
            "ends past",
        ),
        (
            "element count overflow",
            Gguf {
                data: 64,
                ..Gguf::new()
            }
            .tensor("big", &[1 << 32, 1 << 32, 1 << 32], 1, 0)
            .bytes(),
            "overflows",
        ),
        (
            "byte count overflow",
            Gguf {
                data: 64,
                ..Gguf::new()
            }
            .tensor("big", &[1 << 31, 1 << 31, 1 << 1], 0, 0)
            .bytes(),
            "overflow",
        ),
        // Found by `cargo fuzz run gguf_reader`: a zero dim made the element count 0 while the
        // other dims' product overflowed usize in GgufTensorInfo::numel.
        (
            "zero dim with overflowing others",
            Gguf {
                data: 64,
                ..Gguf::new()
            }
            .tensor("z", &[0, 1 << 40, 1 << 40, 1 << 40], 0, 0)
            .bytes(),
            "dimensions overflow",
        ),
        (
            "too many dims",
            Gguf {
                data: 64,
                ..Gguf::new()
            }
            .tensor("a", &[1, 1, 1, 1, 1], 0, 0)
            .bytes(),
            "dimensions",
        ),
        (
            "block size",
            Gguf {
                data: 64,
                ..Gguf::new()
            }
            .tensor("a", &[33], 8, 0)
            .bytes(),
            "not a multiple",
        ),
        (
            "huge key length",
            {
                let mut g = Gguf::new();
                g.kv = vec![[u64::MAX.to_le_bytes().as_slice(), b"x"].concat()];
                g.bytes()
            },
            "string length",
        ),
        (
            "huge string value",
            Gguf {
                kv: vec![kv("s", 8, &(1u64 << 40).to_le_bytes())],
                ..Gguf::new()
            }
            .bytes(),
            "string length",
        ),
        (
            "huge tensor name",
            {
                let mut g = Gguf::new();
                g.tensors
                    .push(((1u64 << 40).to_le_bytes().to_vec(), vec![], 0, 0));
                g.bytes()
            },
            "string length",
        ),
        (
            "huge array",
            Gguf {
                kv: vec![kv(
                    "a",
                    9,
                    &[10u32.to_le_bytes().as_slice(), &(1u64 << 60).to_le_bytes()].concat(),
                )],
                ..Gguf::new()
            }
            .bytes(),
            "does not fit",
        ),
        (
            "huge counts",
            {
                let mut b = Gguf::new().bytes();
                b[8..16].copy_from_slice(&(1u64 << 62).to_le_bytes());
                b
            },
            "cannot fit",
        ),
        (
            "nested arrays",
            {
                let mut value = Vec::new();
                for _ in 0..12 {
                    value.extend(9u32.to_le_bytes());
                    value.extend(1u64.to_le_bytes());
                }
                value.extend(0u32.to_le_bytes());
                value.extend(0u64.to_le_bytes());
                Gguf {
                    kv: vec![kv("deep", 9, &value)],
                    ..Gguf::new()
                }
                .bytes()
            },
            "nested",
        ),
        (
            "bool byte",
            Gguf {
                kv: vec![kv("b", 7, &[7])],
                ..Gguf::new()
            }
            .bytes(),
            "bool",
        ),
        (
            "unknown value type",
            Gguf {
                kv: vec![kv("v", 13, &[0; 8])],
                ..Gguf::new()
            }
            .bytes(),
            "unknown value type 13",
        ),
        (
            "alignment 3",
            Gguf {
                kv: vec![kv("general.alignment", 4, &3u32.to_le_bytes())],
                ..Gguf::new()
            }
            .bytes(),
            "power of two",
        ),
        (
            "invalid UTF-8",
            Gguf {
                kv: vec![kv(
                    "s",
                    8,
                    &[2u64.to_le_bytes().as_slice(), &[0xff, 0xfe]].concat(),
                )],
                ..Gguf::new()
            }
            .bytes(),
            "UTF-8",
        ),
    ];
    for (what, bytes, expected) in cases {
        expect_error(what, &bytes, expected);
    }
}

#[test]
fn truncated_gguf_checkpoints_are_errors() {
    let bytes = std::fs::read(single_dir().join("sd1_tiny.gguf")).unwrap();
    for k in 0..16 {
        let cut = bytes.len() * k / 16;
        expect_error(
            &format!("cut at {k}/16 ({cut} bytes)"),
            &bytes[..cut],
            if k == 0 { "file ends" } else { "" },
        );
    }
    // a small file whose header spans several sixteenths
    let small = std::fs::read(single_dir().join("ggml_types.gguf")).unwrap();
    for k in 0..16 {
        let cut = small.len() * k / 16;
        expect_error(
            &format!("ggml_types.gguf cut at {k}/16 ({cut} bytes)"),
            &small[..cut],
            "",
        );
    }
    assert_eq!(read_all(&small), Ok(16));
    let (n, largest) = largest_allocation_during(|| read_all(&bytes).unwrap());
    eprintln!("whole file: {n} tensors read, largest allocation {largest} bytes");
    assert_eq!(n, 684);
}

/// The same zero-dim shape in a safetensors header (regression of the GGUF fuzz finding).
#[test]
fn safetensors_zero_dim_with_overflowing_others_is_an_error() {
    let header = r#"{"a":{"dtype":"F32","shape":[0,4294967296,4294967296,4294967296],"data_offsets":[0,0]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    let err = SafetensorsHeader::parse(&bytes, bytes.len() as u64, "zero.safetensors")
        .unwrap_err()
        .to_string();
    assert!(err.contains("dimensions overflow"), "{err}");
}
