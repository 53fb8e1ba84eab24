//! AUTOMATIC1111's prompt syntax: emphasis `(text)` ×1.1, `[text]` ÷1.1, `(text:1.3)`, the
//! escapes `\( \) \[ \] \\`, `BREAK`, and prompts of any length in 75-token chunks, as
//! stable-diffusion-webui's `prompt_parser.parse_prompt_attention` and `sd_hijack_clip`'s
//! `tokenize_line` do it (its `comma_padding_backtrack` at the default 20). The encoding side
//! (per-chunk emphasis with the mean restored) is in `pipeline::prompt`.
//!
//! Prompt editing (`[a:b:0.5]`, `[a|b]`) and composable `AND` are not interpreted: they read
//! as text through the attention parser.

use crate::tokenizer::{ClipTokenizer, TokenizerError};

/// The multiplier of one pair of round brackets (square brackets divide by it).
const ROUND_MULTIPLIER: f64 = 1.1;

/// A1111's `comma_padding_backtrack` default: a chunk that fills up within this many tokens
/// after a comma moves the words after the comma into the next chunk.
pub const COMMA_PADDING_BACKTRACK: usize = 20;

/// One piece of a parsed prompt.
#[derive(Clone, Debug, PartialEq)]
pub enum Segment {
    /// Text and its emphasis multiplier.
    Text { text: String, weight: f64 },
    /// `BREAK`: the next text starts a new chunk.
    Break,
}

