//! Single-file checkpoints: original LDM / CompVis `.safetensors` (what most SD 1.x/2.x models
//! are published as) and stable-diffusion.cpp `.gguf` files (same LDM names, ggml storage types).
//!
//! Such a file holds the weights of all the models (SDXL: both text encoders) and nothing else,
//! so configs, tokenizers and scheduler come from a diffusers folder (`base`; a config-only
//! folder with its model_index.json is enough). The file is streamed once, tensor by tensor in
//! file order; each tensor is renamed with [`crate::weights::ldm_keys`] and uploaded into its
//! component's store, then the models are built exactly as [`StableDiffusion::load`] builds them.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use burn::tensor::{DType, Device};

use crate::config::{ConfigError, ConfigReader};
use crate::layout;
use crate::model_index::ModelIndex;
use crate::models::autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
use crate::models::clip_text_model::{ClipTextConfig, ClipTextModel};
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::pipeline::{
    Component, ComponentConfig, ComponentLoad, LoadOptions, PipelineBuilder, PipelineError,
    StableDiffusion,
};
use crate::schedulers::SchedulerConfig;
use crate::tokenizer::ClipTokenizer;
use crate::weights::gguf::{GGUF_MAGIC, GgufFile};
use crate::weights::ldm_keys::{
    CheckpointLayout, KeyPair, LdmKeyMap, Transform, ldm_to_diffusers, ldm_to_diffusers_values,
};
use crate::weights::safetensors::SafetensorsHeader;
use crate::weights::{QuantPolicy, QuantType, TensorStore, WeightError, to_f32};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    Safetensors,
    Gguf,
}

/// What a single-file load did, for logging and for tests.
#[derive(Clone, Debug)]
pub struct SingleFileReport {
    pub format: CheckpointFormat,
    pub layout: CheckpointLayout,
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
    pub index: ModelIndex,
    pub tokenizer: ClipTokenizer,
    /// SDXL's second tokenizer.
    pub tokenizer_2: Option<ClipTokenizer>,
    pub text_encoder: ClipTextConfig,
    /// SDXL's `text_encoder_2`.
    pub text_encoder_2: Option<ClipTextConfig>,
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub scheduler: SchedulerConfig,
}

impl BaseFolder {
    /// Reads model_index.json, the configs and tokenizers it calls for and
    /// `scheduler/scheduler_config.json`; weights files, if any, are not looked at.
    pub fn read(dir: &Path) -> Result<Self, PipelineError> {
        let index = ModelIndex::read(dir).map_err(PipelineError::Invalid)?;
        let reader = |c: Component| ConfigReader::read(&dir.join(layout::config_path(c)));
        let xl = index.components().contains(&Component::TextEncoder2);
        let sched_path = dir.join(layout::SCHEDULER_CONFIG);
        let sched_text = std::fs::read_to_string(&sched_path).map_err(|error| ConfigError::Io {
            file: sched_path.display().to_string(),
            error,
        })?;
        let tokenizer = |folder: &str| ClipTokenizer::from_dir(&dir.join(folder));
        Ok(Self {
            tokenizer: tokenizer(layout::TOKENIZER_FOLDER)?,
            tokenizer_2: xl
                .then(|| tokenizer(layout::TOKENIZER_2_FOLDER))
                .transpose()?,
            text_encoder: ClipTextConfig::from_reader(reader(Component::TextEncoder)?)?,
            text_encoder_2: xl
                .then(|| reader(Component::TextEncoder2).and_then(ClipTextConfig::from_reader))
                .transpose()?,
            unet: UNet2DConditionConfig::from_reader(reader(Component::Unet)?)?,
            vae: AutoencoderKLConfig::from_reader(reader(Component::Vae)?)?,
            scheduler: SchedulerConfig::from_json(&sched_text)?,
            index,
        })
    }

    /// Each component's config, in loading order.
    pub fn configs(&self) -> Vec<ComponentConfig> {
        let mut configs = vec![ComponentConfig::TextEncoder(self.text_encoder.clone())];
        configs.extend(
            self.text_encoder_2
                .clone()
                .map(ComponentConfig::TextEncoder2),
        );
        configs.push(ComponentConfig::Unet(self.unet.clone()));
        configs.push(ComponentConfig::Vae(self.vae.clone()));
        configs
    }

