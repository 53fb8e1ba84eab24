//! CLIP tokenizer giving the same ids as the `CLIPTokenizer` a diffusers Stable Diffusion
//! pipeline runs.
//!
//! Two behaviours exist in the wild, and they disagree on some prompts (CJK text, control and
//! format characters, private-use characters, Greek final sigma, upper-case special tokens):
//!
//! * [`Flavor::Slow`]: transformers 4's pure-Python `CLIPTokenizer` **without ftfy installed**,
//!   which is what diffusers loads for the published SD 1.x / 2.x repos (`vocab.json` +
//!   `merges.txt`, `model_index.json` naming `CLIPTokenizer`). Pipeline: split out added
//!   tokens (exact match, with their lstrip/rstrip/single_word flags) → BERT's BasicTokenizer
//!   (`strip_accents=False, do_split_on_punc=False`): drop NUL, U+FFFD and category C*
//!   characters (except \t \n \r, which become spaces, like Zs), spaces around CJK ideographs,
//!   NFC, whitespace split, `str.lower()` per word, join with spaces → the CLIP regex
//!   (case-insensitive) → byte-level mapping → BPE over at most 48 894 merges (the first line of
//!   merges.txt is always skipped) → `<|startoftext|>`/`<|endoftext|>` produced by the regex
//!   map straight to their ids. Character categories are Python 3.11's (Unicode 14.0.0), so
//!   e.g. emoji newer than Unicode 14 are dropped, exactly as that reference does.
//! * [`Flavor::Fast`]: the `tokenizers`-backed tokenizer: `CLIPTokenizerFast` of
//!   transformers 4, and *every* `CLIPTokenizer` of transformers 5 (which removed the slow
//!   one). Pipeline, built here from the `tokenizers` crate's own components: added tokens
//!   (`normalized: false` ones on the raw text, `normalized: true` ones after normalisation) →
//!   NFC, `\s+` → `" "`, per-character lower-case → the CLIP regex (matches kept) → byte-level
//!   with the GPT-2 regex → BPE.
//!
//! [`ClipTokenizer::from_dir`] / [`ClipTokenizer::from_files`] pick `Fast` when the folder has a
//! `tokenizer.json` (only a fast tokenizer can load one) and `Slow` for `vocab.json` +
//! `merges.txt`; [`ClipTokenizer::from_files_with_flavor`] forces one. Either way only the
//! vocab, merges and added-token flags (and, failing `model_max_length`, the padding /
//! truncation length) are read from `tokenizer.json`: its normaliser / pre-tokeniser sections
//! are ignored (transformers 5 rebuilds the CLIP pipeline in `CLIPTokenizer.__init__` too).
//! Settings (`model_max_length`, special tokens) come from `tokenizer_config.json` and
//! `special_tokens_map.json`, resolved as transformers does; `do_lower_case` is ignored, as
//! by transformers (both flavours always lower-case).
//!
//! Both flavours frame the tokens as diffusers asks (`padding="max_length", truncation=True`):
//! `<|startoftext|>` + tokens + `<|endoftext|>`, truncated to `model_max_length` with the eos
//! kept last, padded with the pad token.
//!
//! Worth knowing: SD 2.x declares `pad_token: "!"`, which makes `!` an added special token, so
//! in both flavours every `!` of an SD 2.x prompt becomes id 0 on its own (never part of
//! `!!</w>` or `?!</w>`), as transformers does.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

use crate::layout;
use tokenizers::Model;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};
use unicode_normalization::UnicodeNormalization;

/// The CLIP pre-tokenisation regex.
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const DEFAULT_BOS: &str = "<|startoftext|>";
const DEFAULT_EOS: &str = "<|endoftext|>";
/// The slow tokenizer reads at most this many merges (`[1 : 49152 - 256 - 2 + 1]`).
const SLOW_MAX_MERGES: usize = 49152 - 256 - 2;
/// CLIP's text encoder has 77 positions; used when the config gives no usable
/// `model_max_length`.
pub const DEFAULT_MAX_LENGTH: usize = 77;
/// A `model_max_length` above this is transformers' "no limit" placeholder
/// (`VERY_LARGE_INTEGER`) or nonsense; we fall back to [`DEFAULT_MAX_LENGTH`].
const MAX_SANE_LENGTH: u64 = 1 << 16;
/// Special-token attributes, in transformers' `SPECIAL_TOKENS_ATTRIBUTES` order.
const SPECIAL_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// Which transformers tokenizer to reproduce; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// transformers 4 `CLIPTokenizer` (pure Python) without ftfy.
    Slow,
    /// `tokenizers`-backed: transformers 4 `CLIPTokenizerFast`, transformers 5 `CLIPTokenizer`.
    Fast,
}

/// Errors from loading a tokenizer. Each names the file (or field) at fault.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer: missing file {0}")]
    MissingFile(String),
    #[error("tokenizer: cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tokenizer: {file}: {msg}")]
    BadFile { file: String, msg: String },
    #[error("tokenizer: {0}")]
    Build(String),
}

/// The raw bytes of a diffusers `tokenizer/` folder; any may be absent. Either
/// `tokenizer_json`, or both `vocab_json` and `merges_txt`, must be given.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenizerFiles<'a> {
    pub tokenizer_json: Option<&'a [u8]>,
    pub vocab_json: Option<&'a [u8]>,
    pub merges_txt: Option<&'a [u8]>,
    pub tokenizer_config_json: Option<&'a [u8]>,
    pub special_tokens_map_json: Option<&'a [u8]>,
}

/// Token ids for one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// `bos, tokens.., eos, pad..`: always exactly `max_length` long.
    pub ids: Vec<u32>,
    /// The prompt did not fit (diffusers warns and drops the tail).
    pub truncated: bool,
    /// Tokens before truncation, including bos and eos.
    pub token_count: usize,
}

/// A CLIP BPE tokenizer, see the module docs.
#[derive(Clone)]
pub struct ClipTokenizer {
    engine: Engine,
    flavor: Flavor,
    max_length: usize,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
}

#[derive(Clone)]
enum Engine {
    Fast(Box<Tokenizer>),
    Slow(Box<SlowEngine>),
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("flavor", &self.flavor)
            .field("vocab_size", &self.vocab_size())
            .field("max_length", &self.max_length)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

fn bad(file: &str, msg: impl Into<String>) -> TokenizerError {
    TokenizerError::BadFile {
        file: file.to_string(),
        msg: msg.into(),
    }
}

/// An added token as transformers describes it (`AddedToken`).
#[derive(Debug, Clone, PartialEq)]
struct TokenSpec {
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

impl TokenSpec {
    /// A plain string named as a special token: transformers makes it
    /// `AddedToken(s, special=True)`, hence `normalized=False`.
    fn special_str(content: &str) -> Self {
        Self {
            content: content.to_string(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: true,
        }
    }

    /// `AddedToken(**dict)`, with `special` defaulting to `default_special` and `normalized`
    /// to `not special` (transformers' rule).
    fn from_dict(
        map: &serde_json::Map<String, Value>,
        default_special: bool,
        file: &str,
        field: &str,
    ) -> Result<Self, TokenizerError> {
        let content = map.get("content").and_then(Value::as_str).ok_or_else(|| {
            bad(
                file,
                format!("{field}: AddedToken without a string \"content\""),
            )
        })?;
        let flag = |k: &str| map.get(k).and_then(Value::as_bool);
        let special = flag("special").unwrap_or(default_special);
        Ok(Self {
            content: content.to_string(),
            single_word: flag("single_word").unwrap_or(false),
            lstrip: flag("lstrip").unwrap_or(false),
            rstrip: flag("rstrip").unwrap_or(false),
            normalized: flag("normalized").unwrap_or(!special),
            special,
        })
    }

    /// A special-token value: a string, an AddedToken dict, or null.
    fn from_value(
        v: &Value,
        default_special: bool,
        file: &str,
        field: &str,
    ) -> Result<Option<Self>, TokenizerError> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(Self::special_str(s))),
            Value::Object(m) => Self::from_dict(m, default_special, file, field).map(Some),
            other => Err(bad(
                file,
                format!("{field}: expected a string or an AddedToken object, got {other}"),
            )),
        }
    }

