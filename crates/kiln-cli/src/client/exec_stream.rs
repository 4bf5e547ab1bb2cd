//! `kiln exec --stream`: a command in an instance through `/v1/…/exec/stream` (Server-Sent
//! Events), its output printed as it comes. A dropped connection is resumed from the last
//! event id; the command's exit code is ours.
use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::{json, Value};

use super::Client;

/// Reconnects tried after a dropped stream before giving up.
const RECONNECTS: u32 = 5;

pub async fn run(
    client: &Client,
    instance: &str,
    timeout: Option<u32>,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let root = client.base.trim_end_matches("/api/v1");
    let mut body = json!({"command": command.join(" ")});
    if let Some(t) = timeout {
        body["timeout_secs"] = json!(t);
    }
    let response = client
        .http
        .post(format!("{root}/v1/instances/{instance}/exec/stream"))
        .bearer_auth(&client.key)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {root}"))?;
    let mut response = checked(response).await?;
    let exec_id = response
        .headers()
        .get("x-kiln-exec-id")
        .and_then(|v| v.to_str().ok())
        .context("no X-Kiln-Exec-Id in the reply")?
        .to_string();
    let mut last_id: Option<String> = None;
    let mut reconnects = 0;
    loop {
        if let Some(code) = follow(&mut response, &mut last_id).await? {
            return Ok(code);
        }
        reconnects += 1;
        if reconnects > RECONNECTS {
            bail!("the stream of exec {exec_id} kept dropping");
        }
        let mut request = client
            .http
            .get(format!(
                "{root}/v1/instances/{instance}/exec/{exec_id}/stream"
            ))
            .bearer_auth(&client.key);
        if let Some(id) = &last_id {
            request = request.header("Last-Event-ID", id);
        }
        response = checked(request.send().await?).await?;
    }
}

async fn checked(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    bail!("{status}: {}", body["detail"]);
}

/// Prints frames until the exit (its code) or until the connection ends (`None`).
async fn follow(
    response: &mut reqwest::Response,
    last_id: &mut Option<String>,
) -> anyhow::Result<Option<ExitCode>> {
    let mut parser = SseParser::default();
    loop {
        while let Some(frame) = parser.next_frame() {
            if frame.id.is_some() {
                last_id.clone_from(&frame.id);
            }
            match frame.event.as_deref() {
                Some("stdout") => write_out(&mut std::io::stdout(), &frame.data)?,
                Some("stderr") => write_out(&mut std::io::stderr(), &frame.data)?,
                Some("exit") => {
                    if frame.data["timed_out"] == true {
                        eprintln!("kiln: the command timed out and was killed");
                    }
                    return Ok(Some(exit_code(&frame.data)));
                }
                Some("error") => {
                    eprintln!(
                        "kiln: {}",
                        frame.data["message"].as_str().unwrap_or("error")
                    );
                    if frame.data["final"] != false {
                        return Ok(Some(ExitCode::FAILURE));
                    }
                }
                _ => {}
            }
        }
        match response.chunk().await {
            Ok(Some(chunk)) => parser.push(&chunk),
            Ok(None) | Err(_) => return Ok(None),
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, PartialEq)]
struct SseFrame {
    event: Option<String>,
    id: Option<String>,
    data: Value,
}

/// Splits a byte stream into events, whatever the chunking.
#[derive(Default)]
struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event (comments and keep-alives come out with no event name).
    fn next_frame(&mut self) -> Option<SseFrame> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = self.buf.drain(..end + 2).collect();
        let (mut event, mut id, mut data) = (None, None, String::new());
        for line in String::from_utf8_lossy(&block).lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        Some(SseFrame {
            event,
            id,
            data: serde_json::from_str(&data).unwrap_or(Value::Null),
        })
    }
}

/// The command's exit code as ours (1 when it does not fit: a signal's 128 + n does).
fn exit_code(exit: &Value) -> ExitCode {
    let code = exit["exit_code"].as_i64().unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn write_out(out: &mut impl Write, data: &Value) -> anyhow::Result<()> {
    let bytes = match (data["text"].as_str(), data["base64"].as_str()) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64)?,
        _ => Vec::new(),
    };
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_found_across_any_chunking() {
        let wire = b"event: start\nid: 20\ndata: {\"exec_id\":\"e\"}\n\n:keep-alive\n\n\
event: stdout\nid: 31\ndata: {\"base64\":\"/w==\"}\n\n";
        for size in [1, 2, 7, wire.len()] {
            let mut parser = SseParser::default();
            let mut frames = Vec::new();
            for chunk in wire.chunks(size) {
                parser.push(chunk);
                while let Some(frame) = parser.next_frame() {
                    frames.push(frame);
                }
            }
            let named: Vec<_> = frames.iter().filter(|f| f.event.is_some()).collect();
            assert_eq!(named.len(), 2, "chunks of {size}");
            assert_eq!(named[0].id.as_deref(), Some("20"));
            assert_eq!(named[1].data, json!({"base64": "/w=="}));
            let mut out = Vec::new();
            write_out(&mut out, &named[1].data).expect("write");
            assert_eq!(out, [0xff]);
        }
    }

    #[test]
    fn the_exit_code_is_the_commands() {
        assert_eq!(exit_code(&json!({"exit_code": 7})), ExitCode::from(7));
        assert_eq!(exit_code(&json!({"exit_code": 137})), ExitCode::from(137));
        assert_eq!(exit_code(&json!({"exit_code": null})), ExitCode::from(1));
    }
}