    /// The text encoders' configs, in pipeline order.
    pub fn text_encoders(&self) -> Vec<&ClipTextConfig> {
        std::iter::once(&self.text_encoder)
            .chain(self.text_encoder_2.as_ref())
            .collect()
    }

    /// The key table for a checkpoint whose tensor names are `names`.
    pub fn key_map<'a>(&self, names: impl Iterator<Item = &'a str>) -> LdmKeyMap {
        let layout = CheckpointLayout::detect(names, self.text_encoder_2.is_some());
        LdmKeyMap::new(&self.unet, &self.vae, &self.text_encoders(), layout)
    }
}

/// The models' weights from one checkpoint, under diffusers names.
pub struct SingleFileStores {
    loads: Vec<ComponentLoad>,
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
    let parts: Vec<Component> = base.configs().iter().map(|c| c.component()).collect();
    builder.check_lora_components(&parts)?;
    let mut reader =
        BufReader::new(std::fs::File::open(path).map_err(|e| WeightError::io(&file, e))?);
    let stores = read_single_file(&mut reader, &file, &base, &builder)?;
    let report = stores.report.clone();
    stores.finish_into(&mut builder)?;
    builder.set_tokenizer(base.tokenizer);
    if let Some(tokenizer) = base.tokenizer_2 {
        builder.set_tokenizer_2(tokenizer);
    }
    builder.set_scheduler(base.scheduler);
    builder.set_model_index(base.index);
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

/// Streams a checkpoint once into each component's store, opened by `builder` as a folder
/// load opens them (dtype, force_upcast VAE, quantisation, kernels).
pub fn read_single_file<R: Read + Seek>(
    reader: &mut R,
    file: &str,
    base: &BaseFolder,
    builder: &PipelineBuilder,
) -> Result<SingleFileStores, WeightError> {
    let format = detect_format(reader, file)?;
    let loads = base
        .configs()
        .into_iter()
        .map(|config| {
            let desc = format!(
                "{file} ({} of a single-file checkpoint)",
                config.component().folder()
            );
            builder.begin_parsed(config, &desc)
        })
        .collect();
    let mut stores = SingleFileStores {
        loads,
        map: base.key_map(std::iter::empty()),
        report: SingleFileReport {
            format,
            layout: CheckpointLayout::Sd1,
            used: 0,
            ignored: Vec::new(),
            storage_types: BTreeMap::new(),
        },
        file: file.to_string(),
    };
    match format {
        CheckpointFormat::Safetensors => {
            let header = SafetensorsHeader::read(reader, file)?;
            stores.set_map(base.key_map(header.tensors.keys().map(String::as_str)));
            let mut entries: Vec<_> = header.tensors.iter().collect();
            entries.sort_by_key(|(_, e)| e.begin);
            for (name, entry) in entries {
                if !stores.wants(name) {
                    continue;
                }
                let bytes = header.read_tensor(reader, entry, file)?;
                stores.count(format!("{:?}", entry.dtype));
                if let Some((component, diffusers, shape)) = stores.byte_copy(name, &entry.shape)? {
                    stores
                        .store(component)
                        .insert_bytes(&diffusers, entry.dtype, &shape, &bytes);
                    continue;
                }
                let values = to_f32(&bytes, entry.dtype);
                drop(bytes);
                stores.insert_values(name, &entry.shape, &values)?;
            }
        }
        CheckpointFormat::Gguf => {
            let gguf = GgufFile::read(reader, file)?;
            stores.set_map(base.key_map(gguf.tensors.iter().map(|t| t.name.as_str())));
            for info in gguf.tensors_by_offset() {
                if !stores.wants(&info.name) {
                    continue;
                }
                stores.count(info.ggml_type.name.to_string());
                // q8_0/q4_0 layer weights go to the GPU as they are: no requantisation error.
                let blocks = QuantType::parse(info.ggml_type.name);
                if let (Some(ty), Some((component, diffusers, shape))) =
                    (blocks, stores.byte_copy(&info.name, &info.shape)?)
                    && QuantPolicy::is_layer_weight(&diffusers, &shape)
                {
                    let bytes = gguf.read_raw(reader, info, file)?;
                    stores
                        .store(component)
                        .insert_blocks(&diffusers, ty, &shape, &bytes)
                        .map_err(|why| stores.bad(&info.name, why))?;
                    continue;
                }
                let values = gguf.read_f32(reader, info, file)?;
                stores.insert_values(&info.name, &info.shape, &values)?;
            }
        }
    }
    Ok(stores)
}

impl SingleFileStores {
    fn set_map(&mut self, map: LdmKeyMap) {
        self.report.layout = map.layout();
        self.map = map;
    }