    fn to_added(&self) -> AddedToken {
        AddedToken::from(self.content.clone(), self.special)
            .single_word(self.single_word)
            .lstrip(self.lstrip)
            .rstrip(self.rstrip)
            .normalized(self.normalized)
    }
}

fn parse_json(bytes: &[u8], file: &str) -> Result<Value, TokenizerError> {
    serde_json::from_slice(bytes).map_err(|e| bad(file, format!("invalid JSON: {e}")))
}

fn parse_object(
    bytes: Option<&[u8]>,
    file: &str,
) -> Result<serde_json::Map<String, Value>, TokenizerError> {
    match bytes {
        None => Ok(serde_json::Map::new()),
        Some(b) => match parse_json(b, file)? {
            Value::Object(m) => Ok(m),
            _ => Err(bad(file, "expected a JSON object")),
        },
    }
}

fn vocab_from_value(v: &Value, file: &str) -> Result<Vocab, TokenizerError> {
    let map = v
        .as_object()
        .ok_or_else(|| bad(file, "vocab: expected an object {token: id}"))?;
    let mut vocab = Vocab::default();
    for (tok, id) in map {
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| bad(file, format!("vocab: id of {tok:?} is not a u32: {id}")))?;
        vocab.insert(tok.clone(), id);
    }
    if vocab.is_empty() {
        return Err(bad(file, "vocab is empty"));
    }
    Ok(vocab)
}

/// merges.txt as the tokenizers library reads it: lines starting with `#version` skipped,
/// every other line exactly two tokens separated by one space.
fn merges_from_txt(bytes: &[u8]) -> Result<Merges, TokenizerError> {
    const FILE: &str = "merges.txt";
    let text = std::str::from_utf8(bytes).map_err(|e| bad(FILE, format!("not UTF-8: {e}")))?;
    let mut merges = Merges::new();
    for (i, line) in text
        .lines()
        .filter(|l| !l.starts_with("#version"))
        .enumerate()
    {
        match line.split(' ').collect::<Vec<_>>()[..] {
            [a, b] => merges.push((a.to_string(), b.to_string())),
            _ => {
                return Err(bad(
                    FILE,
                    format!(
                        "merge {} is not two space-separated tokens: {line:?}",
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(merges)
}

/// `model.merges` of tokenizer.json: `"a b"` strings or `["a", "b"]` pairs.
fn merges_from_value(v: &Value, file: &str) -> Result<Merges, TokenizerError> {
    let list = v
        .as_array()
        .ok_or_else(|| bad(file, "model.merges: expected an array"))?;
    let mut merges = Merges::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let pair = match m {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(' ').collect();
                match parts[..] {
                    [a, b] => Some((a.to_string(), b.to_string())),
                    _ => None,
                }
            }
            Value::Array(a) => match &a[..] {
                [Value::String(x), Value::String(y)] => Some((x.clone(), y.clone())),
                _ => None,
            },
            _ => None,
        };
        merges
            .push(pair.ok_or_else(|| bad(file, format!("model.merges[{i}] is not a pair: {m}")))?);
    }
    Ok(merges)
}

/// A positive integer setting, `None` when absent, null, not a sane integer.
fn sane_length(v: Option<&Value>) -> Option<usize> {
    let n = v?.as_u64()?;
    (2..=MAX_SANE_LENGTH).contains(&n).then_some(n as usize)
}

/// merges.txt as the slow tokenizer reads it: `text.strip().split("\n")[1:48895]`, each
/// line split on whitespace (the first line is skipped whether or not it is a `#version`
/// header; a line that is not a pair takes a rank but can never apply).
fn merges_from_txt_slow(bytes: &[u8]) -> Result<Merges, TokenizerError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| bad("merges.txt", format!("not UTF-8: {e}")))?;
    let mut merges = Merges::new();
    for line in text.trim().split('\n').skip(1).take(SLOW_MAX_MERGES) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let [a, b] = parts[..] {
            merges.push((a.to_string(), b.to_string()));
        }
    }
    Ok(merges)
}

impl ClipTokenizer {
    /// Load a diffusers `tokenizer/` folder: `tokenizer.json` if present (→ [`Flavor::Fast`]),
    /// else `vocab.json` + `merges.txt` (→ [`Flavor::Slow`]); settings from
    /// `tokenizer_config.json` / `special_tokens_map.json` when present.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        Self::from_dir_impl(dir, None)
    }

    /// [`ClipTokenizer::from_dir`] with the flavour forced.
    pub fn from_dir_with_flavor(dir: &Path, flavor: Flavor) -> Result<Self, TokenizerError> {
        Self::from_dir_impl(dir, Some(flavor))
    }

    fn from_dir_impl(dir: &Path, flavor: Option<Flavor>) -> Result<Self, TokenizerError> {
        if !dir.is_dir() {
            return Err(TokenizerError::MissingFile(format!(
                "{} (tokenizer folder)",
                dir.display()
            )));
        }
        let read = |name: &str| -> Result<Option<Vec<u8>>, TokenizerError> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(TokenizerError::Io {
                    path: path.display().to_string(),
                    source,
                }),
            }
        };
        let tokenizer_json = read(layout::TOKENIZER_JSON)?;
        // vocab.json/merges.txt are only needed without tokenizer.json.
        let (vocab_json, merges_txt) = if tokenizer_json.is_none() {
            let v = read(layout::VOCAB_JSON)?;
            let m = read(layout::MERGES_TXT)?;
            if v.is_none() || m.is_none() {
                let missing = if v.is_none() {
                    layout::VOCAB_JSON
                } else {
                    layout::MERGES_TXT
                };
                return Err(TokenizerError::MissingFile(format!(
                    "{} (and no tokenizer.json)",
                    dir.join(missing).display()
                )));
            }
            (v, m)
        } else {
            (None, None)
        };
        let tokenizer_config_json = read(layout::TOKENIZER_CONFIG_JSON)?;
        let special_tokens_map_json = read(layout::SPECIAL_TOKENS_MAP_JSON)?;
        let files = TokenizerFiles {
            tokenizer_json: tokenizer_json.as_deref(),
            vocab_json: vocab_json.as_deref(),
            merges_txt: merges_txt.as_deref(),
            tokenizer_config_json: tokenizer_config_json.as_deref(),
            special_tokens_map_json: special_tokens_map_json.as_deref(),
        };
        Self::build(files, flavor)
    }

    /// Same as [`ClipTokenizer::from_dir`] from the files' bytes (`tokenizer_json` given →
    /// [`Flavor::Fast`], else [`Flavor::Slow`]).
    pub fn from_files(files: TokenizerFiles<'_>) -> Result<Self, TokenizerError> {
        Self::build(files, None)
    }

    /// [`ClipTokenizer::from_files`] with the flavour forced.
    pub fn from_files_with_flavor(
        files: TokenizerFiles<'_>,
        flavor: Flavor,
    ) -> Result<Self, TokenizerError> {
        Self::build(files, Some(flavor))
    }

    fn build(files: TokenizerFiles<'_>, flavor: Option<Flavor>) -> Result<Self, TokenizerError> {
        let flavor = flavor.unwrap_or(if files.tokenizer_json.is_some() {
            Flavor::Fast
        } else {
            Flavor::Slow
        });
        let config = parse_object(files.tokenizer_config_json, "tokenizer_config.json")?;

        // --- vocab, merges, and the added tokens recorded in tokenizer.json
        let mut json_added: Vec<TokenSpec> = Vec::new();
        let mut json_max_length = None;
        let (vocab, merges, file) = if let Some(tj) = files.tokenizer_json {
            const FILE: &str = "tokenizer.json";
            let tj = parse_json(tj, FILE)?;
            let model = tj
                .get("model")
                .and_then(Value::as_object)
                .ok_or_else(|| bad(FILE, "no \"model\" object"))?;
            match model.get("type").and_then(Value::as_str) {
                Some("BPE") | None => {}
                Some(t) => {
                    return Err(bad(FILE, format!("model.type is {t:?}, expected \"BPE\"")));
                }
            }
            let vocab = vocab_from_value(
                model
                    .get("vocab")
                    .ok_or_else(|| bad(FILE, "no model.vocab"))?,
                FILE,
            )?;
            let merges = merges_from_value(
                model
                    .get("merges")
                    .ok_or_else(|| bad(FILE, "no model.merges"))?,
                FILE,
            )?;
            if let Some(list) = tj.get("added_tokens").and_then(Value::as_array) {
                for (i, t) in list.iter().enumerate() {
                    let m = t
                        .as_object()
                        .ok_or_else(|| bad(FILE, format!("added_tokens[{i}] is not an object")))?;
                    let field = format!("added_tokens[{i}]");
                    json_added.push(TokenSpec::from_dict(m, false, FILE, &field)?);
                }
            }
            if let Some(p) = tj.get("padding").and_then(Value::as_object) {
                json_max_length = p
                    .get("strategy")
                    .and_then(|s| s.get("Fixed"))
                    .and_then(|n| sane_length(Some(n)));
            }
            if json_max_length.is_none() {
                json_max_length =
                    sane_length(tj.get("truncation").and_then(|t| t.get("max_length")));
            }
            (vocab, merges, FILE)
        } else {
            let v = files.vocab_json.ok_or_else(|| {
                TokenizerError::MissingFile("tokenizer.json or vocab.json".into())
            })?;
            let m = files
                .merges_txt
                .ok_or_else(|| TokenizerError::MissingFile("merges.txt".into()))?;
            let vocab = vocab_from_value(&parse_json(v, "vocab.json")?, "vocab.json")?;
            let merges = match flavor {
                Flavor::Slow => merges_from_txt_slow(m)?,
                Flavor::Fast => merges_from_txt(m)?,
            };
            (vocab, merges, "vocab.json")
        };

        // --- special tokens, resolved the way transformers does (see `resolve_added`)
        let stm = parse_object(files.special_tokens_map_json, "special_tokens_map.json")?;
        let added = resolve_added(&config, &stm, json_added)?;
        let name_of = |key: &str, default: &str| -> Result<String, TokenizerError> {
            Ok(named_value(&config, &stm, key)?
                .map(|t| t.content)
                .unwrap_or_else(|| default.to_string()))
        };
        let unk = name_of("unk_token", DEFAULT_EOS)?;
        let bos = name_of("bos_token", DEFAULT_BOS)?;
        let eos = name_of("eos_token", DEFAULT_EOS)?;
        // As in transformers, tokenizer.json's own `padding.pad_token` is not used:
        // CLIPTokenizer passes its default (`<|endoftext|>`) explicitly.
        let pad = name_of("pad_token", DEFAULT_EOS)?;
        let max_length = match config.get("model_max_length") {
            Some(v) if !v.is_null() => sane_length(Some(v)).unwrap_or(DEFAULT_MAX_LENGTH),
            _ => json_max_length.unwrap_or(DEFAULT_MAX_LENGTH),
        };

        if !vocab.contains_key(&unk) {
            return Err(bad(
                file,
                format!("unk token {unk:?} is not in the vocabulary"),
            ));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(unk.clone())
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".to_string())
            .fuse_unk(false)
            .build()
            .map_err(|e| bad(file, format!("invalid BPE vocab/merges: {e}")))?;

        let engine = match flavor {
            Flavor::Fast => Engine::Fast(Box::new(fast_pipeline(bpe, &added)?)),
            Flavor::Slow => Engine::Slow(Box::new(SlowEngine::new(bpe, &added, &unk)?)),
        };
        let mut tok = Self {
            engine,
            flavor,
            max_length,
            bos_id: 0,
            eos_id: 0,
            pad_id: 0,
        };
        let unk_id = tok
            .token_to_id(&unk)
            .ok_or_else(|| bad(file, format!("unk token {unk:?} has no id")))?;
        tok.bos_id = tok
            .token_to_id(&bos)
            .ok_or_else(|| bad(file, format!("bos token {bos:?} is not in the vocabulary")))?;
        tok.eos_id = tok
            .token_to_id(&eos)
            .ok_or_else(|| bad(file, format!("eos token {eos:?} is not in the vocabulary")))?;
        // transformers maps an unknown pad token to the unk id.
        tok.pad_id = tok.token_to_id(&pad).unwrap_or(unk_id);
        Ok(tok)
    }

    /// The prompt's token ids, without bos/eos, truncation or padding.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match &self.engine {
            Engine::Fast(t) => {
                let enc = t
                    .encode(text, false)
                    .map_err(|e| TokenizerError::Build(format!("encoding failed: {e}")))?;
                Ok(enc.get_ids().to_vec())
            }
            Engine::Slow(s) => s.tokenize(text),
        }
    }

    /// `bos + tokens + eos`, truncated to `max_length` (eos kept last) and padded with the
    /// pad id. Fails only if the tokenizers library does (not expected with a CLIP vocab).
    pub fn try_encode(&self, text: &str) -> Result<Encoding, TokenizerError> {
        let tokens = self.tokenize(text)?;
        Ok(self.frame(&tokens))
    }

    /// [`ClipTokenizer::try_encode`]; should the tokenizers library fail (not expected with a
    /// CLIP vocab), the ids of the empty prompt.
    pub fn encode(&self, text: &str) -> Encoding {
        self.try_encode(text).unwrap_or_else(|_| self.frame(&[]))
    }

    fn frame(&self, tokens: &[u32]) -> Encoding {
        let room = self.max_length.saturating_sub(2);
        let kept = &tokens[..tokens.len().min(room)];
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(kept);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        Encoding {
            ids,
            truncated: tokens.len() > room,
            token_count: tokens.len() + 2,
        }
    }

    /// `model_max_length` (77 for every SD 1.x / 2.x checkpoint).
    pub fn max_length(&self) -> usize {
        self.max_length
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }
    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        match &self.engine {
            Engine::Fast(t) => t.get_vocab_size(true),
            Engine::Slow(s) => {
                let extra = s
                    .added
                    .iter()
                    .filter(|a| s.bpe.token_to_id(&a.content).is_none())
                    .count();
                s.bpe.get_vocab_size() + extra
            }
        }
    }
    /// The id of a token string (added token or vocabulary entry).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.engine {
            Engine::Fast(t) => t.token_to_id(token),
            Engine::Slow(s) => s.token_to_id(token),
        }
    }
}

