//! The folder loaders: a diffusers pipeline folder (and a TAESD folder) from disk, through
//! [`PipelineBuilder`].

use std::path::Path;

use burn::tensor::{DType, Device};

use super::{LoadOptions, PipelineBuilder, PipelineError, StableDiffusion};
use crate::config::{ConfigError, ConfigReader};
use crate::layout;
use crate::model_index::ModelIndex;
use crate::models::autoencoder_tiny::{AutoencoderTiny, AutoencoderTinyConfig};
use crate::tokenizer::ClipTokenizer;
use crate::weights::{TensorStore, find_component_file};

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
        let index = ModelIndex::parse(&read_text(&index)?, &index.display().to_string())
            .map_err(PipelineError::Invalid)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let mut builder = PipelineBuilder::new(name, device, dtype).with_options(options);
        builder.check_lora_components(index.components())?;
        for folder in index.tokenizer_folders() {
            builder.set_tokenizer_of(folder, ClipTokenizer::from_dir(&dir.join(folder))?)?;
        }
        for &component in index.components() {
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
        builder.set_model_index(index);
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
