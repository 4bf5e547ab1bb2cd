//! Behaviour that the fixtures do not isolate: rule differences, prefix resolution,
//! validity edge cases, names and repository tables.

use kiln_verify::{
    classify, eval_type_for_repo, evaluate_log, evaluate_log_with, parse, parser_for_repo,
    python_test_command, python_test_command_for_patch, resolution, resolve_case, tests_status,
    EvalType, ExitCodeSource, ExpectedKind, ExpectedTests, GradingRules, InvalidLog, Outcome,
    Parser, Resolution, StatusMap, TestStatus,
};

fn map(entries: &[(&str, TestStatus)]) -> StatusMap {
    entries
        .iter()
        .map(|(n, s)| ((*n).to_owned(), s.clone()))
        .collect()
}

const R5: GradingRules = GradingRules::Swebench5;
const R4: GradingRules = GradingRules::Swebench4;

#[test]
fn skipped_tests_differ_between_rule_versions() {
    let m = map(&[("t", TestStatus::Skipped)]);
    let pf = EvalType::PassAndFail;
    assert_eq!(
        classify("t", &m, ExpectedKind::FailToPass, pf, R5),
        Outcome::Failure
    );
    assert_eq!(
        classify("t", &m, ExpectedKind::PassToPass, pf, R5),
        Outcome::Success
    );
    assert_eq!(
        classify("t", &m, ExpectedKind::FailToPass, pf, R4),
        Outcome::Uncounted
    );
    assert_eq!(
        classify("t", &m, ExpectedKind::PassToPass, pf, R4),
        Outcome::Uncounted
    );
}

#[test]
fn truncated_ids_resolve_to_the_first_match_only_when_matches_agree() {
    let m = map(&[
        ("t[a-skip]", TestStatus::Skipped),
        ("t[a-fail]", TestStatus::Failed),
        ("u[x]", TestStatus::Passed),
        ("u[y]", TestStatus::Xfail),
        ("v[1]", TestStatus::Passed),
        ("v[2]", TestStatus::Failed),
    ]);
    // Both not passing: agree, so the first inserted (SKIPPED) decides P2P.
    assert_eq!(resolve_case("t[a", &m, R5), Some(&TestStatus::Skipped));
    let pf = EvalType::PassAndFail;
    assert_eq!(
        classify("t[a", &m, ExpectedKind::PassToPass, pf, R5),
        Outcome::Success
    );
    assert_eq!(resolve_case("u[", &m, R5), Some(&TestStatus::Passed));
    assert_eq!(resolve_case("v[", &m, R5), None);
    // Balanced brackets never prefix-match; 4.x never prefix-matches.
    assert_eq!(resolve_case("u[x", &m, R4), None);
    assert_eq!(resolve_case("u", &m, R5), None);
}

#[test]
fn fail_only_fails_only_on_exact_failed() {
    let m = map(&[("a", TestStatus::Error), ("b", TestStatus::Failed)]);
    let expected = ExpectedTests {
        fail_to_pass: vec!["a".into(), "missing".into(), "b".into()],
        ..ExpectedTests::default()
    };
    let status = tests_status(&m, &expected, EvalType::FailOnly, R5, false);
    assert_eq!(status.fail_to_pass.success, ["a", "missing"]);
    assert_eq!(status.fail_to_pass.failure, ["b"]);
    assert_eq!(resolution(&status), Resolution::Partial);
}

#[test]
fn empty_lists_resolve_full() {
    let status = tests_status(
        &StatusMap::new(),
        &ExpectedTests::default(),
        EvalType::PassAndFail,
        R5,
        false,
    );
    assert_eq!(resolution(&status), Resolution::Full);
}

#[test]
fn validity_checks_follow_the_reference() {
    let ran = ">>>>> Start Test Output\nPASSED a\n>>>>> End Test Output\n>>>>> Test Exit Code: 2\n";
    let e = evaluate_log(Parser::Pytest, ran, R5);
    assert_eq!(
        e.invalid,
        Some(InvalidLog::ExitCodeWithoutFailures { exit_code: 2 })
    );
    assert!(
        evaluate_log(Parser::Pytest, ran, R4).valid,
        "4.x ignores the exit code"
    );
    let trusted = evaluate_log_with(Parser::Pytest, ran, R5, ExitCodeSource::Trusted(0));
    assert!(trusted.valid);

    let silent = ">>>>> Start Test Output\n>>>>> End Test Output\n";
    assert_eq!(
        evaluate_log(Parser::Jest, silent, R5).invalid,
        Some(InvalidLog::NoTestsRan)
    );
    let silent_ran = ">>>>> Start Test Output\nTests:       3 passed\n>>>>> End Test Output\n";
    assert!(evaluate_log(Parser::Jest, silent_ran, R5).valid);
    let timed_out = format!("{ran}>>>>> Tests Timed Out\n");
    assert!(matches!(
        evaluate_log(Parser::Pytest, &timed_out, R5).invalid,
        Some(InvalidLog::HarnessMarker { .. })
    ));
}

#[test]
fn region_ends_at_a_second_start_marker() {
    let log = ">>>>> Start Test Output\nPASSED a\n>>>>> Start Test Output\nPASSED b\n>>>>> End Test Output\n";
    let e = evaluate_log(Parser::Pytest, log, R5);
    assert_eq!(e.status_map.len(), 1);
    assert!(e.status_map.contains("a"));
}

#[test]
fn unrecognised_tokens_are_kept_and_uncounted() {
    let m = parse(Parser::Pytest, "PASSED: tests/x.py::t\n", R5).expect("parses");
    assert_eq!(
        m.get("tests/x.py::t"),
        Some(&TestStatus::Unrecognized("PASSED:".into()))
    );
    let outcome = classify(
        "tests/x.py::t",
        &m,
        ExpectedKind::FailToPass,
        EvalType::PassAndFail,
        R5,
    );
    assert_eq!(outcome, Outcome::Uncounted);
}

#[test]
fn parser_names_round_trip() {
    for parser in Parser::ALL {
        assert_eq!(parser.name().parse::<Parser>().ok(), Some(parser));
    }
    assert_eq!(
        "parse_log_astropy".parse::<Parser>().ok(),
        Some(Parser::PytestV2)
    );
    assert!("nope".parse::<Parser>().is_err());
}

#[test]
fn repository_tables() {
    assert_eq!(parser_for_repo("django/django"), Some(Parser::Django));
    assert_eq!(parser_for_repo("sympy/sympy"), Some(Parser::Sympy));
    assert_eq!(parser_for_repo("astropy/astropy"), Some(Parser::PytestV2));
    assert_eq!(parser_for_repo("unknown/repo"), None);
    assert_eq!(eval_type_for_repo("eslint/eslint", R5), EvalType::FailOnly);
    assert_eq!(
        eval_type_for_repo("eslint/eslint", R4),
        EvalType::PassAndFail
    );
    assert_eq!(
        python_test_command("django/django", "1.9"),
        Some("./tests/runtests.py --verbosity 2")
    );
    let patch = "diff --git a/tests/admin_views/tests.py b/tests/admin_views/tests.py\n\
                 diff --git a/tests/fixtures/data.json b/tests/fixtures/data.json\n";
    assert_eq!(
        python_test_command_for_patch("django/django", "3.0", patch).as_deref(),
        Some("./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 admin_views.tests")
    );
}
