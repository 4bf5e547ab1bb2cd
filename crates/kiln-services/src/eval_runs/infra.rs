//! The run report's use of swebench 5.x's failure classification
//! (`kiln_verify::infra`): the logs an instance left, read as the harness reads them.
use std::path::Path;

pub use kiln_verify::infra::{classify_text, Tier};

/// `classify_logs`: the logs that exist, joined by newlines (read as the harness reads
/// them, invalid UTF-8 replaced).
pub fn classify_logs(paths: &[&Path]) -> Option<(&'static str, Tier)> {
    let chunks: Vec<String> = paths
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect();
    classify_text(&chunks.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_joined_and_missing_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("test_output.txt");
        std::fs::write(&a, b"ModuleNotFoundError: x\xff").unwrap();
        let missing = dir.path().join("run_instance.log");
        assert_eq!(
            classify_logs(&[&a, &missing]),
            Some(("missing_module", Tier::Ambiguous))
        );
        assert_eq!(classify_logs(&[&missing]), None);
    }
}
