//! Snapshots, checkpoints, rollback and forks over real HTTP on real sandboxes (`/v1`),
//! on SQLite, or PostgreSQL with `KILN_TEST_DATABASE_URL` (scripts/test.sh runs both).
use crate::{common, sandbox};

use std::time::{Duration, Instant};

use common::{assert_error, assert_validation, TestServer};
use reqwest::Method;
use sandbox::create_ready;
use serde_json::{json, Value};

/// Small sandboxes, so that a test can run a dozen side by side.
fn small(c: &mut kiln_config::Config) {
    c.runtime.memory_mib = 128;
    c.runtime.disk_mib = 256;
}

/// Runs `command` in instance `id` (through the Codeset exec) and returns its stdout;
/// it must exit 0.
async fn sh(s: &TestServer, key: &str, id: &str, command: &str) -> String {
    let iid = sandbox::start_exec(s, key, id, command).await;
    let done = sandbox::finished(s, key, id, &iid).await;
    assert_eq!(done["exit_code"], 0, "{command}: {done}");
    done["stdout"].as_str().unwrap_or_default().to_string()
}

async fn snapshot(s: &TestServer, key: &str, id: &str, body: Value) -> Value {
    let (status, snap) = s
        .v1_as(
            key,
            Method::POST,
            &format!("/instances/{id}/snapshots"),
            Some(&body),
        )
        .await;
    assert_eq!(status, 201, "{snap}");
    snap
}

/// Waits (the GET long-polls) until the session is no longer creating; it must be ready.
async fn wait_ready(s: &TestServer, key: &str, id: &str) {
    let session = s.get_ok(key, &format!("/sessions/{id}")).await;
    assert_eq!(session["status"], "ready", "{session}");
}

fn ids(instances: &Value) -> Vec<String> {
    instances
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["instance_id"].as_str().expect("id").to_string())
        .collect()
}

/// The runtime's name of a stored snapshot, and whether the store says it was purged.
async fn stored(s: &TestServer, snapshot_id: &str) -> (String, bool) {
    let record = s
        .store()
        .await
        .get_snapshot(snapshot_id)
        .await
        .expect("store")
        .expect("stored");
    (record.runtime_ref, record.purged_at.is_some())
}

