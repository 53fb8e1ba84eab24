//! Tokenising and encoding the prompt, as diffusers' `encode_prompt`: SD's one CLIP encoder
//! (`last_hidden_state`), or SDXL's two (penultimate hidden states concatenated, the second
//! encoder's pooled projection, and the size/crop ids the UNet's added embedding takes).

use burn::tensor::Tensor;

use super::*;
use crate::launches::DispatchCounter;
use crate::models::unet_2d_condition::AddedConditions;

/// What the UNet is conditioned on, one row per image of its batch (with CFG `[negative,
/// prompt]`, as diffusers stacks them).
pub(super) struct Condition {
    pub context: Tensor<3>,
    /// SDXL's pooled text embeddings and time ids.
    pub added: Option<AddedConditions>,
}

/// Token rows for the encoders, with CFG `[negative, prompt]`.
pub(super) struct PromptRows {
    ids: Vec<Vec<u32>>,
    /// SDXL's second tokenizer's rows.
    ids_2: Option<Vec<Vec<u32>>>,
    /// SDXL with CFG and no negative prompt: the negative row is zeros, not encoded
    /// (`force_zeros_for_empty_prompt`); `ids` then hold the prompt only.
    zero_negative: bool,
}

impl StableDiffusion {
    /// Whether a request's negative condition is zeros rather than the encoded text.
    pub(super) fn zero_negative(&self, negative_prompt: &str, cfg: bool) -> bool {
        cfg && self.xl.is_some() && self.force_zeros_for_empty_prompt && negative_prompt.is_empty()
    }

    /// Token ids for the text encoder: with CFG `[negative, prompt]`, as diffusers stacks them.
    pub fn tokenize(
        &self,
        prompt: &str,
        negative: &str,
        cfg: bool,
        progress: &mut dyn FnMut(Progress),
    ) -> Vec<Vec<u32>> {
        self.prompt_rows(prompt, negative, cfg, progress).ids
    }

    fn prompt_rows(
        &self,
        prompt: &str,
        negative: &str,
        cfg: bool,
        progress: &mut dyn FnMut(Progress),
    ) -> PromptRows {
        let zero_negative = self.zero_negative(negative, cfg);
        let rows = |tokenizer: &ClipTokenizer| {
            let encoded = tokenizer.encode(prompt);
            let mut rows = Vec::new();
            if cfg && !zero_negative {
                rows.push(tokenizer.encode(negative).ids);
            }
            rows.push(encoded.ids);
            (rows, encoded.truncated, encoded.token_count)
        };
        let (ids, truncated, token_count) = rows(&self.tokenizer);
        progress(Progress::Tokenized {
            truncated,
            token_count,
            max_length: self.tokenizer.max_length(),
        });
        PromptRows {
            ids,
            ids_2: self.xl.as_ref().map(|xl| rows(&xl.tokenizer_2).0),
            zero_negative,
        }
    }

    /// Placeholder rows of the shapes a generation at `key` encodes (for the compile pass).
    pub(super) fn placeholder_rows(&self, key: CompileKey) -> PromptRows {
        let encoded = if key.cfg && !key.zero_negative { 2 } else { 1 };
        let row = vec![0; self.tokenizer.max_length()];
        PromptRows {
            ids: vec![row.clone(); encoded],
            ids_2: self.xl.as_ref().map(|_| vec![row; encoded]),
            zero_negative: key.zero_negative,
        }
    }

    /// Tokenises and encodes the prompt, timing both.
    pub(super) async fn encode_prompt(
        &self,
        req: &GenerateRequest,
        cfg: bool,
        clock: &dyn Clock,
        timings: &mut Timings,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Condition, PipelineError> {
        let t0 = clock.now_ms();
        let rows = self.prompt_rows(&req.prompt, &req.negative_prompt, cfg, progress);
        timings.tokenize_ms = clock.now_ms() - t0;
        let t1 = clock.now_ms();
        let counter = DispatchCounter::start();
        let condition = self.condition(&rows, req.width, req.height);
        // Reading one value waits for the encoders, so their time is not billed to the first step.
        read_back(condition.context.clone().slice([0..1, 0..1, 0..1])).await?;
        timings.text_encoder_dispatches = counter.count();
        drop(counter);
        timings.text_encoder_ms = clock.now_ms() - t1;
        progress(Progress::TextEncoded);
        Ok(condition)
    }

    /// The UNet's condition for `rows` of an image of `width` × `height`.
    pub(super) fn condition(&self, rows: &PromptRows, width: usize, height: usize) -> Condition {
        let Some(xl) = &self.xl else {
            return Condition {
                context: self.text_encoder.forward(&rows.ids),
                added: None,
            };
        };
        let first = self.text_encoder.encode(&rows.ids);
        let second = xl.text_encoder_2.encode(
            rows.ids_2
                .as_ref()
                .expect("SDXL rows for the second tokenizer"),
        );
        let mut context = Tensor::cat(
            vec![
                first.penultimate_hidden_state,
                second.penultimate_hidden_state,
            ],
            2,
        );
        let mut pooled = second
            .text_embeds
            .expect("text_encoder_2 has a projection (checked at build)");
        if rows.zero_negative {
            context = Tensor::cat(vec![context.clone().zeros_like(), context], 0);
            pooled = Tensor::cat(vec![pooled.clone().zeros_like(), pooled], 0);
        }
        // diffusers' default add_time_ids: original size = target size, no crop, for both rows.
        let (h, w) = (height as f64, width as f64);
        let batch = context.dims()[0];
        Condition {
            context,
            added: Some(AddedConditions {
                text_embeds: pooled,
                time_ids: vec![[h, w, 0.0, 0.0, h, w]; batch],
            }),
        }
    }
}
