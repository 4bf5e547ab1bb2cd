//! Tools for what an agent leaves running in its session: a command started in the
//! background (`exec` with `background`), its status and output so far, stopping it, and
//! exposing the port it listens on. Ports go through the same service as the HTTP
//! port-forward routes: the session's network stays isolated, connections pass its agent.
use std::time::{Duration, Instant};

use kiln_domain::{ExecStatus, PortForwardMode, PortForwardRecord};
use kiln_services::instances::exec::FrameKind;
use kiln_services::{Kiln, ServiceResult};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, ErrorData, RoleServer};
use serde_json::{json, Value};

use crate::errors::{invalid, tool_error};
use crate::ops::{exec_json, tail};
use crate::params::{self, PortMode};
use crate::tools::answer;
use crate::KilnMcp;

type ToolResult = Result<CallToolResult, ErrorData>;

const SIGKILL: i32 = 9;

/// How long `exec_status` reads a running command's output: until nothing new arrives
/// for `QUIET`, and never longer than `MAX_READ` (a command that prints without pause).
const QUIET: Duration = Duration::from_millis(50);
const MAX_READ: Duration = Duration::from_millis(500);

#[tool_router(router = servers_router, vis = "pub(crate)")]
impl KilnMcp {
    #[tool(
        description = "The status of a command started with exec background: running (with its output so far) or finished (exit code, output)."
    )]
    async fn exec_status(
        &self,
        Parameters(p): Parameters<params::ExecRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        let max = self.kiln.config.mcp.max_tool_output_bytes;
        let instances = &self.kiln.instances;
        let exec = match instances.exec_get(&user, &p.session_id, &p.exec_id).await {
            Ok(exec) => exec,
            Err(e) => return Ok(tool_error(&e)),
        };
        let mut out = exec_json(&exec, max);
        out["exec_id"] = json!(exec.exec_id);
        out["status"] = json!(exec.status.as_str());
        if exec.status == ExecStatus::Running && exec.mode != "sync" {
            match output_so_far(&self.kiln, &user, &p.session_id, &p.exec_id, max).await {
                Ok((stdout, stderr, cut)) => {
                    out["stdout"] = json!(stdout);
                    out["stderr"] = json!(stderr);
                    out["truncated"] = json!(cut);
                }
                Err(e) => return Ok(tool_error(&e)),
            }
        }
        Ok(CallToolResult::structured(out))
    }

    #[tool(description = "Stop a command started with exec background (SIGKILL to its processes).")]
    async fn kill_exec(
        &self,
        Parameters(p): Parameters<params::ExecRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        answer(
            self.kiln
                .instances
                .exec_kill(&user, &p.session_id, &p.exec_id, SIGKILL)
                .await
                .map(|exec| json!({"exec_id": exec.exec_id, "signal": "KILL"})),
        )
    }

    #[tool(
        description = "Expose a TCP port a server in the session listens on (start the server with exec background). mode path (default): reachable over HTTP at url, under this server's API, with your API key as bearer token. mode host_port: a TCP address on the server's host (host_address), any protocol. Open until close_port or the session ends."
    )]
    async fn expose_port(
        &self,
        Parameters(p): Parameters<params::ExposePort>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        let Some(port) = u16::try_from(p.port).ok().filter(|port| *port != 0) else {
            return Ok(invalid("port: between 1 and 65535"));
        };
        let mode = match p.mode.unwrap_or_default() {
            PortMode::Path => PortForwardMode::Path,
            PortMode::HostPort => PortForwardMode::HostPort,
        };
        let base = self.base_url(&ctx);
        answer(
            self.kiln
                .instances
                .create_port_forward(&user, &p.session_id, port, mode)
                .await
                .map(|forward| forward_json(&forward, base.as_deref())),
        )
    }

    #[tool(description = "Close a port opened with expose_port: its connections end.")]
    async fn close_port(
        &self,
        Parameters(p): Parameters<params::ClosePort>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        answer(
            self.kiln
                .instances
                .close_port_forward(&user, &p.session_id, &p.forward_id)
                .await
                .map(|closed| {
                    json!({"forward_id": closed.forward_id, "closed": closed.closed_at.is_some()})
                }),
        )
    }
}

/// A forward as the tool answers it: where to reach it.
fn forward_json(forward: &PortForwardRecord, base: Option<&str>) -> Value {
    let mut out = json!({
        "forward_id": forward.forward_id,
        "port": forward.port,
    });
    match forward.mode {
        PortForwardMode::Path => {
            let path = format!(
                "/v1/instances/{}/ports/{}/",
                forward.session_id, forward.port
            );
            out["mode"] = json!("path");
            out["url"] = json!(base.map_or_else(|| path.clone(), |base| format!("{base}{path}")));
            out["path"] = json!(path);
            out["auth"] = json!("Authorization: Bearer <your API key>");
        }
        PortForwardMode::HostPort => {
            out["mode"] = json!("host_port");
            out["host_address"] = json!(forward.host_address);
        }
    }
    out
}

/// What a running background exec has printed so far: its stream read from the start
/// until it goes quiet, the last `max` bytes of each output, and whether any was cut.
async fn output_so_far(
    kiln: &Kiln,
    user: &str,
    session_id: &str,
    exec_id: &str,
    max: usize,
) -> ServiceResult<(String, String, bool)> {
    let mut stream = kiln
        .instances
        .exec_stream(user, session_id, exec_id, 0, false)
        .await?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut cut = false;
    let deadline = Instant::now() + MAX_READ;
    while Instant::now() < deadline {
        let Ok(Some(frame)) = tokio::time::timeout(QUIET, stream.next()).await else {
            break;
        };
        let buffer = match frame.kind {
            FrameKind::Stdout => &mut stdout,
            FrameKind::Stderr => &mut stderr,
            _ => continue,
        };
        buffer.extend_from_slice(&frame.payload);
        // Keep memory bounded on a chatty command: only the tail is answered.
        if buffer.len() > 2 * max {
            let excess = buffer.len() - max;
            buffer.drain(..excess);
            cut = true;
        }
    }
    let text = |bytes: &[u8], cut: &mut bool| {
        let text = String::from_utf8_lossy(bytes);
        let (kept, was_cut) = tail(&text, max);
        *cut |= was_cut;
        kept.to_string()
    };
    let out = text(&stdout, &mut cut);
    let err = text(&stderr, &mut cut);
    Ok((out, err, cut))
}
