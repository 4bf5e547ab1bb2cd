//! Interactions: numbering within a session, outcomes written once, recovery listing.
use chrono::Duration;
use kiln_store::{InteractionKind, InteractionOutcome, StoreError};

use crate::harness::{
    base_time, creating_session, exec_request, new_interaction, NewInteractionRequest, TestDb,
};

fn outcome(stdout: &str, seconds: i64) -> InteractionOutcome {
    InteractionOutcome {
        exit_code: 3,
        stdout: stdout.to_string(),
        stderr: "warning: ünïcödé\n".into(),
        execution_time_seconds: 0.1 + 0.2,
        success: false,
        message: Some("command exited with 3".into()),
        finished_at: base_time() + Duration::seconds(seconds) + Duration::nanoseconds(1),
    }
}

pub async fn interactions_are_numbered_and_completed_once(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "sess", "alice").await;
    let t = |seconds| base_time() + Duration::seconds(seconds);

    let first = store
        .insert_interaction(&new_interaction(
            "i-1",
            "sess",
            exec_request("ls -la"),
            t(1),
        ))
        .await
        .unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.kind, InteractionKind::ExecCommand);
    assert_eq!(first.created_at, t(1));
    assert_eq!(
        first.request,
        serde_json::json!({ "command": "ls -la", "command_timeout": 30 })
    );
    assert_eq!(first.outcome, None);

    let replace = NewInteractionRequest {
        kind: InteractionKind::StringReplace,
        request: serde_json::json!({
            "file_path": "/src/a.py", "str_to_replace": "a\u{0}b \"q\"", "str_to_insert": "ü\n",
        }),
    };
    let second = store
        .insert_interaction(&new_interaction("i-2", "sess", replace, t(2)))
        .await
        .unwrap();
    assert_eq!(
        (second.seq, second.kind),
        (2, InteractionKind::StringReplace)
    );
    let upload = NewInteractionRequest {
        kind: InteractionKind::FileUpload,
        request: serde_json::json!({ "file_path": "/x.sh", "size_bytes": 12, "make_executable": true }),
    };
    let third = store
        .insert_interaction(&new_interaction("i-3", "sess", upload, t(3)))
        .await
        .unwrap();
    assert_eq!((third.seq, third.kind), (3, InteractionKind::FileUpload));
    assert_eq!(
        store.get_interaction("sess", "i-2").await.unwrap(),
        Some(second.clone())
    );

    // Output with a NUL, multi-byte characters and a float that is not exactly 0.3.
    let done = outcome("line 1\n\u{0}binary\u{0}\n✓ done", 4);
    assert!(store.complete_interaction("i-1", &done).await.unwrap());
    let completed = store.get_interaction("sess", "i-1").await.unwrap().unwrap();
    let stored = completed.outcome.clone().expect("outcome recorded");
    assert_eq!(
        stored.finished_at,
        base_time() + Duration::seconds(4),
        "microseconds"
    );
    assert_eq!(
        stored,
        InteractionOutcome {
            finished_at: stored.finished_at,
            ..done.clone()
        }
    );
    assert_eq!(
        (completed.seq, completed.request.clone()),
        (1, first.request.clone())
    );

    // Never overwritten.
    let other = InteractionOutcome {
        exit_code: 0,
        success: true,
        message: None,
        ..outcome("", 9)
    };
    assert!(!store.complete_interaction("i-1", &other).await.unwrap());
    assert_eq!(
        store.get_interaction("sess", "i-1").await.unwrap(),
        Some(completed)
    );

    // An outcome without a message, and with empty output.
    assert!(store.complete_interaction("i-2", &other).await.unwrap());
    let second_done = store.get_interaction("sess", "i-2").await.unwrap().unwrap();
    let stored = second_done.outcome.unwrap();
    assert_eq!(
        (stored.exit_code, stored.success, stored.message),
        (0, true, None)
    );
    assert_eq!(
        (stored.stdout.as_str(), stored.execution_time_seconds),
        ("", 0.1 + 0.2)
    );

    let unfinished = store.list_unfinished_interactions().await.unwrap();
    assert_eq!(unfinished, vec![third]);
}

pub async fn interactions_belong_to_their_session(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "s-a", "alice").await;
    creating_session(store, "s-b", "bob").await;
    let t = |seconds| base_time() + Duration::seconds(seconds);
    // Numbering is per session.
    let mut seqs = Vec::new();
    for (id, session, at) in [
        ("a1", "s-a", 1),
        ("b1", "s-b", 2),
        ("a2", "s-a", 3),
        ("b2", "s-b", 0),
    ] {
        let record = store
            .insert_interaction(&new_interaction(id, session, exec_request(id), t(at)))
            .await
            .unwrap();
        seqs.push((id, record.seq));
    }
    assert_eq!(seqs, [("a1", 1), ("b1", 1), ("a2", 2), ("b2", 2)]);

    assert_eq!(
        store.get_interaction("s-b", "a1").await.unwrap(),
        None,
        "other session"
    );
    assert_eq!(store.get_interaction("s-a", "nope").await.unwrap(), None);
    assert_eq!(store.get_interaction("nope", "a1").await.unwrap(), None);
    // A caller's read: only their own session's interactions.
    let mine = store
        .get_users_interaction("alice", "s-a", "a1")
        .await
        .unwrap();
    assert_eq!(mine, store.get_interaction("s-a", "a1").await.unwrap());
    assert!(mine.is_some());
    for (user, session, id) in [
        ("bob", "s-a", "a1"),
        ("alice", "s-b", "a1"),
        ("alice", "s-b", "b1"),
    ] {
        assert_eq!(
            store
                .get_users_interaction(user, session, id)
                .await
                .unwrap(),
            None,
            "{user} {session} {id}"
        );
    }
    assert!(!store
        .complete_interaction("nope", &outcome("x", 1))
        .await
        .unwrap());

    // Oldest first, across sessions.
    let unfinished: Vec<_> = store
        .list_unfinished_interactions()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.interaction_id)
        .collect();
    assert_eq!(unfinished, ["b2", "a1", "b1", "a2"]);
}

pub async fn failed_interaction_inserts_use_no_number(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "sess", "alice").await;
    let insert = |id: &'static str, session: &'static str| {
        let store = db.store.clone();
        async move {
            let new = new_interaction(id, session, exec_request(id), base_time());
            store.insert_interaction(&new).await
        }
    };
    assert_eq!(insert("i-1", "sess").await.unwrap().seq, 1);

    let taken = insert("i-1", "sess").await;
    assert!(
        matches!(taken, Err(StoreError::Conflict("interaction_id"))),
        "{taken:?}"
    );
    let unknown = insert("i-x", "no-such-session").await;
    assert!(
        matches!(unknown, Err(StoreError::Missing("session"))),
        "{unknown:?}"
    );
    assert_eq!(
        store
            .get_interaction("no-such-session", "i-x")
            .await
            .unwrap(),
        None
    );

    assert_eq!(
        insert("i-2", "sess").await.unwrap().seq,
        2,
        "no gap after a failure"
    );
}
