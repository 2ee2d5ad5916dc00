//! `adapter_config.json` of a PEFT LoRA adapter: rank, alpha, rsLoRA, which modules and layers
//! are adapted, and per-module rank/alpha overrides. Every option that would change the math of
//! inference beyond `y = W x + scaling * B A x` (DoRA, biases, extra trained modules, ...) is
//! refused with [`Error::Unsupported`] naming it, so an adapter never runs silently wrong.

use std::fmt;
use std::path::Path;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::LoraModule;
use crate::error::{Error, Result};

/// File name of the adapter configuration inside an adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// PEFT's default rank when `r` is absent (`LoraConfig.r`).
const DEFAULT_R: u64 = 8;
/// PEFT's default alpha when `lora_alpha` is absent (`LoraConfig.lora_alpha`).
const DEFAULT_ALPHA: f64 = 8.0;

/// Which modules an adapter targets, as `target_modules` names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// A list of names; a module matches when its full name equals one or ends with `.` + one.
    List(Vec<String>),
    /// PEFT's `"all-linear"` shorthand: every linear layer but the output head.
    AllLinear,
}

/// The parsed `adapter_config.json` (only what inference needs).
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    /// Default rank (`r`).
    pub r: usize,
    /// Default alpha (`lora_alpha`).
    pub lora_alpha: f64,
    /// rsLoRA: scaling `alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
    /// `target_modules`.
    pub targets: Targets,
    /// `layers_to_transform`: only these layer indices are adapted, when set.
    pub layers: Option<Vec<usize>>,
    /// `rank_pattern` in file order (PEFT takes the first matching key).
    pub rank_pattern: Vec<(String, usize)>,
    /// `alpha_pattern` in file order (PEFT takes the first matching key).
    pub alpha_pattern: Vec<(String, f64)>,
}