    /// Whether a checkpoint tensor goes into a model (else it is noted as ignored).
    fn wants(&mut self, name: &str) -> bool {
        let wanted = !self.map.from_ldm(name).is_empty();
        if wanted {
            self.report.used += 1;
        } else {
            self.report.ignored.push(name.to_string());
        }
        wanted
    }

    fn count(&mut self, storage_type: String) {
        *self.report.storage_types.entry(storage_type).or_default() += 1;
    }

    fn bad(&self, name: &str, why: String) -> WeightError {
        WeightError::Malformed {
            file: self.file.clone(),
            why: format!("tensor {name}: {why}"),
        }
    }

    /// For a tensor that is one diffusers tensor byte for byte: its component, diffusers name
    /// and shape.
    fn byte_copy(
        &self,
        name: &str,
        ldm_shape: &[usize],
    ) -> Result<Option<(Component, String, Vec<usize>)>, WeightError> {
        let [pair] = self.map.from_ldm(name)[..] else {
            return Ok(None);
        };
        if !pair.transform.keeps_bytes() {
            return Ok(None);
        }
        let (shape, _) =
            ldm_to_diffusers(pair.transform, ldm_shape).map_err(|why| self.bad(name, why))?;
        Ok(Some((pair.component, pair.diffusers.clone(), shape)))
    }

    /// Uploads the diffusers tensors an LDM tensor's f32 `values` give.
    fn insert_values(
        &mut self,
        name: &str,
        ldm_shape: &[usize],
        values: &[f32],
    ) -> Result<(), WeightError> {
        let pairs: Vec<KeyPair> = self.map.from_ldm(name).into_iter().cloned().collect();
        for pair in pairs {
            let (shape, values) = ldm_to_diffusers_values(pair.transform, ldm_shape, values)
                .map_err(|why| self.bad(name, why))?;
            self.store(pair.component)
                .insert_f32(&pair.diffusers, &shape, values);
        }
        Ok(())
    }

    /// The store a component's tensors go to.
    pub fn store(&mut self, component: Component) -> &mut TensorStore {
        let load = self
            .loads
            .iter_mut()
            .find(|l| l.component() == component)
            .expect("a store for every component the key table names");
        &mut load.store
    }

    fn load(&self, component: Component) -> Option<&ComponentLoad> {
        self.loads.iter().find(|l| l.component() == component)
    }

    /// What a component's store holds so far (for tests and tools).
    pub fn received(&self, component: Component) -> &TensorStore {
        &self
            .load(component)
            .expect("a store for every component of the pipeline")
            .store
    }

    pub fn build_text_encoder(&self, config: ClipTextConfig) -> Result<ClipTextModel, WeightError> {
        ClipTextModel::load(&self.root(Component::TextEncoder), config)
            .map_err(|e| self.explain(e, Component::TextEncoder))
    }

    pub fn build_unet(
        &self,
        config: UNet2DConditionConfig,
    ) -> Result<UNet2DConditionModel, WeightError> {
        UNet2DConditionModel::load(&self.root(Component::Unet), config)
            .map_err(|e| self.explain(e, Component::Unet))
    }

    pub fn build_vae(
        &self,
        config: AutoencoderKLConfig,
        with_encoder: bool,
    ) -> Result<AutoencoderKL, WeightError> {
        AutoencoderKL::load(&self.root(Component::Vae), config, with_encoder)
            .map_err(|e| self.explain(e, Component::Vae))
    }

    fn root(&self, component: Component) -> crate::weights::Weights<'_> {
        self.load(component)
            .expect("every pipeline has this component")
            .store
            .root()
    }

    /// Builds the models into `builder` (each store dropped once its model is built).
    pub fn finish_into(self, builder: &mut PipelineBuilder) -> Result<(), PipelineError> {
        let Self {
            loads,
            map,
            report,
            file,
        } = self;
        for load in loads {
            let component = load.component();
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
    let prefix = map.layout().prefix_of(component).unwrap_or("\0");
    let unmatched = report
        .ignored
        .iter()
        .filter(|n| n.starts_with(prefix))
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
