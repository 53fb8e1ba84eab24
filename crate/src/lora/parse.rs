//! Reading a LoRA `.safetensors` file: kohya/A1111 names (`lora_unet_*`, `lora_te_*`,
//! `lora_te1_*`/`lora_te2_*` with `.lora_down`/`.lora_up`/`.alpha`, LoCon conv layers) and
//! diffusers/PEFT names (`unet.<path>.lora_A/lora_B`, `text_encoder.*`, `text_encoder_2.*`,
//! the older `.lora.down`/`.lora.up` and `processor.to_q_lora.down` forms).

use std::collections::BTreeMap;

use super::{LoraFile, LoraLayer, module_key};
use crate::pipeline::Component;
use crate::weights::safetensors::SafetensorsHeader;
use crate::weights::{StorageDType, WeightError, to_f32};

/// Which of a layer's tensors a file name is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Down,
    Up,
    Alpha,
}

/// Tensor-name endings of the layer types sdweb applies, longest first.
const SUFFIXES: [(&str, Part); 7] = [
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".lora.down.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".alpha", Part::Alpha),
];

/// Markers of LyCORIS/PEFT variants that are not a plain low-rank product.
const UNSUPPORTED: [(&str, &str); 6] = [
    ("hada_", "LoHa"),
    ("lokr_", "LoKr"),
    (".lora_mid.", "LoCon with a Tucker (CP) mid weight"),
    ("dora_scale", "DoRA"),
    ("oft_", "OFT"),
    (".diff", "a full weight difference"),
];

/// Model parts by file-name prefix: kohya's first, then diffusers' (`text_encoder_2.` before
/// `text_encoder.`).
const PREFIXES: [(&str, Component); 7] = [
    ("lora_unet_", Component::Unet),
    ("lora_te1_", Component::TextEncoder),
    ("lora_te2_", Component::TextEncoder2),
    ("lora_te_", Component::TextEncoder),
    ("unet.", Component::Unet),
    ("text_encoder_2.", Component::TextEncoder2),
    ("text_encoder.", Component::TextEncoder),
];

#[derive(Default)]
struct Pieces {
    down: Option<(Vec<usize>, Vec<f32>)>,
    up: Option<(Vec<usize>, Vec<f32>)>,
    alpha: Option<f32>,
}

