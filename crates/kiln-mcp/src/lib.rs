//! Kiln as an MCP server (the official Rust SDK, `rmcp`): datasets, sessions, commands,
//! files, checkpoints, forks and SWE-bench-graded verification as tools, for any agent
//! that speaks MCP. Served by `kiln serve` at `/mcp` (streamable HTTP, behind the API's
//! bearer authentication: see [`http_service`]) and by `kiln mcp` over stdio
//! ([`relay`]: a bridge to such a server). Every tool calls the same service as the HTTP
//! route that does the same thing, as the caller, so ownership, limits and billing are the
//! API's; nothing here reaches the store.
#![forbid(unsafe_code)]

mod errors;
mod ops;
pub mod params;
pub mod relay;
mod resources;
mod servers;
mod tools;

use std::sync::Arc;

use kiln_services::Kiln;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    Implementation, ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool_handler, ErrorData, RoleServer, ServerHandler};

pub use tokio_util::sync::CancellationToken;

/// Who calls, as the HTTP layer authenticated them: put in the request's extensions
/// before the request reaches [`http_service`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
}

/// One MCP connection's server: the tools, over one Kiln.
#[derive(Clone)]
pub struct KilnMcp {
    kiln: Arc<Kiln>,
    /// The caller of every request (an in-process server, tests); `None`: each request's
    /// [`Caller`] extension, so a session id from another key's connection gets nowhere.
    fixed_caller: Option<String>,
    tool_router: ToolRouter<Self>,
}

const INSTRUCTIONS: &str = "Kiln runs coding tasks (SWE-bench style samples) in sandboxes. \
Typical loop: list_samples -> get_sample (the problem statement) -> create_session -> \
exec / read_file / str_replace / write_file -> verify (runs the sample's tests and grades \
them: resolved, FAIL_TO_PASS and PASS_TO_PASS) -> close_session. snapshot saves a checkpoint \
to rollback to; fork copies a session to try alternatives. Sessions you open are yours and \
end when you close them or when their TTL runs out. To run a server: exec with background, \
then expose_port.";

impl KilnMcp {
    /// A server whose every request is made by `user_id` (stdio in-process, tests).
    pub fn for_user(kiln: Arc<Kiln>, user_id: impl Into<String>) -> Self {
        Self {
            kiln,
            fixed_caller: Some(user_id.into()),
            tool_router: Self::tool_router() + Self::servers_router(),
        }
    }

    /// A server for HTTP: each request says who calls ([`Caller`]).
    pub fn per_request(kiln: Arc<Kiln>) -> Self {
        Self {
            kiln,
            fixed_caller: None,
            tool_router: Self::tool_router() + Self::servers_router(),
        }
    }

    /// The caller of this request. No caller is a protocol error: the HTTP layer lets no
    /// unauthenticated request through, so it means a mounting mistake.
    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<String, ErrorData> {
        if let Some(user) = &self.fixed_caller {
            return Ok(user.clone());
        }
        ctx.extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .map(|caller| caller.user_id.clone())
            .ok_or_else(|| ErrorData::invalid_request("this request is not authenticated", None))
    }

    /// This server as the caller reached it (`http://host:port`), from the request's Host
    /// (and a proxy's `X-Forwarded-Proto`); `None` in-process, or for a Host that is not
    /// a plain authority.
    fn base_url(&self, ctx: &RequestContext<RoleServer>) -> Option<String> {
        let parts = ctx.extensions.get::<http::request::Parts>()?;
        let host = parts.headers.get(http::header::HOST)?.to_str().ok()?;
        let authority: http::uri::Authority = host.parse().ok()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let https = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
        let scheme = if https { "https" } else { "http" };
        Some(format!("{scheme}://{authority}"))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for KilnMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("kiln", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let viewer = self.caller(&ctx)?;
        let cursor = request.as_ref().and_then(|r| r.cursor.as_deref());
        resources::list(&self.kiln, &viewer, cursor).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.caller(&ctx)?;
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let viewer = self.caller(&ctx)?;
        Ok(resources::read(&self.kiln, &viewer, &request.uri)
            .await?
            .into())
    }
}

/// The streamable-HTTP endpoint, to be mounted (at `/mcp`) behind authentication that
/// puts a [`Caller`] in each request's extensions. MCP sessions live in memory; `cancel`
/// ends them all (server shutdown), so their open event streams do not hold it up.
pub fn http_service(
    kiln: Arc<Kiln>,
    cancel: CancellationToken,
) -> StreamableHttpService<KilnMcp, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(cancel)
        .with_max_request_body_bytes(kiln.config.limits.max_body_bytes);
    // rmcp refuses Host headers other than loopback by default, against DNS rebinding of
    // unauthenticated local servers. Every request here carries a bearer credential a
    // rebinding page cannot know, and a deployed Kiln is reached by its own name.
    config = config.disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(KilnMcp::per_request(kiln.clone())),
        Arc::default(),
        config,
    )
}
