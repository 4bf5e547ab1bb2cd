//! A `host_port` forward's listener, and the pipe each accepted connection goes through.
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kiln_config::PortsConfig;
use kiln_runtime::{PortStream, Runtime, SandboxId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

use super::connect_port;
use super::registry::{self, OpenForward};

/// Bytes copied per read.
const CHUNK: usize = 64 * 1024;

/// Accepts connections until the forward closes, at most
/// `ports.max_connections_per_forward` at once (more wait in the backlog).
pub(super) async fn serve(
    listener: TcpListener,
    forward: Arc<OpenForward>,
    runtime: Arc<dyn Runtime>,
    sandbox: SandboxId,
    config: PortsConfig,
) {
    let mut stopped = forward.stopped();
    loop {
        let permit = tokio::select! {
            _ = registry::until_stopped(&mut stopped) => return,
            permit = Arc::clone(&forward.connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let socket = tokio::select! {
            _ = registry::until_stopped(&mut stopped) => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(forward = %forward.forward_id, error = %e, "port forward accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tokio::spawn(carry(
            socket,
            permit,
            Arc::clone(&forward),
            Arc::clone(&runtime),
            sandbox.clone(),
            config.clone(),
        ));
    }
}

/// One accepted connection: piped to the port inside until either side ends, it idles
/// for `ports.idle_timeout_secs`, or the forward closes. Nothing listening inside closes
/// it at once.
async fn carry(
    socket: TcpStream,
    _permit: OwnedSemaphorePermit,
    forward: Arc<OpenForward>,
    runtime: Arc<dyn Runtime>,
    sandbox: SandboxId,
    config: PortsConfig,
) {
    let mut stopped = forward.stopped();
    let timeout = Duration::from_secs(config.connect_timeout_secs);
    let inside = match connect_port(runtime.as_ref(), &sandbox, forward.port, timeout).await {
        Ok(inside) => inside,
        Err(e) => {
            tracing::debug!(forward = %forward.forward_id, error = %e, "port forward connection refused inside");
            return;
        }
    };
    let _ = socket.set_nodelay(true);
    let idle = Duration::from_secs(config.idle_timeout_secs);
    tokio::select! {
        _ = registry::until_stopped(&mut stopped) => {}
        result = pipe(socket, inside, idle) => {
            if let Err(e) = result {
                tracing::debug!(forward = %forward.forward_id, error = %e, "port forward connection ended");
            }
        }
    }
}

/// Copies both ways until both directions end (an end of file is passed on as a half
/// close), or no byte has moved either way for `idle`.
pub(super) async fn pipe<A, B>(a: A, b: B, idle: Duration) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let activity = Activity::new();
    tokio::try_join!(
        copy_half(&mut a_read, &mut b_write, &activity, idle),
        copy_half(&mut b_read, &mut a_write, &activity, idle),
    )?;
    Ok(())
}

/// When a byte last moved, either way.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed)),
        )
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

async fn copy_half<R, W>(
    reader: &mut R,
    writer: &mut W,
    activity: &Activity,
    idle: Duration,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "the connection was idle");
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match tokio::time::timeout(idle, reader.read(&mut buf)).await {
            Ok(read) => read?,
            // Quiet this way; the connection is idle only if the other way is too.
            Err(_) if activity.idle_for() < idle => continue,
            Err(_) => return Err(timed_out()),
        };
        if n == 0 {
            return writer.shutdown().await;
        }
        tokio::time::timeout(idle, writer.write_all(&buf[..n]))
            .await
            .map_err(|_| timed_out())??;
        activity.touch();
    }
}

/// A stream that holds a connection permit of its forward for as long as it lives.
pub(super) struct Permitted {
    inner: PortStream,
    _permit: OwnedSemaphorePermit,
}

impl Permitted {
    pub fn new(inner: PortStream, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            _permit: permit,
        }
    }
}

impl AsyncRead for Permitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Permitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_pass_both_ways_and_an_end_of_file_is_passed_on() {
        let (client, near) = tokio::io::duplex(1024);
        let (far, service) = tokio::io::duplex(1024);
        let piping = tokio::spawn(pipe(near, far, Duration::from_secs(60)));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut service_read, mut service_write) = tokio::io::split(service);
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sending = {
            let sent = sent.clone();
            tokio::spawn(async move {
                client_write.write_all(&sent).await.expect("write");
                client_write.shutdown().await.expect("shutdown");
            })
        };
        let mut got = Vec::new();
        service_read
            .read_to_end(&mut got)
            .await
            .expect("service reads");
        assert_eq!(got, sent, "every byte, in order, then the end of file");
        service_write.write_all(b"answer").await.expect("answer");
        service_write.shutdown().await.expect("shutdown");
        let mut answer = Vec::new();
        client_read
            .read_to_end(&mut answer)
            .await
            .expect("client reads");
        assert_eq!(answer, b"answer");
        sending.await.expect("sender");
        piping.await.expect("pipe task").expect("pipe ends cleanly");
    }

    #[tokio::test]
    async fn a_connection_idle_both_ways_is_ended() {
        let (_client, near) = tokio::io::duplex(1024);
        let (far, _service) = tokio::io::duplex(1024);
        let err = pipe(near, far, Duration::from_millis(50))
            .await
            .expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
