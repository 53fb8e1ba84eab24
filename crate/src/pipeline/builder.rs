//! Assembling a pipeline: [`PipelineBuilder`] is the one constructor (components streamed in
//! one by one, as the browser does), and the folder loaders feed it from disk.

use std::path::Path;

use burn::tensor::{DType, Device};

use super::{Component, PipelineError, StableDiffusion};
use crate::config::{ConfigError, ConfigReader};
use crate::kernels::KernelPolicy;
use crate::layout;
use crate::models::autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
use crate::models::autoencoder_tiny::{AutoencoderTiny, AutoencoderTinyConfig};
use crate::models::clip_text_model::{ClipTextConfig, ClipTextModel};
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::schedulers::SchedulerConfig;
use crate::tokenizer::ClipTokenizer;
use crate::weights::{QuantPolicy, TensorStore, find_component_file};

/// A component's parsed config.json.
#[derive(Clone, Debug)]
pub enum ComponentConfig {
    TextEncoder(ClipTextConfig),
    Unet(UNet2DConditionConfig),
    Vae(AutoencoderKLConfig),
    PreviewDecoder(AutoencoderTinyConfig),
}

impl ComponentConfig {
    pub fn parse(
        component: Component,
        config_json: &str,
        source: &str,
    ) -> Result<Self, ConfigError> {
        let reader = ConfigReader::parse(config_json, source)?;
        Ok(match component {
            Component::TextEncoder => Self::TextEncoder(ClipTextConfig::from_reader(reader)?),
            Component::Unet => Self::Unet(UNet2DConditionConfig::from_reader(reader)?),
            Component::Vae => Self::Vae(AutoencoderKLConfig::from_reader(reader)?),
            Component::PreviewDecoder => {
                Self::PreviewDecoder(AutoencoderTinyConfig::from_reader(reader)?)
            }
        })
    }

    pub fn component(&self) -> Component {
        match self {
            Self::TextEncoder(_) => Component::TextEncoder,
            Self::Unet(_) => Component::Unet,
            Self::Vae(_) => Component::Vae,
            Self::PreviewDecoder(_) => Component::PreviewDecoder,
        }
    }
}

/// One component whose config is parsed and whose weights are being received.
pub struct ComponentLoad {
    config: ComponentConfig,
    pub store: TensorStore,
}

/// How a model's weights are held, beyond the compute dtype: the same for every component.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Quantise float weights of the text encoder, UNet and VAE as they load (weights that
    /// arrive already quantised stay so either way).
    pub quantization: Option<QuantPolicy>,
    /// The kernels every layer runs.
    pub kernels: KernelPolicy,
}

/// Assembles a [`StableDiffusion`] from parts that arrive one by one: from a folder natively,
/// from network/cache streams in the browser. Each component is built (and its store
/// released) as soon as its weights are in, so only one component's loading state lives at once.
pub struct PipelineBuilder {
    name: String,
    device: Device,
    dtype: DType,
    tokenizer: Option<ClipTokenizer>,
    text_encoder: Option<ClipTextModel>,
    unet: Option<UNet2DConditionModel>,
    vae: Option<AutoencoderKL>,
    preview_decoder: Option<AutoencoderTiny>,
    scheduler_config: Option<SchedulerConfig>,
    options: LoadOptions,
}

impl PipelineBuilder {
    pub fn new(name: impl Into<String>, device: &Device, dtype: DType) -> Self {
        Self {
            name: name.into(),
            device: device.clone(),
            dtype,
            tokenizer: None,
            text_encoder: None,
            unet: None,
            vae: None,
            preview_decoder: None,
            scheduler_config: None,
            options: LoadOptions::default(),
        }
    }

    pub fn with_options(mut self, options: LoadOptions) -> Self {
        self.options = options;
        self
    }

    pub fn set_tokenizer(&mut self, tokenizer: ClipTokenizer) {
        self.tokenizer = Some(tokenizer);
    }

    pub fn set_scheduler_config(&mut self, json: &str) -> Result<(), PipelineError> {
        self.set_scheduler(SchedulerConfig::from_json(json)?);
        Ok(())
    }

    pub fn set_scheduler(&mut self, config: SchedulerConfig) {
        self.scheduler_config = Some(config);
    }

    /// Parses a component's config.json (`source` names it in errors) and opens its store.
    pub fn begin_component(
        &self,
        component: Component,
        config_json: &str,
        source: &str,
    ) -> Result<ComponentLoad, PipelineError> {
        let config = ComponentConfig::parse(component, config_json, source)?;
        Ok(self.begin_parsed(config, source))
    }

