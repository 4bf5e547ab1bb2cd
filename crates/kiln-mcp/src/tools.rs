//! The tools. Each is thin: check what only MCP adds (defaults, output bounds), call the
//! service the HTTP route calls, as the caller, and shape the answer (`ops`).
use std::collections::BTreeMap;

use kiln_domain::{Labels, SampleQuery, SessionStatus, SnapshotKind};
use kiln_services::instances::exec::{ExecCommand, ExecMode, ExecSpec};
use kiln_services::instances::files::{EntryKind, FileEdit, FileWrite, ReadRange};
use kiln_services::instances::{InstanceQuery, InstanceSource, NewInstance};
use kiln_services::ServiceResult;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, ErrorData, RoleServer};
use serde_json::{json, Value};

use crate::errors::{invalid, tool_error};
use crate::ops::{
    exec_json, exec_with_progress, session_json, tail, verification_json, wait_ready,
    wait_verification,
};
use crate::params::{self, MAX_SAMPLES_PAGE};
use crate::KilnMcp;

type ToolResult = Result<CallToolResult, ErrorData>;

/// Most entries one `list_files` answers with (a listing lands in a model's context).
const MAX_LISTED: usize = 1000;

/// A service's answer as the tool's: structured JSON, or a tool error saying why.
pub(crate) fn answer(result: ServiceResult<Value>) -> ToolResult {
    Ok(match result {
        Ok(value) => CallToolResult::structured(value),
        Err(e) => tool_error(&e),
    })
}

#[tool_router(vis = "pub(crate)")]
impl KilnMcp {
    #[tool(description = "List the datasets of coding tasks this server has.")]
    async fn list_datasets(&self, ctx: RequestContext<RoleServer>) -> ToolResult {
        let viewer = self.caller(&ctx)?;
        answer(self.kiln.datasets.visible_datasets(&viewer).await.map(|datasets| {
            let items: Vec<Value> = datasets
                .iter()
                .map(|d| json!({"name": d.name, "description": d.description, "samples": d.sample_count}))
                .collect();
            json!({ "datasets": items })
        }))
    }

