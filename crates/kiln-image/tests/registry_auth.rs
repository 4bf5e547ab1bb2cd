//! Registry authentication against an in-test fake registry on 127.0.0.1:0: the Bearer token
//! flow (`WWW-Authenticate: Bearer realm=…`, credentials sent to the realm as Basic) and
//! plain Basic auth.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_image::{ImageError, ImageStore, PullOptions, RegistryConfig, RegistryCredentials};
use support::{digest, layer_tar, Entry, TestImage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy)]
enum Mode {
    Bearer,
    Basic,
}

struct Fake {
    addr: String,
    token_requests: Arc<Mutex<Vec<String>>>,
}

const BASIC: &str = "Basic a2lsbjpzZWNyZXQ="; // kiln:secret

async fn fake_registry(mode: Mode, repo: &'static str, tag: &'static str, img: &TestImage) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut files: HashMap<String, (String, Vec<u8>)> = HashMap::new();
    let manifest_type = "application/vnd.oci.image.manifest.v1+json".to_owned();
    files.insert(
        format!("/v2/{repo}/manifests/{tag}"),
        (manifest_type, img.manifest.clone()),
    );
    for blob in img.layer_blobs.iter().chain([&img.config]) {
        files.insert(
            format!("/v2/{repo}/blobs/{}", digest(blob)),
            ("application/octet-stream".into(), blob.clone()),
        );
    }
    let files = Arc::new(files);
    let token_requests = Arc::new(Mutex::new(Vec::new()));
    let (realm, log) = (format!("http://{addr}/token"), token_requests.clone());
    tokio::spawn(async move {
        // Bounded: a test needs a handful of requests.
        for _ in 0..64 {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (files, realm, log) = (files.clone(), realm.clone(), log.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("authorization: ")
                            .or_else(|| l.strip_prefix("Authorization: "))
                    })
                    .unwrap_or("")
                    .to_owned();
                let (status, headers, body): (&str, String, Vec<u8>) = if let Some(q) =
                    path.strip_prefix("/token?")
                {
                    log.lock().unwrap().push(q.to_owned());
                    if auth == BASIC {
                        (
                            "200 OK",
                            "Content-Type: application/json\r\n".into(),
                            br#"{"token":"t0k"}"#.to_vec(),
                        )
                    } else {
                        ("401 Unauthorized", String::new(), Vec::new())
                    }
                } else {
                    let (wanted, challenge) = match mode {
                        Mode::Bearer => (
                            "Bearer t0k",
                            format!(
                                r#"Bearer realm="{realm}",service="fake",scope="repository:{repo}:pull""#
                            ),
                        ),
                        Mode::Basic => (BASIC, r#"Basic realm="fake""#.to_owned()),
                    };
                    if auth != wanted {
                        (
                            "401 Unauthorized",
                            format!("WWW-Authenticate: {challenge}\r\n"),
                            Vec::new(),
                        )
                    } else if let Some((ct, bytes)) = files.get(&path) {
                        ("200 OK", format!("Content-Type: {ct}\r\n"), bytes.clone())
                    } else {
                        ("404 Not Found", String::new(), Vec::new())
                    }
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.write_all(&body).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Fake {
        addr,
        token_requests,
    }
}

fn image() -> TestImage {
    TestImage::new(
        &[layer_tar(&[Entry::File("hello", b"auth", 0o644)])],
        true,
        &[],
        "/",
    )
}

fn with_credentials(addr: &str) -> PullOptions {
    let mut registry = RegistryConfig::default();
    registry.credentials.insert(
        addr.to_owned(),
        RegistryCredentials {
            username: "kiln".into(),
            password: "secret".into(),
        },
    );
    PullOptions {
        registry,
        ..Default::default()
    }
}

#[tokio::test]
async fn bearer_token_flow_with_credentials() {
    let img = image();
    let fake = fake_registry(Mode::Bearer, "team/app", "v1", &img).await;
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let pulled = store
        .pull(
            &format!("{}/team/app:v1", fake.addr),
            &with_credentials(&fake.addr),
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(pulled.layer_dirs()[0].join("hello")).unwrap(),
        b"auth"
    );
    let requests = fake.token_requests.lock().unwrap();
    // One token, reused for the manifest and every blob.
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains("service=fake"), "{}", requests[0]);
}

#[tokio::test]
async fn bearer_token_refused_is_an_auth_error() {
    let img = image();
    let fake = fake_registry(Mode::Bearer, "team/app", "v1", &img).await;
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let err = store
        .pull(
            &format!("{}/team/app:v1", fake.addr),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Auth { .. }), "{err}");
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test]
async fn basic_auth_when_configured() {
    let img = image();
    let fake = fake_registry(Mode::Basic, "team/app", "v1", &img).await;
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let reference = format!("{}/team/app:v1", fake.addr);
    let err = store
        .pull(&reference, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Auth { .. }), "{err}");
    let pulled = store
        .pull(&reference, &with_credentials(&fake.addr))
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest().to_string(), img.manifest_digest());
}
