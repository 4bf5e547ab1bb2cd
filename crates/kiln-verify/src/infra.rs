//! swebench 5.x's post-hoc classification of failures (`harness/infra_failure.py`, #586):
//! signatures in an unresolved or failed instance's logs that say the environment broke
//! rather than the patch. Advisory, as in the harness: a flagged instance stays in
//! `unresolved_ids` / `error_ids`; the run report lists it again under
//! `infra_failure_ids` or `ambiguous_failure_ids`, with its reason.
use std::sync::LazyLock;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Cannot plausibly be caused by patching the repository's source.
    Environment,
    /// A broken environment or a bad patch.
    Ambiguous,
}

/// `INFRA_FAILURE_SIGNATURES`, matched in order (the first hit wins), multi-line.
const SIGNATURES: [(&str, Tier, &str); 8] = [
    (
        "browser_launch_failed",
        Tier::Environment,
        r"Failed to launch|Failed to connect to the bus",
    ),
    (
        "display_unavailable",
        Tier::Environment,
        r"cannot open display|Missing X server|unable to open X display",
    ),
    (
        "out_of_memory",
        Tier::Environment,
        r"Cannot allocate memory|OutOfMemoryError|^Killed$",
    ),
    (
        "container_unavailable",
        Tier::Environment,
        r"Error response from daemon|Cannot connect to the Docker daemon",
    ),
    (
        "network_unreachable",
        Tier::Environment,
        r"Could not resolve host|Temporary failure in name resolution",
    ),
    (
        "missing_module",
        Tier::Ambiguous,
        r"Cannot find module|MODULE_NOT_FOUND|ModuleNotFoundError",
    ),
    (
        "no_tests_collected",
        Tier::Ambiguous,
        r"no tests ran|collected 0 items",
    ),
    (
        "tests_timed_out",
        Tier::Ambiguous,
        r"Timeout error: \d+ seconds exceeded",
    ),
];

static COMPILED: LazyLock<Vec<(&'static str, Tier, Regex)>> = LazyLock::new(|| {
    SIGNATURES
        .iter()
        .filter_map(|(reason, tier, pattern)| {
            // Constant patterns: a failure here is caught by the tests below.
            Regex::new(&format!("(?m){pattern}"))
                .ok()
                .map(|re| (*reason, *tier, re))
        })
        .collect()
});

/// `classify_text`: the first matching signature's reason and tier.
pub fn classify_text(text: &str) -> Option<(&'static str, Tier)> {
    COMPILED
        .iter()
        .find(|(_, _, re)| re.is_match(text))
        .map(|(reason, tier, _)| (*reason, *tier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signature_compiles_and_the_first_hit_wins() {
        assert_eq!(COMPILED.len(), SIGNATURES.len());
        assert_eq!(classify_text(""), None);
        assert_eq!(classify_text("== 3 passed in 1.2s =="), None);
        assert_eq!(
            classify_text("pip: Temporary failure in name resolution\ncollected 0 items"),
            Some(("network_unreachable", Tier::Environment))
        );
        assert_eq!(
            classify_text("collected 0 items"),
            Some(("no_tests_collected", Tier::Ambiguous))
        );
        assert_eq!(
            classify_text("Error: Timeout error: 1800 seconds exceeded."),
            Some(("tests_timed_out", Tier::Ambiguous))
        );
        // `^Killed$` is a whole line, as with re.MULTILINE.
        assert_eq!(
            classify_text("a\nKilled\nb"),
            Some(("out_of_memory", Tier::Environment))
        );
        assert_eq!(classify_text("Killed by signal"), None);
    }
}
