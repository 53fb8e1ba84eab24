//! Which LoRA files a generation loads, from `--lora FILE[:WEIGHT]` and the prompt's
//! `<lora:NAME:WEIGHT>` tags (resolved against the `--lora` files and a `--lora-dir`).

use std::path::{Path, PathBuf};

use super::prompt_tags::LoraTag;

/// A LoRA file to load at a weight.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraRequest {
    pub path: PathBuf,
    pub weight: f32,
}

impl LoraRequest {
    /// The name prompt tags call it by (the file name without `.safetensors`).
    pub fn stem(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// `FILE[:WEIGHT]` (weight 1 when absent); a `:` whose tail is no number belongs to the path.
pub fn parse_lora_arg(text: &str) -> Result<LoraRequest, String> {
    let (path, weight) = match text.rsplit_once(':') {
        Some((path, tail)) if tail.parse::<f32>().is_ok() => {
            let weight: f32 = tail.parse().unwrap_or(1.0);
            if !weight.is_finite() {
                return Err(format!("{text}: the weight {tail} is not finite"));
            }
            (path, weight)
        }
        _ => (text, 1.0),
    };
    if path.is_empty() {
        return Err("--lora needs a file: --lora FILE[:WEIGHT]".into());
    }
    Ok(LoraRequest {
        path: PathBuf::from(path),
        weight,
    })
}

/// The LoRAs to load: every `explicit` file at its weight, and each prompt tag's LoRA at the
/// tag's weight (a tag naming an explicit file by its stem sets that file's weight; else the
/// tag names `dir/NAME.safetensors`). Err for an unknown name, listing the known ones.
pub fn resolve(
    explicit: &[LoraRequest],
    dir: Option<&Path>,
    tags: &[LoraTag],
) -> Result<Vec<LoraRequest>, String> {
    let mut chosen: Vec<LoraRequest> = explicit.to_vec();
    for tag in tags {
        if let Some(known) = chosen.iter_mut().find(|r| r.stem() == tag.name) {
            known.weight = tag.weight;
            continue;
        }
        let in_dir = dir.map(|d| d.join(format!("{}.safetensors", tag.name)));
        match in_dir.filter(|p| p.is_file()) {
            Some(path) => chosen.push(LoraRequest {
                path,
                weight: tag.weight,
            }),
            None => {
                return Err(format!(
                    "<lora:{}>: no such LoRA; available: {}",
                    tag.name,
                    available(explicit, dir)
                ));
            }
        }
    }
    Ok(chosen)
}

/// The names tags can use, for errors.
fn available(explicit: &[LoraRequest], dir: Option<&Path>) -> String {
    let mut names: Vec<String> = explicit.iter().map(LoraRequest::stem).collect();
    if let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) {
        names.extend(entries.filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            Some(name.strip_suffix(".safetensors")?.to_string())
        }));
    }
    names.sort();
    names.dedup();
    match (names.is_empty(), dir) {
        (false, _) => names.join(", "),
        (true, None) => "none (give --lora FILE or --lora-dir DIR)".into(),
        (true, Some(d)) => format!("none (no .safetensors in {})", d.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, weight: f32) -> LoraRequest {
        LoraRequest {
            path: path.into(),
            weight,
        }
    }

    #[test]
    fn lora_args_take_an_optional_weight() {
        assert_eq!(
            parse_lora_arg("a/style.safetensors").unwrap(),
            req("a/style.safetensors", 1.0)
        );
        assert_eq!(
            parse_lora_arg("style.safetensors:0.5").unwrap(),
            req("style.safetensors", 0.5)
        );
        assert_eq!(
            parse_lora_arg("C:\\loras\\x.safetensors").unwrap(),
            req("C:\\loras\\x.safetensors", 1.0)
        );
        assert_eq!(parse_lora_arg("x:-1").unwrap(), req("x", -1.0));
        assert!(parse_lora_arg(":0.5").is_err());
    }

    #[test]
    fn tags_pick_explicit_files_or_the_lora_dir_and_unknown_names_list_the_known() {
        let dir = std::env::temp_dir().join(format!("sdweb-lora-select-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ink.safetensors"), b"").unwrap();
        let explicit = [req("x/film.safetensors", 0.3)];
        let tag = |name: &str, weight| LoraTag {
            name: name.into(),
            weight,
        };
        let got = resolve(&explicit, Some(&dir), &[tag("film", 0.7), tag("ink", 1.2)]).unwrap();
        assert_eq!(
            got,
            vec![
                req("x/film.safetensors", 0.7),
                LoraRequest {
                    path: dir.join("ink.safetensors"),
                    weight: 1.2
                }
            ]
        );
        let err = resolve(&explicit, Some(&dir), &[tag("inc", 1.0)]).unwrap_err();
        assert!(
            err.contains("<lora:inc>") && err.contains("available: film, ink"),
            "{err}"
        );
        assert!(
            resolve(&[], None, &[tag("a", 1.0)])
                .unwrap_err()
                .contains("give --lora FILE or --lora-dir DIR")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
