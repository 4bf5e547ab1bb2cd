//! A session's life over the fake backend: create → ready → exec → files → close; expiry;
//! a sandbox that dies; a full node; a failed start; recovery on restart.
use std::time::Duration;

use chrono::Utc;
use kiln_runtime::{Runtime, SandboxId, SandboxSpec};
use kiln_services::sessions::{Action, CreateSession, INFRA_EXIT_CODE, SANDBOX_LOST};
use kiln_services::ServiceError;
use kiln_store::SessionStatus;
use kiln_test_support::Reply;

use crate::harness::{eventually, open, start, DATASET, SAMPLE};

fn sandbox_of(session: &kiln_store::SessionRecord) -> SandboxId {
    SandboxId::new(
        session
            .sandbox_id
            .clone()
            .expect("a ready session has a sandbox"),
    )
    .unwrap()
}

#[tokio::test]
async fn a_session_runs_commands_and_edits_files_until_closed() {
    let env = start(|_| {}).await;
    let session = env.ready().await;
    assert_eq!(session.location.as_deref(), Some("fake"));
    let sandbox = sandbox_of(&session);
    assert_eq!(env.fake.running(), vec![sandbox.clone()]);
    assert_eq!(
        env.fake.reservations(),
        0,
        "the create took the reservation over"
    );

    let hi = env.exec(&session.session_id, "echo hi").await;
    assert_eq!(
        (hi.exit_code, hi.stdout.as_str(), hi.success),
        (0, "hi\n", true)
    );
    env.fake
        .respond("pytest", Reply::exit(1).with_stderr("1 failed\n"));
    let tests = env.exec(&session.session_id, "python -m pytest -q").await;
    assert_eq!((tests.exit_code, tests.stderr.as_str()), (1, "1 failed\n"));

    let upload = Action::Upload {
        path: "/testbed/calc.py".into(),
        content: b"def add(a, b):\n    return a - b\n".to_vec(),
        executable: false,
    };
    assert_eq!(env.run(&session.session_id, upload).await.exit_code, 0);
    let edit = Action::StrReplace {
        path: "/testbed/calc.py".into(),
        old: "a - b".into(),
        new: "a + b".into(),
    };
    let edited = env.run(&session.session_id, edit.clone()).await;
    assert_eq!(edited.exit_code, 0, "{edited:?}");
    assert!(edited.message.unwrap_or_default().contains("(line 2)"));
    let again = env.run(&session.session_id, edit).await;
    assert_eq!(
        again.exit_code, 1,
        "no match is the caller's error: {again:?}"
    );
    assert!(
        again.stderr.contains("did not appear verbatim"),
        "{again:?}"
    );
    let cat = env.exec(&session.session_id, "cat calc.py").await;
    assert_eq!(cat.stdout, "def add(a, b):\n    return a + b\n");

    let closed = env
        .kiln
        .sessions
        .close(&env.user, &session.session_id)
        .await
        .unwrap();
    assert_eq!(closed.status, SessionStatus::Closed);
    assert!(
        env.fake.running().is_empty(),
        "the sandbox went with the session"
    );
    let late = env
        .kiln
        .sessions
        .submit(
            &env.user,
            &session.session_id,
            Action::Exec {
                command: "true".into(),
                timeout_secs: 5,
            },
        )
        .await;
    assert!(matches!(late, Err(ServiceError::Conflict(_))), "{late:?}");
}

#[tokio::test]
async fn another_users_session_is_not_found() {
    let env = start(|_| {}).await;
    let session = env.ready().await;
    let other = env
        .kiln
        .auth
        .create_user("other", "other@example.test", false)
        .await
        .unwrap();
    let seen = env
        .kiln
        .sessions
        .get(&other.user_id, &session.session_id, false)
        .await;
    assert!(
        matches!(seen, Err(ServiceError::NotFound { .. })),
        "{seen:?}"
    );
}

