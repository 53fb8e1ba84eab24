//! Assembling a pipeline: [`PipelineBuilder`] is the one constructor (components streamed in
//! one by one, as the browser does), and the folder loaders feed it from disk.

use burn::tensor::{DType, Device};

use super::{Component, PipelineError, SdxlEncoder, StableDiffusion};
use crate::config::{ConfigError, ConfigReader};
use crate::kernels::KernelPolicy;
use crate::layout;
use crate::lora::LoraSet;
use crate::model_index::ModelIndex;
use crate::models::autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
use crate::models::autoencoder_tiny::{AutoencoderTiny, AutoencoderTinyConfig};
use crate::models::clip_text_model::{ClipTextConfig, ClipTextModel};
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::schedulers::SchedulerConfig;
use crate::tokenizer::ClipTokenizer;
use crate::weights::{QuantPolicy, TensorStore};

/// A component's parsed config.json.
#[derive(Clone, Debug)]
pub enum ComponentConfig {
    TextEncoder(ClipTextConfig),
    TextEncoder2(ClipTextConfig),
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
            Component::TextEncoder2 => Self::TextEncoder2(ClipTextConfig::from_reader(reader)?),
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
            Self::TextEncoder2(_) => Component::TextEncoder2,
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

impl ComponentLoad {
    pub fn component(&self) -> Component {
        self.config.component()
    }
}

/// How a model's weights are held, beyond the compute dtype: the same for every component.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Quantise float weights of the text encoder, UNet and VAE as they load (weights that
    /// arrive already quantised stay so either way).
    pub quantization: Option<QuantPolicy>,
    /// The kernels every layer runs.
    pub kernels: KernelPolicy,
    /// LoRAs merged into the weights as they load (see [`crate::lora`]).
    pub loras: LoraSet,
}

/// Assembles a [`StableDiffusion`] from parts that arrive one by one: from a folder natively,
/// from network/cache streams in the browser. Each component is built (and its store
/// released) as soon as its weights are in, so only one component's loading state lives at once.
pub struct PipelineBuilder {
    name: String,
    device: Device,
    dtype: DType,
    tokenizer: Option<ClipTokenizer>,
    tokenizer_2: Option<ClipTokenizer>,
    text_encoder: Option<ClipTextModel>,
    text_encoder_2: Option<ClipTextModel>,
    unet: Option<UNet2DConditionModel>,
    vae: Option<AutoencoderKL>,
    preview_decoder: Option<AutoencoderTiny>,
    scheduler_config: Option<SchedulerConfig>,
    model_index: Option<ModelIndex>,
    options: LoadOptions,
}

impl PipelineBuilder {
    pub fn new(name: impl Into<String>, device: &Device, dtype: DType) -> Self {
        Self {
            name: name.into(),
            device: device.clone(),
            dtype,
            tokenizer: None,
            tokenizer_2: None,
            text_encoder: None,
            text_encoder_2: None,
            unet: None,
            vae: None,
            preview_decoder: None,
            scheduler_config: None,
            model_index: None,
            options: LoadOptions::default(),
        }
    }

    pub fn with_options(mut self, options: LoadOptions) -> Self {
        self.options = options;
        self
    }

    /// A LoRA merged at `weight` into the components begun after this call (the browser adds
    /// them one by one; natively they come in [`LoadOptions::loras`]).
    pub fn add_lora(&mut self, file: std::sync::Arc<crate::lora::LoraFile>, weight: f32) {
        self.options.loras.push(file, weight);
    }

    /// The LoRAs the model loads with.
    pub fn loras(&self) -> &LoraSet {
        &self.options.loras
    }

    /// Refuses LoRAs that patch a model part `components` lacks (an SDXL LoRA's text_encoder_2
    /// layers on SD 1.x) before any weight is read ([`Self::build`] checks again).
    pub fn check_lora_components(&self, components: &[Component]) -> Result<(), PipelineError> {
        let misfit = self.options.loras.entries.iter().find_map(|entry| {
            let layer = entry
                .file
                .layers
                .iter()
                .find(|l| !components.contains(&l.component))?;
            Some((entry, layer))
        });
        match misfit {
            Some((entry, layer)) => Err(PipelineError::Invalid(format!(
                "LoRA {}: layer {} patches {}, which model {} has not: is the LoRA for another model architecture?",
                entry.file.name,
                layer.tensor,
                layer.component.folder(),
                self.name,
            ))),
            None => Ok(()),
        }
    }

    pub fn set_tokenizer(&mut self, tokenizer: ClipTokenizer) {
        self.tokenizer = Some(tokenizer);
    }

    /// SDXL's second tokenizer (for `text_encoder_2`).
    pub fn set_tokenizer_2(&mut self, tokenizer: ClipTokenizer) {
        self.tokenizer_2 = Some(tokenizer);
    }

