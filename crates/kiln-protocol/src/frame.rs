//! Length-prefixed framing: a `u32` big-endian byte count, then that many bytes of JSON.
//!
//! The length is checked against [`MAX_FRAME_BYTES`] before any body byte is read, so a
//! hostile or confused peer cannot make either side allocate more than that.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest frame body either side accepts or sends (8 MiB).
///
/// Every limit on payloads (output kept, file sizes) is chosen so that its base64 form
/// fits in one frame.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// Size of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced, or we tried to send, a frame above the limit.
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge {
        /// Announced or attempted body length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended after part of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The body was not a valid message.
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    /// The underlying stream failed.
    #[error("i/o error on the agent connection: {0}")]
    Io(#[from] io::Error),
}

/// Serializes `message` into one complete frame (header included), ready for a single write.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; FRAME_HEADER_BYTES];
    serde_json::to_writer(&mut buf, message)?;
    let len = buf.len() - FRAME_HEADER_BYTES;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    // Cannot fail: len <= MAX_FRAME_BYTES < u32::MAX.
    let header = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    buf[..FRAME_HEADER_BYTES].copy_from_slice(&header);
    Ok(buf)
}

/// Parses a length prefix, enforcing [`MAX_FRAME_BYTES`].
pub fn decode_frame_len(header: [u8; FRAME_HEADER_BYTES]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    Ok(len)
}

/// Parses a frame body.
pub fn decode_frame_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(body)?)
}

/// Writes one message as one frame and flushes.
pub fn write_frame<W: Write + ?Sized, T: Serialize>(
    writer: &mut W,
    message: &T,
) -> Result<(), FrameError> {
    let frame = encode_frame(message)?;
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}

/// Reads one message. `Ok(None)` means the peer closed the stream cleanly between frames.
pub fn read_frame<R: Read + ?Sized, T: DeserializeOwned>(
    reader: &mut R,
) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        }
    }
    let len = decode_frame_len(header)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).map_err(|err| {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(err)
        }
    })?;
    decode_frame_body(&body).map(Some)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn round_trips_a_message() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &serde_json::json!({"type": "ping"})).unwrap();
        assert_eq!(&buf[..4], &15u32.to_be_bytes());
        let mut cursor = Cursor::new(buf);
        let back: serde_json::Value = read_frame(&mut cursor).unwrap().unwrap();
        assert_eq!(back["type"], "ping");
        let end: Option<serde_json::Value> = read_frame(&mut cursor).unwrap();
        assert!(end.is_none(), "clean EOF between frames is None");
    }

    #[test]
    fn refuses_oversize_announced_length_without_reading_body() {
        let header = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        let mut cursor = Cursor::new(header.to_vec());
        let err = read_frame::<_, serde_json::Value>(&mut cursor).unwrap_err();
        match err {
            FrameError::TooLarge { len, max } => {
                assert_eq!(len, MAX_FRAME_BYTES + 1);
                assert_eq!(max, MAX_FRAME_BYTES);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(err_message_names_limit());
    }

    fn err_message_names_limit() -> bool {
        let msg = FrameError::TooLarge { len: 10, max: 5 }.to_string();
        msg.contains("10 bytes") && msg.contains("5 bytes")
    }

    #[test]
    fn refuses_to_send_oversize_frame() {
        let big = "x".repeat(MAX_FRAME_BYTES);
        let err = encode_frame(&big).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn truncated_header_and_body_are_errors() {
        let mut cursor = Cursor::new(vec![0u8, 0]);
        assert!(matches!(
            read_frame::<_, serde_json::Value>(&mut cursor),
            Err(FrameError::Truncated)
        ));
        let mut partial = 10u32.to_be_bytes().to_vec();
        partial.extend_from_slice(b"{\"a\"");
        let mut cursor = Cursor::new(partial);
        assert!(matches!(
            read_frame::<_, serde_json::Value>(&mut cursor),
            Err(FrameError::Truncated)
        ));
    }
}
