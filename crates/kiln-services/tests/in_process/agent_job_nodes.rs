//! Agent jobs, execs and base images across nodes (issue 12): Kilns on one PostgreSQL
//! database, each its own data directory's node. A node that starts leaves another live
//! node's running job, background exec and base image preparation alone; a node marked
//! down has its jobs ended in error (and, when it beats again, it stops their runners
//! and destroys their sandboxes), and the next node to start fails its preparations. Skipped without
//! KILN_TEST_POSTGRES_URL (not under CI).
use std::time::Duration;

use kiln_config::Secret;
use kiln_services::instances::exec::{ExecCommand, ExecMode, ExecSpec};
use kiln_store::{
    AgentJobRecord, BaseImageStatus, ExecStatus, JobStatus, NewBaseImage, NodeStatus,
};
use kiln_test_support::postgres::{admin_url, Locale, TestDatabase};
use kiln_test_support::{FakeRuntime, Reply};

use crate::agent_jobs::{create_job, make_repo};
use crate::harness::{config, eventually, open_as_node, start_as_node, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_leaves_live_nodes_jobs_alone_and_a_lost_nodes_jobs_end() {
    let Some(admin) = admin_url() else { return };
    let db = TestDatabase::create(&admin, "kiln_job_nodes", Locale::ServerDefault).await;
    let (root, repo) = make_repo();
    let on_db = |c: &mut kiln_config::Config| {
        c.database_url = Some(Secret::new(db.url.clone()));
        c.agent_jobs.local_repo_root = Some(root.path().to_path_buf());
        // Quick beats; nobody is taken down by the clock within the test.
        c.cluster.heartbeat_interval_ms = 100;
        c.cluster.down_after_ms = 60_000;
    };
    let a = start_as_node(on_db).await;
    let node_a = a.kiln.cluster.node_id().expect("A is a node").to_string();
    // The agent runs long: the job stays `running` on A through the test.
    let job = long_running_job(&a, &repo).await;
    assert_eq!(job.node_id.as_deref(), Some(node_a.as_str()));
    let get = || async { a.kiln.agent_jobs.get(&a.user, &job.job_id).await.unwrap() };

    // And a background exec in an instance of A.
    let session = a.ready().await;
    let sid = session.session_id.as_str();
    a.fake
        .respond("sleep 100", Reply::ok("").after(Duration::from_secs(120)));
    let exec = a
        .kiln
        .instances
        .exec(
            &a.user,
            sid,
            ExecSpec {
                command: ExecCommand::Shell("sleep 100".into()),
                timeout_secs: None,
                cwd: None,
                env: Default::default(),
                stdin: None,
                mode: ExecMode::Background,
            },
        )
        .await
        .unwrap();
    let job_sandbox =
        |running: Vec<kiln_runtime::SandboxId>| running.iter().any(|id| id.as_str() == job.job_id);
    assert!(job_sandbox(a.fake.running()));

    // And a base image A is preparing (as its row says).
    let store = kiln_store::connect(&db.url).await.unwrap();
    store
        .insert_base_image(
            &NewBaseImage {
                image_id: "bim_on_a".into(),
                family: "py".into(),
                source: "from:x".into(),
                created_by: a.user.clone(),
                created_at: chrono::Utc::now(),
                node_id: Some(node_a.clone()),
            },
            kiln_store::BaseImageLimits {
                max_versions_per_family: 10,
                max_preparing: 10,
            },
        )
        .await
        .unwrap();
    let base_image = || async { store.get_base_image("bim_on_a").await.unwrap().unwrap() };

    // Node B starts on the same database: its recovery is its own node's.
    let dir_b = tempfile::tempdir().unwrap();
    let mut config_b = config(dir_b.path());
    on_db(&mut config_b);
    let b = open_as_node(&config_b, &FakeRuntime::new()).await;
    assert_ne!(b.cluster.node_id(), Some(node_a.as_str()));
    let still = get().await;
    assert_eq!(still.status, JobStatus::Running, "{still:?}");
    assert!(job_sandbox(a.fake.running()), "A's job sandbox runs on");
    let exec_now = a
        .kiln
        .instances
        .exec_get(&a.user, sid, &exec.exec_id)
        .await
        .unwrap();
    assert_eq!(exec_now.status, ExecStatus::Running, "{exec_now:?}");
    assert_eq!(base_image().await.status, BaseImageStatus::Preparing);

    // An admin on B marks A down: A's job ends in error, naming the lost node.
    let root_user = b
        .auth
        .create_user("root", "root@example.test", true)
        .await
        .unwrap();
    b.cluster
        .set_status(&root_user, &node_a, NodeStatus::Down)
        .await
        .unwrap();
    assert_ended_as_lost(get().await, &node_a);

    // A, alive after all, beats: it stops the runner and destroys the job's
    // sandbox, and registers again.
    eventually("A drops the ended job's sandbox", || async {
        (!job_sandbox(a.fake.running())).then_some(())
    })
    .await;
    assert_eq!(get().await.status, JobStatus::Error);

    // A node that starts now finds A down: A's preparation will never end, and fails.
    // (A has registered again meanwhile: it stops beating, a beat under way ends, and
    // it is taken down once more.)
    a.kiln.cluster.shutdown();
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.cluster
        .set_status(&root_user, &node_a, NodeStatus::Down)
        .await
        .unwrap();
    let dir_c = tempfile::tempdir().unwrap();
    let mut config_c = config(dir_c.path());
    on_db(&mut config_c);
    let _c = open_as_node(&config_c, &FakeRuntime::new()).await;
    let failed = base_image().await;
    assert_eq!(failed.status, BaseImageStatus::Failed, "{failed:?}");
    let error = failed.error.unwrap_or_default();
    assert!(error.contains(&node_a) && error.contains("lost"), "{error}");
}

/// A node that finds itself marked down before anyone ended its work (the admin's reclaim
/// still under way, or never done: here the row is set down directly) ends its agent jobs
/// itself, as lost, and drops their sandboxes, instead of keeping them after it registers
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_marked_down_before_its_jobs_were_ended_ends_them_itself() {
    let Some(admin) = admin_url() else { return };
    let db = TestDatabase::create(&admin, "kiln_job_nodes_self", Locale::ServerDefault).await;
    let (root, repo) = make_repo();
    let a = start_as_node(|c| {
        c.database_url = Some(Secret::new(db.url.clone()));
        c.agent_jobs.local_repo_root = Some(root.path().to_path_buf());
        c.cluster.heartbeat_interval_ms = 100;
        c.cluster.down_after_ms = 60_000;
    })
    .await;
    let node_a = a.kiln.cluster.node_id().expect("A is a node").to_string();
    let job = long_running_job(&a, &repo).await;
    let get = || async { a.kiln.agent_jobs.get(&a.user, &job.job_id).await.unwrap() };
    let store = kiln_store::connect(&db.url).await.unwrap();
    store
        .set_node_status(&node_a, NodeStatus::Down)
        .await
        .unwrap()
        .expect("A's row");
    eventually("A drops its job's sandbox", || async {
        (!a.fake.running().iter().any(|id| id.as_str() == job.job_id)).then_some(())
    })
    .await;
    assert_ended_as_lost(get().await, &node_a);
    // The sandbox is dropped before A registers again: wait for the registration.
    eventually("A registers again", || async {
        let back = store.get_node(&node_a).await.unwrap().expect("A's row");
        (back.status != NodeStatus::Down).then_some(())
    })
    .await;
}

/// The job ended in error, its message naming the node that was lost.
fn assert_ended_as_lost(job: AgentJobRecord, node: &str) {
    assert_eq!(job.status, JobStatus::Error, "{job:?}");
    let message = job.error_message.unwrap_or_default();
    assert!(
        message.contains(node) && message.contains("lost"),
        "{message}"
    );
}

/// An agent job of `env`'s user whose agent answers after two minutes, once it runs.
async fn long_running_job(env: &Env, repo: &std::path::Path) -> AgentJobRecord {
    env.fake.respond(
        "agent.sh",
        Reply::ok("done\n").after(Duration::from_secs(120)),
    );
    let job = create_job(env, repo).await;
    eventually("the job runs its agent", || async {
        let now = env
            .kiln
            .agent_jobs
            .get(&env.user, &job.job_id)
            .await
            .unwrap();
        (now.status == JobStatus::Running).then_some(())
    })
    .await;
    job
}