/// transformers' `CLIPTokenizer.__init__` (v5) / `CLIPTokenizerFast` pipeline.
fn fast_pipeline(bpe: BPE, added: &[TokenSpec]) -> Result<Tokenizer, TokenizerError> {
    let mut inner = Tokenizer::new(bpe);
    let replace = Replace::new(ReplacePattern::Regex(r"\s+".to_string()), " ")
        .map_err(|e| TokenizerError::Build(format!("whitespace regex: {e}")))?;
    inner.with_normalizer(Some(NormSequence::new(vec![
        NFC.into(),
        replace.into(),
        Lowercase.into(),
    ])));
    let split = Split::new(
        SplitPattern::Regex(CLIP_PATTERN.to_string()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|e| TokenizerError::Build(format!("CLIP regex: {e}")))?;
    inner.with_pre_tokenizer(Some(PreSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    let tokens: Vec<AddedToken> = added.iter().map(TokenSpec::to_added).collect();
    inner.add_tokens(&tokens);
    Ok(inner)
}

/// An added token of the slow tokenizer.
#[derive(Clone)]
struct SlowAdded {
    content: String,
    id: u32,
    lstrip: bool,
    rstrip: bool,
    single_word: bool,
}

/// transformers 4's pure-Python `CLIPTokenizer` with ftfy absent.
#[derive(Clone)]
struct SlowEngine {
    bpe: BPE,
    added: Vec<SlowAdded>,
    unk_id: u32,
    pattern: regex::Regex,
    byte_chars: [char; 256],
}

impl SlowEngine {
    fn new(bpe: BPE, added: &[TokenSpec], unk: &str) -> Result<Self, TokenizerError> {
        let unk_id = bpe
            .token_to_id(unk)
            .ok_or_else(|| TokenizerError::Build(format!("unk token {unk:?} has no id")))?;
        // Added tokens missing from the vocabulary get ids after it, in order.
        let mut next = bpe.get_vocab_size() as u32;
        let mut out = Vec::with_capacity(added.len());
        for a in added {
            let id = match bpe.token_to_id(&a.content) {
                Some(id) => id,
                None => {
                    next += 1;
                    next - 1
                }
            };
            if !a.content.is_empty() {
                out.push(SlowAdded {
                    content: a.content.clone(),
                    id,
                    lstrip: a.lstrip,
                    rstrip: a.rstrip,
                    single_word: a.single_word,
                });
            }
        }
        let pattern = regex::Regex::new(&format!("(?i){CLIP_PATTERN}"))
            .map_err(|e| TokenizerError::Build(format!("CLIP regex: {e}")))?;
        Ok(Self {
            bpe,
            added: out,
            unk_id,
            pattern,
            byte_chars: bytes_to_unicode(),
        })
    }

    fn added_id(&self, s: &str) -> Option<u32> {
        self.added.iter().find(|a| a.content == s).map(|a| a.id)
    }

    /// `convert_tokens_to_ids` without the unk fallback: added tokens first, then the vocab.
    fn token_to_id(&self, s: &str) -> Option<u32> {
        self.added_id(s).or_else(|| self.bpe.token_to_id(s))
    }

    /// `tokens_trie.split`: cut the text around added tokens (leftmost, then longest match).
    fn split_added(&self, text: &str) -> Vec<String> {
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            let best = self
                .added
                .iter()
                .filter(|a| rest.starts_with(a.content.as_str()))
                .map(|a| a.content.len())
                .max();
            match best {
                Some(len) => {
                    if start < i {
                        pieces.push(text[start..i].to_string());
                    }
                    pieces.push(text[i..i + len].to_string());
                    i += len;
                    start = i;
                }
                None => i += rest.chars().next().map_or(1, char::len_utf8),
            }
        }
        if start < text.len() {
            pieces.push(text[start..].to_string());
        }
        pieces
    }

    /// `PreTrainedTokenizer.tokenize` + `CLIPTokenizer._tokenize`, as ids.
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut pieces = self.split_added(text);
        // lstrip / rstrip / single_word of the added tokens, in transformers' order.
        let n = pieces.len();
        for i in 0..n {
            let Some(a) = self.added.iter().find(|a| a.content == pieces[i]) else {
                continue;
            };
            let token = pieces[i].clone();
            let has_left = i > 0 && !pieces[i - 1].is_empty();
            let has_right = i + 1 < n && !pieces[i + 1].is_empty();
            if a.rstrip && has_right {
                pieces[i + 1] = pieces[i + 1].trim_start_matches(py_isspace).to_string();
            }
            if a.lstrip && has_left {
                pieces[i - 1] = pieces[i - 1].trim_end_matches(py_isspace).to_string();
            }
            let has_left = i > 0 && !pieces[i - 1].is_empty();
            let has_right = i + 1 < n && !pieces[i + 1].is_empty();
            if a.single_word && has_left && !pieces[i - 1].ends_with(' ') {
                pieces[i - 1].push_str(&token);
                pieces[i].clear();
            } else if a.single_word && has_right && !pieces[i + 1].starts_with(' ') {
                pieces[i + 1] = format!("{token}{}", pieces[i + 1]);
                pieces[i].clear();
            }
        }
        let mut ids = Vec::new();
        for piece in pieces.iter().filter(|p| !p.is_empty()) {
            if let Some(id) = self.added_id(piece) {
                ids.push(id);
                continue;
            }
            // U+0345 (combining ypogegrammeni) case-folds to a letter: under IGNORECASE
            // Python's `regex` module then matches it with neither `[\p{L}]` nor the negated
            // class, so it separates words like a space; the `regex` crate would keep it.
            let text = basic_tokenize(piece).replace('\u{345}', " ");
            for m in self.pattern.find_iter(&text) {
                let word = m.as_str();
                // The slow tokenizer's BPE cache is pre-seeded with these two.
                if word == DEFAULT_BOS || word == DEFAULT_EOS {
                    ids.push(self.token_to_id(word).unwrap_or(self.unk_id));
                    continue;
                }
                let mapped: String = word.bytes().map(|b| self.byte_chars[b as usize]).collect();
                let toks = self
                    .bpe
                    .tokenize(&mapped)
                    .map_err(|e| TokenizerError::Build(format!("BPE failed: {e}")))?;
                ids.extend(toks.iter().map(|t| t.id));
            }
        }
        Ok(ids)
    }
}

/// GPT-2's reversible byte → printable character map (`bytes_to_unicode`).
fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let direct = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if direct {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\u{FFFD}')
        };
    }
    map
}

