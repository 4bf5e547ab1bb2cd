//! The fake answers as the local backend and its agent do, where services rely on it.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kiln_protocol::{
    Binary, EditLinesRequest, ErrorCode, ExecEvent, ExecRequest, FileKind, WriteFileRequest,
};
use kiln_runtime::{Limits, Runtime, RuntimeError, SandboxExit, SandboxId, SandboxSpec};
use kiln_test_support::{FakeRuntime, Reply};

fn id(name: &str) -> SandboxId {
    SandboxId::new(name).unwrap()
}

async fn sandbox(fake: &FakeRuntime, name: &str) -> SandboxId {
    fake.create(SandboxSpec::image(id(name), "kiln/fake:1"))
        .await
        .unwrap();
    id(name)
}

fn code(e: RuntimeError) -> ErrorCode {
    e.agent_error().expect("an agent error").code.clone()
}

fn write(path: &str, content: &str, create_parents: bool) -> WriteFileRequest {
    WriteFileRequest {
        path: path.into(),
        content: Binary(content.as_bytes().to_vec()),
        mode: None,
        create_parents,
    }
}

#[tokio::test]
async fn file_operations_give_the_agents_error_codes() {
    let fake = FakeRuntime::new();
    let s = sandbox(&fake, "s1").await;
    let missing = fake.read_file(&s, "/testbed/nope", None).await.unwrap_err();
    assert_eq!(code(missing), ErrorCode::NotFound);
    let dir = fake.read_file(&s, "/testbed", None).await.unwrap_err();
    assert_eq!(code(dir), ErrorCode::IsDirectory);
    let no_parent = fake
        .write_file(&s, write("/a/b/c.txt", "x", false))
        .await
        .unwrap_err();
    assert_eq!(code(no_parent), ErrorCode::NotFound);
    assert_eq!(
        fake.write_file(&s, write("/a/b/c.txt", "hello", true))
            .await
            .unwrap(),
        5
    );
    let under_file = fake
        .write_file(&s, write("/a/b/c.txt/d", "x", true))
        .await
        .unwrap_err();
    assert_eq!(code(under_file), ErrorCode::NotADirectory);

    let part = fake.read_file(&s, "/a/b/c.txt", Some(2)).await.unwrap();
    assert_eq!(
        (part.content.as_bytes(), part.size, part.truncated),
        (&b"he"[..], 5, true)
    );
    let listing = fake.list_dir(&s, "/a/b").await.unwrap();
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(
        (listing.entries[0].name.as_str(), listing.entries[0].kind),
        ("c.txt", FileKind::File)
    );
    assert_eq!(
        code(fake.list_dir(&s, "/a/b/c.txt").await.unwrap_err()),
        ErrorCode::NotADirectory
    );
    assert_eq!(
        fake.stat(&s, "/a/../a/b").await.unwrap().kind,
        FileKind::Dir
    );
}

#[tokio::test]
async fn ranged_reads_and_line_edits_answer_as_the_agent() {
    let fake = FakeRuntime::new();
    let s = sandbox(&fake, "s1").await;
    fake.write_file(&s, write("/t/f.txt", "one\ntwo\nthree\n", true))
        .await
        .unwrap();
    let part = fake.read_file_at(&s, "/t/f.txt", 4, Some(3)).await.unwrap();
    assert_eq!(part.content.as_bytes(), b"two");
    assert!(part.truncated);
    let past = fake.read_file_at(&s, "/t/f.txt", 99, None).await.unwrap();
    assert!(past.content.is_empty() && !past.truncated);

    let edit = |start_line, end_line, new_text: &str| EditLinesRequest {
        path: "/t/f.txt".into(),
        start_line,
        end_line,
        new_text: new_text.into(),
    };
    let replaced = fake.edit_lines(&s, edit(2, 2, "TWO")).await.unwrap();
    assert_eq!(replaced.line, 2);
    let content = fake.read_file(&s, "/t/f.txt", None).await.unwrap();
    assert_eq!(content.content.as_bytes(), b"one\nTWO\nthree\n");
    let outside = fake.edit_lines(&s, edit(5, 5, "x")).await.unwrap_err();
    assert_eq!(code(outside), ErrorCode::LinesOutOfRange { line_count: 3 });
}

#[tokio::test]
async fn str_replace_follows_swe_agents_rules() {
    let fake = FakeRuntime::new();
    let s = sandbox(&fake, "s1").await;
    let text = "one\ntwo\nx\nthree\nx\n";
    fake.write_file(&s, write("/testbed/f", text, false))
        .await
        .unwrap();
    let many = fake
        .str_replace(&s, "/testbed/f", "x", "y")
        .await
        .unwrap_err();
    assert_eq!(
        code(many),
        ErrorCode::MultipleMatches {
            count: 2,
            lines: vec![3, 5]
        }
    );
    let none = fake
        .str_replace(&s, "/testbed/f", "zzz", "y")
        .await
        .unwrap_err();
    assert_eq!(code(none), ErrorCode::NoMatch);
    let done = fake
        .str_replace(&s, "/testbed/f", "two", "2")
        .await
        .unwrap();
    assert_eq!((done.line, done.snippet_start_line), (2, 1));
    let after = fake.read_file(&s, "/testbed/f", None).await.unwrap();
    assert_eq!(after.content.to_string_lossy(), "one\n2\nx\nthree\nx\n");
}