/// Parses a LoRA file held in memory; `file` names it in errors. Every tensor must be part of
/// a layer sdweb applies: anything else is an error rather than silently ignored.
pub fn parse_lora(bytes: &[u8], file: &str) -> Result<LoraFile, WeightError> {
    let bad = |why: String| WeightError::Malformed {
        file: file.to_string(),
        why,
    };
    let header = SafetensorsHeader::parse(bytes, bytes.len() as u64, file)?;
    let mut layers: BTreeMap<(Component, String), (String, Pieces)> = BTreeMap::new();
    for (name, entry) in &header.tensors {
        if let Some((_, kind)) = UNSUPPORTED.iter().find(|(m, _)| name.contains(m)) {
            return Err(bad(format!(
                "tensor {name} is {kind}, which sdweb does not apply (it reads LoRA and LoCon layers)"
            )));
        }
        let (base, part) = split_suffix(name).ok_or_else(|| {
            bad(format!(
                "tensor {name} is no LoRA tensor (expected names ending in .lora_down.weight, .lora_up.weight, .alpha, .lora_A.weight or .lora_B.weight)"
            ))
        })?;
        let (component, key) = module_of(&base).ok_or_else(|| {
            bad(format!(
                "tensor {name} names no model part sdweb knows (prefixes: {})",
                PREFIXES.map(|(p, _)| p).join(", ")
            ))
        })?;
        if !matches!(
            entry.dtype,
            StorageDType::F32 | StorageDType::F16 | StorageDType::BF16
        ) {
            return Err(bad(format!(
                "tensor {name} is {:?}; LoRA tensors must be F32, F16 or BF16",
                entry.dtype
            )));
        }
        let start = (header.data_start + entry.begin) as usize;
        let values = to_f32(
            &bytes[start..(header.data_start + entry.end) as usize],
            entry.dtype,
        );
        let (_, pieces) = layers
            .entry((component, key))
            .or_insert_with(|| (base.clone(), Pieces::default()));
        match part {
            Part::Down => pieces.down = Some((entry.shape.clone(), values)),
            Part::Up => pieces.up = Some((entry.shape.clone(), values)),
            Part::Alpha => pieces.alpha = values.first().copied(),
        }
    }
    let layers = layers
        .into_iter()
        .map(|((component, key), (tensor, pieces))| {
            assemble(component, key, tensor, pieces).map_err(bad)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if layers.is_empty() {
        return Err(bad("the file holds no LoRA layers".into()));
    }
    Ok(LoraFile {
        name: file.to_string(),
        short_hash: short_hash(bytes, &header),
        layers,
    })
}

/// A1111's LoRA short hash: the first 12 hex digits of the `sshs_model_hash` metadata when the
/// file has one, else of the sha256 of everything after the header (kohya's "addnet" hash,
/// which ignores the editable JSON header).
fn short_hash(bytes: &[u8], header: &SafetensorsHeader) -> String {
    use sha2::{Digest, Sha256};
    if let Some(hash) = header.metadata.get("sshs_model_hash") {
        return hash.chars().take(12).collect();
    }
    let digest = Sha256::digest(&bytes[(header.data_start as usize).min(bytes.len())..]);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn split_suffix(name: &str) -> Option<(String, Part)> {
    // diffusers' attention-processor form: `attn1.processor.to_q_lora.down.weight`.
    for (end, part) in [
        ("_lora.down.weight", Part::Down),
        ("_lora.up.weight", Part::Up),
    ] {
        if let Some(stem) = name.strip_suffix(end)
            && let Some((module, projection)) = stem.rsplit_once(".processor.")
        {
            let projection = if projection == "to_out" {
                "to_out.0"
            } else {
                projection
            };
            return Some((format!("{module}.{projection}"), part));
        }
    }
    SUFFIXES
        .iter()
        .find_map(|(end, part)| Some((name.strip_suffix(end)?.to_string(), *part)))
}

/// The model part and normalised module key ([`module_key`]) a layer's base name names.
fn module_of(base: &str) -> Option<(Component, String)> {
    PREFIXES.iter().find_map(|(prefix, component)| {
        let path = base.strip_prefix(prefix)?;
        Some((*component, module_key(*component, path)))
    })
}

fn assemble(
    component: Component,
    key: String,
    tensor: String,
    pieces: Pieces,
) -> Result<LoraLayer, String> {
    let (Some((down_shape, down)), Some((up_shape, up))) = (pieces.down, pieces.up) else {
        return Err(format!(
            "LoRA layer {tensor} lacks its {} weight",
            "down (lora_down / lora_A) and up (lora_up / lora_B)"
        ));
    };
    let rank = down_shape.first().copied().unwrap_or(0);
    let up_ok = match up_shape[..] {
        [_, r] => r == rank,
        [_, r, 1, 1] => r == rank,
        _ => false,
    };
    if rank == 0 || !matches!(down_shape.len(), 2 | 4) || !up_ok {
        return Err(format!(
            "LoRA layer {tensor}: down {down_shape:?} and up {up_shape:?} are no rank-r pair (down [r, in] or [r, in, kh, kw], up [out, r] or [out, r, 1, 1])"
        ));
    }
    Ok(LoraLayer {
        component,
        key,
        tensor,
        down_shape,
        down,
        up_shape,
        up,
        alpha: pieces.alpha,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A safetensors file of F32 tensors, in memory.
    pub(crate) fn safetensors_bytes(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, shape, values) in tensors {
            let begin = data.len();
            data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [begin, data.len()]}),
            );
        }
        let json = serde_json::to_vec(&header).unwrap();
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend(json);
        out.extend(data);
        out
    }

    fn pair(
        base: &str,
        down: &str,
        up: &str,
        rank: usize,
        out: usize,
        inner: &[usize],
    ) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let down_shape: Vec<usize> = std::iter::once(rank).chain(inner.iter().copied()).collect();
        let mut up_shape = vec![out, rank];
        if inner.len() == 3 {
            up_shape.extend([1, 1]);
        }
        let n = |s: &[usize]| vec![0.5; s.iter().product()];
        vec![
            (format!("{base}{down}"), down_shape.clone(), n(&down_shape)),
            (format!("{base}{up}"), up_shape.clone(), n(&up_shape)),
        ]
    }

    fn parse(tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<LoraFile, WeightError> {
        let refs: Vec<(&str, Vec<usize>, Vec<f32>)> = tensors
            .iter()
            .map(|(n, s, v)| (n.as_str(), s.clone(), v.clone()))
            .collect();
        parse_lora(&safetensors_bytes(&refs), "test.safetensors")
    }

    #[test]
    fn kohya_names_with_locon_and_alpha() {
        let mut t = pair(
            "lora_unet_down_blocks_0_resnets_0_conv1",
            ".lora_down.weight",
            ".lora_up.weight",
            4,
            32,
            &[32, 3, 3],
        );
        t.push((
            "lora_unet_down_blocks_0_resnets_0_conv1.alpha".into(),
            vec![],
            vec![2.0],
        ));
        t.extend(pair(
            "lora_te_text_model_encoder_layers_0_mlp_fc1",
            ".lora_down.weight",
            ".lora_up.weight",
            4,
            37,
            &[32],
        ));
        t.extend(pair(
            "lora_te2_text_model_encoder_layers_1_self_attn_q_proj",
            ".lora_down.weight",
            ".lora_up.weight",
            2,
            32,
            &[32],
        ));
        let file = parse(t).unwrap();
        let by_key = |k: &str| {
            file.layers
                .iter()
                .find(|l| l.key == k)
                .unwrap_or_else(|| panic!("{k}"))
        };
        let conv = by_key("down_blocks_0_resnets_0_conv1");
        assert_eq!(
            (
                conv.component,
                conv.down_shape.as_slice(),
                conv.up_shape.as_slice()
            ),
            (Component::Unet, &[4, 32, 3, 3][..], &[32, 4, 1, 1][..])
        );
        assert_eq!(conv.scale(), 0.5);
        let fc1 = by_key("encoder_layers_0_mlp_fc1");
        assert_eq!(
            (fc1.component, fc1.scale()),
            (Component::TextEncoder, 1.0),
            "no alpha: alpha = rank"
        );
        assert_eq!(
            by_key("encoder_layers_1_self_attn_q_proj").component,
            Component::TextEncoder2
        );
    }

    #[test]
    fn diffusers_peft_and_older_diffusers_names() {
        let mut t = pair(
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
            ".lora_A.weight",
            ".lora_B.weight",
            4,
            32,
            &[32],
        );
        t.extend(pair(
            "text_encoder_2.text_model.encoder.layers.0.mlp.fc2",
            ".lora_A.weight",
            ".lora_B.weight",
            4,
            32,
            &[48],
        ));
        t.extend(pair(
            "text_encoder.text_model.encoder.layers.0.self_attn.k_proj",
            ".lora.down.weight",
            ".lora.up.weight",
            4,
            32,
            &[32],
        ));
        t.extend(pair(
            "unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora",
            ".down.weight",
            ".up.weight",
            4,
            64,
            &[64],
        ));
        let file = parse(t).unwrap();
        let keys: Vec<(Component, &str)> = file
            .layers
            .iter()
            .map(|l| (l.component, l.key.as_str()))
            .collect();
        for want in [
            (
                Component::Unet,
                "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
            ),
            (Component::TextEncoder2, "encoder_layers_0_mlp_fc2"),
            (Component::TextEncoder, "encoder_layers_0_self_attn_k_proj"),
            (
                Component::Unet,
                "mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0",
            ),
        ] {
            assert!(keys.contains(&want), "{want:?} in {keys:?}");
        }
    }

    #[test]
    fn unknown_unsupported_and_incomplete_layers_are_errors() {
        let err = |t: Vec<(String, Vec<usize>, Vec<f32>)>| parse(t).unwrap_err().to_string();
        let unknown = err(pair(
            "lora_vae_conv",
            ".lora_down.weight",
            ".lora_up.weight",
            4,
            8,
            &[8],
        ));
        assert!(
            unknown.contains("lora_vae_conv.lora_down.weight")
                && unknown.contains("names no model part"),
            "{unknown}"
        );
        let loha = err(vec![(
            "lora_unet_x.hada_w1_a".into(),
            vec![4, 4],
            vec![0.0; 16],
        )]);
        assert!(loha.contains("LoHa"), "{loha}");
        let half = err(pair(
            "lora_unet_x",
            ".lora_down.weight",
            ".lora_up.weight",
            4,
            8,
            &[8],
        )[..1]
            .to_vec());
        assert!(half.contains("lora_unet_x lacks"), "{half}");
        let mut ranks = pair(
            "lora_unet_x",
            ".lora_down.weight",
            ".lora_up.weight",
            4,
            8,
            &[8],
        );
        ranks[1].1 = vec![8, 2];
        ranks[1].2 = vec![0.0; 16];
        assert!(err(ranks).contains("no rank-r pair"));
    }
}