/// What the lexer sees: A1111's `re_attention` alternatives, in its order of preference.
#[derive(Debug, PartialEq)]
enum Lexeme<'a> {
    /// `\(`, `\)`, `\[`, `\]`, `\\`: the character; a lone `\`: nothing.
    Escaped(&'a str),
    OpenRound,
    OpenSquare,
    /// `:1.3)` (spaces allowed around the number): `text` is all of it, `number` the digits.
    Weight {
        text: &'a str,
        number: &'a str,
    },
    CloseRound,
    CloseSquare,
    /// A run without `\ ( ) [ ] :`, or a `:` that does not start a weight.
    Text(&'a str),
}

fn is_special(c: char) -> bool {
    matches!(c, '\\' | '(' | ')' | '[' | ']' | ':')
}

/// The lexeme at the start of `s` (not empty) and its length in bytes.
fn next_lexeme(s: &str) -> (Lexeme<'_>, usize) {
    let mut chars = s.chars();
    let first = chars.next().expect("next_lexeme on an empty string");
    match first {
        '\\' => match chars.next() {
            Some(c @ ('(' | ')' | '[' | ']' | '\\')) => {
                (Lexeme::Escaped(&s[1..1 + c.len_utf8()]), 2)
            }
            _ => (Lexeme::Escaped(""), 1),
        },
        '(' => (Lexeme::OpenRound, 1),
        '[' => (Lexeme::OpenSquare, 1),
        ':' => match weight_len(s) {
            Some((len, number)) => (
                Lexeme::Weight {
                    text: &s[..len],
                    number,
                },
                len,
            ),
            None => (Lexeme::Text(":"), 1),
        },
        ')' => (Lexeme::CloseRound, 1),
        ']' => (Lexeme::CloseSquare, 1),
        _ => {
            let len = s.find(is_special).unwrap_or(s.len());
            (Lexeme::Text(&s[..len]), len)
        }
    }
}

/// `:\s*([+-]?[.\d]+)\s*\)` at the start of `s`: its length and the number's text.
fn weight_len(s: &str) -> Option<(usize, &str)> {
    let skip_space = |from: usize| {
        from + s[from..]
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(s.len() - from)
    };
    let start = skip_space(1);
    let mut end = start;
    if s[end..].starts_with(['+', '-']) {
        end += 1;
    }
    let digits = s[end..]
        .find(|c: char| !(c == '.' || c.is_ascii_digit()))
        .unwrap_or(s.len() - end);
    if digits == 0 {
        return None;
    }
    end += digits;
    let close = skip_space(end);
    s[close..]
        .starts_with(')')
        .then_some((close + 1, &s[start..end]))
}

/// Python's `\w` for the `\b` of A1111's `re_break`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `re.split(r"\s*\bBREAK\b\s*", text)`: the text between the `BREAK` words.
fn split_on_break(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut part_start = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("BREAK") {
        let at = search + found;
        let after = at + "BREAK".len();
        let word_before = text[..at].chars().next_back().is_some_and(is_word);
        let word_after = text[after..].chars().next().is_some_and(is_word);
        if word_before || word_after {
            search = at + 1;
            continue;
        }
        let spaces_before = text[part_start..at].len() - text[part_start..at].trim_end().len();
        let spaces_after = text[after..].len() - text[after..].trim_start().len();
        parts.push(&text[part_start..at - spaces_before]);
        part_start = after + spaces_after;
        search = part_start;
    }
    parts.push(&text[part_start..]);
    parts
}

/// A1111's `parse_prompt_attention`: the prompt as text runs with their multipliers (nested
/// brackets multiply, unclosed ones apply to the end of the prompt, unmatched closing ones are
/// text), adjacent runs of equal weight merged. A weight whose number does not parse (`:1.2.3)`,
/// where A1111 raises an error) reads as text.
pub fn parse_prompt_attention(prompt: &str) -> Vec<Segment> {
    // (text, weight) with BREAK as ("BREAK", -1), as A1111 keeps it: a BREAK inside brackets
    // has its -1 multiplied and is then the word "BREAK" with a negative weight, as there.
    let mut runs: Vec<(String, f64)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |runs: &mut Vec<(String, f64)>, from: usize, by: f64| {
        for run in &mut runs[from..] {
            run.1 *= by;
        }
    };
    let mut rest = prompt;
    while !rest.is_empty() {
        let (lexeme, len) = next_lexeme(rest);
        let text = &rest[..len];
        rest = &rest[len..];
        let weight = match &lexeme {
            Lexeme::Weight { number, .. } => number.parse::<f64>().ok(),
            _ => None,
        };
        match lexeme {
            Lexeme::Escaped(c) => runs.push((c.to_string(), 1.0)),
            Lexeme::OpenRound => round.push(runs.len()),
            Lexeme::OpenSquare => square.push(runs.len()),
            Lexeme::Weight { .. } if weight.is_some() && !round.is_empty() => {
                let from = round.pop().expect("checked non-empty");
                multiply(&mut runs, from, weight.expect("checked"));
            }
            Lexeme::CloseRound if !round.is_empty() => {
                let from = round.pop().expect("checked non-empty");
                multiply(&mut runs, from, ROUND_MULTIPLIER);
            }
            Lexeme::CloseSquare if !square.is_empty() => {
                let from = square.pop().expect("checked non-empty");
                multiply(&mut runs, from, 1.0 / ROUND_MULTIPLIER);
            }
            _ => {
                for (i, part) in split_on_break(text).into_iter().enumerate() {
                    if i > 0 {
                        runs.push(("BREAK".to_string(), -1.0));
                    }
                    runs.push((part.to_string(), 1.0));
                }
            }
        }
    }
    for from in round {
        multiply(&mut runs, from, ROUND_MULTIPLIER);
    }
    for from in square {
        multiply(&mut runs, from, 1.0 / ROUND_MULTIPLIER);
    }
    if runs.is_empty() {
        runs.push((String::new(), 1.0));
    }
    merge_equal_weights(runs)
        .into_iter()
        .map(|(text, weight)| match (text.as_str(), weight) {
            ("BREAK", -1.0) => Segment::Break,
            _ => Segment::Text { text, weight },
        })
        .collect()
}

fn merge_equal_weights(runs: Vec<(String, f64)>) -> Vec<(String, f64)> {
    let mut merged: Vec<(String, f64)> = Vec::with_capacity(runs.len());
    for (text, weight) in runs {
        match merged.last_mut() {
            Some(last) if last.1 == weight => last.0.push_str(&text),
            _ => merged.push((text, weight)),
        }
    }
    merged
}

/// One encoder input row: `bos, tokens.., eos, pad..` and each position's multiplier.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Chunk {
    /// Whether emphasis changes nothing (every multiplier 1).
    pub fn is_unweighted(&self) -> bool {
        self.weights.iter().all(|&w| w == 1.0)
    }
}

