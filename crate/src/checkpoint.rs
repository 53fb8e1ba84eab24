//! Single-file checkpoints: original LDM / CompVis `.safetensors` (what most SD 1.x/2.x models
//! are published as) and stable-diffusion.cpp `.gguf` files (same LDM names, ggml storage types).
//!
//! Such a file holds the weights of all three models and nothing else, so configs, tokenizer and
//! scheduler come from a diffusers folder (`base`; a config-only folder is enough). The file is
//! streamed once, tensor by tensor in file order; each tensor is renamed with
//! [`crate::weights::ldm_keys`] and uploaded into the text encoder's, UNet's or VAE's
//! [`TensorStore`], then the models are built exactly as [`StableDiffusion::load`] builds them.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use burn::tensor::{DType, Device};

use crate::config::{ConfigError, ConfigReader};
use crate::layout;
use crate::models::autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
use crate::models::clip_text_model::{ClipTextConfig, ClipTextModel};
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::pipeline::Component as PipelineComponent;
use crate::pipeline::{
    ComponentConfig, ComponentLoad, LoadOptions, PipelineBuilder, PipelineError, StableDiffusion,
};
use crate::schedulers::SchedulerConfig;
use crate::tokenizer::ClipTokenizer;
use crate::weights::gguf::{GGUF_MAGIC, GgufFile};
use crate::weights::ldm_keys::{
    CLIP_PREFIX, Component, KeyPair, LdmKeyMap, OPEN_CLIP_PREFIX, TextEncoderLayout, Transform,
    UNET_PREFIX, VAE_PREFIX, ldm_to_diffusers,
};
use crate::weights::safetensors::SafetensorsHeader;
use crate::weights::{QuantPolicy, QuantType, WeightError, to_f32};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    Safetensors,
    Gguf,
}

/// What a single-file load did, for logging and for tests.
#[derive(Clone, Debug)]
pub struct SingleFileReport {
    pub format: CheckpointFormat,
    pub layout: TextEncoderLayout,
    /// Checkpoint tensors that went into a model.
    pub used: usize,
    /// Checkpoint tensors that are not part of the pipeline's three models (EMA copies, schedule
    /// buffers, `position_ids`, OpenCLIP's `text_projection` and dropped last layer, …).
    pub ignored: Vec<String>,
    /// How many used tensors each storage type had (`F16`, `Q8_0`, …).
    pub storage_types: BTreeMap<String, usize>,
}

/// The parts of a diffusers folder a single-file checkpoint lacks.
pub struct BaseFolder {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextConfig,
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub scheduler: SchedulerConfig,
}

impl BaseFolder {
    /// Reads `text_encoder/config.json`, `unet/config.json`, `vae/config.json`, `tokenizer/`
    /// and `scheduler/scheduler_config.json`; weights files, if any, are not looked at.
    pub fn read(dir: &Path) -> Result<Self, PipelineError> {
        let config = |c: PipelineComponent| ConfigReader::read(&dir.join(layout::config_path(c)));
        let sched_path = dir.join(layout::SCHEDULER_CONFIG);
        let sched_text = std::fs::read_to_string(&sched_path).map_err(|error| ConfigError::Io {
            file: sched_path.display().to_string(),
            error,
        })?;
        Ok(Self {
            tokenizer: ClipTokenizer::from_dir(&dir.join(layout::TOKENIZER_FOLDER))?,
            text_encoder: ClipTextConfig::from_reader(config(PipelineComponent::TextEncoder)?)?,
            unet: UNet2DConditionConfig::from_reader(config(PipelineComponent::Unet)?)?,
            vae: AutoencoderKLConfig::from_reader(config(PipelineComponent::Vae)?)?,
            scheduler: SchedulerConfig::from_json(&sched_text)?,
        })
    }
}

/// The three models' weights from one checkpoint, under diffusers names.
pub struct SingleFileStores {
    pub text_encoder: ComponentLoad,
    pub unet: ComponentLoad,
    pub vae: ComponentLoad,
    pub map: LdmKeyMap,
    pub report: SingleFileReport,
    file: String,
}

/// Loads a single-file checkpoint (`.safetensors` with LDM names, or a stable-diffusion.cpp
/// `.gguf`) with configs, tokenizer and scheduler from the diffusers folder `base`.
/// `dtype`: F32 or F16 compute, as for [`StableDiffusion::load`].
pub fn load_single_file(
    path: &Path,
    base: &Path,
    device: &Device,
    dtype: DType,
) -> Result<StableDiffusion, PipelineError> {
    load_single_file_with_report(path, base, device, dtype, LoadOptions::default())
        .map(|(model, _)| model)
}

