//! The CLIP tokenizer against transformers' ids for the prompts of
//! `tests/fixtures/reference/tokens.json` (see tests/fixtures/FORMAT.md).

use std::path::{Path, PathBuf};

use sdweb::tokenizer::{ClipTokenizer, Flavor, TokenizerFiles};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures")).to_path_buf()
}

#[derive(Deserialize)]
struct Tokens {
    prompts: Vec<String>,
    sd1: Vec<Vec<u32>>,
    sd2: Vec<Vec<u32>>,
    sd1_truncated: Vec<bool>,
    sd2_truncated: Vec<bool>,
    sd1_fast: Vec<Vec<u32>>,
    sd1_fast_truncated: Vec<bool>,
    sd2_slow: Vec<Vec<u32>>,
    sd2_slow_truncated: Vec<bool>,
}

fn reference() -> Tokens {
    let path = fixtures().join("reference/tokens.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("tokens.json")
}

/// Every prompt's ids and truncation flag, with the first difference spelled out.
fn check(tok: &ClipTokenizer, label: &str, prompts: &[String], ids: &[Vec<u32>], trunc: &[bool]) {
    assert_eq!(prompts.len(), ids.len(), "{label}: ids count");
    assert_eq!(prompts.len(), trunc.len(), "{label}: truncated count");
    let mut failures = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        let enc = tok.encode(prompt);
        assert_eq!(enc.ids.len(), tok.max_length(), "{label}: length");
        if enc.ids != ids[i] {
            let pos = enc
                .ids
                .iter()
                .zip(&ids[i])
                .position(|(a, b)| a != b)
                .unwrap_or(enc.ids.len().min(ids[i].len()));
            let lo = pos.saturating_sub(2);
            let hi = (pos + 4).min(enc.ids.len()).min(ids[i].len());
            failures.push(format!(
                "{label} prompt #{i} {prompt:?}: first difference at position {pos}: ours {:?}, transformers {:?}",
                &enc.ids[lo..hi],
                &ids[i][lo..hi]
            ));
        } else if enc.truncated != trunc[i] {
            failures.push(format!(
                "{label} prompt #{i} {prompt:?}: truncated {} (token_count {}), transformers says {}",
                enc.truncated, enc.token_count, trunc[i]
            ));
        }
    }
    let matched = prompts.len() - failures.len();
    eprintln!("{label}: {matched}/{} prompts match", prompts.len());
    assert!(
        failures.is_empty(),
        "{} of {} prompts differ:\n{}",
        failures.len(),
        prompts.len(),
        failures.join("\n")
    );
}

#[test]
fn sd1_layout_matches_slow_transformers() {
    let r = reference();
    assert!(r.prompts.len() >= 200);
    let tok = ClipTokenizer::from_dir(&fixtures().join("sd1_tiny/tokenizer")).unwrap();
    assert_eq!(tok.flavor(), Flavor::Slow);
    assert_eq!(tok.max_length(), 77);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (49406, 49407, 49407)
    );
    check(
        &tok,
        "sd1 (vocab.json+merges.txt, slow)",
        &r.prompts,
        &r.sd1,
        &r.sd1_truncated,
    );
}

#[test]
fn sd2_layout_matches_fast_transformers() {
    let r = reference();
    let tok = ClipTokenizer::from_dir(&fixtures().join("sd2_tiny/tokenizer")).unwrap();
    assert_eq!(tok.flavor(), Flavor::Fast);
    assert_eq!(tok.max_length(), 77);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (49406, 49407, 0)
    );
    check(
        &tok,
        "sd2 (tokenizer.json, fast)",
        &r.prompts,
        &r.sd2,
        &r.sd2_truncated,
    );
}

#[test]
fn forced_flavors_match_the_other_references() {
    let r = reference();
    let sd1 = fixtures().join("sd1_tiny/tokenizer");
    let sd2 = fixtures().join("sd2_tiny/tokenizer");
    let fast1 = ClipTokenizer::from_dir_with_flavor(&sd1, Flavor::Fast).unwrap();
    check(
        &fast1,
        "sd1 forced fast",
        &r.prompts,
        &r.sd1_fast,
        &r.sd1_fast_truncated,
    );
    let slow2 = ClipTokenizer::from_dir_with_flavor(&sd2, Flavor::Slow).unwrap();
    check(
        &slow2,
        "sd2 forced slow",
        &r.prompts,
        &r.sd2_slow,
        &r.sd2_slow_truncated,
    );
}

#[test]
fn from_files_equals_from_dir() {
    let r = reference();
    let dir = fixtures().join("sd1_tiny/tokenizer");
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    let (v, m, c, s) = (
        read("vocab.json"),
        read("merges.txt"),
        read("tokenizer_config.json"),
        read("special_tokens_map.json"),
    );
    let tok = ClipTokenizer::from_files(TokenizerFiles {
        vocab_json: Some(&v),
        merges_txt: Some(&m),
        tokenizer_config_json: Some(&c),
        special_tokens_map_json: Some(&s),
        tokenizer_json: None,
    })
    .unwrap();
    check(&tok, "sd1 from_files", &r.prompts, &r.sd1, &r.sd1_truncated);

    let dir = fixtures().join("sd2_tiny/tokenizer");
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    let (j, c) = (read("tokenizer.json"), read("tokenizer_config.json"));
    let tok = ClipTokenizer::from_files(TokenizerFiles {
        tokenizer_json: Some(&j),
        tokenizer_config_json: Some(&c),
        ..Default::default()
    })
    .unwrap();
    check(&tok, "sd2 from_files", &r.prompts, &r.sd2, &r.sd2_truncated);
}

#[test]
fn truncation_keeps_eos_last_and_counts_tokens() {
    let tok = ClipTokenizer::from_dir(&fixtures().join("sd1_tiny/tokenizer")).unwrap();
    let long = "cat ".repeat(100);
    let enc = tok.encode(&long);
    assert!(enc.truncated);
    assert_eq!(enc.token_count, 102);
    assert_eq!(enc.ids.len(), 77);
    assert_eq!(enc.ids[0], tok.bos_id());
    assert_eq!(enc.ids[76], tok.eos_id());
    // exactly 75 tokens fit without truncation
    let fits = tok.encode(&"cat ".repeat(75));
    assert!(!fits.truncated);
    assert_eq!(fits.token_count, 77);
    assert_eq!(fits.ids[76], tok.eos_id());
}

#[test]
fn missing_and_garbage_files_are_errors() {
    let err = ClipTokenizer::from_dir(Path::new("/nonexistent/tokenizer")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tokenizer"), "{err}");
    let empty = std::env::temp_dir().join(format!("sdweb-tok-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let err = ClipTokenizer::from_dir(&empty).unwrap_err();
    assert!(err.to_string().contains("vocab.json"), "{err}");
    std::fs::remove_dir_all(&empty).ok();

    let garbage: &[u8] = &[0xff, 0xfe, 0x00, b'{', b'['];
    for files in [
        TokenizerFiles {
            tokenizer_json: Some(garbage),
            ..Default::default()
        },
        TokenizerFiles {
            vocab_json: Some(garbage),
            merges_txt: Some(garbage),
            ..Default::default()
        },
    ] {
        for flavor in [Flavor::Slow, Flavor::Fast] {
            assert!(ClipTokenizer::from_files_with_flavor(files, flavor).is_err());
        }
        assert!(ClipTokenizer::from_files(files).is_err());
    }
}