    #[tool(
        description = "List or search a dataset's samples (tasks): their ids, repositories and the first line of each problem statement."
    )]
    async fn list_samples(
        &self,
        Parameters(p): Parameters<params::ListSamples>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let viewer = self.caller(&ctx)?;
        let limit = p.limit.unwrap_or(20);
        if !(1..=MAX_SAMPLES_PAGE).contains(&limit) {
            return Ok(invalid(format!("limit: between 1 and {MAX_SAMPLES_PAGE}")));
        }
        let query = SampleQuery {
            visible_to: Some(viewer),
            dataset: p.dataset,
            search: p.search,
            limit: Some(limit),
            offset: p.offset.unwrap_or(0),
        };
        answer(self.kiln.datasets.list_samples(&query).await.map(|page| {
            let items: Vec<Value> = page
                .samples
                .iter()
                .map(|s| {
                    let summary = s.record.problem_statement.lines().next().unwrap_or("");
                    json!({"dataset": s.dataset, "sample_id": s.sample_id, "repo": s.repo, "summary": summary})
                })
                .collect();
            json!({ "samples": items, "total": page.total })
        }))
    }

    #[tool(
        description = "A sample's task: its problem statement, repository and base commit (not the solution)."
    )]
    async fn get_sample(
        &self,
        Parameters(p): Parameters<params::SampleRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let viewer = self.caller(&ctx)?;
        answer(
            self.kiln
                .datasets
                .get_visible_sample(&viewer, &p.dataset, &p.sample_id, None)
                .await
                .map(|s| {
                    json!({
                        "dataset": s.dataset, "sample_id": s.sample_id, "version": s.version,
                        "repo": s.repo, "base_commit": s.base_commit,
                        "problem_statement": s.record.problem_statement,
                        "hints": s.record.hints_text,
                    })
                }),
        )
    }

    #[tool(
        description = "Start a sandbox session on a sample (its repository checked out at the base commit, in /testbed) or on an image; waits until it is ready. It is yours until close_session or its TTL."
    )]
    async fn create_session(
        &self,
        Parameters(p): Parameters<params::CreateSession>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        let source = match (p.dataset, p.sample_id, p.image) {
            (Some(dataset), Some(sample_id), None) => InstanceSource::Sample { dataset, sample_id },
            (None, None, Some(image)) => InstanceSource::Image(image),
            _ => return Ok(invalid("give either dataset and sample_id, or image")),
        };
        let config = &self.kiln.config;
        let ttl = p.ttl_minutes.unwrap_or_else(|| {
            config
                .mcp
                .default_ttl_minutes
                .min(i64::from(config.sessions.max_ttl_minutes))
        });
        let new = NewInstance {
            source,
            name: None,
            labels: Labels::default(),
            ttl_minutes: Some(ttl),
            resources: None,
        };
        let created = match self.kiln.instances.create(&user, new).await {
            Ok(created) => created,
            Err(e) => return Ok(tool_error(&e)),
        };
        answer(
            wait_ready(&self.kiln, &user, &created.session_id)
                .await
                .map(|s| session_json(&s)),
        )
    }

    #[tool(description = "Your live sessions (starting or ready).")]
    async fn list_sessions(&self, ctx: RequestContext<RoleServer>) -> ToolResult {
        let user = self.caller(&ctx)?;
        let query = InstanceQuery {
            statuses: vec![SessionStatus::Creating, SessionStatus::Ready],
            labels: Vec::new(),
            search: None,
            limit: 100,
            offset: 0,
            cursor: None,
        };
        answer(self.kiln.instances.list(&user, &query).await.map(|page| {
            let items: Vec<Value> = page.instances.iter().map(session_json).collect();
            json!({ "sessions": items, "total": page.total })
        }))
    }

    #[tool(
        description = "Run a shell command in a session and wait for it: exit code, stdout and stderr (their last bytes when long). Killed after timeout_secs (exit code 124). With a progress token, output arrives as progress notifications while it runs. With background, answers at once with an exec_id and keeps the command running (e.g. a server, then expose_port)."
    )]
    async fn exec(
        &self,
        Parameters(p): Parameters<params::Exec>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        let background = p.background.unwrap_or(false);
        let spec = ExecSpec {
            command: ExecCommand::Shell(p.command),
            timeout_secs: p.timeout_secs,
            cwd: p.cwd,
            env: BTreeMap::new(),
            stdin: None,
            mode: if background {
                ExecMode::Background
            } else {
                ExecMode::Sync
            },
        };
        if background {
            return answer(
                self.kiln
                    .instances
                    .exec(&user, &p.session_id, spec)
                    .await
                    .map(|started| {
                        json!({"exec_id": started.exec_id, "status": started.status.as_str()})
                    }),
            );
        }
        let max = self.kiln.config.mcp.max_tool_output_bytes;
        let done = match ctx.meta.get_progress_token() {
            Some(token) => {
                exec_with_progress(&self.kiln, &user, &p.session_id, spec, &ctx.peer, token).await
            }
            None => self.kiln.instances.exec(&user, &p.session_id, spec).await,
        };
        answer(done.map(|done| exec_json(&done, max)))
    }

    #[tool(description = "Read a text file of a session (a range of it with offset and length).")]
    async fn read_file(
        &self,
        Parameters(p): Parameters<params::ReadFile>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        let max = self.kiln.config.mcp.max_tool_output_bytes as u64;
        let range = ReadRange::From {
            offset: p.offset.unwrap_or(0),
            length: Some(p.length.unwrap_or(max).min(max)),
        };
        let files = &self.kiln.config.files;
        answer(
            self.kiln
                .instances
                .read_file(files, &user, &p.session_id, &p.path, range)
                .await
                .map(|file| {
                    let binary = std::str::from_utf8(&file.content).is_err();
                    json!({
                        "path": file.path, "offset": file.offset, "size": file.size,
                        "content": String::from_utf8_lossy(&file.content),
                        "binary": binary, "truncated": file.truncated,
                    })
                }),
        )
    }

    #[tool(
        description = "Write (create or replace) a text file in a session; parent directories are created."
    )]
    async fn write_file(
        &self,
        Parameters(p): Parameters<params::WriteFile>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        let max = self.kiln.config.files.max_write_bytes;
        if p.content.len() > max {
            return Ok(invalid(format!("content: at most {max} bytes")));
        }
        let write = FileWrite {
            path: p.path,
            content: p.content.into_bytes(),
            mode: None,
            create_parents: true,
        };
        answer(
            self.kiln
                .instances
                .write_file(&user, &p.session_id, write)
                .await
                .map(|(path, size)| json!({ "path": path, "size": size })),
        )
    }

    #[tool(
        description = "Replace text that occurs exactly once in a file of a session; answers with the lines around the edit."
    )]
    async fn str_replace(
        &self,
        Parameters(p): Parameters<params::StrReplace>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        let edit = FileEdit::Replace {
            old: p.old_str,
            new: p.new_str,
        };
        let outcome = match self
            .kiln
            .instances
            .edit_file(&user, &p.session_id, &p.path, edit)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => return Ok(tool_error(&e)),
        };
        if !outcome.success {
            return Ok(CallToolResult::structured_error(
                json!({ "code": "no_unique_match", "message": outcome.message }),
            ));
        }
        answer(Ok(json!({
            "path": outcome.path, "message": outcome.message, "line": outcome.line,
            "snippet": outcome.snippet, "snippet_start_line": outcome.snippet_start_line,
        })))
    }

    #[tool(
        description = "List a directory of a session, depth levels down (symlinks are listed, not followed)."
    )]
    async fn list_files(
        &self,
        Parameters(p): Parameters<params::ListFiles>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        let path = p.path.unwrap_or_else(|| ".".into());
        let files = &self.kiln.config.files;
        answer(
            self.kiln
                .instances
                .list_files(files, &user, &p.session_id, &path, p.depth.unwrap_or(1))
                .await
                .map(|listing| {
                    let entries: Vec<Value> = listing
                        .entries
                        .iter()
                        .take(MAX_LISTED)
                        .map(|e| json!({"path": e.path, "kind": kind_name(e.kind), "size": e.size}))
                        .collect();
                    let truncated = listing.truncated || listing.entries.len() > MAX_LISTED;
                    json!({ "path": listing.path, "entries": entries, "truncated": truncated })
                }),
        )
    }

    #[tool(
        description = "The session's changes to its repository so far (git diff against the base commit, new files included)."
    )]
    async fn git_diff(
        &self,
        Parameters(p): Parameters<params::SessionRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        // `add -N` makes new files show in the diff without staging their content.
        let command = "git add -A -N . >/dev/null 2>&1; git -c core.quotepath=off diff --no-color";
        let spec = ExecSpec {
            command: ExecCommand::Shell(command.into()),
            timeout_secs: Some(60),
            cwd: None,
            env: BTreeMap::new(),
            stdin: None,
            mode: ExecMode::Sync,
        };
        let max = self.kiln.config.mcp.max_tool_output_bytes;
        answer(self.kiln.instances.exec(&user, &p.session_id, spec).await.map(|done| {
            let (diff, cut) = head(&done.stdout, max);
            json!({ "exit_code": done.exit_code, "diff": diff, "truncated": cut || done.truncated, "stderr": tail(&done.stderr, 4096).0 })
        }))
    }

    #[tool(
        description = "Save a checkpoint of a session's whole filesystem, to rollback to later."
    )]
    async fn snapshot(
        &self,
        Parameters(p): Parameters<params::Snapshot>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        answer(
            self.kiln
                .instances
                .create_snapshot(&user, &p.session_id, p.name.as_deref(), SnapshotKind::Checkpoint)
                .await
                .map(|s| json!({"snapshot_id": s.snapshot_id, "name": s.name, "size_bytes": s.size_bytes})),
        )
    }

    #[tool(
        description = "Put a session back to a checkpoint (the latest, or the one named); the session id stays."
    )]
    async fn rollback(
        &self,
        Parameters(p): Parameters<params::Rollback>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        answer(
            self.kiln
                .instances
                .rollback(&user, &p.session_id, p.name.as_deref())
                .await
                .map(|(checkpoint, session)| {
                    json!({"checkpoint": checkpoint.name, "session": session_json(&session)})
                }),
        )
    }

    #[tool(
        description = "Copy a session count times (files and state as they are now) into new sessions of yours; waits until they are ready."
    )]
    async fn fork(
        &self,
        Parameters(p): Parameters<params::Fork>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        let forks = match self
            .kiln
            .instances
            .fork(&user, &p.session_id, p.count)
            .await
        {
            Ok(forks) => forks,
            Err(e) => return Ok(tool_error(&e)),
        };
        let mut items = Vec::with_capacity(forks.len());
        for fork in forks {
            match wait_ready(&self.kiln, &user, &fork.session_id).await {
                Ok(ready) => items.push(session_json(&ready)),
                Err(_) => items.push(session_json(&fork)),
            }
        }
        answer(Ok(json!({ "sessions": items })))
    }

    #[tool(
        description = "Run the sample's tests on the session's current state and grade them like SWE-bench: resolved, and each FAIL_TO_PASS / PASS_TO_PASS test's status. The session's files are left as they were."
    )]
    async fn verify(
        &self,
        Parameters(p): Parameters<params::SessionRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        let job = match self
            .kiln
            .sessions
            .start_verification(&user, &p.session_id)
            .await
        {
            Ok(job) => job,
            Err(e) => return Ok(tool_error(&e)),
        };
        answer(
            wait_verification(&self.kiln, &user, &p.session_id, &job.job_id)
                .await
                .map(|job| verification_json(&job)),
        )
    }

    #[tool(description = "Close a session: its sandbox is destroyed at once.")]
    async fn close_session(
        &self,
        Parameters(p): Parameters<params::SessionRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let user = self.caller(&ctx)?;
        answer(
            self.kiln
                .instances
                .delete(&user, &p.session_id)
                .await
                .map(|s| session_json(&s)),
        )
    }
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "other",
    }
}

/// The first `max` bytes of `text` (on a character boundary), and whether any was cut.
fn head(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}
