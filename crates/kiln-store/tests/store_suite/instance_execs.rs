//! Execs of the instance API: stored running, finished once (output with NUL kept),
//! listed newest first by cursor, failed by restart recovery.
use chrono::Duration;
use kiln_store::{ExecCursor, ExecFinish, ExecStatus, NewInstanceExec, StoreError};

use crate::harness::{base_time, creating_session, new_session, TestDb};

fn new_exec(exec_id: &str, seconds: i64) -> NewInstanceExec {
    NewInstanceExec {
        exec_id: exec_id.to_string(),
        session_id: "sess".into(),
        user_id: "alice".into(),
        command: r#"{"command":"echo hi"}"#.into(),
        cwd: Some("/tmp".into()),
        mode: "stream".into(),
        created_at: base_time() + Duration::seconds(seconds),
    }
}

pub async fn instance_execs_finish_once_and_list_newest_first(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "sess", "alice").await;
    let t = |seconds| base_time() + Duration::seconds(seconds);

    let first = store
        .insert_instance_exec(&new_exec("e-1", 1))
        .await
        .unwrap();
    assert_eq!(first.status, ExecStatus::Running);
    assert_eq!((first.exit_code, first.finished_at), (None, None));
    assert_eq!((first.stdout.as_str(), first.truncated), ("", false));
    assert_eq!(first.cwd.as_deref(), Some("/tmp"));
    let err = store
        .insert_instance_exec(&new_exec("e-1", 2))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let mut orphan = new_exec("e-x", 2);
    orphan.session_id = "nope".into();
    let err = store.insert_instance_exec(&orphan).await.unwrap_err();
    assert!(matches!(err, StoreError::Missing(_)), "{err:?}");

    let finish = ExecFinish {
        status: ExecStatus::Exited,
        exit_code: Some(3),
        signal: None,
        stdout: "a\0b ünï\n".into(),
        stderr: "err".into(),
        truncated: true,
        duration_ms: Some(1234),
        error: None,
        finished_at: t(5),
    };
    let done = store
        .finish_instance_exec("e-1", &finish)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, ExecStatus::Exited);
    assert_eq!((done.exit_code, done.duration_ms), (Some(3), Some(1234)));
    assert_eq!(done.stdout, "a\0b ünï\n");
    assert!(done.truncated);
    assert_eq!(done.finished_at, Some(t(5)));
    assert_eq!(
        store.finish_instance_exec("e-1", &finish).await.unwrap(),
        None,
        "finished once"
    );
    assert_eq!(
        store.get_instance_exec("sess", "e-1").await.unwrap(),
        Some(done.clone())
    );
    assert_eq!(store.get_instance_exec("other", "e-1").await.unwrap(), None);

    for (i, id) in ["e-2", "e-3", "e-4"].iter().enumerate() {
        store
            .insert_instance_exec(&new_exec(id, 2 + i as i64))
            .await
            .unwrap();
    }
    let page = store.list_instance_execs("sess", None, 2).await.unwrap();
    let ids: Vec<_> = page.iter().map(|e| e.exec_id.as_str()).collect();
    assert_eq!(ids, ["e-4", "e-3"]);
    let cursor = ExecCursor {
        created_at: page[1].created_at,
        exec_id: page[1].exec_id.clone(),
    };
    let rest = store
        .list_instance_execs("sess", Some(&cursor), 10)
        .await
        .unwrap();
    let ids: Vec<_> = rest.iter().map(|e| e.exec_id.as_str()).collect();
    assert_eq!(ids, ["e-2", "e-1"]);

    assert_eq!(
        store
            .fail_running_instance_execs("restart", t(9), None, true)
            .await
            .unwrap(),
        3
    );
    let failed = store
        .get_instance_exec("sess", "e-4")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, ExecStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("restart"));
    assert_eq!(failed.finished_at, Some(t(9)));
    let kept = store
        .get_instance_exec("sess", "e-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept, done, "a finished exec is not touched");
}

/// A node's restart fails the execs of its own sessions, of sessions stored without a
/// node (on the data directory's own node) and of ended sessions; another live node's
/// execs run on.
pub async fn a_restart_fails_its_own_nodes_execs_only(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "s-old", "alice").await;
    let at = base_time();
    for (sid, node) in [
        ("s-a", "node-a"),
        ("s-b", "node-b"),
        ("s-b-ended", "node-b"),
    ] {
        store
            .insert_session_on(&new_session(sid, "alice", at), node, None)
            .await
            .unwrap();
    }
    store
        .end_session("s-b-ended", kiln_store::SessionStatus::Closed, at)
        .await
        .unwrap()
        .expect("creating → closed");
    let exec_of = |sid: &str| NewInstanceExec {
        exec_id: format!("e-{sid}"),
        session_id: sid.to_string(),
        ..new_exec("", 1)
    };
    let running = |ids: &[&str]| {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        async move {
            let mut still = Vec::new();
            for sid in ["s-old", "s-a", "s-b", "s-b-ended"] {
                let exec = store
                    .get_instance_exec(sid, &format!("e-{sid}"))
                    .await
                    .unwrap();
                if exec.unwrap().status == ExecStatus::Running {
                    still.push(sid.to_string());
                }
            }
            assert_eq!(still, ids);
        }
    };
    for sid in ["s-old", "s-a", "s-b", "s-b-ended"] {
        store.insert_instance_exec(&exec_of(sid)).await.unwrap();
    }

    // Node A, not the data directory's own: its session's exec and the ended one's.
    let t = at + Duration::seconds(9);
    let failed = store
        .fail_running_instance_execs("restart", t, Some("node-a"), false)
        .await
        .unwrap();
    assert_eq!(failed, 2);
    running(&["s-old", "s-b"]).await;
    // The data directory's own node also takes the sessions stored without a node.
    let failed = store
        .fail_running_instance_execs("restart", t, Some("node-c"), true)
        .await
        .unwrap();
    assert_eq!(failed, 1);
    running(&["s-b"]).await;
    let kept = store
        .get_instance_exec("s-b", "e-s-b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.finished_at, None);
    let gone = store
        .get_instance_exec("s-a", "e-s-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (gone.error.as_deref(), gone.finished_at),
        (Some("restart"), Some(t))
    );
}
