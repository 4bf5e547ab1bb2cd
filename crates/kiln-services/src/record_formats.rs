//! The file formats SWE-bench datasets are published in, turned into the JSON lines that
//! [`crate::records::parse_records`] reads: JSON arrays and JSON lines pass through, and
//! Parquet (Hugging Face's format: one row per record, test lists as JSON-encoded strings
//! or as lists of strings) becomes one JSON object per row. Conversion happens before
//! parsing so that every format gets the same checks and the same problem reports.
use bytes::Bytes;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;

use crate::records::RecordProblem;

/// Every Parquet file starts (and ends) with these four bytes.
const PARQUET_MAGIC: &[u8] = b"PAR1";

/// The records of an import file as text `parse_records` reads.
pub fn records_text(bytes: Vec<u8>) -> Result<String, RecordProblem> {
    if bytes.starts_with(PARQUET_MAGIC) {
        return parquet_as_json_lines(bytes);
    }
    String::from_utf8(bytes).map_err(|e| RecordProblem {
        location: "file".into(),
        reason: format!(
            "neither UTF-8 text (JSON or JSON lines) nor Parquet: invalid UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// One JSON object per row, in file order. Row `N` of the file is line `N` of the text,
/// so a problem found later names the row.
fn parquet_as_json_lines(bytes: Vec<u8>) -> Result<String, RecordProblem> {
    let problem = |location: String, e: parquet::errors::ParquetError| RecordProblem {
        location,
        reason: format!("cannot read Parquet: {e}"),
    };
    let reader =
        SerializedFileReader::new(Bytes::from(bytes)).map_err(|e| problem("file".into(), e))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| problem("file".into(), e))?;
    let mut text = String::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| problem(format!("row {}", i + 1), e))?;
        let value = unwrap_list_groups(row.to_json_value());
        text.push_str(&value.to_string());
        text.push('\n');
    }
    Ok(text)
}

/// Writers that follow Parquet's three-level list layout without the legacy names can
/// surface a list of strings as a list of `{"element": "…"}` or `{"item": "…"}` groups;
/// a list made only of such one-field groups is the list of their values.
fn unwrap_list_groups(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, unwrap_list_groups(v)))
                .collect(),
        ),
        Value::Array(items) => {
            let single = |v: &Value| {
                v.as_object().is_some_and(|o| {
                    o.len() == 1 && (o.contains_key("element") || o.contains_key("item"))
                })
            };
            if !items.is_empty() && items.iter().all(single) {
                Value::Array(
                    items
                        .into_iter()
                        .filter_map(|v| match v {
                            Value::Object(o) => o.into_iter().next().map(|(_, v)| v),
                            other => Some(other),
                        })
                        .collect(),
                )
            } else {
                Value::Array(items.into_iter().map(unwrap_list_groups).collect())
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_passes_through_and_binary_that_is_not_parquet_is_refused() {
        assert_eq!(records_text(b"[]".to_vec()).unwrap(), "[]");
        let err = records_text(vec![0xff, 0xfe, 0x00]).unwrap_err();
        assert!(err.reason.contains("nor Parquet"), "{err}");
    }

    #[test]
    fn a_truncated_parquet_file_is_a_problem_not_a_panic() {
        let err = records_text(b"PAR1 not really".to_vec()).unwrap_err();
        assert!(err.reason.starts_with("cannot read Parquet"), "{err}");
    }

    /// Hugging Face's layout: test lists as JSON-encoded strings, `version` a string.
    #[test]
    fn hugging_face_parquet_imports_like_its_json() {
        let bytes = include_bytes!("../tests/data/swebench-hf.parquet").to_vec();
        let samples = crate::records::parse_records(&records_text(bytes).unwrap()).unwrap();
        assert_eq!(samples.len(), 2);
        let r = &samples[1].record;
        assert_eq!(samples[1].sample_id, "octo__hello-2");
        assert_eq!(r.fail_to_pass, ["t.py::test_fix_2"]);
        assert_eq!(r.pass_to_pass, ["t.py::test_old", "t.py::test [a, b]"]);
        assert_eq!(r.swebench_version.as_deref(), Some("3.0"));
        assert_eq!(
            r.environment_setup_commit,
            "89abcdef0123456789abcdef0123456789abcdef"
        );
        assert_eq!(r.problem_statement, "Fix it (ünïcode kept)");
        assert_eq!(r.extra["created_at"], "2023-01-01T00:00:00Z");
    }

    /// Real list columns, a numeric `version`, and the 5.x fields kept.
    #[test]
    fn list_columns_and_5x_fields_are_kept() {
        let bytes = include_bytes!("../tests/data/swebench-lists.parquet").to_vec();
        let samples = crate::records::parse_records(&records_text(bytes).unwrap()).unwrap();
        let (one, two) = (&samples[0].record, &samples[1].record);
        assert_eq!(one.fail_to_pass, ["t.py::test_fix_1"]);
        assert_eq!(one.pass_to_pass, ["t.py::test_old"]);
        assert!(two.pass_to_pass.is_empty());
        assert_eq!(one.swebench_version.as_deref(), Some("2.2"));
        assert_eq!(
            one.image.as_deref(),
            Some("swebench/sweb.eval.x86_64.octo_1776_hello-1:latest")
        );
        assert_eq!(one.extra["eval_script"], "#!/bin/bash\npytest t.py\n");
    }

    #[test]
    fn single_field_list_groups_become_their_values() {
        let v =
            serde_json::json!({"F": [{"element": "a"}, {"element": "b"}], "G": [{"x": 1, "y": 2}]});
        assert_eq!(
            unwrap_list_groups(v),
            serde_json::json!({"F": ["a", "b"], "G": [{"x": 1, "y": 2}]})
        );
    }
}