#[tokio::test]
async fn expired_sessions_are_terminated_and_their_sandboxes_destroyed() {
    let env = start(|_| {}).await;
    let session = env.create_with_ttl(Some(1)).await;
    let session = env.settled(&session.session_id).await;
    assert_eq!(env.kiln.sessions.reap_expired(Utc::now()).await, 0);
    let later = Utc::now() + chrono::Duration::minutes(2);
    assert_eq!(env.kiln.sessions.reap_expired(later).await, 1);
    let ended = env.session(&session.session_id).await;
    assert_eq!(ended.status, SessionStatus::Terminated);
    assert_eq!(ended.error_code, None, "an expiry is no error");
    assert!(env.fake.running().is_empty());
}

#[tokio::test]
async fn a_sandbox_that_dies_terminates_its_session_as_lost() {
    let env = start(|_| {}).await;
    let session = env.ready().await;
    let sandbox = sandbox_of(&session);
    // A command in flight when the sandbox dies fails as infrastructure.
    env.fake
        .respond("sleep", Reply::ok("").after(Duration::from_secs(60)));
    let running = env
        .kiln
        .sessions
        .submit(
            &env.user,
            &session.session_id,
            Action::Exec {
                command: "sleep 60".into(),
                timeout_secs: 120,
            },
        )
        .await
        .unwrap();
    eventually("the command starts", || async {
        env.fake
            .exec_log()
            .iter()
            .any(|(_, c)| c == "sleep 60")
            .then_some(())
    })
    .await;
    assert!(env.fake.die(&sandbox, "killed by the test"));

    let ended = eventually("the session ends", || async {
        let s = env.session(&session.session_id).await;
        (s.status != SessionStatus::Ready).then_some(s)
    })
    .await;
    assert_eq!(ended.status, SessionStatus::Terminated);
    assert_eq!(ended.error_code.as_deref(), Some(SANDBOX_LOST));
    assert!(ended
        .error_message
        .unwrap_or_default()
        .contains("killed by the test"));
    let cut = env
        .kiln
        .sessions
        .interaction(
            &env.user,
            &session.session_id,
            &running.interaction_id,
            true,
        )
        .await
        .unwrap();
    assert_eq!(cut.outcome.map(|o| o.exit_code), Some(INFRA_EXIT_CODE));
    let late = env
        .kiln
        .sessions
        .submit(
            &env.user,
            &session.session_id,
            Action::Exec {
                command: "true".into(),
                timeout_secs: 5,
            },
        )
        .await;
    assert!(
        matches!(late, Err(ServiceError::SandboxLost(_))),
        "{late:?}"
    );
    assert!(
        env.fake.running().is_empty(),
        "the dead sandbox was cleaned up"
    );
}

#[tokio::test]
async fn a_full_node_refuses_with_capacity_before_accepting() {
    let env = start(|_| {}).await;
    env.fake.set_capacity(Some(1));
    let first = env.ready().await;
    let refused = env
        .kiln
        .sessions
        .create(CreateSession::sample(&env.user, DATASET, SAMPLE, None))
        .await;
    assert!(
        matches!(refused, Err(ServiceError::Capacity { .. })),
        "{refused:?}"
    );
    let (sessions, total) = env.kiln.sessions.list(&env.user, 10, 0).await.unwrap();
    assert_eq!(
        (sessions.len(), total),
        (1, 1),
        "the refused session was never stored"
    );
    env.kiln
        .sessions
        .close(&env.user, &first.session_id)
        .await
        .unwrap();
    env.ready().await;
}

