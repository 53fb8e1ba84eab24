//! Tokenising and encoding the prompt, as diffusers' `encode_prompt`: SD's one CLIP encoder
//! (`last_hidden_state`), or SDXL's two (penultimate hidden states concatenated, the second
//! encoder's pooled projection, and the size/crop ids the UNet's added embedding takes).

use burn::tensor::{DType, Tensor, TensorData};

use super::*;
use crate::launches::DispatchCounter;
use crate::models::unet_2d_condition::AddedConditions;
use crate::options::PromptSyntax;
use crate::prompt_syntax::{self, Chunk};

/// What the UNet is conditioned on, one row per image of its batch (with CFG `[negative,
/// prompt]`, as diffusers stacks them).
pub(super) struct Condition {
    pub context: Tensor<3>,
    /// SDXL's pooled text embeddings and time ids.
    pub added: Option<AddedConditions>,
}

/// Token rows for the encoders: each encoded prompt (with CFG `[negative, prompt]`) as the
/// same number of 77-token chunks, each row with its tokens' emphasis multipliers.
pub(super) struct PromptRows {
    prompts: Vec<Vec<Chunk>>,
    /// SDXL's second tokenizer's rows.
    prompts_2: Option<Vec<Vec<Chunk>>>,
    /// SDXL with CFG and no negative prompt: the negative row is zeros, not encoded
    /// (`force_zeros_for_empty_prompt`); `prompts` then hold the prompt only.
    zero_negative: bool,
}

impl PromptRows {
    /// The chunks of each encoded prompt.
    pub(super) fn chunk_count(&self) -> usize {
        self.prompts[0].len()
    }
}

/// One prompt read by one tokenizer, and what [`Progress::Tokenized`] reports of it.
struct TokenizedPrompt {
    chunks: Vec<Chunk>,
    truncated: bool,
    token_count: usize,
    max_length: usize,
}

/// `text` as `syntax` reads it: plain is diffusers' one truncated row; A1111's is never cut
/// (its count includes bos and eos once, its limit is what the chunks hold).
fn tokenize_prompt(
    tokenizer: &ClipTokenizer,
    text: &str,
    syntax: PromptSyntax,
) -> Result<TokenizedPrompt, PipelineError> {
    match syntax {
        PromptSyntax::Plain => {
            let encoded = tokenizer.encode(text);
            let weights = vec![1.0; encoded.ids.len()];
            Ok(TokenizedPrompt {
                chunks: vec![Chunk {
                    ids: encoded.ids,
                    weights,
                }],
                truncated: encoded.truncated,
                token_count: encoded.token_count,
                max_length: tokenizer.max_length(),
            })
        }
        PromptSyntax::A1111 => {
            let chunked = prompt_syntax::tokenize_a1111(tokenizer, text)?;
            let chunk_length = tokenizer.max_length() - 2;
            Ok(TokenizedPrompt {
                max_length: chunked.chunks.len() * chunk_length + 2,
                chunks: chunked.chunks,
                truncated: false,
                token_count: chunked.token_count + 2,
            })
        }
    }
}

/// Every prompt extended to `count` chunks with the empty prompt's (A1111's `pad_cond`: the
/// shorter of prompt and negative prompt gets the empty prompt's encoding appended).
fn pad_chunks(prompts: &mut [Vec<Chunk>], count: usize, tokenizer: &ClipTokenizer) {
    let empty = tokenizer.encode("").ids;
    let empty = Chunk {
        weights: vec![1.0; empty.len()],
        ids: empty,
    };
    for chunks in prompts {
        chunks.resize(count, empty.clone());
    }
}

impl StableDiffusion {
    /// Whether a request's negative condition is zeros rather than the encoded text.
    pub(super) fn zero_negative(&self, negative_prompt: &str, cfg: bool) -> bool {
        cfg && self.xl.is_some() && self.force_zeros_for_empty_prompt && negative_prompt.is_empty()
    }

