//! A1111's `<lora:NAME:WEIGHT>` prompt tags: taken out of the prompt text, they say which
//! LoRAs to load and at what weight.

/// A `<lora:…>` tag: the LoRA's name and weight (1.0 when the tag gives none).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTag {
    pub name: String,
    pub weight: f32,
}

/// Removes every `<lora:NAME>` / `<lora:NAME:WEIGHT>` tag from `prompt` (as A1111 does, the text
/// around it stays as written); returns the cleaned prompt and the tags in order. Other `<…>`
/// text is left alone. Err names a tag whose weight is no number or which has extra fields.
pub fn take_lora_tags(prompt: &str) -> Result<(String, Vec<LoraTag>), String> {
    const OPEN: &str = "<lora:";
    let mut cleaned = String::with_capacity(prompt.len());
    let mut tags = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find(OPEN) {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        let tag = &rest[start..start + len + 1];
        let body = &tag[OPEN.len()..tag.len() - 1];
        tags.push(parse_tag(body).map_err(|why| format!("prompt tag {tag}: {why}"))?);
        cleaned.push_str(&rest[..start]);
        rest = &rest[start + len + 1..];
    }
    cleaned.push_str(rest);
    Ok((cleaned, tags))
}

fn parse_tag(body: &str) -> Result<LoraTag, String> {
    let mut fields = body.split(':').map(str::trim);
    let name = fields.next().unwrap_or_default();
    if name.is_empty() {
        return Err("no LoRA name (write <lora:NAME> or <lora:NAME:WEIGHT>)".into());
    }
    let weight = match fields.next() {
        None => 1.0,
        Some(text) => text
            .parse::<f32>()
            .ok()
            .filter(|w| w.is_finite())
            .ok_or_else(|| format!("weight {text:?} is no number"))?,
    };
    if let Some(extra) = fields.next() {
        return Err(format!(
            "unexpected field {extra:?}: sdweb reads <lora:NAME:WEIGHT> (one weight for the text encoder and UNet)"
        ));
    }
    Ok(LoraTag {
        name: name.to_string(),
        weight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, weight: f32) -> LoraTag {
        LoraTag {
            name: name.into(),
            weight,
        }
    }

    #[test]
    fn tags_are_taken_out_and_the_text_around_them_kept() {
        let (prompt, tags) =
            take_lora_tags("a cat, <lora:film grain:0.6> on a mat <lora:detail>").unwrap();
        assert_eq!(prompt, "a cat,  on a mat ");
        assert_eq!(tags, vec![tag("film grain", 0.6), tag("detail", 1.0)]);
    }

    #[test]
    fn other_angle_brackets_and_unclosed_tags_stay_text() {
        let text = "<hypernet:x:1> a <b> c <lora:open";
        assert_eq!(take_lora_tags(text).unwrap(), (text.to_string(), vec![]));
    }

    #[test]
    fn negative_and_spaced_weights_parse() {
        let (_, tags) = take_lora_tags("<lora: style : -0.5 >").unwrap();
        assert_eq!(tags, vec![tag("style", -0.5)]);
    }

    #[test]
    fn bad_tags_are_errors_naming_the_tag() {
        let err = take_lora_tags("x <lora:style:strong>").unwrap_err();
        assert!(
            err.contains("<lora:style:strong>") && err.contains("no number"),
            "{err}"
        );
        let err = take_lora_tags("<lora:style:0.5:0.7>").unwrap_err();
        assert!(err.contains("unexpected field"), "{err}");
        assert!(
            take_lora_tags("<lora:>")
                .unwrap_err()
                .contains("no LoRA name")
        );
    }
}
