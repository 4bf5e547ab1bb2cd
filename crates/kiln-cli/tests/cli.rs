//! The `kiln` binary as a user runs it.
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn kiln(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("KILN_DATABASE_URL")
        .env("KILN_LOAD_DEMO_DATASET", "false")
        .output()
        .expect("run kiln")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn config_masks_secrets_and_rejects_unknown_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["config"])
        .env("KILN_DATABASE_URL", "postgres://kiln:hunter2@db/kiln")
        .env("KILN_LISTEN", "127.0.0.1:9999")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("listen = \"127.0.0.1:9999\""), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");

    let file = dir.path().join("kiln.toml");
    std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["config", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("lisen"), "{}", text(&out.stderr));
}

#[test]
fn credits_grant_adds_to_the_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = kiln(
        &data,
        &[
            "users",
            "create",
            "--name",
            "ann",
            "--email",
            "ann@example.com",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let user = text(&out.stdout).trim().to_string();

    let out = kiln(
        &data,
        &["credits", "grant", "--user", &user, "--cents", "250"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("balance 250 cents"),
        "{}",
        text(&out.stdout)
    );
    let out = kiln(
        &data,
        &[
            "credits",
            "grant",
            "--user",
            &user,
            "--cents",
            "50",
            "--description",
            "welcome",
        ],
    );
    assert!(
        text(&out.stdout).contains("balance 300 cents"),
        "{}",
        text(&out.stdout)
    );

    let out = kiln(
        &data,
        &["credits", "grant", "--user", "usr_nobody", "--cents", "5"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no user"),
        "{}",
        text(&out.stderr)
    );
    let out = kiln(
        &data,
        &["credits", "grant", "--user", &user, "--cents", "0"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("at least 1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn import_reports_bad_records_by_line_and_imports_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let file = dir.path().join("records.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"instance_id\":\"a-1\",\"repo\":\"o/r\",\"base_commit\":\"abcd1234\"}\n",
            "{\"instance_id\":\"a-2\",\"repo\":\"o/r\"}\n",
            "{not json\n",
        ),
    )
    .expect("write");
    let out = kiln(
        &data,
        &[
            "datasets",
            "import",
            file.to_str().expect("utf8"),
            "--name",
            "mine",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("2 problem(s)") && err.contains("nothing was imported"),
        "{err}"
    );
    assert!(
        err.contains("line 2: missing required field base_commit"),
        "{err}"
    );
    assert!(err.contains("line 3: invalid JSON"), "{err}");
    let list = kiln(&data, &["datasets", "list"]);
    assert!(list.status.success());
    assert!(
        !text(&list.stdout).contains("mine"),
        "nothing imported: {}",
        text(&list.stdout)
    );

    std::fs::write(
        &file,
        "[{\"instance_id\":\"a-1\",\"repo\":\"o/r\",\"base_commit\":\"abcd1234\"}]",
    )
    .expect("write");
    let out = kiln(
        &data,
        &[
            "datasets",
            "import",
            file.to_str().expect("utf8"),
            "--name",
            "mine",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 new sample(s), 0 new version(s)"),
        "{}",
        text(&out.stdout)
    );
    let out = kiln(
        &data,
        &[
            "datasets",
            "import",
            file.to_str().expect("utf8"),
            "--name",
            "mine",
        ],
    );
    assert!(
        text(&out.stdout).contains("0 new sample(s), 1 new version(s)"),
        "{}",
        text(&out.stdout)
    );
    let list = kiln(&data, &["datasets", "list"]);
    assert!(
        text(&list.stdout).contains("mine") && text(&list.stdout).contains("1 samples"),
        "{}",
        text(&list.stdout)
    );

    let out = kiln(
        &data,
        &["datasets", "import", "/nonexistent.jsonl", "--name", "mine"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read /nonexistent.jsonl"),
        "{}",
        text(&out.stderr)
    );
    let out = kiln(
        &data,
        &[
            "datasets",
            "import",
            file.to_str().expect("utf8"),
            "--name",
            "../bad",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("dataset name"),
        "{}",
        text(&out.stderr)
    );
}

/// A Parquet file as Hugging Face publishes SWE-bench imports; a binary file that is not
/// Parquet is refused and imports nothing.
#[test]
fn import_reads_parquet_and_refuses_other_binaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let parquet = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-services/tests/data/swebench-hf.parquet");
    let import = |file: &Path| {
        kiln(
            &data,
            &[
                "datasets",
                "import",
                file.to_str().expect("utf8"),
                "--name",
                "hf",
            ],
        )
    };
    let out = import(&parquet);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 new sample(s)"),
        "{}",
        text(&out.stdout)
    );
    let binary = dir.path().join("records.bin");
    std::fs::write(&binary, [0xffu8, 0xfe, 0, 1]).expect("write");
    let out = import(&binary);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nor Parquet"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn users_and_keys_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = kiln(
        dir.path(),
        &[
            "users",
            "create",
            "--name",
            "ann",
            "--email",
            "ann@example.com",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let user = text(&out.stdout).trim().to_string();
    assert!(user.starts_with("usr_"), "{user}");
    let out = kiln(
        dir.path(),
        &["keys", "create", "--user", &user, "--name", "laptop"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).trim().starts_with("kiln_"));
    let out = kiln(dir.path(), &["keys", "create", "--user", "usr_nobody"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no user with id"),
        "{}",
        text(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `kiln serve`, waits for its "serving" line, and returns the child.
fn serve(data: &Path, port: u16) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .env("KILN_LOAD_DEMO_DATASET", "false")
        .env_remove("KILN_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        let done = line.starts_with("Kiln is serving");
        lines.push(line);
        if done {
            break;
        }
    }
    (child, lines)
}

fn stop(mut child: std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "kiln serve exited with {status} on SIGTERM"
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "kiln serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn first_start_creates_an_admin_key_once_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let (child, lines) = serve(&data, port);
    let key_file = data.join("admin.key");
    let key = std::fs::read_to_string(&key_file)
        .expect("admin.key")
        .trim()
        .to_string();
    assert!(
        lines.iter().any(|l| l.trim() == key),
        "the key is printed once: {lines:?}"
    );
    assert_eq!(
        std::fs::metadata(&key_file)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let me = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/users/me"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("send");
    assert_eq!(me.status(), 200);
    stop(child);

    // A second start keeps the same admin and prints no new key.
    let port = free_port();
    let (child, lines) = serve(&data, port);
    assert!(!lines.iter().any(|l| l.contains("kiln_")), "{lines:?}");
    assert_eq!(
        std::fs::read_to_string(&key_file)
            .expect("admin.key")
            .trim(),
        key
    );
    let me = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/users/me"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("send");
    assert_eq!(
        me.status(),
        200,
        "keys and the JWT secret survive a restart"
    );
    stop(child);
}

/// `kiln orgs` against a running server, as the admin key's holder.
#[test]
fn orgs_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let (child, _) = serve(&data, port);
    let url = format!("http://127.0.0.1:{port}/api/v1");
    let orgs = |args: &[&str]| {
        let mut all = vec!["orgs"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &url]);
        kiln(&data, &all)
    };
    let out = orgs(&["create", "Acme Labs", "--slug", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("acme "),
        "{}",
        text(&out.stdout)
    );
    let out = orgs(&["invite", "acme", "bob@example.com", "--role", "admin"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("bob@example.com invited as admin"),
        "{}",
        text(&out.stdout)
    );
    let out = orgs(&["invite", "acme", "not-an-address"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("422"), "{}", text(&out.stderr));
    let out = orgs(&["default", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = orgs(&["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("acme ") && l.contains("owner   * ")),
        "{listed}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("p-") && l.contains("  p ")),
        "{listed}"
    );
    stop(child);
}
