//! The server-side spool of a streamed exec: every frame of its stream, in order, in a file
//! of its own, so a client that (re)connects reads every frame after the last one it saw,
//! once. A frame's id is the spool offset just past it; `Last-Event-ID: N` resumes at N.
//!
//! A record is `[kind: u8][len: u32 LE][payload]`. Output payloads are the command's bytes;
//! a UTF-8 sequence cut by a pipe read is held back and prepended to the next chunk of that
//! stream, so text reaches clients as text. The spool stops taking output at its cap (one
//! notice says so); the final record (`exit` or `error`) is always written.
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use kiln_protocol::OutputStream;
use serde_json::json;
use tokio::sync::watch;

/// What a frame of an exec stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// The command was spawned; data: `{"exec_id"}`.
    Start,
    /// Output bytes of the command.
    Stdout,
    Stderr,
    /// The command ended; data: `{"status","exit_code","signal","timed_out","duration_ms"}`.
    Exit,
    /// Something went wrong (data: `{"message"}`); final unless `{"final": false}`.
    Error,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            Self::Start => 1,
            Self::Stdout => 2,
            Self::Stderr => 3,
            Self::Exit => 4,
            Self::Error => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Start,
            2 => Self::Stdout,
            3 => Self::Stderr,
            4 => Self::Exit,
            5 => Self::Error,
            _ => return None,
        })
    }

    /// The SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Exit => "exit",
            Self::Error => "error",
        }
    }
}

/// One frame read back: its id (the spool offset past it), kind and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub id: u64,
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The frame's data as JSON: output as `{"text"}` when it is UTF-8, else `{"base64"}`;
    /// the other kinds' payloads are JSON already.
    pub fn data_json(&self) -> serde_json::Value {
        match self.kind {
            FrameKind::Stdout | FrameKind::Stderr => match std::str::from_utf8(&self.payload) {
                Ok(text) => json!({ "text": text }),
                Err(_) => {
                    use base64::Engine;
                    json!({ "base64": base64::engine::general_purpose::STANDARD.encode(&self.payload) })
                }
            },
            _ => serde_json::from_slice(&self.payload)
                .unwrap_or_else(|_| json!({ "message": "unreadable frame" })),
        }
    }

    /// Whether nothing follows this frame.
    pub fn is_final(&self) -> bool {
        match self.kind {
            FrameKind::Exit => true,
            FrameKind::Error => {
                serde_json::from_slice::<serde_json::Value>(&self.payload)
                    .ok()
                    .and_then(|v| v.get("final").and_then(|f| f.as_bool()))
                    != Some(false)
            }
            _ => false,
        }
    }
}

const HEADER: u64 = 5;

/// How far a spool is written, and whether it is complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub len: u64,
    pub finished: bool,
}

/// Writes one exec's spool; readers follow its [`Progress`].
pub struct SpoolWriter {
    file: File,
    len: u64,
    cap: u64,
    capped: bool,
    /// Bytes of an unfinished UTF-8 sequence, per stream (stdout, stderr).
    held: [Vec<u8>; 2],
    progress: watch::Sender<Progress>,
}

impl SpoolWriter {
    /// Creates the spool file at `path` (which must not exist).
    pub fn create(path: &Path, cap: u64) -> io::Result<Self> {
        let file = File::options().write(true).create_new(true).open(path)?;
        Ok(SpoolWriter {
            file,
            len: 0,
            cap,
            capped: false,
            held: [Vec::new(), Vec::new()],
            progress: watch::Sender::new(Progress::default()),
        })
    }

