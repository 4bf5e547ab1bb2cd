//! The instance file routes over real HTTP on real sandboxes: byte-exact round trips,
//! ranges, modes, atomic writes, edits, listings, limits, ownership and the 422 shapes.
//! (Confinement to the sandbox: `v1_files_escape.rs`.)
use crate::{common, files_support, sandbox};

use std::time::{Duration, Instant};

use base64::Engine;
use common::{assert_error, assert_validation, json, TestServer};
use files_support::{files, get_raw, put_raw, random_bytes, run};
use reqwest::Method;
use sandbox::{create_ready, finished, start_exec};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_round_trip_exactly_in_whole_and_in_ranges() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;

    // Larger than one agent read (4 MiB), so the server reads it in two.
    let blob = random_bytes(5 * 1024 * 1024);
    assert!(blob.contains(&0));
    let (status, written) = put_raw(
        &s,
        &key,
        &id,
        "path=data/blob.bin&create_parents=true&mode=0600",
        blob.clone(),
    )
    .await;
    assert_eq!(status, 200, "{written}");
    assert_eq!(written["path"], "/testbed/data/blob.bin");
    assert_eq!(written["size"], blob.len() as u64);

    let (status, headers, body) = get_raw(&s, &key, &id, "path=data/blob.bin", None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["x-kiln-file-size"], blob.len().to_string().as_str());
    assert_eq!(headers["x-kiln-file-mode"], "0600");
    assert!(
        body == blob,
        "the bytes read back differ from those written"
    );

    let (status, headers, body) = get_raw(
        &s,
        &key,
        &id,
        "path=/testbed/data/blob.bin&offset=1000&length=5000",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.get("content-range").is_none());
    assert_eq!(body, blob[1000..6000]);

    // An offset past the 4 MiB of one agent read, and a Range header (206).
    let at = 4 * 1024 * 1024 + 17;
    let (status, headers, body) = get_raw(
        &s,
        &key,
        &id,
        "path=data/blob.bin",
        Some(&format!("bytes={at}-{}", at + 99)),
    )
    .await;
    assert_eq!(status, 206);
    assert_eq!(
        headers["content-range"],
        format!("bytes {at}-{}/{}", at + 99, blob.len()).as_str()
    );
    assert_eq!(body, blob[at..at + 100]);
    let (status, headers, body) =
        get_raw(&s, &key, &id, "path=data/blob.bin", Some("bytes=-7")).await;
    assert_eq!(status, 206);
    assert_eq!(body, blob[blob.len() - 7..]);
    let last = blob.len() - 1;
    assert_eq!(
        headers["content-range"],
        format!("bytes {}-{last}/{}", blob.len() - 7, blob.len()).as_str()
    );
    let (status, headers, body) = get_raw(
        &s,
        &key,
        &id,
        "path=data/blob.bin",
        Some(&format!("bytes={}-", blob.len())),
    )
    .await;
    assert_eq!(status, 416, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        headers["content-range"],
        format!("bytes */{}", blob.len()).as_str()
    );
    let (status, _, _) = get_raw(&s, &key, &id, "path=data/blob.bin", Some("bytes=0-1,5-6")).await;
    assert_eq!(status, 416);

    // JSON: binary as base64, text as text; the mode as octal.
    let (status, view) = s
        .v1_as(
            &key,
            Method::GET,
            &files(&id, "?path=data/blob.bin&format=json&offset=3&length=64"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["encoding"], "base64");
    assert_eq!(view["mode"], "0600");
    assert_eq!(view["size"], blob.len() as u64);
    assert_eq!(view["offset"], 3);
    assert_eq!(view["truncated"], true);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(view["content"].as_str().expect("content"))
        .expect("base64");
    assert_eq!(decoded, blob[3..67]);

    let (status, written) = s
        .v1_as(
            &key,
            Method::POST,
            &files(&id, ""),
            Some(
                &json!({"path": "bin/run.sh", "content": "#!/bin/sh\necho héllo\n",
                         "mode": "0755", "create_parents": true}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{written}");
    let (status, view) = s
        .v1_as(
            &key,
            Method::GET,
            &files(&id, "?path=bin/run.sh&format=json"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["encoding"], "utf-8");
    assert_eq!(view["content"], "#!/bin/sh\necho héllo\n");
    assert_eq!(view["truncated"], false);
    // The mode bits as the sandbox's own tools see them, and the file runs.
    let (code, out) = run(
        &s,
        &key,
        &id,
        "stat -c %a /testbed/bin/run.sh /testbed/data/blob.bin && /testbed/bin/run.sh",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "755\n600\nhéllo\n");

    // An integer mode; content_base64; stat of the result.
    let (status, _) = s
        .v1_as(
            &key,
            Method::POST,
            &files(&id, ""),
            Some(&json!({"path": "bin/run.sh", "content_base64": "AAEC", "mode": 420})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, stat) = s
        .v1_as(
            &key,
            Method::GET,
            &files(&id, "/stat?path=bin/run.sh"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{stat}");
    assert_eq!(stat["mode"], "0644");
    assert_eq!(stat["size"], 3);
    assert_eq!(stat["type"], "file");
    assert_eq!(stat["path"], "/testbed/bin/run.sh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_half_a_write() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let versions = [random_bytes(5_000_000), random_bytes(5_000_000)];
    let mut sums = Vec::new();
    for version in &versions {
        let (status, body) = put_raw(&s, &key, &id, "path=big.bin", version.clone()).await;
        assert_eq!(status, 200, "{body}");
        let (code, out) = run(&s, &key, &id, "sha256sum /testbed/big.bin | cut -c1-64").await;
        assert_eq!(code, 0);
        sums.push(out.trim().to_string());
    }
    assert_ne!(sums[0], sums[1]);

    // Inside the sandbox, checksum the file over and over while it is rewritten.
    let reader = start_exec(
        &s,
        &key,
        &id,
        "end=$(($(date +%s)+8)); while [ $(date +%s) -lt $end ]; do \
         sha256sum /testbed/big.bin | cut -c1-64; done | sort | uniq -c",
    )
    .await;
    let started = Instant::now();
    let mut writes = 0;
    // A 5 MB write takes most of a second in a debug build on a busy machine: at least
    // three, within the reader's 8 s.
    while started.elapsed() < Duration::from_secs(4)
        || (writes < 3 && started.elapsed() < Duration::from_secs(7))
    {
        let (status, body) =
            put_raw(&s, &key, &id, "path=big.bin", versions[writes % 2].clone()).await;
        assert_eq!(status, 200, "{body}");
        writes += 1;
    }
    let done = finished(&s, &key, &id, &reader).await;
    let out = done["stdout"].as_str().expect("stdout");
    let mut reads = 0;
    for line in out.lines() {
        let (count, sum) = line.trim().split_once(' ').expect("uniq -c line");
        assert!(
            sums.contains(&sum.to_string()),
            "a reader saw a file that is neither version ({sum}): {out}"
        );
        reads += count.parse::<u32>().expect("count");
    }
    eprintln!("{writes} writes of 5 MB, {reads} checksums, all whole: {out}");
    assert!(writes >= 3 && reads >= 5, "{writes} writes, {reads} reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_replace_text_once_and_lines_by_number() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let text: String = (1..=6).map(|i| format!("line {i}\n")).collect();
    let (status, _) = put_raw(&s, &key, &id, "path=a.txt", text.into_bytes()).await;
    assert_eq!(status, 200);
    let edit = |body: Value| {
        let s = &s;
        let key = key.clone();
        let id = id.clone();
        async move {
            s.v1_as(&key, Method::POST, &files(&id, "/edit"), Some(&body))
                .await
        }
    };
    let content = || async {
        let (_, _, body) = get_raw(&s, &key, &id, "path=a.txt", None).await;
        String::from_utf8(body).expect("utf-8")
    };

    // str_replace: zero, one, two occurrences, as Codeset answers them.
    let (status, none) = edit(json!({"path": "a.txt", "old_str": "nope", "new_str": "x"})).await;
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["success"], false);
    assert!(
        none["message"]
            .as_str()
            .unwrap_or_default()
            .contains("did not appear verbatim"),
        "{none}"
    );
    let (status, one) =
        edit(json!({"path": "a.txt", "old_str": "line 3\n", "new_str": "three\n"})).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["success"], true);
    assert_eq!(one["line"], 3);
    assert!(
        one["snippet"]
            .as_str()
            .unwrap_or_default()
            .contains("three"),
        "{one}"
    );
    let (status, two) = edit(json!({"path": "a.txt", "old_str": "line", "new_str": "x"})).await;
    assert_eq!(status, 200, "{two}");
    assert_eq!(two["success"], false);
    assert!(
        two["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Multiple occurrences"),
        "{two}"
    );
    assert_eq!(
        content().await,
        "line 1\nline 2\nthree\nline 4\nline 5\nline 6\n"
    );

    // Lines: replace 2..=3, insert before 1, append after the last, delete one.
    let (status, body) =
        edit(json!({"path": "a.txt", "start_line": 2, "end_line": 3, "new_text": "two"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let (status, _) =
        edit(json!({"path": "a.txt", "start_line": 1, "end_line": 0, "new_text": "top\n"})).await;
    assert_eq!(status, 200);
    let (status, _) =
        edit(json!({"path": "a.txt", "start_line": 7, "end_line": 6, "new_text": "end"})).await;
    assert_eq!(status, 200);
    let (status, _) =
        edit(json!({"path": "a.txt", "start_line": 4, "end_line": 4, "new_text": ""})).await;
    assert_eq!(status, 200);
    assert_eq!(content().await, "top\nline 1\ntwo\nline 5\nline 6\nend\n");

    // Out of range, reversed, both kinds at once, neither, a missing file.
    let (status, body) =
        edit(json!({"path": "a.txt", "start_line": 9, "end_line": 9, "new_text": "x"})).await;
    assert_validation(status, &body, &["body", "start_line"]);
    assert!(body.to_string().contains("has 6 lines"), "{body}");
    let (status, body) =
        edit(json!({"path": "a.txt", "start_line": 3, "end_line": 1, "new_text": "x"})).await;
    assert_validation(status, &body, &["body", "start_line"]);
    let (status, body) =
        edit(json!({"path": "a.txt", "old_str": "a", "new_str": "b", "start_line": 1})).await;
    assert_validation(status, &body, &["body"]);
    let (status, body) = edit(json!({"path": "a.txt"})).await;
    assert_validation(status, &body, &["body"]);
    let (status, body) = edit(json!({"path": "a.txt", "start_line": 1, "new_text": "x"})).await;
    assert_validation(status, &body, &["body", "end_line"]);
    let (status, body) =
        edit(json!({"path": "a.txt", "start_line": -1, "end_line": 0, "new_text": "x"})).await;
    assert_validation(status, &body, &["body", "start_line"]);
    let (status, body) = edit(json!({"path": "nope.txt", "old_str": "a", "new_str": "b"})).await;
    assert_error(status, &body, 404, "not_found");
    assert_eq!(content().await, "top\nline 1\ntwo\nline 5\nline 6\nend\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_go_to_a_depth_and_stop_at_the_entry_cap() {
    let Some(s) = sandbox::start_if_possible(|c| {
        c.files.max_list_entries = 6;
        c.files.max_list_depth = 4;
    })
    .await
    else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let (code, out) = run(
        &s,
        &key,
        &id,
        "mkdir -p /testbed/t/a/b/c && echo 1 > /testbed/t/f1 && echo 22 > /testbed/t/a/f2 \
         && touch /testbed/t/a/b/f3 /testbed/t/a/b/c/f4 && ln -s / /testbed/t/root",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let list = |query: &str| {
        let s = &s;
        let key = key.clone();
        let url = files(&id, &format!("/list?{query}"));
        async move { s.v1_as(&key, Method::GET, &url, None).await }
    };
    let paths = |listing: &Value| -> Vec<String> {
        listing["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["path"].as_str().expect("path").to_string())
            .collect()
    };

    let (status, one) = list("path=t").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        paths(&one),
        ["/testbed/t/a", "/testbed/t/f1", "/testbed/t/root"]
    );
    assert_eq!(one["truncated"], false);
    let entries = one["entries"].as_array().expect("entries");
    assert_eq!(entries[0]["type"], "dir");
    assert_eq!(entries[1]["type"], "file");
    assert_eq!(entries[1]["size"], 2);
    assert_eq!(entries[1]["mode"], "0644");
    assert!(
        entries[1]["mtime"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{one}"
    );
    assert_eq!(
        entries[2]["type"], "symlink",
        "a symlink is listed, not followed"
    );

    let (status, two) = list("path=/testbed/t&depth=2").await;
    assert_eq!(status, 200, "{two}");
    assert_eq!(
        paths(&two),
        [
            "/testbed/t/a",
            "/testbed/t/a/b",
            "/testbed/t/a/f2",
            "/testbed/t/f1",
            "/testbed/t/root"
        ]
    );
    let (status, all) = list("path=t&depth=4").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["entries"].as_array().map(Vec::len), Some(6));
    assert_eq!(all["truncated"], true, "8 entries, a cap of 6: {all}");

    let (status, body) = list("path=t&depth=0").await;
    assert_validation(status, &body, &["query", "depth"]);
    let (status, body) = list("path=t&depth=5").await;
    assert_validation(status, &body, &["query", "depth"]);
    let (status, body) = list("path=t&depth=x").await;
    assert_validation(status, &body, &["query", "depth"]);
    let (status, body) = list("path=t/f1").await;
    assert_validation(status, &body, &["query", "path"]);
    let (status, body) = list("path=nope").await;
    assert_error(status, &body, 404, "not_found");
    let (status, root) = list("").await;
    assert_eq!(status, 200, "{root}");
    assert!(paths(&root).contains(&"/testbed/t".to_string()), "{root}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_ownership_and_refusals() {
    let Some(s) = sandbox::start_if_possible(|c| {
        c.files.max_read_bytes = 1000;
        c.files.max_write_bytes = 2000;
    })
    .await
    else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let (status, _) = put_raw(&s, &key, &id, "path=k.bin", random_bytes(1500)).await;
    assert_eq!(status, 200);

    // Past the read limit: a whole read says to ask for a range; a range works.
    let (status, body) = s
        .v1_as(
            &key,
            Method::GET,
            &files(&id, "?path=k.bin&format=json"),
            None,
        )
        .await;
    assert_validation(status, &body, &["query", "length"]);
    assert!(body.to_string().contains("range"), "{body}");
    let (status, body) = s
        .v1_as(
            &key,
            Method::GET,
            &files(&id, "?path=k.bin&length=1001"),
            None,
        )
        .await;
    assert_validation(status, &body, &["query", "length"]);
    let (status, _, part) = get_raw(&s, &key, &id, "path=k.bin&offset=900", None).await;
    assert_eq!((status, part.len()), (200, 600));
    // Past the write limit: 413, raw or JSON, and the file is unchanged.
    let (status, body) = put_raw(&s, &key, &id, "path=k.bin", random_bytes(2001)).await;
    assert_error(status, &body, 413, "payload_too_large");
    let (status, body) = s
        .v1_as(
            &key,
            Method::POST,
            &files(&id, ""),
            Some(&json!({"path": "k.bin", "content": "x".repeat(2001)})),
        )
        .await;
    assert_error(status, &body, 413, "payload_too_large");
    let (_, stat) = s
        .v1_as(&key, Method::GET, &files(&id, "/stat?path=k.bin"), None)
        .await;
    assert_eq!(stat["size"], 1500);

    // 422 shapes of writes.
    for (body, loc) in [
        (json!({"content": "x"}), vec!["body", "path"]),
        (json!({"path": "x"}), vec!["body", "content"]),
        (
            json!({"path": "x", "content": "a", "content_base64": "YQ=="}),
            vec!["body", "content"],
        ),
        (
            json!({"path": "x", "content_base64": "%%%"}),
            vec!["body", "content_base64"],
        ),
        (
            json!({"path": "x", "content": "a", "mode": "rwx"}),
            vec!["body", "mode"],
        ),
        (
            json!({"path": "x", "content": "a", "mode": 0o17777}),
            vec!["body", "mode"],
        ),
    ] {
        let (status, got) = s
            .v1_as(&key, Method::POST, &files(&id, ""), Some(&body))
            .await;
        assert_validation(status, &got, &loc);
    }
    let (status, body) = put_raw(&s, &key, &id, "create_parents=true", b"x".to_vec()).await;
    assert_validation(status, &body, &["query", "path"]);
    let (status, body) = put_raw(&s, &key, &id, "path=x&mode=9", b"x".to_vec()).await;
    assert_validation(status, &body, &["query", "mode"]);
    let (status, body) = put_raw(&s, &key, &id, "path=no/such/dir/x", b"x".to_vec()).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s
        .v1_as(
            &key,
            Method::GET,
            &files(&id, "?path=/testbed&format=json"),
            None,
        )
        .await;
    assert_validation(status, &body, &["query", "path"]);
    let (status, body) = s
        .v1_as(&key, Method::GET, &files(&id, "?format=json"), None)
        .await;
    assert_validation(status, &body, &["query", "path"]);
    let (status, body) = s
        .v1_as(&key, Method::GET, &files(&id, "?path=nope"), None)
        .await;
    assert_error(status, &body, 404, "not_found");

    // Someone else's instance, and none at all, are "not found" on every route.
    let (_, other) = s.user("mallory").await;
    let requests: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, files(&id, "?path=k.bin"), None),
        (
            Method::POST,
            files(&id, ""),
            Some(json!({"path": "k.bin", "content": "x"})),
        ),
        (
            Method::POST,
            files(&id, "/edit"),
            Some(json!({"path": "k.bin", "old_str": "a", "new_str": "b"})),
        ),
        (Method::GET, files(&id, "/list?path=."), None),
        (Method::GET, files(&id, "/stat?path=k.bin"), None),
    ];
    for (method, url, body) in &requests {
        let (status, got) = s.v1_as(&other, method.clone(), url, body.as_ref()).await;
        assert_error(status, &got, 404, "not_found");
        let missing = url.replace(&id, "no-such-instance");
        let (status, got) = s.v1_as(&key, method.clone(), &missing, body.as_ref()).await;
        assert_error(status, &got, 404, "not_found");
        let (status, _) = json(s.v1(method.clone(), url).send().await.expect("send")).await;
        assert_eq!(status, 401);
    }
    let (_, stat) = s
        .v1_as(&key, Method::GET, &files(&id, "/stat?path=k.bin"), None)
        .await;
    assert_eq!(stat["size"], 1500, "mallory's write did not happen");

    // A closed instance is a conflict.
    let (status, _) = s.delete_as(&key, &format!("/sessions/{id}")).await;
    assert_eq!(status, 200);
    let (status, body) = s
        .v1_as(&key, Method::GET, &files(&id, "/stat?path=k.bin"), None)
        .await;
    assert_error(status, &body, 409, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_routes_are_in_the_openapi_document() {
    let s = TestServer::start().await;
    let (status, doc) = json(
        s.v1(Method::GET, "/openapi.json")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200);
    for path in [
        "/instances/{id}/files",
        "/instances/{id}/files/edit",
        "/instances/{id}/files/list",
        "/instances/{id}/files/stat",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["paths"]["/instances/{id}/files"]["post"].is_object());
    for schema in [
        "FileContentView",
        "WriteFileBody",
        "EditFileBody",
        "FileListView",
        "FileEntryView",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
}
