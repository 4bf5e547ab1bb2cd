//! The same framing as [`crate::frame`], over tokio's async streams.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::FRAME_HEADER_BYTES;
use crate::frame::{decode_frame_body, decode_frame_len, encode_frame, FrameError};

/// Writes one message as one frame and flushes.
pub async fn write_frame_async<W, T>(writer: &mut W, message: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize,
{
    let frame = encode_frame(message)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one message. `Ok(None)` means the peer closed the stream cleanly between frames.
pub async fn read_frame_async<R, T>(reader: &mut R) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
    T: DeserializeOwned,
{
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        match reader.read(&mut header[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated),
            n => filled += n,
        }
    }
    let len = decode_frame_len(header)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
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
    use crate::frame::MAX_FRAME_BYTES;

    #[tokio::test]
    async fn async_and_sync_framing_agree() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame_async(&mut a, &serde_json::json!({"type": "ping"}))
            .await
            .unwrap();
        drop(a);
        let got: serde_json::Value = read_frame_async(&mut b).await.unwrap().unwrap();
        assert_eq!(got["type"], "ping");
        assert!(read_frame_async::<_, serde_json::Value>(&mut b)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn async_refuses_oversize() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&((MAX_FRAME_BYTES as u32) + 1).to_be_bytes())
            .await
            .unwrap();
        let err = read_frame_async::<_, serde_json::Value>(&mut b)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
    }
}