    /// Opens the store of a component whose config is parsed: in its compute dtype (TAESD and
    /// a force_upcast VAE in f32), with this model's quantisation and kernels.
    pub fn begin_parsed(&self, config: ComponentConfig, source: &str) -> ComponentLoad {
        let dtype = match &config {
            ComponentConfig::Vae(vae) => vae.compute_dtype(self.dtype),
            ComponentConfig::PreviewDecoder(_) => DType::F32,
            _ => self.dtype,
        };
        let component = config.component();
        let mut store = TensorStore::new(&self.device, dtype, source.to_string());
        store.set_kernel_policy(self.options.kernels);
        if let Some(policy) = &self.options.quantization
            && component != Component::PreviewDecoder
        {
            store.set_quantization(policy.clone(), component.folder());
        }
        ComponentLoad { config, store }
    }

    /// Builds the component from its received weights; the store is dropped afterwards.
    pub fn finish_component(&mut self, load: ComponentLoad) -> Result<(), PipelineError> {
        let root = load.store.root();
        match load.config {
            ComponentConfig::TextEncoder(c) => {
                self.text_encoder = Some(ClipTextModel::load(&root, c)?)
            }
            ComponentConfig::Unet(c) => self.unet = Some(UNet2DConditionModel::load(&root, c)?),
            ComponentConfig::Vae(c) => self.vae = Some(AutoencoderKL::load(&root, c, true)?),
            ComponentConfig::PreviewDecoder(c) => {
                self.preview_decoder = Some(AutoencoderTiny::load(&root, c)?)
            }
        }
        Ok(())
    }

    pub fn build(self) -> Result<StableDiffusion, PipelineError> {
        let name = self.name;
        let missing =
            |what: &str| PipelineError::Invalid(format!("model {name}: {what} was not loaded"));
        let tokenizer = self.tokenizer.ok_or_else(|| missing("tokenizer"))?;
        let text_encoder = self.text_encoder.ok_or_else(|| missing("text_encoder"))?;
        let unet = self.unet.ok_or_else(|| missing("unet"))?;
        let vae = self.vae.ok_or_else(|| missing("vae"))?;
        let scheduler_config = self
            .scheduler_config
            .ok_or_else(|| missing("scheduler/scheduler_config.json"))?;
        Ok(StableDiffusion {
            name,
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
            device: self.device,
            dtype: self.dtype,
            preview_decoder: self.preview_decoder,
            kernels: self.options.kernels,
            compiled: Default::default(),
        })
    }
}

impl StableDiffusion {
    /// Loads a diffusers folder. `dtype`: F32 (always works) or F16 (needs shader-f16).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, PipelineError> {
        Self::load_with(dir, device, dtype, LoadOptions::default())
    }

    /// [`Self::load`] with quantisation and kernels as `options` say.
    pub fn load_with(
        dir: &Path,
        device: &Device,
        dtype: DType,
        options: LoadOptions,
    ) -> Result<Self, PipelineError> {
        let index = dir.join(layout::MODEL_INDEX);
        if !index.is_file() {
            return Err(PipelineError::Invalid(format!(
                "{} is not a diffusers model folder (no model_index.json)",
                dir.display()
            )));
        }
        crate::model_index::check_model_index(&read_text(&index)?, &index.display().to_string())
            .map_err(PipelineError::Invalid)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let mut builder = PipelineBuilder::new(name, device, dtype).with_options(options);
        builder.set_tokenizer(ClipTokenizer::from_dir(
            &dir.join(layout::TOKENIZER_FOLDER),
        )?);
        for component in Component::ALL {
            let config_path = dir.join(layout::config_path(component));
            let config_text = read_text(&config_path)?;
            let mut load = builder.begin_component(
                component,
                &config_text,
                &config_path.display().to_string(),
            )?;
            let weights = find_component_file(
                &dir.join(component.folder()),
                component.weights_stem(),
                dtype == DType::F16,
            )?;
            load.store
                .load_safetensors_file(&weights, &|n| Some(n.to_string()))?;
            builder.finish_component(load)?;
        }
        builder.set_scheduler_config(&read_text(&dir.join(layout::SCHEDULER_CONFIG))?)?;
        builder.build()
    }

    /// Loads TAESD (a diffusers `AutoencoderTiny` folder: config.json + weights) for previews.
    pub fn load_preview_decoder(&mut self, dir: &Path) -> Result<(), PipelineError> {
        let config_path = dir.join("config.json");
        let text = read_text(&config_path)?;
        let config = AutoencoderTinyConfig::from_reader(ConfigReader::parse(
            &text,
            &config_path.display().to_string(),
        )?)?;
        let mut store = TensorStore::new(&self.device, DType::F32, dir.display().to_string());
        store.set_kernel_policy(self.kernels);
        let weights = find_component_file(dir, "diffusion_pytorch_model", false)?;
        // Previews need the decoder only.
        store.load_safetensors_file(&weights, &|n| {
            (!n.starts_with("encoder.")).then(|| n.to_string())
        })?;
        self.preview_decoder = Some(AutoencoderTiny::load(&store.root(), config)?);
        Ok(())
    }
}

fn read_text(path: &Path) -> Result<String, PipelineError> {
    std::fs::read_to_string(path).map_err(|error| {
        PipelineError::Config(ConfigError::Io {
            file: path.display().to_string(),
            error,
        })
    })
}