fn layer_exists(s: &TestServer, runtime_ref: &str) -> bool {
    s.kiln
        .config
        .data_dir
        .join("runtime/layers")
        .join(runtime_ref)
        .exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_forks_diverge_independently() {
    let Some(s) = sandbox::start_if_possible(small).await else {
        return;
    };
    let key = s.admin_key.clone();
    let parent = create_ready(&s, &key).await;
    sh(&s, &key, &parent, "echo base > /testbed/base.txt").await;

    let (status, forked) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{parent}/fork"),
            Some(&json!({"count": 10})),
        )
        .await;
    assert_eq!(status, 201, "{forked}");
    let forks = ids(&forked["instances"]);
    assert_eq!(forks.len(), 10);
    for instance in forked["instances"].as_array().expect("instances") {
        assert_eq!(instance["status"], "creating", "{instance}");
    }
    // The parent moves on after the fork: no copy sees it.
    sh(&s, &key, &parent, "echo later > /testbed/parent-only.txt").await;
    for (n, id) in forks.iter().enumerate() {
        wait_ready(&s, &key, id).await;
        sh(&s, &key, id, &format!("echo {n} > /testbed/mine.txt")).await;
        if n == 0 {
            sh(&s, &key, id, "rm /testbed/base.txt").await;
        }
    }
    for (n, id) in forks.iter().enumerate() {
        let seen = sh(
            &s,
            &key,
            id,
            "cat /testbed/mine.txt; cat /testbed/base.txt 2>/dev/null; ls /testbed",
        )
        .await;
        let base = if n == 0 { "" } else { "base\n" };
        assert!(
            seen.starts_with(&format!("{n}\n{base}")),
            "fork {n} sees only its own writes: {seen:?}"
        );
        assert!(!seen.contains("parent-only"), "fork {n}: {seen:?}");
    }
    let parent_sees = sh(&s, &key, &parent, "cat /testbed/base.txt; ls /testbed").await;
    assert!(parent_sees.starts_with("base\n"), "{parent_sees:?}");
    assert!(!parent_sees.contains("mine.txt"), "{parent_sees:?}");
    // The copies are instances of the same sample: a Codeset GET shows them.
    let one = s.get_ok(&key, &format!("/sessions/{}", forks[3])).await;
    assert_eq!(one["sample_id"], sandbox::SAMPLE, "{one}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_files_byte_for_byte() {
    let Some(s) = sandbox::start_if_possible(small).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let sums = "cd /testbed && find . -type f -o -type l | sort | xargs sha256sum; stat -c '%n %a %F %u' sub sub/nul link blob 2>&1; true";
    sh(
        &s,
        &key,
        &id,
        "cd /testbed && dd if=/dev/urandom of=blob bs=1024 count=2048 2>/dev/null \
         && mkdir sub && printf 'a\\0b' > sub/nul && ln -s blob link && chmod 600 sub/nul",
    )
    .await;
    let before = sh(&s, &key, &id, sums).await;
    let first = snapshot(&s, &key, &id, json!({"kind": "checkpoint", "name": "one"})).await;
    assert_eq!(first["kind"], "checkpoint");
    assert!(
        first["size_bytes"].as_u64().expect("size") >= 2 << 20,
        "{first}"
    );

    sh(
        &s,
        &key,
        &id,
        "cd /testbed && dd if=/dev/zero of=blob bs=1024 count=1 conv=notrunc 2>/dev/null \
         && rm -r sub hello.txt && echo new > new.txt",
    )
    .await;
    assert_ne!(sh(&s, &key, &id, sums).await, before);
    snapshot(&s, &key, &id, json!({"kind": "checkpoint", "name": "two"})).await;

    // To a named checkpoint: everything as it was, the later file gone.
    let (status, rolled) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/rollback"),
            Some(&json!({"checkpoint": "one"})),
        )
        .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["instance"]["instance_id"], id.as_str());
    assert_eq!(rolled["snapshot_id"], first["snapshot_id"]);
    assert_eq!(sh(&s, &key, &id, sums).await, before);
    let gone = sh(&s, &key, &id, "ls /testbed/new.txt 2>&1 || true").await;
    assert!(gone.contains("No such file"), "{gone}");

    // The latest checkpoint (no body): "two".
    let (status, rolled) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/rollback"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(sh(&s, &key, &id, "cat /testbed/new.txt").await, "new\n");

    // The instance lives on with its id: ready, not reported lost, commands run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let session = s.get_ok(&key, &format!("/sessions/{id}")).await;
    assert_eq!(session["status"], "ready", "{session}");
    let (status, body) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/rollback"),
            Some(&json!({"checkpoint": "nope"})),
        )
        .await;
    assert_error(status, &body, 404, "not_found");

    // The store knows the new sandbox: a crash and restart adopt it, with its files.
    let s = s.restart(false).await;
    let session = s.get_ok(&key, &format!("/sessions/{id}")).await;
    assert_eq!(session["status"], "ready", "{session}");
    assert_eq!(sh(&s, &key, &id, "cat /testbed/new.txt").await, "new\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_survives_a_restart_and_restores_after_it() {
    let Some(s) = sandbox::start_if_possible(small).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    sh(&s, &key, &id, "echo kept > /testbed/kept.txt").await;
    let snap = snapshot(&s, &key, &id, json!({"name": "before-restart"})).await;
    let sid = snap["snapshot_id"].as_str().expect("id").to_string();
    // A copy the runtime took but the store never recorded (a crash between the two),
    // made to look like one: its layer with a file, and its record beside it.
    let layers = s.kiln.config.data_dir.join("runtime/layers");
    let stray = format!("{id}-0dead");
    std::fs::create_dir_all(layers.join(&stray).join("testbed")).expect("stray layer");
    std::fs::write(layers.join(&stray).join("testbed/x"), "x").expect("stray file");
    std::fs::write(layers.join(format!("{stray}.json")), "{}").expect("stray record");

    // Graceful: the instance's sandbox is stopped, so the instance ends at the restart.
    let s = s.restart(true).await;
    assert!(
        !layer_exists(&s, &stray),
        "an unrecorded copy is removed at start"
    );
    assert!(
        !layers.join(format!("{stray}.json")).exists(),
        "with its record"
    );
    assert!(
        layer_exists(&s, &stored(&s, &sid).await.0),
        "a recorded one stays"
    );
    let (status, listed) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/snapshots"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["snapshots"][0]["snapshot_id"],
        sid.as_str(),
        "{listed}"
    );
    assert_eq!(listed["snapshots"][0]["name"], "before-restart");

    // Into the ended instance: nothing to restore into. Into a new one: the files.
    let restore = format!("/instances/{id}/snapshots/{sid}/restore");
    let (status, body) = s.v1_as(&key, Method::POST, &restore, None).await;
    assert_error(status, &body, 409, "conflict");
    let (status, restored) = s
        .v1_as(
            &key,
            Method::POST,
            &restore,
            Some(&json!({"new_instance": true})),
        )
        .await;
    assert_eq!(status, 201, "{restored}");
    assert_eq!(restored["new_instance"], true);
    let new = restored["instance"]["instance_id"].as_str().expect("id");
    wait_ready(&s, &key, new).await;
    assert_eq!(sh(&s, &key, new, "cat /testbed/kept.txt").await, "kept\n");
    // A snapshot of the restored instance names its parent.
    let child = snapshot(&s, &key, new, json!({})).await;
    assert_eq!(child["parent_snapshot_id"], sid.as_str(), "{child}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_snapshot_stays_while_an_instance_stands_on_it() {
    let Some(s) = sandbox::start_if_possible(small).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    sh(&s, &key, &id, "echo one > /testbed/one.txt").await;
    let snap = snapshot(&s, &key, &id, json!({"name": "base"})).await;
    let sid = snap["snapshot_id"].as_str().expect("id").to_string();
    let (status, restored) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/snapshots/{sid}/restore"),
            Some(&json!({"new_instance": true})),
        )
        .await;
    assert_eq!(status, 201, "{restored}");
    let child = restored["instance"]["instance_id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_ready(&s, &key, &child).await;

    let path = format!("/instances/{id}/snapshots/{sid}");
    let (status, deleted) = s.v1_as(&key, Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted["removed"], false,
        "an instance stands on it: {deleted}"
    );
    let (status, body) = s.v1_as(&key, Method::GET, &path, None).await;
    assert_error(status, &body, 404, "not_found");
    let (runtime_ref, purged) = stored(&s, &sid).await;
    assert!(!purged && layer_exists(&s, &runtime_ref));
    // The instance on it still works, and its name is free again.
    assert_eq!(sh(&s, &key, &child, "cat /testbed/one.txt").await, "one\n");
    snapshot(&s, &key, &id, json!({"name": "base"})).await;

    // Its last instance ends: the GC removes it.
    let (status, body) = s.delete_as(&key, &format!("/sessions/{child}")).await;
    assert_eq!(status, 200, "{body}");
    let since = Instant::now();
    while !stored(&s, &sid).await.1 && since.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored(&s, &sid).await.1, "purged once nothing stands on it");
    assert!(!layer_exists(&s, &runtime_ref), "and gone from the runtime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_names_validation_and_other_users() {
    let Some(s) = sandbox::start_if_possible(|c| {
        small(c);
        c.snapshots.max_per_user = 2;
    })
    .await
    else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let base = format!("/instances/{id}/snapshots");
    let a = snapshot(&s, &key, &id, json!({"name": "a"})).await;
    let (status, body) = s
        .v1_as(&key, Method::POST, &base, Some(&json!({"name": "a"})))
        .await;
    assert_error(status, &body, 409, "conflict");
    snapshot(&s, &key, &id, json!({"name": "b"})).await;
    let (status, body) = s
        .v1_as(&key, Method::POST, &base, Some(&json!({"name": "c"})))
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(body.to_string().contains("max_per_user"), "{body}");
    // A delete frees room.
    let aid = a["snapshot_id"].as_str().expect("id");
    let (status, _) = s
        .v1_as(&key, Method::DELETE, &format!("{base}/{aid}"), None)
        .await;
    assert_eq!(status, 200);
    snapshot(&s, &key, &id, json!({"name": "c"})).await;

    for (body, loc) in [
        (json!({"name": ""}), vec!["body", "name"]),
        (json!({"name": "a/b"}), vec!["body", "name"]),
        (json!({"name": "x".repeat(129)}), vec!["body", "name"]),
        (json!({"kind": "tarball"}), vec!["body", "kind"]),
    ] {
        let (status, answer) = s.v1_as(&key, Method::POST, &base, Some(&body)).await;
        assert_validation(status, &answer, &loc);
    }
    let fork = format!("/instances/{id}/fork");
    for count in [0, 101] {
        let (status, answer) = s
            .v1_as(&key, Method::POST, &fork, Some(&json!({"count": count})))
            .await;
        assert_validation(status, &answer, &["body", "count"]);
    }
    let (status, answer) = s.v1_as(&key, Method::POST, &fork, None).await;
    assert_validation(status, &answer, &["body"]);

    // Someone else sees nothing of it.
    let (_, other) = s.user("other").await;
    let listed = s.v1_as(&key, Method::GET, &base, None).await.1;
    let sid = listed["snapshots"][0]["snapshot_id"]
        .as_str()
        .expect("id")
        .to_string();
    for (method, path, body) in [
        (Method::GET, base.clone(), None),
        (Method::POST, base.clone(), Some(json!({}))),
        (Method::GET, format!("{base}/{sid}"), None),
        (Method::DELETE, format!("{base}/{sid}"), None),
        (
            Method::POST,
            format!("{base}/{sid}/restore"),
            Some(json!({"new_instance": true})),
        ),
        (Method::POST, format!("/instances/{id}/rollback"), None),
        (Method::POST, fork.clone(), Some(json!({"count": 1}))),
    ] {
        let (status, answer) = s.v1_as(&other, method, &path, body.as_ref()).await;
        assert_error(status, &answer, 404, "not_found");
    }
    // Nor through an instance of their own.
    let theirs = create_ready(&s, &other).await;
    let (status, answer) = s
        .v1_as(
            &other,
            Method::GET,
            &format!("/instances/{theirs}/snapshots/{sid}"),
            None,
        )
        .await;
    assert_error(status, &answer, 404, "not_found");
    // The owner's snapshot is still there.
    let (status, _) = s
        .v1_as(&key, Method::GET, &format!("{base}/{sid}"), None)
        .await;
    assert_eq!(status, 200);

    // Every route is in the served document, with its schemas.
    let (status, doc) = s.v1_as(&key, Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    for path in [
        "/instances/{id}/snapshots",
        "/instances/{id}/snapshots/{snapshot_id}",
        "/instances/{id}/snapshots/{snapshot_id}/restore",
        "/instances/{id}/rollback",
        "/instances/{id}/fork",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    for schema in [
        "SnapshotView",
        "ForkRequest",
        "ForkResponse",
        "RestoreResponse",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

/// Snapshots racing rollbacks of the same instance (found by the API fuzzer: a snapshot
/// froze the sandbox a rollback was replacing, and answered 500): each call succeeds or
/// is a 409, never a server error, and the instance ends up ready with its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_racing_rollbacks_are_never_a_server_error() {
    let Some(s) = sandbox::start_if_possible(small).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    // Enough changed bytes that a snapshot takes a while to copy.
    sh(
        &s,
        &key,
        &id,
        "echo kept > /testbed/kept.txt && head -c 100000000 /dev/urandom > /testbed/big",
    )
    .await;
    snapshot(&s, &key, &id, json!({"kind": "checkpoint", "name": "base"})).await;
    let mut snapshots = Vec::new();
    let (snap_path, back_path, fork_path) = (
        format!("/instances/{id}/snapshots"),
        format!("/instances/{id}/rollback"),
        format!("/instances/{id}/fork"),
    );
    let (empty, one) = (json!({}), json!({"count": 1}));
    for round in 0..30 {
        // Started a little later each round: somewhere in the rollback's create and swap.
        let snap = async {
            tokio::time::sleep(Duration::from_millis(2 * round)).await;
            s.v1_as(&key, Method::POST, &snap_path, Some(&empty)).await
        };
        let rollback = s.v1_as(&key, Method::POST, &back_path, Some(&empty));
        let fork = s.v1_as(&key, Method::POST, &fork_path, Some(&one));
        let ((snap_status, snap), (back_status, back), (fork_status, forked)) =
            tokio::join!(snap, rollback, fork);
        assert!(
            [201, 409].contains(&snap_status),
            "round {round}: {snap_status} {snap}"
        );
        assert!(
            [200, 409].contains(&back_status),
            "round {round}: {back_status} {back}"
        );
        assert!(
            [201, 202, 409, 429].contains(&fork_status),
            "round {round}: {fork_status} {forked}"
        );
        if snap_status == 201 {
            snapshots.push(snap["snapshot_id"].as_str().unwrap_or_default().to_string());
        }
        for made in forked["instances"].as_array().into_iter().flatten() {
            let fork_id = made["instance_id"].as_str().unwrap_or_default();
            s.v1_as(&key, Method::DELETE, &format!("/instances/{fork_id}"), None)
                .await;
        }
        // Snapshots do not pile up against the quota.
        for snapshot_id in snapshots.drain(..) {
            s.v1_as(
                &key,
                Method::DELETE,
                &format!("/instances/{id}/snapshots/{snapshot_id}"),
                None,
            )
            .await;
        }
    }
    wait_ready(&s, &key, &id).await;
    assert_eq!(sh(&s, &key, &id, "cat /testbed/kept.txt").await, "kept\n");
}
