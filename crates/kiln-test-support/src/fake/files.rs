//! A sandbox's file tree in memory, answering as the agent does (same error codes, same
//! `str_replace` rules and wording), so services see no difference in what they handle.
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_protocol::{
    AgentError, Binary, DirEntry, DirListing, EditLinesRequest, ErrorCode, FileContent, FileKind,
    Metadata, Replaced, WriteFileRequest, MAX_DIR_ENTRIES, MAX_FILE_BYTES,
};

#[derive(Debug, Clone)]
enum Node {
    File {
        content: Vec<u8>,
        mode: u32,
        modified_ms: i64,
    },
    Dir {
        mode: u32,
        modified_ms: i64,
    },
}

/// Absolute, normalised paths to files and directories. `/`, `/tmp` and `/testbed` exist
/// from the start.
#[derive(Debug, Clone)]
pub struct Files {
    nodes: BTreeMap<String, Node>,
}

impl Default for Files {
    fn default() -> Self {
        let mut files = Files {
            nodes: BTreeMap::new(),
        };
        for dir in ["/", "/tmp", "/testbed"] {
            files.nodes.insert(dir.into(), dir_node(0o755));
        }
        files
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn dir_node(mode: u32) -> Node {
    Node::Dir {
        mode,
        modified_ms: now_ms(),
    }
}

/// `/a/./b/../c` → `/a/c`; relative paths are taken from `/` (the agent's cwd).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent(path: &str) -> Option<String> {
    if path == "/" {
        return None;
    }
    let cut = path.rfind('/').unwrap_or(0);
    Some(if cut == 0 {
        "/".into()
    } else {
        path[..cut].into()
    })
}

fn not_found(op: &str, path: &str) -> AgentError {
    AgentError::new(
        ErrorCode::NotFound,
        format!("cannot {op} {path}: No such file or directory (os error 2)"),
    )
}

fn is_directory(op: &str, path: &str) -> AgentError {
    AgentError::new(
        ErrorCode::IsDirectory,
        format!("cannot {op} {path}: Is a directory (os error 21)"),
    )
}

fn not_a_directory(op: &str, path: &str) -> AgentError {
    AgentError::new(
        ErrorCode::NotADirectory,
        format!("cannot {op} {path}: Not a directory (os error 20)"),
    )
}

impl Files {
    /// The file's bytes, if `path` is a file.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        match self.nodes.get(&normalize(path)) {
            Some(Node::File { content, .. }) => Some(content),
            _ => None,
        }
    }

    /// The file as text (lossy), if `path` is a file.
    pub fn text(&self, path: &str) -> Option<String> {
        self.get(path)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// The bytes all files hold (what a snapshot of this tree is sized at).
    pub fn size_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|node| match node {
                Node::File { content, .. } => content.len() as u64,
                Node::Dir { .. } => 0,
            })
            .sum()
    }

    /// Whether anything is at `path`.
    pub fn exists(&self, path: &str) -> bool {
        self.nodes.contains_key(&normalize(path))
    }

    /// Writes a file (mode 0644), creating its parents: for tests and exec scripts.
    pub fn put(&mut self, path: &str, content: impl Into<Vec<u8>>) {
        let path = normalize(path);
        self.mkdir_p(parent(&path).as_deref().unwrap_or("/"));
        self.nodes.insert(
            path,
            Node::File {
                content: content.into(),
                mode: 0o644,
                modified_ms: now_ms(),
            },
        );
    }

    /// Removes `path` and everything under it (`rm -rf`).
    pub fn remove(&mut self, path: &str) {
        let path = normalize(path);
        let prefix = format!("{}/", path.trim_end_matches('/'));
        self.nodes
            .retain(|p, _| *p != path && !p.starts_with(&prefix));
        self.nodes
            .entry("/".into())
            .or_insert_with(|| dir_node(0o755));
    }

    /// Creates `path` and its missing parents as directories (`mkdir -p`); files in the
    /// way stay.
    pub fn mkdir_p(&mut self, path: &str) {
        let path = normalize(path);
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at.push('/');
            at.push_str(part);
            self.nodes
                .entry(at.clone())
                .or_insert_with(|| dir_node(0o755));
        }
    }

    /// The agent's `read_file`.
    pub fn read(&self, path: &str, max_bytes: Option<u64>) -> Result<FileContent, AgentError> {
        self.read_at(path, 0, max_bytes)
    }

    /// The agent's `read_file` from byte `offset` on.
    pub fn read_at(
        &self,
        path: &str,
        offset: u64,
        max_bytes: Option<u64>,
    ) -> Result<FileContent, AgentError> {
        let key = normalize(path);
        match self.nodes.get(&key) {
            None => Err(not_found("read", path)),
            Some(Node::Dir { .. }) => Err(is_directory("read", path)),
            Some(Node::File { content, mode, .. }) => {
                let cap = max_bytes.unwrap_or(MAX_FILE_BYTES).min(MAX_FILE_BYTES);
                let from = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(content.len());
                let keep = usize::try_from(cap)
                    .unwrap_or(usize::MAX)
                    .min(content.len() - from);
                Ok(FileContent {
                    content: Binary(content[from..from + keep].to_vec()),
                    mode: *mode,
                    size: content.len() as u64,
                    truncated: from + keep < content.len(),
                })
            }
        }
    }

    /// The agent's `write_file`: replaces the file, keeping its mode unless one is given.
    pub fn write(&mut self, request: WriteFileRequest) -> Result<u64, AgentError> {
        let path = &request.path;
        let key = normalize(path);
        let Some(dir) = parent(&key) else {
            return Err(is_directory("write", path));
        };
        match self.nodes.get(&dir) {
            Some(Node::Dir { .. }) => {}
            Some(Node::File { .. }) => return Err(not_a_directory("write", path)),
            None if request.create_parents => {
                // A file on the way down refuses, as `create_dir_all` does.
                let mut at = Some(dir.clone());
                while let Some(p) = at {
                    if let Some(Node::File { .. }) = self.nodes.get(&p) {
                        return Err(not_a_directory("write", path));
                    }
                    at = parent(&p);
                }
                self.mkdir_p(&dir);
            }
            None => return Err(not_found("write", path)),
        }
        let old_mode = match self.nodes.get(&key) {
            Some(Node::Dir { .. }) => return Err(is_directory("write", path)),
            Some(Node::File { mode, .. }) => Some(*mode),
            None => None,
        };
        let size = request.content.len() as u64;
        self.nodes.insert(
            key,
            Node::File {
                content: request.content.into_vec(),
                mode: request.mode.or(old_mode).unwrap_or(0o644) & 0o7777,
                modified_ms: now_ms(),
            },
        );
        Ok(size)
    }

    /// The agent's `edit_lines` ([`kiln_protocol::line_edit`]).
    pub fn edit_lines(&mut self, request: &EditLinesRequest) -> Result<Replaced, AgentError> {
        let path = &request.path;
        let key = normalize(path);
        let (updated, replaced, mode) = match self.nodes.get(&key) {
            None => return Err(not_found("edit", path)),
            Some(Node::Dir { .. }) => return Err(is_directory("edit", path)),
            Some(Node::File { content, mode, .. }) => {
                let (updated, replaced) = kiln_protocol::line_edit::replace_lines(
                    content,
                    path,
                    request.start_line,
                    request.end_line,
                    &request.new_text,
                )?;
                (updated, replaced, *mode)
            }
        };
        self.nodes.insert(
            key,
            Node::File {
                content: updated,
                mode,
                modified_ms: now_ms(),
            },
        );
        Ok(replaced)
    }

    /// The agent's `str_replace` (SWE-agent's rules and wording).
    pub fn str_replace(
        &mut self,
        path: &str,
        old: &str,
        new: &str,
    ) -> Result<Replaced, AgentError> {
        if old.is_empty() {
            return Err(AgentError::new(
                ErrorCode::InvalidRequest,
                "old_str must not be empty",
            ));
        }
        let key = normalize(path);
        let (updated, replaced, mode) = match self.nodes.get(&key) {
            None => return Err(not_found("edit", path)),
            Some(Node::Dir { .. }) => {
                return Err(AgentError::new(
                    ErrorCode::IsDirectory,
                    format!("{path} is a directory"),
                ))
            }
            Some(Node::File { content, mode, .. }) => {
                let (updated, replaced) =
                    kiln_protocol::str_replace::replace_once(content, path, old, new)?;
                (updated, replaced, *mode)
            }
        };
        self.nodes.insert(
            key,
            Node::File {
                content: updated,
                mode,
                modified_ms: now_ms(),
            },
        );
        Ok(replaced)
    }

    /// The agent's `list_dir`: the directory's entries, sorted by name.
    pub fn list(&self, path: &str) -> Result<DirListing, AgentError> {
        let key = normalize(path);
        match self.nodes.get(&key) {
            None => return Err(not_found("list", path)),
            Some(Node::File { .. }) => return Err(not_a_directory("list", path)),
            Some(Node::Dir { .. }) => {}
        }
        let prefix = if key == "/" {
            "/".to_string()
        } else {
            format!("{key}/")
        };
        let mut entries: Vec<DirEntry> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| p.len() > prefix.len() && !p[prefix.len()..].contains('/'))
            .map(|(p, node)| {
                let (kind, size, mode) = kind_size_mode(node);
                DirEntry {
                    name: p[prefix.len()..].to_string(),
                    kind,
                    size,
                    mode,
                    modified_ms: 0,
                }
            })
            .collect();
        let truncated = entries.len() > MAX_DIR_ENTRIES;
        entries.truncate(MAX_DIR_ENTRIES);
        Ok(DirListing { entries, truncated })
    }

    /// The agent's `stat`.
    pub fn stat(&self, path: &str) -> Result<Metadata, AgentError> {
        let node = self
            .nodes
            .get(&normalize(path))
            .ok_or_else(|| not_found("stat", path))?;
        let (kind, size, mode) = kind_size_mode(node);
        let modified_ms = match node {
            Node::File { modified_ms, .. } | Node::Dir { modified_ms, .. } => *modified_ms,
        };
        Ok(Metadata {
            kind,
            size,
            mode,
            modified_ms,
        })
    }
}

fn kind_size_mode(node: &Node) -> (FileKind, u64, u32) {
    match node {
        Node::File { content, mode, .. } => (FileKind::File, content.len() as u64, *mode),
        Node::Dir { mode, .. } => (FileKind::Dir, 4096, *mode),
    }
}
