//! TLS between nodes and on the listener: two real `kiln serve` on one PostgreSQL
//! (127.0.0.2, 127.0.0.3), each serving HTTPS with a certificate of a test CA made at
//! test time with the `openssl` CLI, and advertising `https://…`. A session created through one
//! is driven through the other (the hop is TLS: the listeners speak nothing else);
//! `/health` answers over HTTPS to a client that trusts the CA; plain HTTP to a TLS
//! listener gets no HTTP answer. A third node (127.0.0.4) that trusts another CA gets a
//! 502 naming the peer for a request it must relay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server_harness;
use server_harness::*;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kiln_test_support::pki;
use kiln_test_support::postgres::{admin_url, Locale, TestDatabase};
use serde_json::json;

const CLUSTER_ENV: [(&str, &str); 3] = [
    ("KILN_CLUSTER__HEARTBEAT_INTERVAL_MS", "100"),
    ("KILN_CLUSTER__DOWN_AFTER_MS", "1500"),
    ("KILN_CLUSTER__SECRET", "a-cluster-secret-for-tests"),
];

struct Node {
    data: PathBuf,
    listen: String,
    env: Vec<(String, String)>,
}

impl Node {
    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn serve(&self, log: &Path) -> Server {
        serve_node(&self.data, &self.listen, &self.env(), log)
    }

    fn kiln(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .envs(self.env())
            .env("KILN_LOAD_DEMO_DATASET", "false")
            .output()
            .expect("run kiln")
    }

    fn runs(&self, session: &str) -> bool {
        self.data.join("runtime/sandboxes").join(session).exists()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_speak_tls_on_the_hop_and_the_listener() {
    if !prerequisites() {
        return;
    }
    let Some(admin) = admin_url() else { return };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let Some(pki) = pki::make(&root, &["127.0.0.2", "127.0.0.3"]) else {
        return;
    };
    let db = TestDatabase::create(&admin, "kiln_tls_nodes", Locale::ServerDefault).await;
    let (ca, other_ca, cert, cert_key) = (&pki.ca, &pki.other_ca, &pki.cert, &pki.key);
    let images = root.join("images");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let node = |i: usize, ip: &str, tls: bool, trust: &Path| {
        let listen = format!("{ip}:{}", free_port());
        let mut env: Vec<(String, String)> = CLUSTER_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("KILN_DATABASE_URL".into(), db.url.clone()));
        env.push(("KILN_IMAGES_DIR".into(), path(&images)));
        env.push(("KILN_CLUSTER__TLS_CA_FILE".into(), path(trust)));
        if tls {
            env.push(("KILN_SERVER__TLS_CERT_FILE".into(), path(cert)));
            env.push(("KILN_SERVER__TLS_KEY_FILE".into(), path(cert_key)));
        }
        Node {
            data: root.join(format!("node{i}")),
            listen,
            env,
        }
    };
    let mut a = node(0, "127.0.0.2", true, ca);
    // a says where it is; b's address is the default, which TLS makes `https://`.
    a.env.push((
        "KILN_CLUSTER__ADVERTISE_URL".into(),
        format!("https://{}", a.listen),
    ));
    let b = node(1, "127.0.0.3", true, ca);
    let mut server_a = a.serve(&root.join("a.log"));
    let key = std::fs::read_to_string(a.data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    install_busybox_sample(&|args| a.kiln(args), &root);
    let mut server_b = b.serve(&root.join("b.log"));

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let api = |node: &Node| Api {
        base: format!("https://{}/api/v1", node.listen),
        key: key.clone(),
        http: trusting.clone(),
    };
    let (via_a, via_b) = (api(&a), api(&b));

    // HTTPS answers a client that trusts the CA.
    let health = trusting
        .get(format!("https://{}/health/live", b.listen))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let admin_a = Api {
        base: format!("https://{}/v1", a.listen),
        ..api(&a)
    };
    let servers = admin_a.get("/admin/servers").await;
    let mut addresses: Vec<String> = servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["address"].as_str().unwrap().to_string())
        .collect();
    addresses.sort();
    assert_eq!(
        addresses,
        [
            format!("https://{}", a.listen),
            format!("https://{}", b.listen)
        ],
        "{servers}"
    );

    // Plain HTTP to a TLS listener: the connection closes without an HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://{}/health/live", a.listen))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");
    let mut raw = std::net::TcpStream::connect(&a.listen).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // A session created through a, driven through the node that does not run it: every
    // exec is relayed over the TLS hop to its owner.
    let (status, created) = via_a
        .call(
            reqwest::Method::POST,
            "/sessions",
            Some(json!({"dataset": "test", "sample_id": "test-1"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let sid = created["session_id"].as_str().unwrap().to_string();
    let (owner, via_other) = if a.runs(&sid) {
        (&a, &via_b)
    } else {
        assert!(b.runs(&sid), "session {sid} runs on neither node");
        (&b, &via_a)
    };
    let done = via_other
        .run(
            &sid,
            "echo over-tls > /root/state; cat /root/state /testbed/hello.txt",
        )
        .await;
    assert_eq!(done["stdout"], "over-tls\nhello from the image\n", "{done}");

    // A node that trusts another CA cannot relay: the owner's certificate is refused,
    // and the request is a 502 naming the owner.
    let c = node(2, "127.0.0.4", false, other_ca);
    let mut server_c = c.serve(&root.join("c.log"));
    let via_c = Api {
        base: format!("http://{}/api/v1", c.listen),
        key: key.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    };
    let (status, body) = via_c
        .call(
            reqwest::Method::POST,
            &format!("/sessions/{sid}/exec"),
            Some(json!({"command": "true"})),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    let message = body["detail"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("https://{}", owner.listen)) && message.contains("TLS"),
        "{body}"
    );

    let (status, body) = via_a
        .call(reqwest::Method::DELETE, &format!("/sessions/{sid}"), None)
        .await;
    assert!(status == 200 || status == 204, "close: {status} {body}");
    server_c.stop();
    server_b.stop();
    server_a.stop();
    assert_eq!(mounts_under(&root), Vec::<String>::new());
    db.drop_now().await.unwrap();
    eprintln!(
        "tls nodes: whole test {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