    /// The tokenizer of `folder` (`tokenizer` or SDXL's `tokenizer_2`).
    pub fn set_tokenizer_of(
        &mut self,
        folder: &str,
        tokenizer: ClipTokenizer,
    ) -> Result<(), PipelineError> {
        match folder {
            layout::TOKENIZER_FOLDER => self.set_tokenizer(tokenizer),
            layout::TOKENIZER_2_FOLDER => self.set_tokenizer_2(tokenizer),
            other => {
                return Err(PipelineError::Invalid(format!(
                    "unknown tokenizer folder {other:?}"
                )));
            }
        }
        Ok(())
    }

    /// The checked model_index.json (SDXL's `force_zeros_for_empty_prompt`).
    pub fn set_model_index(&mut self, index: ModelIndex) {
        self.model_index = Some(index);
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
        if let Some(mut lora) = self.options.loras.for_component(component) {
            if let ComponentConfig::Unet(unet) = &config {
                lora.set_aliases(crate::weights::ldm_keys::unet_ldm_names(unet));
            }
            store.set_lora(lora);
        }
        ComponentLoad { config, store }
    }

    /// Builds the component from its received weights; the store is dropped afterwards.
    pub fn finish_component(&mut self, load: ComponentLoad) -> Result<(), PipelineError> {
        load.store.check_lora()?;
        let root = load.store.root();
        match load.config {
            ComponentConfig::TextEncoder(c) => {
                self.text_encoder = Some(ClipTextModel::load(&root, c)?)
            }
            ComponentConfig::TextEncoder2(c) => {
                self.text_encoder_2 = Some(ClipTextModel::load(&root, c)?)
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
        let xl = match (self.text_encoder_2, unet.config().text_time) {
            (Some(text_encoder_2), Some(_)) => {
                let tokenizer_2 = self.tokenizer_2.ok_or_else(|| missing("tokenizer_2"))?;
                Some(SdxlEncoder {
                    tokenizer_2,
                    text_encoder_2,
                })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(PipelineError::Invalid(format!(
                    "model {name}: text_encoder_2 was loaded but the UNet has no addition_embed_type \"text_time\" to take its pooled output"
                )));
            }
            (None, Some(_)) => {
                return Err(missing(
                    "text_encoder_2 (the UNet takes SDXL's added conditions, addition_embed_type \"text_time\")",
                ));
            }
        };
        check_widths(&name, &text_encoder, xl.as_ref(), &unet)?;
        if xl.is_none()
            && self
                .options
                .loras
                .components()
                .contains(&Component::TextEncoder2)
        {
            return Err(PipelineError::Invalid(format!(
                "model {name}: a LoRA patches text_encoder_2 (lora_te2_ / text_encoder_2. layers), which this model has not: is it an SDXL LoRA?"
            )));
        }
        let force_zeros = self
            .model_index
            .map_or(xl.is_some(), |i| i.force_zeros_for_empty_prompt);
        Ok(StableDiffusion {
            name,
            tokenizer,
            text_encoder,
            xl,
            force_zeros_for_empty_prompt: force_zeros,
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

/// The text encoders' widths against what the UNet takes, checked before any GPU work: SD's
/// cross-attention width is the encoder's; SDXL's is both encoders' concatenated, and its added
/// embedding takes the pooled projection plus six time embeddings.
fn check_widths(
    name: &str,
    text_encoder: &ClipTextModel,
    xl: Option<&SdxlEncoder>,
    unet: &UNet2DConditionModel,
) -> Result<(), PipelineError> {
    let unet_config = unet.config();
    let mut width = text_encoder.config().hidden_size;
    if let (Some(xl), Some(tt)) = (xl, unet_config.text_time) {
        let c2 = xl.text_encoder_2.config();
        width += c2.hidden_size;
        let pooled = c2.projection_dim.ok_or_else(|| {
            PipelineError::Invalid(format!(
                "model {name}: text_encoder_2 must be a CLIPTextModelWithProjection (its config names no projection)"
            ))
        })?;
        if pooled + 6 * tt.time_embed_dim != tt.input_dim {
            return Err(PipelineError::Invalid(format!(
                "model {name}: the UNet's projection_class_embeddings_input_dim is {}, but text_encoder_2's projection_dim {pooled} + 6 × addition_time_embed_dim {} = {}",
                tt.input_dim,
                tt.time_embed_dim,
                pooled + 6 * tt.time_embed_dim
            )));
        }
    }
    if width != unet_config.cross_attention_dim {
        return Err(PipelineError::Invalid(format!(
            "model {name}: the UNet's cross_attention_dim is {}, but the text encoder{} give{} {width}",
            unet_config.cross_attention_dim,
            if xl.is_some() { "s" } else { "" },
            if xl.is_some() { "" } else { "s" },
        )));
    }
    Ok(())
}
