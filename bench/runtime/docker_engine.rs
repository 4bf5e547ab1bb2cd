//! The handful of Docker Engine API calls the baseline needs, spoken over the daemon's
//! unix socket with one HTTP/1.1 request per connection. Talking to the daemon directly
//! (rather than through the `docker` CLI) keeps the Go client's own start-up (≈ 20 ms per
//! command) out of Docker's numbers, so the baseline is the daemon at its best.

use std::io;
use std::path::PathBuf;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub struct DockerEngine {
    socket: PathBuf,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

/// Undoes `Transfer-Encoding: chunked`.
fn dechunk(mut body: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunk header"))?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|e| bad(e.to_string()))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| bad(format!("chunk size {size_text:?}: {e}")))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or_else(|| bad("truncated chunk"))?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

impl DockerEngine {
    /// `host` as docker takes it: `unix:///path/to/docker.sock`.
    pub fn new(host: &str) -> io::Result<Self> {
        let path = host
            .strip_prefix("unix://")
            .ok_or_else(|| bad(format!("only unix:// hosts are supported, not {host}")))?;
        Ok(Self {
            socket: PathBuf::from(path),
        })
    }

    /// One request; answers the status and the (de-chunked) body. The connection is
    /// closed by the daemon after the answer, which also ends a hijacked exec stream
    /// when its process exits.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> io::Result<(u16, Vec<u8>)> {
        let mut stream = UnixStream::connect(&self.socket).await?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} /v1.41{path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| bad(format!("{method} {path}: no HTTP header in the answer")))?;
        let header = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status = header
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("{method} {path}: bad status line")))?;
        let payload = &raw[split + 4..];
        let payload = if header.contains("transfer-encoding: chunked") {
            dechunk(payload)?
        } else {
            payload.to_vec()
        };
        if !(200..300).contains(&status) {
            return Err(bad(format!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&payload)
            )));
        }
        Ok((status, payload))
    }

    async fn call_json(&self, method: &str, path: &str, body: Option<&Value>) -> io::Result<Value> {
        let (_, payload) = self.call(method, path, body).await?;
        serde_json::from_slice(&payload).map_err(|e| bad(format!("{method} {path}: {e}")))
    }

    pub async fn ping(&self) -> io::Result<()> {
        self.call("GET", "/_ping", None).await.map(|_| ())
    }

    /// `docker run -d --network none IMAGE sleep inf`: create and start; answers the id.
    pub async fn run_detached(&self, image: &str) -> io::Result<String> {
        let created = self
            .call_json(
                "POST",
                "/containers/create",
                Some(&json!({
                    "Image": image,
                    "Cmd": ["sleep", "inf"],
                    "HostConfig": {"NetworkMode": "none"},
                })),
            )
            .await?;
        let id = created["Id"]
            .as_str()
            .ok_or_else(|| bad("create answered no Id"))?
            .to_owned();
        self.call("POST", &format!("/containers/{id}/start"), None)
            .await?;
        Ok(id)
    }

    /// `docker exec ID ARGV…`, waiting for the process to end; answers its exit code.
    pub async fn exec(&self, id: &str, argv: &[&str]) -> io::Result<i64> {
        let created = self
            .call_json(
                "POST",
                &format!("/containers/{id}/exec"),
                Some(&json!({"Cmd": argv, "AttachStdout": true, "AttachStderr": true})),
            )
            .await?;
        let exec = created["Id"]
            .as_str()
            .ok_or_else(|| bad("exec create answered no Id"))?
            .to_owned();
        self.call(
            "POST",
            &format!("/exec/{exec}/start"),
            Some(&json!({"Detach": false, "Tty": false})),
        )
        .await?;
        let inspect = self
            .call_json("GET", &format!("/exec/{exec}/json"), None)
            .await?;
        inspect["ExitCode"]
            .as_i64()
            .ok_or_else(|| bad("exec inspect answered no ExitCode"))
    }

    /// `docker commit ID REPO:TAG`; answers the image id.
    pub async fn commit(&self, id: &str, repo: &str, tag: &str) -> io::Result<String> {
        let committed = self
            .call_json(
                "POST",
                &format!("/commit?container={id}&repo={repo}&tag={tag}&pause=false"),
                Some(&json!({})),
            )
            .await?;
        committed["Id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad("commit answered no Id"))
    }

    /// The container's init process as the host sees it.
    pub async fn init_pid(&self, id: &str) -> io::Result<i32> {
        let inspect = self
            .call_json("GET", &format!("/containers/{id}/json"), None)
            .await?;
        inspect["State"]["Pid"]
            .as_i64()
            .map(|p| p as i32)
            .ok_or_else(|| bad("inspect answered no State.Pid"))
    }

    /// `docker rm -f ID`.
    pub async fn remove(&self, id: &str) -> io::Result<()> {
        self.call("DELETE", &format!("/containers/{id}?force=true"), None)
            .await
            .map(|_| ())
    }

    /// `docker rmi IMAGE`.
    pub async fn remove_image(&self, image: &str) -> io::Result<()> {
        self.call("DELETE", &format!("/images/{image}?force=true"), None)
            .await
            .map(|_| ())
    }
}
