//! Predictions in the SWE-bench harness's format (`get_predictions_from_file`): a JSON
//! list of predictions, a JSON object keyed by instance id, or JSON lines; each one an
//! object with `instance_id`, `model_name_or_path` and `model_patch` (a string, or null).
use std::collections::BTreeMap;

use serde_json::Value;

/// Longest model name kept (it becomes a directory name).
const MAX_MODEL_LEN: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prediction {
    pub instance_id: String,
    pub model_name_or_path: String,
    /// `None` (JSON null) and `""` are both the harness's "empty patch".
    pub model_patch: Option<String>,
}

impl Prediction {
    pub fn is_empty(&self) -> bool {
        self.model_patch.as_deref().is_none_or(str::is_empty)
    }

    /// The model's directory under `logs/run_evaluation/<run_id>/`, as the harness names it.
    pub fn model_dir(&self) -> String {
        self.model_name_or_path.replace('/', "__")
    }
}

/// A predictions file, by instance id. Later predictions for the same instance replace
/// earlier ones, as in the harness's `{id: pred for pred in predictions}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predictions {
    pub by_id: BTreeMap<String, Prediction>,
    /// The first in file order (as replaced by later ones with its id): its model names
    /// the run report, as in the harness.
    first: Prediction,
}

impl Predictions {
    pub fn first(&self) -> &Prediction {
        &self.first
    }
}

pub fn parse_predictions(text: &str) -> Result<Predictions, String> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let values: Vec<(String, Value)> = if trimmed.starts_with('[') || trimmed.starts_with('{') {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("prediction {}", i + 1), v))
                .collect(),
            // A single object is either one prediction per key or (JSON lines) the first line.
            Ok(Value::Object(map)) if !map.contains_key("instance_id") => map
                .into_iter()
                .map(|(k, v)| (format!("prediction {k:?}"), v))
                .collect(),
            Ok(other) => vec![("line 1".into(), other)],
            Err(_) => json_lines(text)?,
        }
    } else {
        json_lines(text)?
    };
    let mut by_id = BTreeMap::new();
    let mut first_id = None;
    for (location, value) in values {
        let prediction = one(value).map_err(|e| format!("{location}: {e}"))?;
        first_id.get_or_insert_with(|| prediction.instance_id.clone());
        by_id.insert(prediction.instance_id.clone(), prediction);
    }
    match first_id.and_then(|id| by_id.get(&id).cloned()) {
        Some(first) => Ok(Predictions { by_id, first }),
        None => Err("no predictions found".into()),
    }
}

fn json_lines(text: &str) -> Result<Vec<(String, Value)>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map(|v| (format!("line {}", i + 1), v))
                .map_err(|e| format!("line {}: invalid JSON: {e}", i + 1))
        })
        .collect()
}

fn one(value: Value) -> Result<Prediction, String> {
    let Value::Object(obj) = value else {
        return Err("a prediction must be a JSON object".into());
    };
    let text = |key: &str| match obj.get(key) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(format!("{key} must be a string")),
    };
    let instance_id = text("instance_id")?.ok_or("missing instance_id")?;
    let model = text("model_name_or_path")?.ok_or("missing model_name_or_path")?;
    let dir = model.replace('/', "__");
    if dir.is_empty()
        || dir == "."
        || dir == ".."
        || model.len() > MAX_MODEL_LEN
        || model.chars().any(|c| c.is_control())
    {
        return Err(format!(
            "model_name_or_path {model:?} cannot name a directory (1-{MAX_MODEL_LEN} printable characters, not . or ..)"
        ));
    }
    Ok(Prediction {
        instance_id,
        model_name_or_path: model,
        model_patch: text("model_patch")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str =
        r#"{"instance_id": "a-1", "model_name_or_path": "org/m", "model_patch": "diff"}"#;

    #[test]
    fn list_dict_and_lines_give_the_same_predictions() {
        let list = parse_predictions(&format!("[{ONE}]")).unwrap();
        let dict = parse_predictions(&format!(r#"{{"a-1": {ONE}}}"#)).unwrap();
        let lines = parse_predictions(&format!("{ONE}\n\n{ONE}\n")).unwrap();
        let single = parse_predictions(ONE).unwrap();
        assert_eq!(list, dict);
        assert_eq!(list, lines);
        assert_eq!(list, single);
        assert_eq!(list.by_id["a-1"].model_dir(), "org__m");
        assert_eq!(list.first().instance_id, "a-1");
    }

    #[test]
    fn null_and_empty_patches_are_empty() {
        let p = parse_predictions(
            r#"[{"instance_id": "c", "model_name_or_path": "m"},
                {"instance_id": "a", "model_name_or_path": "m", "model_patch": null},
                {"instance_id": "b", "model_name_or_path": "m", "model_patch": ""}]"#,
        )
        .unwrap();
        assert!(p.by_id.values().all(Prediction::is_empty));
        assert_eq!(p.first().instance_id, "c", "file order, not id order");
    }

    #[test]
    fn bad_predictions_say_where() {
        let e = parse_predictions(&format!("{ONE}\n{{\"instance_id\": \"a\"}}\n")).unwrap_err();
        assert!(e.starts_with("line 2: missing model_name_or_path"), "{e}");
        let e = parse_predictions(&format!("{ONE}\nnot json\n")).unwrap_err();
        assert!(e.starts_with("line 2: invalid JSON"), "{e}");
        let e =
            parse_predictions(r#"[{"instance_id": "a", "model_name_or_path": ".."}]"#).unwrap_err();
        assert!(e.contains("cannot name a directory"), "{e}");
        assert!(parse_predictions("[]").is_err());
    }
}
