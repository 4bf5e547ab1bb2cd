//! What the instance file tests share: requests to the file routes, commands in the
//! sandbox, random bytes.
#![allow(dead_code)]

use reqwest::Method;
use serde_json::Value;

use crate::common::{bearer, json, TestServer};
use crate::sandbox::{finished, start_exec};

/// Random bytes (NULs included), from a seed that differs every run.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut state = uuid::Uuid::new_v4().as_u128() as u64 | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub fn files(id: &str, rest: &str) -> String {
    format!("/instances/{id}/files{rest}")
}

/// `?path=…`, percent-encoded.
pub fn q(path: &str) -> String {
    form_urlencoded::byte_serialize(path.as_bytes()).collect()
}

/// Runs `command` in the instance (a Codeset exec) and waits: (exit code, stdout).
pub async fn run(s: &TestServer, key: &str, id: &str, command: &str) -> (i64, String) {
    let iid = start_exec(s, key, id, command).await;
    let done = finished(s, key, id, &iid).await;
    (
        done["exit_code"].as_i64().expect("exit code"),
        done["stdout"].as_str().unwrap_or_default().to_string(),
    )
}

/// `GET …/files?path=` raw, with optional extra query and headers: (status, headers, body).
pub async fn get_raw(
    s: &TestServer,
    key: &str,
    id: &str,
    query: &str,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = s
        .v1(Method::GET, &files(id, &format!("?{query}")))
        .header("Authorization", bearer(key));
    if let Some(range) = range {
        request = request.header("Range", range);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    (status, headers, body)
}

pub async fn put_raw(
    s: &TestServer,
    key: &str,
    id: &str,
    query: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    json(
        s.v1(Method::POST, &files(id, &format!("?{query}")))
            .header("Authorization", bearer(key))
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .expect("send"),
    )
    .await
}