/// A prompt as the encoder takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkedPrompt {
    /// At least one.
    pub chunks: Vec<Chunk>,
    /// The prompt's tokens, without bos/eos (A1111's count: a full chunk counts 75).
    pub token_count: usize,
}

/// The special ids a chunk is framed with.
#[derive(Clone, Copy, Debug)]
pub struct ChunkIds {
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    /// `,</w>`, where a chunk may be split (None: never).
    pub comma: Option<u32>,
    /// Tokens between bos and eos (75).
    pub chunk_length: usize,
}

impl ChunkIds {
    pub fn of(tokenizer: &ClipTokenizer) -> Self {
        Self {
            bos: tokenizer.bos_id(),
            eos: tokenizer.eos_id(),
            pad: tokenizer.pad_id(),
            comma: tokenizer.token_to_id(",</w>"),
            chunk_length: tokenizer.max_length() - 2,
        }
    }
}

/// The chunk being filled, as A1111's `tokenize_line` keeps it.
struct Chunker {
    ids: ChunkIds,
    chunks: Vec<Chunk>,
    tokens: Vec<u32>,
    weights: Vec<f32>,
    token_count: usize,
    /// Where in `tokens` the last comma is.
    last_comma: Option<usize>,
}

impl Chunker {
    fn new(ids: ChunkIds) -> Self {
        Self {
            ids,
            chunks: Vec::new(),
            tokens: Vec::new(),
            weights: Vec::new(),
            token_count: 0,
            last_comma: None,
        }
    }

    /// Closes the chunk: eos-padded to the chunk length, framed with bos/eos, every position
    /// after the first eos set to the pad id (A1111's `process_tokens`).
    fn next_chunk(&mut self, is_last: bool) {
        let n = self.ids.chunk_length;
        self.token_count += if is_last { self.tokens.len() } else { n };
        let mut ids = vec![self.ids.bos];
        ids.append(&mut self.tokens);
        ids.resize(n + 1, self.ids.eos);
        ids.push(self.ids.eos);
        if let Some(first_eos) = ids.iter().position(|&id| id == self.ids.eos) {
            ids[first_eos + 1..].fill(self.ids.pad);
        }
        let mut weights = vec![1.0];
        weights.append(&mut self.weights);
        weights.resize(n + 2, 1.0);
        self.last_comma = None;
        self.chunks.push(Chunk { ids, weights });
    }

    fn push(&mut self, token: u32, weight: f32) {
        let n = self.ids.chunk_length;
        if Some(token) == self.ids.comma {
            self.last_comma = Some(self.tokens.len());
        } else if let Some(comma) = self.last_comma.filter(|&c| {
            COMMA_PADDING_BACKTRACK != 0
                && self.tokens.len() == n
                && n - c <= COMMA_PADDING_BACKTRACK
        }) {
            // The words after the comma move into the next chunk.
            let moved_tokens = self.tokens.split_off(comma + 1);
            let moved_weights = self.weights.split_off(comma + 1);
            self.next_chunk(false);
            self.tokens = moved_tokens;
            self.weights = moved_weights;
        }
        if self.tokens.len() == n {
            self.next_chunk(false);
        }
        self.tokens.push(token);
        self.weights.push(weight);
    }
}

/// A1111's `tokenize_line` on tokenised segments (each `(ids, weight)`, or None for BREAK).
pub fn chunk_tokens(segments: &[Option<(Vec<u32>, f64)>], ids: ChunkIds) -> ChunkedPrompt {
    let mut chunker = Chunker::new(ids);
    for segment in segments {
        match segment {
            None => chunker.next_chunk(false),
            Some((tokens, weight)) => {
                for &token in tokens {
                    chunker.push(token, *weight as f32);
                }
            }
        }
    }
    if !chunker.tokens.is_empty() || chunker.chunks.is_empty() {
        chunker.next_chunk(true);
    }
    ChunkedPrompt {
        chunks: chunker.chunks,
        token_count: chunker.token_count,
    }
}