/// Python's `str.isspace`: White_Space plus the C0 separators U+001C..U+001F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

fn in_ranges(cp: u32, ranges: &[(u32, u32)]) -> bool {
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// BERT's `_is_chinese_char`: the CJK ideograph blocks.
fn is_cjk(cp: u32) -> bool {
    matches!(cp,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// Unicode 14 Zs (Python 3.11).
fn is_py_zs(cp: u32) -> bool {
    matches!(
        cp,
        0x20 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x202F | 0x205F | 0x3000
    )
}

/// `" ".join(BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize(text))`.
fn basic_tokenize(text: &str) -> String {
    // _clean_text + _tokenize_chinese_chars
    let mut cleaned = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let cp = c as u32;
        if matches!(c, '\t' | '\n' | '\r') || is_py_zs(cp) {
            cleaned.push(' ');
        } else if cp == 0 || cp == 0xFFFD || in_ranges(cp, PY_CATEGORY_C) {
            continue;
        } else if is_cjk(cp) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    // NFC, whitespace split, str.lower() per word (final sigma is per word), join.
    let nfc: String = cleaned.nfc().collect();
    let mut out = String::with_capacity(nfc.len());
    for word in nfc.split(py_isspace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word.to_lowercase());
    }
    out
}

/// The value of a named special token: `special_tokens_map.json` wins over
/// `tokenizer_config.json` (transformers reads the map only when the config has no
/// `added_tokens_decoder`).
fn named_value(
    config: &serde_json::Map<String, Value>,
    stm: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<TokenSpec>, TokenizerError> {
    if !config.contains_key("added_tokens_decoder")
        && let Some(v) = stm.get(key)
    {
        // special_tokens_map dicts become AddedToken(**v, special=True).
        return TokenSpec::from_value(v, true, "special_tokens_map.json", key);
    }
    match config.get(key) {
        Some(v) => TokenSpec::from_value(v, false, "tokenizer_config.json", key),
        None => Ok(None),
    }
}

/// The added tokens, in the order and with the flags transformers 5 ends up with:
/// first `added_tokens_decoder` of tokenizer_config.json (or, without it, tokenizer.json's
/// `added_tokens`), then each named special token (bos, eos, unk, sep, pad, cls, mask; the
/// CLIP defaults for bos/eos/unk/pad) not already among those, then
/// `additional_special_tokens` / `extra_special_tokens`. A later entry with the same content
/// replaces an earlier one's flags (which is how SD 1.x's `pad_token: "<|endoftext|>"` string
/// makes `<|endoftext|>` match case-sensitively only).
fn resolve_added(
    config: &serde_json::Map<String, Value>,
    stm: &serde_json::Map<String, Value>,
    json_added: Vec<TokenSpec>,
) -> Result<Vec<TokenSpec>, TokenizerError> {
    const CFG: &str = "tokenizer_config.json";
    let mut base: Vec<TokenSpec> = Vec::new();
    match config.get("added_tokens_decoder") {
        Some(Value::Object(dec)) => {
            let mut entries = Vec::with_capacity(dec.len());
            for (k, v) in dec {
                let id: u64 = k.parse().map_err(|_| {
                    bad(CFG, format!("added_tokens_decoder key {k:?} is not an id"))
                })?;
                let m = v.as_object().ok_or_else(|| {
                    bad(CFG, format!("added_tokens_decoder[{k}] is not an object"))
                })?;
                entries.push((
                    id,
                    TokenSpec::from_dict(m, false, CFG, &format!("added_tokens_decoder[{k}]"))?,
                ));
            }
            entries.sort_by_key(|(id, _)| *id);
            base.extend(entries.into_iter().map(|(_, t)| t));
        }
        Some(Value::Null) | None => base = json_added,
        Some(other) => {
            return Err(bad(
                CFG,
                format!("added_tokens_decoder: expected an object, got {other}"),
            ));
        }
    }
    let base_contents: HashSet<String> = base.iter().map(|t| t.content.clone()).collect();
    let mut list = base;

    for key in SPECIAL_KEYS {
        let spec = match named_value(config, stm, key)? {
            Some(s) => Some(s),
            None => match key {
                "bos_token" => Some(TokenSpec::special_str(DEFAULT_BOS)),
                "eos_token" | "unk_token" | "pad_token" => {
                    Some(TokenSpec::special_str(DEFAULT_EOS))
                }
                _ => None,
            },
        };
        if let Some(mut s) = spec {
            s.special = true;
            if !base_contents.contains(&s.content) && !list.contains(&s) {
                list.push(s);
            }
        }
    }
    for key in ["additional_special_tokens", "extra_special_tokens"] {
        let from_stm = !config.contains_key("added_tokens_decoder") && stm.contains_key(key);
        let (v, file) = if from_stm {
            (stm.get(key), "special_tokens_map.json")
        } else {
            (config.get(key), CFG)
        };
        if let Some(Value::Array(items)) = v {
            for (i, item) in items.iter().enumerate() {
                if let Some(mut s) =
                    TokenSpec::from_value(item, true, file, &format!("{key}[{i}]"))?
                {
                    s.special = true;
                    if !base_contents.contains(&s.content) && !list.contains(&s) {
                        list.push(s);
                    }
                }
            }
        }
    }

    // One entry per content, at its first position, with its last flags.
    let mut last: HashMap<&str, &TokenSpec> = HashMap::new();
    for t in &list {
        last.insert(t.content.as_str(), t);
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in &list {
        if seen.insert(t.content.clone()) {
            out.push(last[t.content.as_str()].clone());
        }
    }
    Ok(out)
}

#[rustfmt::skip]
/// Code points whose general category is C* (Cc, Cf, Cs, Co, Cn) in Unicode 14.0.0,
/// Python 3.11's `unicodedata`: transformers 4's BasicTokenizer drops them (except \t \n \r).
/// Generated with `unicodedata.category(chr(cp))[0] == 'C'` over all code points.
const PY_CATEGORY_C: &[(u32, u32)] = &[
    (0x0, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x378, 0x379), (0x380, 0x383), (0x38B, 0x38B),
    (0x38D, 0x38D), (0x3A2, 0x3A2), (0x530, 0x530), (0x557, 0x558), (0x58B, 0x58C), (0x590, 0x590),
    (0x5C8, 0x5CF), (0x5EB, 0x5EE), (0x5F5, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70E, 0x70F),
    (0x74B, 0x74C), (0x7B2, 0x7BF), (0x7FB, 0x7FC), (0x82E, 0x82F), (0x83F, 0x83F), (0x85C, 0x85D),
    (0x85F, 0x85F), (0x86B, 0x86F), (0x88F, 0x897), (0x8E2, 0x8E2), (0x984, 0x984), (0x98D, 0x98E),
    (0x991, 0x992), (0x9A9, 0x9A9), (0x9B1, 0x9B1), (0x9B3, 0x9B5), (0x9BA, 0x9BB), (0x9C5, 0x9C6),
    (0x9C9, 0x9CA), (0x9CF, 0x9D6), (0x9D8, 0x9DB), (0x9DE, 0x9DE), (0x9E4, 0x9E5), (0x9FF, 0xA00),
    (0xA04, 0xA04), (0xA0B, 0xA0E), (0xA11, 0xA12), (0xA29, 0xA29), (0xA31, 0xA31), (0xA34, 0xA34),
    (0xA37, 0xA37), (0xA3A, 0xA3B), (0xA3D, 0xA3D), (0xA43, 0xA46), (0xA49, 0xA4A), (0xA4E, 0xA50),
    (0xA52, 0xA58), (0xA5D, 0xA5D), (0xA5F, 0xA65), (0xA77, 0xA80), (0xA84, 0xA84), (0xA8E, 0xA8E),
    (0xA92, 0xA92), (0xAA9, 0xAA9), (0xAB1, 0xAB1), (0xAB4, 0xAB4), (0xABA, 0xABB), (0xAC6, 0xAC6),
    (0xACA, 0xACA), (0xACE, 0xACF), (0xAD1, 0xADF), (0xAE4, 0xAE5), (0xAF2, 0xAF8), (0xB00, 0xB00),
    (0xB04, 0xB04), (0xB0D, 0xB0E), (0xB11, 0xB12), (0xB29, 0xB29), (0xB31, 0xB31), (0xB34, 0xB34),
    (0xB3A, 0xB3B), (0xB45, 0xB46), (0xB49, 0xB4A), (0xB4E, 0xB54), (0xB58, 0xB5B), (0xB5E, 0xB5E),
    (0xB64, 0xB65), (0xB78, 0xB81), (0xB84, 0xB84), (0xB8B, 0xB8D), (0xB91, 0xB91), (0xB96, 0xB98),
    (0xB9B, 0xB9B), (0xB9D, 0xB9D), (0xBA0, 0xBA2), (0xBA5, 0xBA7), (0xBAB, 0xBAD), (0xBBA, 0xBBD),
    (0xBC3, 0xBC5), (0xBC9, 0xBC9), (0xBCE, 0xBCF), (0xBD1, 0xBD6), (0xBD8, 0xBE5), (0xBFB, 0xBFF),
    (0xC0D, 0xC0D), (0xC11, 0xC11), (0xC29, 0xC29), (0xC3A, 0xC3B), (0xC45, 0xC45), (0xC49, 0xC49),
    (0xC4E, 0xC54), (0xC57, 0xC57), (0xC5B, 0xC5C), (0xC5E, 0xC5F), (0xC64, 0xC65), (0xC70, 0xC76),
    (0xC8D, 0xC8D), (0xC91, 0xC91), (0xCA9, 0xCA9), (0xCB4, 0xCB4), (0xCBA, 0xCBB), (0xCC5, 0xCC5),
    (0xCC9, 0xCC9), (0xCCE, 0xCD4), (0xCD7, 0xCDC), (0xCDF, 0xCDF), (0xCE4, 0xCE5), (0xCF0, 0xCF0),
    (0xCF3, 0xCFF), (0xD0D, 0xD0D), (0xD11, 0xD11), (0xD45, 0xD45), (0xD49, 0xD49), (0xD50, 0xD53),
    (0xD64, 0xD65), (0xD80, 0xD80), (0xD84, 0xD84), (0xD97, 0xD99), (0xDB2, 0xDB2), (0xDBC, 0xDBC),
    (0xDBE, 0xDBF), (0xDC7, 0xDC9), (0xDCB, 0xDCE), (0xDD5, 0xDD5), (0xDD7, 0xDD7), (0xDE0, 0xDE5),
    (0xDF0, 0xDF1), (0xDF5, 0xE00), (0xE3B, 0xE3E), (0xE5C, 0xE80), (0xE83, 0xE83), (0xE85, 0xE85),
    (0xE8B, 0xE8B), (0xEA4, 0xEA4), (0xEA6, 0xEA6), (0xEBE, 0xEBF), (0xEC5, 0xEC5), (0xEC7, 0xEC7),
    (0xECE, 0xECF), (0xEDA, 0xEDB), (0xEE0, 0xEFF), (0xF48, 0xF48), (0xF6D, 0xF70), (0xF98, 0xF98),
    (0xFBD, 0xFBD), (0xFCD, 0xFCD), (0xFDB, 0xFFF), (0x10C6, 0x10C6), (0x10C8, 0x10CC),
    (0x10CE, 0x10CF), (0x1249, 0x1249), (0x124E, 0x124F), (0x1257, 0x1257), (0x1259, 0x1259),
    (0x125E, 0x125F), (0x1289, 0x1289), (0x128E, 0x128F), (0x12B1, 0x12B1), (0x12B6, 0x12B7),
    (0x12BF, 0x12BF), (0x12C1, 0x12C1), (0x12C6, 0x12C7), (0x12D7, 0x12D7), (0x1311, 0x1311),
    (0x1316, 0x1317), (0x135B, 0x135C), (0x137D, 0x137F), (0x139A, 0x139F), (0x13F6, 0x13F7),
    (0x13FE, 0x13FF), (0x169D, 0x169F), (0x16F9, 0x16FF), (0x1716, 0x171E), (0x1737, 0x173F),
    (0x1754, 0x175F), (0x176D, 0x176D), (0x1771, 0x1771), (0x1774, 0x177F), (0x17DE, 0x17DF),
    (0x17EA, 0x17EF), (0x17FA, 0x17FF), (0x180E, 0x180E), (0x181A, 0x181F), (0x1879, 0x187F),
    (0x18AB, 0x18AF), (0x18F6, 0x18FF), (0x191F, 0x191F), (0x192C, 0x192F), (0x193C, 0x193F),
    (0x1941, 0x1943), (0x196E, 0x196F), (0x1975, 0x197F), (0x19AC, 0x19AF), (0x19CA, 0x19CF),
    (0x19DB, 0x19DD), (0x1A1C, 0x1A1D), (0x1A5F, 0x1A5F), (0x1A7D, 0x1A7E), (0x1A8A, 0x1A8F),
    (0x1A9A, 0x1A9F), (0x1AAE, 0x1AAF), (0x1ACF, 0x1AFF), (0x1B4D, 0x1B4F), (0x1B7F, 0x1B7F),
    (0x1BF4, 0x1BFB), (0x1C38, 0x1C3A), (0x1C4A, 0x1C4C), (0x1C89, 0x1C8F), (0x1CBB, 0x1CBC),
    (0x1CC8, 0x1CCF), (0x1CFB, 0x1CFF), (0x1F16, 0x1F17), (0x1F1E, 0x1F1F), (0x1F46, 0x1F47),
    (0x1F4E, 0x1F4F), (0x1F58, 0x1F58), (0x1F5A, 0x1F5A), (0x1F5C, 0x1F5C), (0x1F5E, 0x1F5E),
    (0x1F7E, 0x1F7F), (0x1FB5, 0x1FB5), (0x1FC5, 0x1FC5), (0x1FD4, 0x1FD5), (0x1FDC, 0x1FDC),
    (0x1FF0, 0x1FF1), (0x1FF5, 0x1FF5), (0x1FFF, 0x1FFF), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x2072, 0x2073), (0x208F, 0x208F), (0x209D, 0x209F), (0x20C1, 0x20CF),
    (0x20F1, 0x20FF), (0x218C, 0x218F), (0x2427, 0x243F), (0x244B, 0x245F), (0x2B74, 0x2B75),
    (0x2B96, 0x2B96), (0x2CF4, 0x2CF8), (0x2D26, 0x2D26), (0x2D28, 0x2D2C), (0x2D2E, 0x2D2F),
    (0x2D68, 0x2D6E), (0x2D71, 0x2D7E), (0x2D97, 0x2D9F), (0x2DA7, 0x2DA7), (0x2DAF, 0x2DAF),
    (0x2DB7, 0x2DB7), (0x2DBF, 0x2DBF), (0x2DC7, 0x2DC7), (0x2DCF, 0x2DCF), (0x2DD7, 0x2DD7),
    (0x2DDF, 0x2DDF), (0x2E5E, 0x2E7F), (0x2E9A, 0x2E9A), (0x2EF4, 0x2EFF), (0x2FD6, 0x2FEF),
    (0x2FFC, 0x2FFF), (0x3040, 0x3040), (0x3097, 0x3098), (0x3100, 0x3104), (0x3130, 0x3130),
    (0x318F, 0x318F), (0x31E4, 0x31EF), (0x321F, 0x321F), (0xA48D, 0xA48F), (0xA4C7, 0xA4CF),
    (0xA62C, 0xA63F), (0xA6F8, 0xA6FF), (0xA7CB, 0xA7CF), (0xA7D2, 0xA7D2), (0xA7D4, 0xA7D4),
    (0xA7DA, 0xA7F1), (0xA82D, 0xA82F), (0xA83A, 0xA83F), (0xA878, 0xA87F), (0xA8C6, 0xA8CD),
    (0xA8DA, 0xA8DF), (0xA954, 0xA95E), (0xA97D, 0xA97F), (0xA9CE, 0xA9CE), (0xA9DA, 0xA9DD),
    (0xA9FF, 0xA9FF), (0xAA37, 0xAA3F), (0xAA4E, 0xAA4F), (0xAA5A, 0xAA5B), (0xAAC3, 0xAADA),
    (0xAAF7, 0xAB00), (0xAB07, 0xAB08), (0xAB0F, 0xAB10), (0xAB17, 0xAB1F), (0xAB27, 0xAB27),
    (0xAB2F, 0xAB2F), (0xAB6C, 0xAB6F), (0xABEE, 0xABEF), (0xABFA, 0xABFF), (0xD7A4, 0xD7AF),
    (0xD7C7, 0xD7CA), (0xD7FC, 0xF8FF), (0xFA6E, 0xFA6F), (0xFADA, 0xFAFF), (0xFB07, 0xFB12),
    (0xFB18, 0xFB1C), (0xFB37, 0xFB37), (0xFB3D, 0xFB3D), (0xFB3F, 0xFB3F), (0xFB42, 0xFB42),
    (0xFB45, 0xFB45), (0xFBC3, 0xFBD2), (0xFD90, 0xFD91), (0xFDC8, 0xFDCE), (0xFDD0, 0xFDEF),
    (0xFE1A, 0xFE1F), (0xFE53, 0xFE53), (0xFE67, 0xFE67), (0xFE6C, 0xFE6F), (0xFE75, 0xFE75),
    (0xFEFD, 0xFF00), (0xFFBF, 0xFFC1), (0xFFC8, 0xFFC9), (0xFFD0, 0xFFD1), (0xFFD8, 0xFFD9),
    (0xFFDD, 0xFFDF), (0xFFE7, 0xFFE7), (0xFFEF, 0xFFFB), (0xFFFE, 0xFFFF), (0x1000C, 0x1000C),
    (0x10027, 0x10027), (0x1003B, 0x1003B), (0x1003E, 0x1003E), (0x1004E, 0x1004F),
    (0x1005E, 0x1007F), (0x100FB, 0x100FF), (0x10103, 0x10106), (0x10134, 0x10136),
    (0x1018F, 0x1018F), (0x1019D, 0x1019F), (0x101A1, 0x101CF), (0x101FE, 0x1027F),
    (0x1029D, 0x1029F), (0x102D1, 0x102DF), (0x102FC, 0x102FF), (0x10324, 0x1032C),
    (0x1034B, 0x1034F), (0x1037B, 0x1037F), (0x1039E, 0x1039E), (0x103C4, 0x103C7),
    (0x103D6, 0x103FF), (0x1049E, 0x1049F), (0x104AA, 0x104AF), (0x104D4, 0x104D7),
    (0x104FC, 0x104FF), (0x10528, 0x1052F), (0x10564, 0x1056E), (0x1057B, 0x1057B),
    (0x1058B, 0x1058B), (0x10593, 0x10593), (0x10596, 0x10596), (0x105A2, 0x105A2),
    (0x105B2, 0x105B2), (0x105BA, 0x105BA), (0x105BD, 0x105FF), (0x10737, 0x1073F),
    (0x10756, 0x1075F), (0x10768, 0x1077F), (0x10786, 0x10786), (0x107B1, 0x107B1),
    (0x107BB, 0x107FF), (0x10806, 0x10807), (0x10809, 0x10809), (0x10836, 0x10836),
    (0x10839, 0x1083B), (0x1083D, 0x1083E), (0x10856, 0x10856), (0x1089F, 0x108A6),
    (0x108B0, 0x108DF), (0x108F3, 0x108F3), (0x108F6, 0x108FA), (0x1091C, 0x1091E),
    (0x1093A, 0x1093E), (0x10940, 0x1097F), (0x109B8, 0x109BB), (0x109D0, 0x109D1),
    (0x10A04, 0x10A04), (0x10A07, 0x10A0B), (0x10A14, 0x10A14), (0x10A18, 0x10A18),
    (0x10A36, 0x10A37), (0x10A3B, 0x10A3E), (0x10A49, 0x10A4F), (0x10A59, 0x10A5F),
    (0x10AA0, 0x10ABF), (0x10AE7, 0x10AEA), (0x10AF7, 0x10AFF), (0x10B36, 0x10B38),
    (0x10B56, 0x10B57), (0x10B73, 0x10B77), (0x10B92, 0x10B98), (0x10B9D, 0x10BA8),
    (0x10BB0, 0x10BFF), (0x10C49, 0x10C7F), (0x10CB3, 0x10CBF), (0x10CF3, 0x10CF9),
    (0x10D28, 0x10D2F), (0x10D3A, 0x10E5F), (0x10E7F, 0x10E7F), (0x10EAA, 0x10EAA),
    (0x10EAE, 0x10EAF), (0x10EB2, 0x10EFF), (0x10F28, 0x10F2F), (0x10F5A, 0x10F6F),
    (0x10F8A, 0x10FAF), (0x10FCC, 0x10FDF), (0x10FF7, 0x10FFF), (0x1104E, 0x11051),
    (0x11076, 0x1107E), (0x110BD, 0x110BD), (0x110C3, 0x110CF), (0x110E9, 0x110EF),
    (0x110FA, 0x110FF), (0x11135, 0x11135), (0x11148, 0x1114F), (0x11177, 0x1117F),
    (0x111E0, 0x111E0), (0x111F5, 0x111FF), (0x11212, 0x11212), (0x1123F, 0x1127F),
    (0x11287, 0x11287), (0x11289, 0x11289), (0x1128E, 0x1128E), (0x1129E, 0x1129E),
    (0x112AA, 0x112AF), (0x112EB, 0x112EF), (0x112FA, 0x112FF), (0x11304, 0x11304),
    (0x1130D, 0x1130E), (0x11311, 0x11312), (0x11329, 0x11329), (0x11331, 0x11331),
    (0x11334, 0x11334), (0x1133A, 0x1133A), (0x11345, 0x11346), (0x11349, 0x1134A),
    (0x1134E, 0x1134F), (0x11351, 0x11356), (0x11358, 0x1135C), (0x11364, 0x11365),
    (0x1136D, 0x1136F), (0x11375, 0x113FF), (0x1145C, 0x1145C), (0x11462, 0x1147F),
    (0x114C8, 0x114CF), (0x114DA, 0x1157F), (0x115B6, 0x115B7), (0x115DE, 0x115FF),
    (0x11645, 0x1164F), (0x1165A, 0x1165F), (0x1166D, 0x1167F), (0x116BA, 0x116BF),
    (0x116CA, 0x116FF), (0x1171B, 0x1171C), (0x1172C, 0x1172F), (0x11747, 0x117FF),
    (0x1183C, 0x1189F), (0x118F3, 0x118FE), (0x11907, 0x11908), (0x1190A, 0x1190B),
    (0x11914, 0x11914), (0x11917, 0x11917), (0x11936, 0x11936), (0x11939, 0x1193A),
    (0x11947, 0x1194F), (0x1195A, 0x1199F), (0x119A8, 0x119A9), (0x119D8, 0x119D9),
    (0x119E5, 0x119FF), (0x11A48, 0x11A4F), (0x11AA3, 0x11AAF), (0x11AF9, 0x11BFF),
    (0x11C09, 0x11C09), (0x11C37, 0x11C37), (0x11C46, 0x11C4F), (0x11C6D, 0x11C6F),
    (0x11C90, 0x11C91), (0x11CA8, 0x11CA8), (0x11CB7, 0x11CFF), (0x11D07, 0x11D07),
    (0x11D0A, 0x11D0A), (0x11D37, 0x11D39), (0x11D3B, 0x11D3B), (0x11D3E, 0x11D3E),
    (0x11D48, 0x11D4F), (0x11D5A, 0x11D5F), (0x11D66, 0x11D66), (0x11D69, 0x11D69),
    (0x11D8F, 0x11D8F), (0x11D92, 0x11D92), (0x11D99, 0x11D9F), (0x11DAA, 0x11EDF),
    (0x11EF9, 0x11FAF), (0x11FB1, 0x11FBF), (0x11FF2, 0x11FFE), (0x1239A, 0x123FF),
    (0x1246F, 0x1246F), (0x12475, 0x1247F), (0x12544, 0x12F8F), (0x12FF3, 0x12FFF),
    (0x1342F, 0x143FF), (0x14647, 0x167FF), (0x16A39, 0x16A3F), (0x16A5F, 0x16A5F),
    (0x16A6A, 0x16A6D), (0x16ABF, 0x16ABF), (0x16ACA, 0x16ACF), (0x16AEE, 0x16AEF),
    (0x16AF6, 0x16AFF), (0x16B46, 0x16B4F), (0x16B5A, 0x16B5A), (0x16B62, 0x16B62),
    (0x16B78, 0x16B7C), (0x16B90, 0x16E3F), (0x16E9B, 0x16EFF), (0x16F4B, 0x16F4E),
    (0x16F88, 0x16F8E), (0x16FA0, 0x16FDF), (0x16FE5, 0x16FEF), (0x16FF2, 0x16FFF),
    (0x187F8, 0x187FF), (0x18CD6, 0x18CFF), (0x18D09, 0x1AFEF), (0x1AFF4, 0x1AFF4),
    (0x1AFFC, 0x1AFFC), (0x1AFFF, 0x1AFFF), (0x1B123, 0x1B14F), (0x1B153, 0x1B163),
    (0x1B168, 0x1B16F), (0x1B2FC, 0x1BBFF), (0x1BC6B, 0x1BC6F), (0x1BC7D, 0x1BC7F),
    (0x1BC89, 0x1BC8F), (0x1BC9A, 0x1BC9B), (0x1BCA0, 0x1CEFF), (0x1CF2E, 0x1CF2F),
    (0x1CF47, 0x1CF4F), (0x1CFC4, 0x1CFFF), (0x1D0F6, 0x1D0FF), (0x1D127, 0x1D128),
    (0x1D173, 0x1D17A), (0x1D1EB, 0x1D1FF), (0x1D246, 0x1D2DF), (0x1D2F4, 0x1D2FF),
    (0x1D357, 0x1D35F), (0x1D379, 0x1D3FF), (0x1D455, 0x1D455), (0x1D49D, 0x1D49D),
    (0x1D4A0, 0x1D4A1), (0x1D4A3, 0x1D4A4), (0x1D4A7, 0x1D4A8), (0x1D4AD, 0x1D4AD),
    (0x1D4BA, 0x1D4BA), (0x1D4BC, 0x1D4BC), (0x1D4C4, 0x1D4C4), (0x1D506, 0x1D506),
    (0x1D50B, 0x1D50C), (0x1D515, 0x1D515), (0x1D51D, 0x1D51D), (0x1D53A, 0x1D53A),
    (0x1D53F, 0x1D53F), (0x1D545, 0x1D545), (0x1D547, 0x1D549), (0x1D551, 0x1D551),
    (0x1D6A6, 0x1D6A7), (0x1D7CC, 0x1D7CD), (0x1DA8C, 0x1DA9A), (0x1DAA0, 0x1DAA0),
    (0x1DAB0, 0x1DEFF), (0x1DF1F, 0x1DFFF), (0x1E007, 0x1E007), (0x1E019, 0x1E01A),
    (0x1E022, 0x1E022), (0x1E025, 0x1E025), (0x1E02B, 0x1E0FF), (0x1E12D, 0x1E12F),
    (0x1E13E, 0x1E13F), (0x1E14A, 0x1E14D), (0x1E150, 0x1E28F), (0x1E2AF, 0x1E2BF),
    (0x1E2FA, 0x1E2FE), (0x1E300, 0x1E7DF), (0x1E7E7, 0x1E7E7), (0x1E7EC, 0x1E7EC),
    (0x1E7EF, 0x1E7EF), (0x1E7FF, 0x1E7FF), (0x1E8C5, 0x1E8C6), (0x1E8D7, 0x1E8FF),
    (0x1E94C, 0x1E94F), (0x1E95A, 0x1E95D), (0x1E960, 0x1EC70), (0x1ECB5, 0x1ED00),
    (0x1ED3E, 0x1EDFF), (0x1EE04, 0x1EE04), (0x1EE20, 0x1EE20), (0x1EE23, 0x1EE23),
    (0x1EE25, 0x1EE26), (0x1EE28, 0x1EE28), (0x1EE33, 0x1EE33), (0x1EE38, 0x1EE38),
    (0x1EE3A, 0x1EE3A), (0x1EE3C, 0x1EE41), (0x1EE43, 0x1EE46), (0x1EE48, 0x1EE48),
    (0x1EE4A, 0x1EE4A), (0x1EE4C, 0x1EE4C), (0x1EE50, 0x1EE50), (0x1EE53, 0x1EE53),
    (0x1EE55, 0x1EE56), (0x1EE58, 0x1EE58), (0x1EE5A, 0x1EE5A), (0x1EE5C, 0x1EE5C),
    (0x1EE5E, 0x1EE5E), (0x1EE60, 0x1EE60), (0x1EE63, 0x1EE63), (0x1EE65, 0x1EE66),
    (0x1EE6B, 0x1EE6B), (0x1EE73, 0x1EE73), (0x1EE78, 0x1EE78), (0x1EE7D, 0x1EE7D),
    (0x1EE7F, 0x1EE7F), (0x1EE8A, 0x1EE8A), (0x1EE9C, 0x1EEA0), (0x1EEA4, 0x1EEA4),
    (0x1EEAA, 0x1EEAA), (0x1EEBC, 0x1EEEF), (0x1EEF2, 0x1EFFF), (0x1F02C, 0x1F02F),
    (0x1F094, 0x1F09F), (0x1F0AF, 0x1F0B0), (0x1F0C0, 0x1F0C0), (0x1F0D0, 0x1F0D0),
    (0x1F0F6, 0x1F0FF), (0x1F1AE, 0x1F1E5), (0x1F203, 0x1F20F), (0x1F23C, 0x1F23F),
    (0x1F249, 0x1F24F), (0x1F252, 0x1F25F), (0x1F266, 0x1F2FF), (0x1F6D8, 0x1F6DC),
    (0x1F6ED, 0x1F6EF), (0x1F6FD, 0x1F6FF), (0x1F774, 0x1F77F), (0x1F7D9, 0x1F7DF),
    (0x1F7EC, 0x1F7EF), (0x1F7F1, 0x1F7FF), (0x1F80C, 0x1F80F), (0x1F848, 0x1F84F),
    (0x1F85A, 0x1F85F), (0x1F888, 0x1F88F), (0x1F8AE, 0x1F8AF), (0x1F8B2, 0x1F8FF),
    (0x1FA54, 0x1FA5F), (0x1FA6E, 0x1FA6F), (0x1FA75, 0x1FA77), (0x1FA7D, 0x1FA7F),
    (0x1FA87, 0x1FA8F), (0x1FAAD, 0x1FAAF), (0x1FABB, 0x1FABF), (0x1FAC6, 0x1FACF),
    (0x1FADA, 0x1FADF), (0x1FAE8, 0x1FAEF), (0x1FAF7, 0x1FAFF), (0x1FB93, 0x1FB93),
    (0x1FBCB, 0x1FBEF), (0x1FBFA, 0x1FFFF), (0x2A6E0, 0x2A6FF), (0x2B739, 0x2B73F),
    (0x2B81E, 0x2B81F), (0x2CEA2, 0x2CEAF), (0x2EBE1, 0x2F7FF), (0x2FA1E, 0x2FFFF),
    (0x3134B, 0xE00FF), (0xE01F0, 0x10FFFF),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (Vec<u8>, Vec<u8>) {
        // A byte-level vocabulary is not needed for ASCII letters in this test.
        let mut vocab = serde_json::Map::new();
        let toks = [
            "a",
            "b",
            "c",
            "a</w>",
            "b</w>",
            "c</w>",
            "!",
            "!</w>",
            "ab",
            "ab</w>",
            "<|startoftext|>",
            "<|endoftext|>",
        ];
        for (i, t) in toks.iter().enumerate() {
            vocab.insert(t.to_string(), Value::from(i as u64));
        }
        let vocab = serde_json::to_vec(&Value::Object(vocab)).unwrap();
        let merges = b"#version: 0.2\na b\na b</w>\n".to_vec();
        (vocab, merges)
    }

    #[test]
    fn tiny_vocab_encodes() {
        let (v, m) = tiny();
        let t = ClipTokenizer::from_files(TokenizerFiles {
            vocab_json: Some(&v),
            merges_txt: Some(&m),
            tokenizer_config_json: Some(br#"{"model_max_length": 6}"#),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.max_length(), 6);
        assert_eq!((t.bos_id(), t.eos_id(), t.pad_id()), (10, 11, 11));
        let e = t.encode("AB  c");
        assert_eq!(e.ids, vec![10, 9, 5, 11, 11, 11]);
        assert!(!e.truncated);
        assert_eq!(e.token_count, 4);
        let e = t.encode("a a a a a");
        assert_eq!(e.ids, vec![10, 3, 3, 3, 3, 11]);
        assert!(e.truncated);
        assert_eq!(e.token_count, 7);
        // exactly full: not truncated
        let e = t.encode("a a a a");
        assert!(!e.truncated);
    }

    #[test]
    fn pad_bang_is_a_special_token() {
        let (v, m) = tiny();
        let t = ClipTokenizer::from_files(TokenizerFiles {
            vocab_json: Some(&v),
            merges_txt: Some(&m),
            tokenizer_config_json: Some(br#"{"model_max_length": 8, "pad_token": "!"}"#),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.pad_id(), 6);
        // "a!" -> a</w>, then "!" split out as the added token (id 6, not "!</w>" = 7)
        assert_eq!(t.encode("a!").ids, vec![10, 3, 6, 11, 6, 6, 6, 6]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let junk: &[u8] = b"\xff\x00not json{{";
        let cases = [
            TokenizerFiles::default(),
            TokenizerFiles {
                tokenizer_json: Some(junk),
                ..Default::default()
            },
            TokenizerFiles {
                tokenizer_json: Some(
                    b"{\"model\": {\"type\": \"BPE\", \"vocab\": [], \"merges\": 3}}",
                ),
                ..Default::default()
            },
            TokenizerFiles {
                vocab_json: Some(junk),
                merges_txt: Some(junk),
                ..Default::default()
            },
            TokenizerFiles {
                vocab_json: Some(b"{\"a\": 0}"),
                merges_txt: Some(b"a b c\n"),
                ..Default::default()
            },
            TokenizerFiles {
                vocab_json: Some(b"{\"a\": -1}"),
                merges_txt: Some(b""),
                ..Default::default()
            },
            TokenizerFiles {
                vocab_json: Some(b"{\"a\": 0}"),
                merges_txt: Some(b""),
                ..Default::default()
            },
        ];
        for (i, c) in cases.into_iter().enumerate() {
            let r = ClipTokenizer::from_files(c);
            assert!(r.is_err(), "case {i} should fail");
        }
        let (v, m) = tiny();
        let r = ClipTokenizer::from_files(TokenizerFiles {
            vocab_json: Some(&v),
            merges_txt: Some(&m),
            tokenizer_config_json: Some(junk),
            ..Default::default()
        });
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("tokenizer_config.json"), "{msg}");
        let r = ClipTokenizer::from_files(TokenizerFiles {
            vocab_json: Some(&v),
            merges_txt: Some(&m),
            special_tokens_map_json: Some(br#"{"pad_token": 5}"#),
            ..Default::default()
        });
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("special_tokens_map.json") && msg.contains("pad_token"),
            "{msg}"
        );
    }
}