    /// Token ids for the text encoder: with CFG `[negative, prompt]`, as diffusers stacks them,
    /// each prompt's 77-token chunks one after the other.
    pub fn tokenize(
        &self,
        req: &GenerateRequest,
        cfg: bool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Vec<u32>>, PipelineError> {
        let rows = self.prompt_rows(req, cfg, progress)?;
        Ok(rows.prompts.into_iter().flatten().map(|c| c.ids).collect())
    }

    pub(super) fn prompt_rows(
        &self,
        req: &GenerateRequest,
        cfg: bool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PromptRows, PipelineError> {
        let zero_negative = self.zero_negative(&req.negative_prompt, cfg);
        let rows = |tokenizer: &ClipTokenizer| -> Result<_, PipelineError> {
            let prompt = tokenize_prompt(tokenizer, &req.prompt, req.prompt_syntax)?;
            let mut rows = Vec::new();
            if cfg && !zero_negative {
                let negative = tokenize_prompt(tokenizer, &req.negative_prompt, req.prompt_syntax)?;
                rows.push(negative.chunks);
            }
            let report = Progress::Tokenized {
                truncated: prompt.truncated,
                token_count: prompt.token_count,
                max_length: prompt.max_length,
            };
            rows.push(prompt.chunks);
            Ok((rows, report))
        };
        let (mut prompts, report) = rows(&self.tokenizer)?;
        progress(report);
        let mut prompts_2 = match &self.xl {
            Some(xl) => Some(rows(&xl.tokenizer_2)?.0),
            None => None,
        };
        let count = prompts
            .iter()
            .chain(prompts_2.iter().flatten())
            .map(Vec::len)
            .max()
            .unwrap_or(1);
        pad_chunks(&mut prompts, count, &self.tokenizer);
        if let (Some(rows_2), Some(xl)) = (&mut prompts_2, &self.xl) {
            pad_chunks(rows_2, count, &xl.tokenizer_2);
        }
        Ok(PromptRows {
            prompts,
            prompts_2,
            zero_negative,
        })
    }

    /// The UNet's text condition for `req` (with CFG `[negative, prompt]`): the context
    /// `[batch, 77 × chunks, D]` and SDXL's pooled text embeddings.
    pub fn text_condition(
        &self,
        req: &GenerateRequest,
        cfg: bool,
    ) -> Result<(Tensor<3>, Option<Tensor<2>>), PipelineError> {
        let rows = self.prompt_rows(req, cfg, &mut |_| {})?;
        let condition = self.condition(&rows, req.width, req.height);
        Ok((condition.context, condition.added.map(|a| a.text_embeds)))
    }

    /// Placeholder rows of the shapes a generation at `key` encodes (for the compile pass).
    pub(super) fn placeholder_rows(&self, key: CompileKey) -> PromptRows {
        let encoded = if key.cfg && !key.zero_negative { 2 } else { 1 };
        let n = self.tokenizer.max_length();
        let chunk = Chunk {
            ids: vec![0; n],
            weights: vec![1.0; n],
        };
        let prompt = vec![chunk; key.prompt_chunks];
        PromptRows {
            prompts: vec![prompt.clone(); encoded],
            prompts_2: self.xl.as_ref().map(|_| vec![prompt; encoded]),
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
        let rows = self.prompt_rows(req, cfg, progress)?;
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

    /// The UNet's condition for `rows` of an image of `width` × `height`: each encoder's
    /// chunks encoded as one batch, emphasised, and joined along the sequence axis; SDXL's
    /// pooled embedding from each prompt's first chunk (as A1111).
    pub(super) fn condition(&self, rows: &PromptRows, width: usize, height: usize) -> Condition {
        let encoded = rows.prompts.len();
        let Some(xl) = &self.xl else {
            let states = self.text_encoder.forward(&chunk_ids(&rows.prompts));
            return Condition {
                context: join_chunks(emphasised(states, &rows.prompts), encoded),
                added: None,
            };
        };
        let rows_2 = rows
            .prompts_2
            .as_ref()
            .expect("SDXL rows for the second tokenizer");
        let first = self.text_encoder.encode(&chunk_ids(&rows.prompts));
        let second = xl.text_encoder_2.encode(&chunk_ids(rows_2));
        let mut context = Tensor::cat(
            vec![
                join_chunks(
                    emphasised(first.penultimate_hidden_state, &rows.prompts),
                    encoded,
                ),
                join_chunks(emphasised(second.penultimate_hidden_state, rows_2), encoded),
            ],
            2,
        );
        let text_embeds = second
            .text_embeds
            .expect("text_encoder_2 has a projection (checked at build)");
        let mut pooled = first_chunks(text_embeds, encoded);
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

/// Every prompt's chunks, one encoder row each, prompt after prompt.
fn chunk_ids(prompts: &[Vec<Chunk>]) -> Vec<Vec<u32>> {
    prompts.iter().flatten().map(|c| c.ids.clone()).collect()
}

/// A1111's emphasis ("Original"): each row's hidden states times its tokens' multipliers,
/// then rescaled so that the row's mean is what it was. Unweighted prompts are left as they
/// are (bit for bit diffusers').
fn emphasised(states: Tensor<3>, prompts: &[Vec<Chunk>]) -> Tensor<3> {
    if prompts.iter().flatten().all(Chunk::is_unweighted) {
        return states;
    }
    let [n, s, d] = states.dims();
    let weights: Vec<f32> = prompts
        .iter()
        .flatten()
        .flat_map(|c| c.weights.iter().copied())
        .collect();
    let weights = Tensor::<3>::from_data(TensorData::new(weights, [n, s, 1]), &states.device())
        .cast(DType::F32);
    let dtype = states.dtype();
    // The means in f32: a sum over 77 × 2048 values overflows f16.
    let states = states.cast(DType::F32);
    let mean = |t: &Tensor<3>| t.clone().reshape([n, s * d]).mean_dim(1).reshape([n, 1, 1]);
    let original = mean(&states);
    let weighted = states * weights;
    // A row whose weighted mean is exactly 0 keeps its scale (A1111 would divide 0 by 0 there:
    // a NaN condition; the tiny fixtures' zero-bias final norms meet it, real encoders not).
    let new_mean = mean(&weighted);
    let zero = new_mean.clone().equal_elem(0.0);
    let restore = (original / new_mean.mask_fill(zero.clone(), 1.0)).mask_fill(zero, 1.0);
    (weighted * restore).cast(dtype)
}

/// `[prompts × chunks, 77, D]` → `[prompts, chunks × 77, D]`: each prompt's chunks in a row.
fn join_chunks(states: Tensor<3>, prompts: usize) -> Tensor<3> {
    let [n, s, d] = states.dims();
    states.reshape([prompts, n / prompts * s, d])
}

/// `[prompts × chunks, E]` → each prompt's first chunk's `[prompts, E]`.
fn first_chunks(embeds: Tensor<2>, prompts: usize) -> Tensor<2> {
    let [n, e] = embeds.dims();
    embeds
        .reshape([prompts, n / prompts, e])
        .narrow(1, 0, 1)
        .reshape([prompts, e])
}