/// The prompt parsed, each run tokenised on its own, and chunked, as A1111 does.
pub fn tokenize_a1111(
    tokenizer: &ClipTokenizer,
    prompt: &str,
) -> Result<ChunkedPrompt, TokenizerError> {
    let segments = parse_prompt_attention(prompt)
        .into_iter()
        .map(|segment| match segment {
            Segment::Break => Ok(None),
            Segment::Text { text, weight } => Ok(Some((tokenizer.tokenize(&text)?, weight))),
        })
        .collect::<Result<Vec<_>, TokenizerError>>()?;
    Ok(chunk_tokens(&segments, ChunkIds::of(tokenizer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str, weight: f64) -> Segment {
        Segment::Text {
            text: text.into(),
            weight,
        }
    }

    /// The doctests of A1111's `parse_prompt_attention`, with its exact float results.
    #[test]
    fn a1111_doctests() {
        let cases: Vec<(&str, Vec<Segment>)> = vec![
            ("normal text", vec![text("normal text", 1.0)]),
            (
                "an (important) word",
                vec![text("an ", 1.0), text("important", 1.1), text(" word", 1.0)],
            ),
            ("(unbalanced", vec![text("unbalanced", 1.1)]),
            (r"\(literal\]", vec![text("(literal]", 1.0)]),
            (
                "(unnecessary)(parens)",
                vec![text("unnecessaryparens", 1.1)],
            ),
            (
                "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
                vec![
                    text("a ", 1.0),
                    text("house", 1.5730000000000004),
                    text(" ", 1.1),
                    text("on", 1.0),
                    text(" a ", 1.1),
                    text("hill", 0.55),
                    text(", sun, ", 1.1),
                    text("sky", 1.4641000000000006),
                    text(".", 1.1),
                ],
            ),
        ];
        for (prompt, expected) in cases {
            assert_eq!(parse_prompt_attention(prompt), expected, "{prompt}");
        }
    }

    #[test]
    fn weights_escapes_and_unbalanced_brackets() {
        assert_eq!(
            parse_prompt_attention("[[faint]] (x: 0.5 ) [y"),
            vec![
                text("faint", (1.0 / 1.1) * (1.0 / 1.1)),
                text(" ", 1.0),
                text("x", 0.5),
                text(" ", 1.0),
                text("y", 1.0 / 1.1),
            ]
        );
        // Unmatched closers and a weight outside brackets are text; a lone backslash vanishes.
        assert_eq!(
            parse_prompt_attention(r"a) b] c:2) \d \\"),
            vec![text(r"a) b] c:2) d \", 1.0)]
        );
        // A weight that does not parse reads as text (A1111 raises an error).
        assert_eq!(
            parse_prompt_attention("(a:1.2.3)"),
            vec![text("a:1.2.3)", 1.1)]
        );
        assert_eq!(parse_prompt_attention(""), vec![text("", 1.0)]);
        assert_eq!(parse_prompt_attention("(a:-1)"), vec![text("a", -1.0)]);
    }

    #[test]
    fn break_is_an_upper_case_word_of_its_own() {
        assert_eq!(
            parse_prompt_attention("a cat BREAK  a dog,BREAK\nsky"),
            vec![
                text("a cat", 1.0),
                Segment::Break,
                text("a dog,", 1.0),
                Segment::Break,
                text("sky", 1.0),
            ]
        );
        for not_break in ["BREAKING news", "a break", "aBREAK", "BREAK_x"] {
            assert_eq!(
                parse_prompt_attention(not_break),
                vec![text(not_break, 1.0)]
            );
        }
        assert_eq!(
            parse_prompt_attention("BREAK"),
            vec![text("", 1.0), Segment::Break, text("", 1.0)]
        );
        // Inside brackets A1111 multiplies the BREAK marker too: it becomes a weighted word.
        assert_eq!(
            parse_prompt_attention("(a BREAK b)"),
            vec![text("a", 1.1), text("BREAK", -1.1), text("b", 1.1)]
        );
    }

    const IDS: ChunkIds = ChunkIds {
        bos: 1000,
        eos: 1001,
        pad: 0,
        comma: Some(7),
        chunk_length: 75,
    };

    fn tokens(range: std::ops::Range<u32>, weight: f64) -> Option<(Vec<u32>, f64)> {
        Some((range.collect(), weight))
    }

    #[test]
    fn a_short_prompt_is_one_diffusers_row() {
        let chunked = chunk_tokens(&[tokens(10..13, 1.0)], IDS);
        assert_eq!(chunked.token_count, 3);
        let [chunk] = &chunked.chunks[..] else {
            panic!("one chunk")
        };
        let mut expected = vec![1000, 10, 11, 12, 1001];
        expected.resize(77, 0);
        assert_eq!(chunk.ids, expected);
        assert!(chunk.is_unweighted());
        // The empty prompt: bos, eos, pad.
        let empty = chunk_tokens(&[Some((vec![], 1.0))], IDS);
        assert_eq!(empty.chunks.len(), 1);
        assert_eq!(&empty.chunks[0].ids[..3], [1000, 1001, 0]);
    }

    #[test]
    fn long_prompts_fill_75_token_chunks() {
        let chunked = chunk_tokens(&[tokens(10..90, 1.0), tokens(90..100, 1.5)], IDS);
        assert_eq!(chunked.token_count, 90);
        assert_eq!(chunked.chunks.len(), 2);
        let (first, second) = (&chunked.chunks[0], &chunked.chunks[1]);
        assert_eq!(first.ids[0], 1000);
        assert_eq!(first.ids[1..76], (10..85).collect::<Vec<_>>());
        assert_eq!(first.ids[76], 1001);
        assert_eq!(second.ids[1..16], (85..100).collect::<Vec<_>>());
        assert_eq!(second.ids[16], 1001);
        assert!(second.ids[17..].iter().all(|&id| id == 0));
        assert_eq!(second.weights[6..16], [1.5; 10]);
        assert_eq!(second.weights[16..], [1.0; 61]);
        // Exactly 75 tokens fit one chunk.
        assert_eq!(chunk_tokens(&[tokens(10..85, 1.0)], IDS).chunks.len(), 1);
    }

    #[test]
    fn a_comma_near_the_chunk_end_moves_the_words_after_it() {
        // A comma at index 60 of 75: the 14 tokens after it start the next chunk.
        let mut ids: Vec<u32> = (10..70).collect();
        ids.push(7);
        ids.extend(100..130);
        let chunked = chunk_tokens(&[Some((ids, 1.0))], IDS);
        let (first, second) = (&chunked.chunks[0], &chunked.chunks[1]);
        assert_eq!(first.ids[61], 7);
        assert_eq!(first.ids[62], 1001, "eos right after the comma");
        assert_eq!(second.ids[1..31], (100..130).collect::<Vec<_>>());
        assert_eq!(chunked.token_count, 75 + 30);
        // A comma further back than 20 tokens is no reason to split.
        let mut far: Vec<u32> = (10..40).collect();
        far.push(7);
        far.extend(100..160);
        let chunked = chunk_tokens(&[Some((far, 1.0))], IDS);
        assert_eq!(chunked.chunks.len(), 2);
        assert_eq!(chunked.chunks[0].ids[75..], [143, 1001]);
    }

    #[test]
    fn break_starts_a_new_chunk() {
        let chunked = chunk_tokens(&[tokens(10..12, 1.0), None, tokens(20..22, 1.0)], IDS);
        assert_eq!(chunked.chunks.len(), 2);
        assert_eq!(&chunked.chunks[0].ids[..4], [1000, 10, 11, 1001]);
        assert_eq!(&chunked.chunks[1].ids[..4], [1000, 20, 21, 1001]);
        // A full chunk counts 75 tokens, as A1111 counts it.
        assert_eq!(chunked.token_count, 75 + 2);
    }
}