#[tokio::test]
async fn a_sample_whose_image_the_backend_lacks_is_refused_before_accepting() {
    let env = start(|_| {}).await;
    env.fake
        .forget_image(&kiln_services::sessions::sample_image_reference(
            DATASET, SAMPLE,
        ));
    let refused = env
        .kiln
        .sessions
        .create(CreateSession::sample(&env.user, DATASET, SAMPLE, None))
        .await;
    match refused {
        Err(ServiceError::Conflict(message)) => {
            assert!(message.contains("is not on this server"), "{message}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let (sessions, total) = env.kiln.sessions.list(&env.user, 10, 0).await.unwrap();
    assert_eq!((sessions.len(), total), (0, 0), "nothing was stored");
    assert_eq!(env.fake.creates(), 0);
}

#[tokio::test]
async fn a_sandbox_that_fails_to_start_leaves_the_session_in_error() {
    let env = start(|_| {}).await;
    env.fake.fail_creates(Some("no agent answered"));
    let created = env.create().await;
    let session = env.settled(&created.session_id).await;
    assert_eq!(session.status, SessionStatus::Error);
    assert_eq!(session.error_code.as_deref(), Some("sandbox_start_failed"));
    assert!(session
        .error_message
        .unwrap_or_default()
        .contains("no agent answered"));
    assert_eq!(env.fake.reservations(), 0);
}

#[tokio::test]
async fn a_restart_resumes_live_sandboxes_and_ends_the_rest() {
    let env = start(|_| {}).await;
    let survivor = env.ready().await;
    let vanished = env.ready().await;
    // Cut off by the restart: it never finishes on the first server.
    env.fake
        .respond("sleep", Reply::ok("").after(Duration::from_secs(600)));
    let cut = env
        .kiln
        .sessions
        .submit(
            &env.user,
            &survivor.session_id,
            Action::Exec {
                command: "sleep 600".into(),
                timeout_secs: 900,
            },
        )
        .await
        .unwrap();
    eventually("the command starts", || async {
        env.fake
            .exec_log()
            .iter()
            .any(|(_, c)| c == "sleep 600")
            .then_some(())
    })
    .await;
    // A sandbox nobody knows, and one that vanished while the server was down.
    let stray = SandboxId::new("stray").unwrap();
    env.fake
        .create(SandboxSpec::image(stray.clone(), "kiln/stray:1"))
        .await
        .unwrap();
    env.fake.destroy(&sandbox_of(&vanished)).await.unwrap();

    // The first server goes away without a shutdown (a crash): its sandboxes stay.
    let fake = env.fake.clone();
    let config = env.config.clone();
    let restarted = open(&config, &fake).await;
    let sessions = &restarted.sessions;
    let resumed = sessions
        .get(&env.user, &survivor.session_id, false)
        .await
        .unwrap();
    assert_eq!(resumed.status, SessionStatus::Ready);
    let ended = sessions
        .get(&env.user, &vanished.session_id, false)
        .await
        .unwrap();
    assert_eq!(ended.status, SessionStatus::Terminated);
    assert_eq!(
        fake.running(),
        vec![sandbox_of(&survivor)],
        "the stray sandbox was removed"
    );
    let failed = sessions
        .interaction(&env.user, &survivor.session_id, &cut.interaction_id, false)
        .await
        .unwrap();
    assert_eq!(failed.outcome.map(|o| o.exit_code), Some(INFRA_EXIT_CODE));

    let (_, echo) = sessions
        .submit_and_wait(
            &env.user,
            &survivor.session_id,
            Action::Exec {
                command: "echo back".into(),
                timeout_secs: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(echo.stdout, "back\n", "the resumed session runs commands");
    restarted.shutdown().await;
    assert!(fake.running().is_empty(), "a shutdown stops every sandbox");
}

/// The sandbox is told when its session ends (`SandboxSpec::expires_at`, a Kubernetes
/// claim's `shutdownTime`), and again when an instance's TTL moves it.
#[tokio::test]
async fn the_sandbox_ends_with_its_session_and_follows_a_moved_ttl() {
    let env = start(|_| {}).await;
    let created = env.create_with_ttl(Some(30)).await;
    let session = env.settled(&created.session_id).await;
    let sandbox = sandbox_of(&session);
    let near = |got: Option<std::time::SystemTime>, want: chrono::DateTime<Utc>| {
        let got = chrono::DateTime::<Utc>::from(got.expect("an expiry"));
        (got - want).num_milliseconds().abs() < 1000
    };
    assert!(
        near(env.fake.expiry(&sandbox), session.expires_at),
        "{:?} vs {}",
        env.fake.expiry(&sandbox),
        session.expires_at
    );
    let update = kiln_services::instances::InstanceUpdate {
        ttl_minutes: Some(90),
        ..Default::default()
    };
    let moved = env
        .kiln
        .instances
        .update(&env.user, &session.session_id, update)
        .await
        .unwrap();
    assert_eq!(
        moved.expires_at - session.requested_at,
        chrono::Duration::minutes(90)
    );
    assert!(
        near(env.fake.expiry(&sandbox), moved.expires_at),
        "{:?} vs {}",
        env.fake.expiry(&sandbox),
        moved.expires_at
    );
}