/// [`load_single_file`] with quantisation and kernels as `options` say (GGUF q8_0/q4_0
/// weights stay quantised either way), also returning what was used and ignored.
pub fn load_single_file_with_report(
    path: &Path,
    base: &Path,
    device: &Device,
    dtype: DType,
    options: LoadOptions,
) -> Result<(StableDiffusion, SingleFileReport), PipelineError> {
    let base = BaseFolder::read(base)?;
    let file = path.display().to_string();
    let name = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.clone());
    let mut builder = PipelineBuilder::new(name, device, dtype).with_options(options);
    let mut reader =
        BufReader::new(std::fs::File::open(path).map_err(|e| WeightError::io(&file, e))?);
    let stores = read_single_file(&mut reader, &file, &base, &builder)?;
    let report = stores.report.clone();
    stores.finish_into(&mut builder)?;
    builder.set_tokenizer(base.tokenizer);
    builder.set_scheduler(base.scheduler);
    Ok((builder.build()?, report))
}

/// Which format a file is in, from its first bytes.
pub fn detect_format<R: Read + Seek>(
    reader: &mut R,
    file: &str,
) -> Result<CheckpointFormat, WeightError> {
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| WeightError::io(file, e))?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match reader
            .read(&mut magic[got..])
            .map_err(|e| WeightError::io(file, e))?
        {
            0 => break,
            n => got += n,
        }
    }
    Ok(if got == 4 && magic == GGUF_MAGIC {
        CheckpointFormat::Gguf
    } else {
        CheckpointFormat::Safetensors
    })
}

/// Streams a checkpoint once into the text encoder's, UNet's and VAE's stores, opened by
/// `builder` as a folder load opens them (dtype, force_upcast VAE, quantisation, kernels).
pub fn read_single_file<R: Read + Seek>(
    reader: &mut R,
    file: &str,
    base: &BaseFolder,
    builder: &PipelineBuilder,
) -> Result<SingleFileStores, WeightError> {
    let format = detect_format(reader, file)?;
    let open = |config: ComponentConfig| {
        let desc = format!(
            "{file} ({} of a single-file checkpoint)",
            config.component().folder()
        );
        builder.begin_parsed(config, &desc)
    };
    let loads = [
        open(ComponentConfig::TextEncoder(base.text_encoder.clone())),
        open(ComponentConfig::Unet(base.unet.clone())),
        open(ComponentConfig::Vae(base.vae.clone())),
    ];
    let mut stores = loads;
    let index = |c: Component| match c {
        Component::TextEncoder => 0,
        Component::Unet => 1,
        Component::Vae => 2,
    };
    let mut used = 0;
    let mut ignored = Vec::new();
    let mut storage_types: BTreeMap<String, usize> = BTreeMap::new();
    let bad = |name: &str, why: String| WeightError::Malformed {
        file: file.to_string(),
        why: format!("tensor {name}: {why}"),
    };
    // Uploads one checkpoint tensor (given as f32 values, or raw bytes for 1:1 copies).
    let map = match format {
        CheckpointFormat::Safetensors => {
            let header = SafetensorsHeader::read(reader, file)?;
            let layout = TextEncoderLayout::detect(header.tensors.keys().map(String::as_str));
            let map = LdmKeyMap::new(&base.unet, &base.vae, &base.text_encoder, layout);
            let mut entries: Vec<_> = header.tensors.iter().collect();
            entries.sort_by_key(|(_, e)| e.begin);
            for (name, entry) in entries {
                let pairs = map.from_ldm(name);
                if pairs.is_empty() {
                    ignored.push(name.clone());
                    continue;
                }
                let bytes = header.read_tensor(reader, entry, file)?;
                used += 1;
                *storage_types
                    .entry(format!("{:?}", entry.dtype))
                    .or_default() += 1;
                if let [pair] = pairs.as_slice()
                    && pair.transform == Transform::Identity
                {
                    stores[index(pair.component)].store.insert_bytes(
                        &pair.diffusers,
                        entry.dtype,
                        &entry.shape,
                        &bytes,
                    );
                    continue;
                }
                let values = to_f32(&bytes, entry.dtype);
                drop(bytes);
                for pair in pairs {
                    let (shape, range) = ldm_to_diffusers(pair.transform, &entry.shape)
                        .map_err(|why| bad(name, why))?;
                    stores[index(pair.component)].store.insert_f32(
                        &pair.diffusers,
                        &shape,
                        values[range].to_vec(),
                    );
                }
            }
            map
        }
        CheckpointFormat::Gguf => {
            let gguf = GgufFile::read(reader, file)?;
            let layout = TextEncoderLayout::detect(gguf.tensors.iter().map(|t| t.name.as_str()));
            let map = LdmKeyMap::new(&base.unet, &base.vae, &base.text_encoder, layout);
            for info in gguf.tensors_by_offset() {
                let pairs = map.from_ldm(&info.name);
                if pairs.is_empty() {
                    ignored.push(info.name.clone());
                    continue;
                }
                used += 1;
                *storage_types
                    .entry(info.ggml_type.name.to_string())
                    .or_default() += 1;
                // q8_0/q4_0 layer weights go to the GPU as they are: no requantisation error.
                let blocks = QuantType::parse(info.ggml_type.name);
                if let (Some(ty), [pair]) = (blocks, pairs.as_slice())
                    && pair.transform == Transform::Identity
                    && QuantPolicy::is_layer_weight(&pair.diffusers, &info.shape)
                {
                    let bytes = gguf.read_raw(reader, info, file)?;
                    stores[index(pair.component)]
                        .store
                        .insert_blocks(&pair.diffusers, ty, &info.shape, &bytes)
                        .map_err(|why| bad(&info.name, why))?;
                    continue;
                }
                let values = gguf.read_f32(reader, info, file)?;
                if let [pair] = pairs.as_slice()
                    && pair.transform == Transform::Identity
                {
                    stores[index(pair.component)].store.insert_f32(
                        &pair.diffusers,
                        &info.shape,
                        values,
                    );
                    continue;
                }
                for pair in pairs {
                    let (shape, range) = ldm_to_diffusers(pair.transform, &info.shape)
                        .map_err(|why| bad(&info.name, why))?;
                    stores[index(pair.component)].store.insert_f32(
                        &pair.diffusers,
                        &shape,
                        values[range].to_vec(),
                    );
                }
            }
            map
        }
    };
    let [text_encoder, unet, vae] = stores;
    Ok(SingleFileStores {
        text_encoder,
        unet,
        vae,
        report: SingleFileReport {
            format,
            layout: map.layout(),
            used,
            ignored,
            storage_types,
        },
        map,
        file: file.to_string(),
    })
}