    /// Follows the writer's progress.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub fn start(&mut self, exec_id: &str) {
        self.record(
            FrameKind::Start,
            json!({ "exec_id": exec_id }).to_string().as_bytes(),
        );
    }

    pub fn output(&mut self, stream: OutputStream, data: &[u8]) {
        let (slot, kind) = match stream {
            OutputStream::Stdout => (0, FrameKind::Stdout),
            OutputStream::Stderr => (1, FrameKind::Stderr),
        };
        let mut bytes = std::mem::take(&mut self.held[slot]);
        bytes.extend_from_slice(data);
        let keep = bytes.len() - incomplete_suffix(&bytes);
        self.held[slot] = bytes.split_off(keep);
        if !bytes.is_empty() {
            self.output_record(kind, &bytes);
        }
    }

    /// Writes what is held back and the final frame; readers then see the spool complete.
    pub fn finish(mut self, kind: FrameKind, data: serde_json::Value) {
        for (slot, kind) in [(0, FrameKind::Stdout), (1, FrameKind::Stderr)] {
            let held = std::mem::take(&mut self.held[slot]);
            if !held.is_empty() {
                self.output_record(kind, &held);
            }
        }
        self.record(kind, data.to_string().as_bytes());
        let _ = self.file.flush();
        let len = self.len;
        self.progress.send_replace(Progress {
            len,
            finished: true,
        });
    }

    fn output_record(&mut self, kind: FrameKind, data: &[u8]) {
        if self.capped {
            return;
        }
        if self.len + HEADER + data.len() as u64 > self.cap {
            self.capped = true;
            let notice = json!({
                "message": format!("the stream reached its limit of {} bytes: later output is not streamed (the command runs on)", self.cap),
                "final": false,
            });
            self.record(FrameKind::Error, notice.to_string().as_bytes());
            return;
        }
        self.record(kind, data);
    }

    fn record(&mut self, kind: FrameKind, payload: &[u8]) {
        let Ok(len) = u32::try_from(payload.len()) else {
            return;
        };
        let mut header = [0u8; HEADER as usize];
        header[0] = kind.code();
        header[1..].copy_from_slice(&len.to_le_bytes());
        // A write error (disk full) ends the stream early for readers; the exec itself and
        // its stored result are not affected.
        if self
            .file
            .write_all(&header)
            .and_then(|()| self.file.write_all(payload))
            .is_err()
        {
            self.capped = true;
            return;
        }
        self.len += HEADER + u64::from(len);
        let len = self.len;
        self.progress.send_modify(|p| p.len = len);
    }
}

/// How many bytes at the end of `bytes` start a UTF-8 sequence that is not complete yet.
fn incomplete_suffix(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead
        }
        let needed = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

/// Reads a spool from an offset, following its writer while it runs.
pub struct SpoolReader {
    file: File,
    pos: u64,
    progress: Option<watch::Receiver<Progress>>,
}

impl SpoolReader {
    /// Opens the spool at `path` at offset `from`, following `progress` when the exec runs
    /// (`None`: the file is complete, or will never grow again). `from` must be 0 or a
    /// frame's id (else `InvalidInput`): record headers are walked up to it.
    pub fn open(
        path: &Path,
        from: u64,
        progress: Option<watch::Receiver<Progress>>,
    ) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let written = match &progress {
            Some(rx) => rx.borrow().len,
            None => file.metadata()?.len(),
        };
        let mut pos = 0;
        let mut header = [0u8; HEADER as usize];
        while pos < from && pos + HEADER <= written {
            file.seek(SeekFrom::Start(pos))?;
            file.read_exact(&mut header)?;
            pos += HEADER
                + u64::from(u32::from_le_bytes([
                    header[1], header[2], header[3], header[4],
                ]));
        }
        if pos != from {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an event id of this stream",
            ));
        }
        file.seek(SeekFrom::Start(from))?;
        Ok(SpoolReader {
            file,
            pos: from,
            progress,
        })
    }

    /// The next frame; `None` at the end of a complete (or abandoned) spool.
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        loop {
            let available = match &mut self.progress {
                Some(rx) => {
                    let progress = *rx.borrow_and_update();
                    if progress.len > self.pos {
                        progress.len
                    } else if progress.finished {
                        return Ok(None);
                    } else if rx.changed().await.is_err() {
                        // The writer is gone without finishing: read what the file has.
                        self.progress = None;
                        continue;
                    } else {
                        continue;
                    }
                }
                None => self.file.metadata()?.len(),
            };
            if available < self.pos + HEADER {
                return Ok(None);
            }
            return self.read_record(available).map(Some);
        }
    }

    fn read_record(&mut self, available: u64) -> io::Result<Frame> {
        let mut header = [0u8; HEADER as usize];
        self.file.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        let end = self.pos + HEADER + u64::from(len);
        if end > available {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a spool record is cut short",
            ));
        }
        let mut payload = vec![0u8; len as usize];
        self.file.read_exact(&mut payload)?;
        let kind = FrameKind::from_code(header[0])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown spool record"))?;
        self.pos = end;
        Ok(Frame {
            id: end,
            kind,
            payload,
        })
    }
}