/// A JSON object whose key order is kept (serde_json's map sorts keys in this build).
#[derive(Debug, Default)]
struct OrderedMap(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<OrderedMap, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
            fn visit_unit<E>(self) -> std::result::Result<OrderedMap, E> {
                Ok(OrderedMap::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// The raw keys we read; every other key of the file is ignored (training-only settings).
#[derive(Deserialize)]
struct Raw {
    peft_type: Option<Value>,
    r: Option<Value>,
    lora_alpha: Option<Value>,
    use_rslora: Option<Value>,
    target_modules: Option<Value>,
    exclude_modules: Option<Value>,
    layers_to_transform: Option<Value>,
    layers_pattern: Option<Value>,
    rank_pattern: Option<OrderedMap>,
    alpha_pattern: Option<OrderedMap>,
    bias: Option<Value>,
    use_dora: Option<Value>,
    lora_bias: Option<Value>,
    fan_in_fan_out: Option<Value>,
    modules_to_save: Option<Value>,
    layer_replication: Option<Value>,
    alora_invocation_tokens: Option<Value>,
    target_parameters: Option<Value>,
    trainable_token_indices: Option<Value>,
    use_qalora: Option<Value>,
    use_bdlora: Option<Value>,
}

/// True for JSON null, `false`, an empty list, an empty object or an empty string.
fn is_off(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

impl AdapterConfig {
    /// Reads and checks `dir/adapter_config.json`.
    pub fn load(dir: &Path) -> Result<AdapterConfig> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Self::parse(&text, &path)
    }

    /// Parses and checks the bytes of an `adapter_config.json`; `path` names the file in errors.
    pub fn parse(text: &[u8], path: &Path) -> Result<AdapterConfig> {
        let bad = |msg: String| Error::format(path, msg);
        let unsupported = |what: &str| {
            Error::Unsupported(format!(
                "{}: LoRA option {what} is not supported",
                path.display()
            ))
        };
        let raw: Raw = serde_json::from_slice(text)
            .map_err(|e| bad(format!("invalid adapter config JSON: {e}")))?;

        if let Some(t) = &raw.peft_type {
            if t.as_str() != Some("LORA") {
                return Err(Error::Unsupported(format!(
                    "{}: peft_type {t} is not supported (only LORA)",
                    path.display()
                )));
            }
        }
        match &raw.bias {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "none" => {}
            Some(Value::String(s)) => {
                return Err(unsupported(&format!("bias=\"{s}\" (only \"none\")")))
            }
            Some(v) => return Err(bad(format!("'bias' must be a string, got {v}"))),
        }
        let refused: [(&str, &Option<Value>); 11] = [
            ("use_dora=true (DoRA)", &raw.use_dora),
            ("lora_bias=true", &raw.lora_bias),
            ("fan_in_fan_out=true", &raw.fan_in_fan_out),
            ("modules_to_save", &raw.modules_to_save),
            ("layer_replication", &raw.layer_replication),
            (
                "alora_invocation_tokens (aLoRA)",
                &raw.alora_invocation_tokens,
            ),
            ("target_parameters", &raw.target_parameters),
            ("trainable_token_indices", &raw.trainable_token_indices),
            ("use_qalora=true", &raw.use_qalora),
            ("use_bdlora", &raw.use_bdlora),
            ("exclude_modules", &raw.exclude_modules),
        ];
        for (what, v) in refused {
            if !is_off(v) {
                return Err(unsupported(what));
            }
        }

        let r = match &raw.r {
            None | Some(Value::Null) => DEFAULT_R,
            Some(v) => v
                .as_u64()
                .filter(|&r| r > 0)
                .ok_or_else(|| bad(format!("'r' must be a positive integer, got {v}")))?,
        } as usize;
        let lora_alpha = match &raw.lora_alpha {
            None | Some(Value::Null) => DEFAULT_ALPHA,
            Some(v) => v
                .as_f64()
                .filter(|a| a.is_finite())
                .ok_or_else(|| bad(format!("'lora_alpha' must be a number, got {v}")))?,
        };
        let use_rslora = match &raw.use_rslora {
            None | Some(Value::Null) => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(format!("'use_rslora' must be true or false, got {v}")))?,
        };

        let targets = match &raw.target_modules {
            Some(Value::String(s)) if s.eq_ignore_ascii_case("all-linear") => Targets::AllLinear,
            Some(Value::String(s)) => {
                return Err(Error::Unsupported(format!(
                    "{}: target_modules given as the regular expression \"{s}\" is not supported; list the module names",
                    path.display()
                )))
            }
            Some(Value::Array(items)) => {
                let mut names = Vec::with_capacity(items.len());
                for item in items {
                    let s = item.as_str().ok_or_else(|| bad(format!("target_modules entry {item} is not a string")))?;
                    names.push(s.to_string());
                }
                let unknown: Vec<&str> = names
                    .iter()
                    .map(String::as_str)
                    .filter(|n| LoraModule::from_peft_name(n.rsplit('.').next().unwrap_or(n)).is_none())
                    .collect();
                if !unknown.is_empty() {
                    return Err(Error::Unsupported(format!(
                        "{}: target_modules {unknown:?} cannot be adapted (supported: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
                        path.display()
                    )));
                }
                if names.is_empty() {
                    return Err(bad("target_modules is empty".into()));
                }
                Targets::List(names)
            }
            None | Some(Value::Null) => return Err(bad("missing key 'target_modules'".into())),
            Some(v) => return Err(bad(format!("target_modules must be a list of names, got {v}"))),
        };

        match &raw.layers_pattern {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "layers" => {}
            Some(Value::Array(a))
                if a.is_empty() || a.iter().all(|v| v.as_str() == Some("layers")) => {}
            Some(v) => {
                return Err(unsupported(&format!(
                    "layers_pattern={v} (only \"layers\")"
                )))
            }
        }
        let layers = match &raw.layers_to_transform {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(vec![n
                .as_u64()
                .ok_or_else(|| bad(format!("layers_to_transform {n} is not a layer index")))?
                as usize]),
            // PEFT treats an empty list as "every layer".
            Some(Value::Array(a)) if a.is_empty() => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| {
                        v.as_u64().map(|i| i as usize).ok_or_else(|| {
                            bad(format!(
                                "layers_to_transform entry {v} is not a layer index"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(v) => {
                return Err(bad(format!(
                    "layers_to_transform must be an index or a list, got {v}"
                )))
            }
        };

        let rank_pattern = parse_pattern(raw.rank_pattern, "rank_pattern", path, |v| {
            v.as_u64().filter(|&r| r > 0).map(|r| r as usize)
        })?;
        let alpha_pattern = parse_pattern(raw.alpha_pattern, "alpha_pattern", path, |v| {
            v.as_f64().filter(|a| a.is_finite())
        })?;

        Ok(AdapterConfig {
            r,
            lora_alpha,
            use_rslora,
            targets,
            layers,
            rank_pattern,
            alpha_pattern,
        })
    }

    /// Whether PEFT would put a LoRA on the module called `full_name`
    /// (e.g. `model.layers.3.self_attn.q_proj`) of layer `layer`.
    pub fn targets_module(&self, full_name: &str, layer: usize) -> bool {
        let named = match &self.targets {
            Targets::AllLinear => true,
            Targets::List(names) => names
                .iter()
                .any(|t| full_name == t || full_name.ends_with(&format!(".{t}"))),
        };
        named && self.layers.as_ref().is_none_or(|l| l.contains(&layer))
    }

    /// The rank PEFT expects for `full_name`: the first matching `rank_pattern` entry, else `r`.
    pub fn rank_for(&self, full_name: &str) -> usize {
        self.rank_pattern
            .iter()
            .find(|(k, _)| pattern_matches(k, full_name))
            .map(|(_, r)| *r)
            .unwrap_or(self.r)
    }

    /// The alpha PEFT uses for `full_name`: the first matching `alpha_pattern` entry, else `lora_alpha`.
    pub fn alpha_for(&self, full_name: &str) -> f64 {
        self.alpha_pattern
            .iter()
            .find(|(k, _)| pattern_matches(k, full_name))
            .map(|(_, a)| *a)
            .unwrap_or(self.lora_alpha)
    }

    /// PEFT's layer scaling for a module of rank `rank` and alpha `alpha`.
    pub fn scaling(&self, alpha: f64, rank: usize) -> f64 {
        if self.use_rslora {
            alpha / (rank as f64).sqrt()
        } else {
            alpha / rank as f64
        }
    }
}

/// Parses a `rank_pattern`/`alpha_pattern` object, keeping key order; keys must be plain module
/// paths (letters, digits, `_`, `-`, `.`): PEFT treats them as regular expressions, and only
/// those keys can be matched here exactly as Python's `re` would.
fn parse_pattern<T>(
    map: Option<OrderedMap>,
    what: &str,
    path: &Path,
    value: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for (k, v) in map.map(|m| m.0).unwrap_or_default() {
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(Error::Unsupported(format!(
                "{}: {what} key \"{k}\" is a regular expression; only plain module names are supported",
                path.display()
            )));
        }
        let val = value(&v).ok_or_else(|| {
            Error::format(path, format!("{what} entry \"{k}\" has invalid value {v}"))
        })?;
        out.push((k, val));
    }
    Ok(out)
}

/// PEFT's `re.match(rf"(.*\.)?({key})$", name)` for a key made of `[A-Za-z0-9_.-]`: the key
/// (each `.` matching any one character) must match a suffix of `name` that is either all of
/// it or preceded by a `.`.
fn pattern_matches(key: &str, name: &str) -> bool {
    let (k, n) = (key.as_bytes(), name.as_bytes());
    if k.len() > n.len() {
        return false;
    }
    let start = n.len() - k.len();
    let body = k
        .iter()
        .zip(&n[start..])
        .all(|(&kc, &nc)| kc == b'.' || kc == nc);
    // A longer prefix can only end in `.` at `start - 1`: the key has no quantifiers, so its
    // match always has the key's length.
    body && (start == 0 || n[start - 1] == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<AdapterConfig> {
        AdapterConfig::parse(json.as_bytes(), Path::new("dir/adapter_config.json"))
    }

    #[test]
    fn pattern_keys_match_like_python_re() {
        assert!(pattern_matches("q_proj", "model.layers.0.self_attn.q_proj"));
        assert!(pattern_matches(
            "layers.1.self_attn.q_proj",
            "model.layers.1.self_attn.q_proj"
        ));
        assert!(!pattern_matches(
            "layers.1.self_attn.q_proj",
            "model.layers.11.self_attn.q_proj"
        ));
        assert!(!pattern_matches("proj", "model.layers.0.self_attn.q_proj"));
        assert!(pattern_matches(
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.q_proj"
        ));
        // `.` is a regex wildcard in PEFT's keys.
        assert!(pattern_matches(
            "self_attn.q.proj",
            "model.layers.0.self_attn.q_proj"
        ));
    }

    #[test]
    fn first_matching_pattern_wins_in_file_order() {
        let c = parse(
            r#"{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
            "rank_pattern": {"layers.1.self_attn.q_proj": 2, "q_proj": 4},
            "alpha_pattern": {"q_proj": 3, "layers.1.self_attn.q_proj": 5}}"#,
        )
        .unwrap();
        assert_eq!(c.rank_for("model.layers.1.self_attn.q_proj"), 2);
        assert_eq!(c.rank_for("model.layers.0.self_attn.q_proj"), 4);
        assert_eq!(c.rank_for("model.layers.0.self_attn.v_proj"), 8);
        assert_eq!(c.alpha_for("model.layers.1.self_attn.q_proj"), 3.0);
        assert_eq!(c.alpha_for("model.layers.1.mlp.up_proj"), 16.0);
    }

    #[test]
    fn regex_pattern_keys_and_targets_are_unsupported() {
        let e = parse(r#"{"target_modules": ["q_proj"], "rank_pattern": {"^model.*q_proj$": 4}}"#)
            .unwrap_err();
        assert!(
            matches!(e, Error::Unsupported(ref m) if m.contains("rank_pattern")),
            "{e}"
        );
        let e = parse(r#"{"target_modules": ".*(q|v)_proj"}"#).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported(ref m) if m.contains("regular expression")),
            "{e}"
        );
        assert_eq!(
            parse(r#"{"target_modules": "all-linear"}"#)
                .unwrap()
                .targets,
            Targets::AllLinear
        );
    }

    #[test]
    fn layers_to_transform_limits_targets() {
        let c = parse(r#"{"target_modules": ["v_proj"], "layers_to_transform": [1]}"#).unwrap();
        assert!(c.targets_module("model.layers.1.self_attn.v_proj", 1));
        assert!(!c.targets_module("model.layers.0.self_attn.v_proj", 0));
        assert!(!c.targets_module("model.layers.1.self_attn.q_proj", 1));
        let c = parse(r#"{"target_modules": ["v_proj"], "layers_to_transform": 0}"#).unwrap();
        assert_eq!(c.layers, Some(vec![0]));
    }

    #[test]
    fn defaults_follow_peft() {
        let c = parse(r#"{"target_modules": ["q_proj"]}"#).unwrap();
        assert_eq!((c.r, c.lora_alpha, c.use_rslora), (8, 8.0, false));
        assert_eq!(c.scaling(16.0, 4), 4.0);
        let c = parse(r#"{"target_modules": ["q_proj"], "use_rslora": true}"#).unwrap();
        assert_eq!(c.scaling(16.0, 4), 8.0);
    }

    #[test]
    fn options_that_change_the_math_are_refused_by_name() {
        for (json, name) in [
            (
                r#"{"target_modules": ["q_proj"], "use_dora": true}"#,
                "use_dora",
            ),
            (r#"{"target_modules": ["q_proj"], "bias": "all"}"#, "bias"),
            (
                r#"{"target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}"#,
                "modules_to_save",
            ),
            (
                r#"{"target_modules": ["q_proj"], "fan_in_fan_out": true}"#,
                "fan_in_fan_out",
            ),
            (
                r#"{"target_modules": ["q_proj"], "lora_bias": true}"#,
                "lora_bias",
            ),
            (
                r#"{"target_modules": ["q_proj"], "layers_pattern": "h"}"#,
                "layers_pattern",
            ),
            (
                r#"{"target_modules": ["q_proj", "lm_head", "embed_tokens"]}"#,
                "lm_head",
            ),
            (
                r#"{"target_modules": ["q_proj"], "peft_type": "IA3"}"#,
                "IA3",
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert!(
                matches!(e, Error::Unsupported(ref m) if m.contains(name)),
                "{json}: {e}"
            );
        }
    }

    #[test]
    fn malformed_values_are_format_errors() {
        for json in [
            r#"{"target_modules": ["q_proj"], "r": 0}"#,
            r#"{"target_modules": ["q_proj"], "r": "eight"}"#,
            r#"{"target_modules": ["q_proj"], "lora_alpha": "x"}"#,
            r#"{"target_modules": [3]}"#,
            r#"{"r": 8}"#,
            r#"{"target_modules": ["q_proj"], "rank_pattern": {"q_proj": -1}}"#,
            r#"[1, 2]"#,
            r#"{"target_modules": ["q_proj"], "#,
        ] {
            let e = parse(json).unwrap_err();
            assert!(
                matches!(e, Error::ModelFormat { ref file, .. } if file == "adapter_config.json"),
                "{json}: {e}"
            );
        }
    }
}