#[tokio::test]
async fn scripts_builtins_timeouts_kills_and_streams() {
    let fake = FakeRuntime::new();
    let s = sandbox(&fake, "s1").await;
    let echo = fake
        .exec(&s, ExecRequest::shell("echo 'hi there'"))
        .await
        .unwrap();
    assert_eq!(
        (echo.exit_code, echo.stdout.to_string_lossy()),
        (0, "hi there\n".into())
    );
    let unknown = fake.exec(&s, ExecRequest::shell("make all")).await.unwrap();
    assert_eq!(unknown.exit_code, 127);

    fake.respond("make", Reply::ok("x".repeat(100)).with_stderr("warn"));
    let capped = fake
        .exec(&s, ExecRequest::shell("make all").max_output_bytes(10))
        .await
        .unwrap();
    assert_eq!(
        (capped.stdout.len(), capped.stdout_truncated_bytes),
        (10, 90)
    );

    fake.respond("slow", Reply::ok("").after(Duration::from_secs(60)));
    let timed_out = fake
        .exec(&s, ExecRequest::shell("slow").timeout_ms(50))
        .await
        .unwrap();
    assert_eq!((timed_out.exit_code, timed_out.timed_out), (124, true));

    let mut events = Vec::new();
    let mut sink = |event: ExecEvent| events.push(event);
    let streamed = fake
        .exec_streaming(&s, ExecRequest::shell("make"), &mut sink)
        .await
        .unwrap();
    assert_eq!(streamed.exit_code, 0);
    assert!(matches!(events[0], ExecEvent::Started { .. }));
    assert_eq!(events.len(), 3, "started, stdout, stderr: {events:?}");

    // Kill a running exec by the id its Started event gave.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let killer = {
        let fake = fake.clone();
        let s = s.clone();
        tokio::spawn(async move {
            let exec_id = rx.await.unwrap();
            fake.kill_exec(&s, exec_id, Some(15)).await.unwrap();
        })
    };
    let mut tx = Some(tx);
    let mut on_start = |event: ExecEvent| {
        if let (ExecEvent::Started { exec_id, .. }, Some(tx)) = (event, tx.take()) {
            let _ = tx.send(exec_id);
        }
    };
    let killed = fake
        .exec_streaming(&s, ExecRequest::shell("slow"), &mut on_start)
        .await
        .unwrap();
    assert_eq!((killed.exit_code, killed.signal), (143, Some(15)));
    killer.await.unwrap();
}

#[tokio::test]
async fn dying_destroying_and_reconciling() {
    let fake = FakeRuntime::new();
    let a = sandbox(&fake, "a").await;
    let b = sandbox(&fake, "b").await;
    let c = sandbox(&fake, "c").await;
    let waiter = {
        let fake = fake.clone();
        let a = a.clone();
        tokio::spawn(async move { fake.wait_exit(&a).await })
    };
    tokio::task::yield_now().await;
    assert!(fake.die(&a, "oom"));
    assert_eq!(
        waiter.await.unwrap().unwrap(),
        SandboxExit::Died {
            reason: "oom".into()
        }
    );
    assert!(fake
        .exec(&a, ExecRequest::shell("true"))
        .await
        .unwrap_err()
        .agent_error()
        .is_none());
    fake.destroy(&b).await.unwrap();
    assert!(matches!(
        fake.wait_exit(&b).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(
        fake.destroy(&b).await,
        Err(RuntimeError::NotFound(_))
    ));

    let report = fake.reconcile(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(report.removed, vec!["c".to_string()]);
    assert!(report.adopted.is_empty());
    assert_eq!(report.lost, vec![a, b]);
    assert!(fake.running().is_empty());
    let _ = c;
}

#[tokio::test]
async fn capacity_counts_reservations_and_sandboxes() {
    let fake = FakeRuntime::new();
    fake.set_capacity(Some(2));
    let limits = Limits::default();
    fake.reserve(&id("r1"), &limits).unwrap();
    sandbox(&fake, "s1").await;
    assert!(matches!(
        fake.reserve(&id("r2"), &limits),
        Err(RuntimeError::Capacity { .. })
    ));
    // The reserved id itself is admitted: its create takes the reservation over.
    sandbox(&fake, "r1").await;
    assert_eq!(fake.reservations(), 0);
    fake.release(&id("nothing"));
    fake.destroy(&id("s1")).await.unwrap();
    fake.reserve(&id("r2"), &limits).unwrap();
}

#[tokio::test]
async fn a_fork_of_a_snapshot_starts_with_its_files() {
    let fake = FakeRuntime::new();
    let s = sandbox(&fake, "s1").await;
    fake.write_file(&s, write("/testbed/kept", "v1", false))
        .await
        .unwrap();
    let snapshot = fake.snapshot(&s).await.unwrap();
    fake.write_file(&s, write("/testbed/kept", "v2", false))
        .await
        .unwrap();
    fake.create(SandboxSpec::fork(id("fork"), &snapshot))
        .await
        .unwrap();
    let forked = fake
        .read_file(&id("fork"), "/testbed/kept", None)
        .await
        .unwrap();
    assert_eq!(forked.content.to_string_lossy(), "v1");
    fake.remove_snapshot(&snapshot.id).await.unwrap();
    assert!(fake.remove_snapshot(&snapshot.id).await.is_err());
}

#[tokio::test]
async fn a_forgotten_image_is_image_not_found_and_starts_nothing() {
    let fake = FakeRuntime::new();
    fake.forget_image("kiln/gone:1");
    assert!(matches!(
        fake.check_image("kiln/gone:1").await,
        Err(RuntimeError::ImageNotFound { .. })
    ));
    fake.check_image("kiln/fake:1").await.unwrap();
    let created = fake
        .create(SandboxSpec::image(id("s1"), "kiln/gone:1"))
        .await;
    assert!(matches!(created, Err(RuntimeError::ImageNotFound { .. })));
    assert!(fake.running().is_empty());
    assert_eq!(fake.reservations(), 0);
}