impl SingleFileStores {
    pub fn build_text_encoder(&self, config: ClipTextConfig) -> Result<ClipTextModel, WeightError> {
        ClipTextModel::load(&self.text_encoder.store.root(), config)
            .map_err(|e| self.explain(e, Component::TextEncoder))
    }

    pub fn build_unet(
        &self,
        config: UNet2DConditionConfig,
    ) -> Result<UNet2DConditionModel, WeightError> {
        UNet2DConditionModel::load(&self.unet.store.root(), config)
            .map_err(|e| self.explain(e, Component::Unet))
    }

    pub fn build_vae(
        &self,
        config: AutoencoderKLConfig,
        with_encoder: bool,
    ) -> Result<AutoencoderKL, WeightError> {
        AutoencoderKL::load(&self.vae.store.root(), config, with_encoder)
            .map_err(|e| self.explain(e, Component::Vae))
    }

    /// Builds the three models into `builder` (each store dropped once its model is built).
    pub fn finish_into(self, builder: &mut PipelineBuilder) -> Result<(), PipelineError> {
        let Self {
            text_encoder,
            unet,
            vae,
            map,
            report,
            file,
        } = self;
        let loads = [
            (Component::TextEncoder, text_encoder),
            (Component::Unet, unet),
            (Component::Vae, vae),
        ];
        for (component, load) in loads {
            builder.finish_component(load).map_err(|e| match e {
                PipelineError::Weights(w) => {
                    PipelineError::Weights(explain(&map, &file, &report, w, component))
                }
                other => other,
            })?;
        }
        Ok(())
    }

    fn explain(&self, error: WeightError, component: Component) -> WeightError {
        explain(&self.map, &self.file, &self.report, error, component)
    }
}

/// Names the LDM tensor behind a missing or misshapen diffusers tensor, and how many
/// checkpoint tensors of that model matched nothing (a sign `base` is the wrong model).
fn explain(
    map: &LdmKeyMap,
    file: &str,
    report: &SingleFileReport,
    error: WeightError,
    component: Component,
) -> WeightError {
    let ldm = |name: &str| match map.to_ldm(component, name) {
        Some(KeyPair {
            ldm,
            transform: Transform::QkvPart(part),
            ..
        }) => format!("{ldm} (its {} third)", ["q", "k", "v"][(*part).min(2)]),
        Some(pair) => pair.ldm.clone(),
        None => "none (no LDM counterpart known)".into(),
    };
    let prefixes: &[&str] = match component {
        Component::Unet => &[UNET_PREFIX],
        Component::Vae => &[VAE_PREFIX],
        Component::TextEncoder => &[CLIP_PREFIX, OPEN_CLIP_PREFIX],
    };
    let unmatched = report
        .ignored
        .iter()
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .count();
    let hint = if unmatched > 0 {
        format!(
            "; {unmatched} {} tensors of the checkpoint match nothing in the {} config: does the base folder fit this checkpoint?",
            component.folder(),
            component.folder()
        )
    } else {
        String::new()
    };
    match error {
        WeightError::Missing { name, expected, .. } => WeightError::Missing {
            source_desc: format!(
                "{} (single-file checkpoint; LDM name {}){hint}",
                file,
                ldm(&name)
            ),
            name,
            expected,
        },
        WeightError::Shape {
            name,
            expected,
            found,
            ..
        } => WeightError::Malformed {
            file: file.to_string(),
            why: format!(
                "tensor {} (diffusers {} {name}) has shape {found:?}, the config expects {expected:?}{hint}",
                ldm(&name),
                component.folder()
            ),
        },
        other => other,
    }
}