/// Where exec `exec_id`'s spool lives under `dir`.
pub fn spool_path(dir: &Path, exec_id: &str) -> PathBuf {
    dir.join(format!("{exec_id}.spool"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_utf8_sequence_is_held_back() {
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(incomplete_suffix(b"abc"), 0);
        assert_eq!(incomplete_suffix(&euro[..1]), 1);
        assert_eq!(incomplete_suffix(&[b'a', euro[0], euro[1]]), 2);
        assert_eq!(incomplete_suffix(euro), 0);
        assert_eq!(incomplete_suffix(&[0xff, 0xfe]), 0);
    }

    #[tokio::test]
    async fn readers_resume_at_any_frame_and_see_each_byte_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = spool_path(dir.path(), "x");
        let mut writer = SpoolWriter::create(&path, 1 << 20).unwrap();
        let progress = writer.subscribe();
        writer.start("x");
        let euro = "€".as_bytes();
        writer.output(OutputStream::Stdout, &[b'a', euro[0]]);
        writer.output(OutputStream::Stdout, &euro[1..]);
        writer.output(OutputStream::Stderr, &[0xff]);
        writer.finish(FrameKind::Exit, json!({"exit_code": 0}));

        let mut all = Vec::new();
        let mut reader = SpoolReader::open(&path, 0, Some(progress.clone())).unwrap();
        while let Some(frame) = reader.next().await.unwrap() {
            all.push(frame);
        }
        let kinds: Vec<_> = all.iter().map(|f| f.kind).collect();
        use FrameKind::*;
        assert_eq!(kinds, [Start, Stdout, Stdout, Stderr, Exit]);
        assert_eq!(all[1].data_json(), json!({"text": "a"}));
        assert_eq!(all[2].data_json(), json!({"text": "€"}));
        assert_eq!(all[3].data_json(), json!({"base64": "/w=="}));
        assert!(all[4].is_final());
        for bad in [1, all[0].id + 1, all[4].id + 1] {
            let err = SpoolReader::open(&path, bad, None).err().unwrap();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        for (i, frame) in all.iter().enumerate() {
            let mut rest = Vec::new();
            let mut reader = SpoolReader::open(&path, frame.id, None).unwrap();
            while let Some(frame) = reader.next().await.unwrap() {
                rest.push(frame);
            }
            assert_eq!(rest, all[i + 1..]);
        }
    }

    #[tokio::test]
    async fn output_past_the_cap_is_dropped_with_one_notice() {
        let dir = tempfile::tempdir().unwrap();
        let path = spool_path(dir.path(), "y");
        let mut writer = SpoolWriter::create(&path, 40).unwrap();
        for _ in 0..10 {
            writer.output(OutputStream::Stdout, b"0123456789");
        }
        writer.finish(FrameKind::Exit, json!({"exit_code": 0}));
        let mut reader = SpoolReader::open(&path, 0, None).unwrap();
        let mut kinds = Vec::new();
        while let Some(frame) = reader.next().await.unwrap() {
            assert!(!frame.is_final() || frame.kind == FrameKind::Exit);
            kinds.push(frame.kind);
        }
        use FrameKind::*;
        assert_eq!(kinds, [Stdout, Stdout, Error, Exit]);
    }
}
