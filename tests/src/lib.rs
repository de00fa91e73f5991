//! Harness for the cross-crate integration tests: a real sutra-storage server on
//! `127.0.0.1:0` with a temporary data directory, plus raw-socket helpers for tests that
//! check exact bytes.

#![allow(
    clippy::expect_used,
    clippy::missing_panics_doc,
    reason = "a test harness fails loudly on broken assumptions"
)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use sutra_protocol::{
    decode_response, FrameCodec, Request, RequestFrame, ResponseFrame, MAX_FRAME_BYTES_CAP,
};
use sutra_server::{Server, ServerConfig, ServerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

/// Upper bound for any single wait in a test, so a hang fails instead of stalling CI.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running in-process server. Dropping it cancels the server; [`TestServer::stop`] also
/// waits for the graceful shutdown to finish and returns its result.
pub struct TestServer {
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    data_dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with the default test configuration.
    pub async fn start() -> anyhow::Result<TestServer> {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `configure` has adjusted the test configuration.
    pub async fn start_with(
        configure: impl FnOnce(&mut ServerConfig),
    ) -> anyhow::Result<TestServer> {
        let data_dir = tempfile::tempdir().context("creating the data dir")?;
        Self::start_in(data_dir, configure).await
    }

    /// Starts a server on an existing data directory (to test restarts).
    pub async fn start_in(
        data_dir: tempfile::TempDir,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> anyhow::Result<TestServer> {
        let mut config = ServerConfig::for_tests(data_dir.path().to_path_buf());
        configure(&mut config);
        let server = Server::bind(config).await.context("binding the server")?;
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Ok(TestServer {
            addr,
            shutdown,
            task: Some(task),
            data_dir,
        })
    }

    /// `host:port` for clients.
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down gracefully and returns the server's result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop_keeping_data().await.map(drop)
    }

    /// Shuts down gracefully and hands back the data directory for a restart.
    pub async fn stop_keeping_data(mut self) -> anyhow::Result<tempfile::TempDir> {
        self.shutdown.cancel();
        let task = self.task.take().context("server already stopped")?;
        tokio::time::timeout(STEP_TIMEOUT, task)
            .await
            .context("server did not stop in time")???;
        let placeholder = tempfile::tempdir()?;
        Ok(std::mem::replace(&mut self.data_dir, placeholder))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Encodes a request as one complete frame.
pub fn request_bytes(request_id: u32, request: Request) -> Vec<u8> {
    let mut dst = BytesMut::new();
    FrameCodec::new(MAX_FRAME_BYTES_CAP)
        .encode(
            RequestFrame {
                request_id,
                request,
            },
            &mut dst,
        )
        .expect("test requests fit a frame");
    dst.to_vec()
}

/// Wraps a raw payload (header and body) in a frame.
pub fn frame_bytes(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("test payloads are small");
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    frame
}

/// A raw binary connection that reads whole response frames.
pub struct RawConnection {
    /// The socket.
    pub stream: TcpStream,
    buffer: BytesMut,
    codec: FrameCodec,
}

impl RawConnection {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<RawConnection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawConnection {
            stream,
            buffer: BytesMut::new(),
            codec: FrameCodec::new(MAX_FRAME_BYTES_CAP),
        })
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads the next response; `None` when the server closed the connection cleanly between
    /// frames. A close in the middle of a frame is an error.
    pub async fn read(&mut self) -> anyhow::Result<Option<ResponseFrame>> {
        loop {
            if let Some(payload) = self.codec.decode(&mut self.buffer)? {
                return Ok(Some(decode_response(&payload)?));
            }
            let read = tokio::time::timeout(STEP_TIMEOUT, self.stream.read_buf(&mut self.buffer))
                .await
                .context("timed out waiting for a response")??;
            if read == 0 {
                if self.buffer.has_remaining() {
                    bail!(
                        "connection closed in the middle of a frame ({} bytes)",
                        self.buffer.len()
                    );
                }
                return Ok(None);
            }
        }
    }

    /// Writes `bytes` while concurrently reading `count` responses, so neither side waits on
    /// the other's socket buffer.
    pub async fn pipeline(
        &mut self,
        bytes: &[u8],
        count: usize,
    ) -> anyhow::Result<Vec<ResponseFrame>> {
        let (mut reader, mut writer) = self.stream.split();
        let write = async {
            writer.write_all(bytes).await?;
            Ok::<_, anyhow::Error>(())
        };
        let read = async {
            let mut frames = Vec::with_capacity(count);
            while frames.len() < count {
                if let Some(payload) = self.codec.decode(&mut self.buffer)? {
                    frames.push(decode_response(&payload)?);
                    continue;
                }
                let read = tokio::time::timeout(STEP_TIMEOUT, reader.read_buf(&mut self.buffer))
                    .await
                    .context("timed out waiting for pipelined responses")??;
                if read == 0 {
                    bail!(
                        "connection closed after {} of {count} responses",
                        frames.len()
                    );
                }
            }
            Ok(frames)
        };
        let ((), frames) = tokio::try_join!(write, read)?;
        Ok(frames)
    }

    /// Reads the next response, failing on a closed connection.
    pub async fn expect(&mut self) -> anyhow::Result<ResponseFrame> {
        self.read()
            .await?
            .context("connection closed while a response was expected")
    }

    /// Waits until the server closes the connection (reading and discarding nothing else).
    pub async fn expect_closed(&mut self) -> anyhow::Result<()> {
        match self.read().await {
            Ok(None) => Ok(()),
            Ok(Some(frame)) => bail!("expected the connection to close, got {frame:?}"),
            // A reset also counts as closed.
            Err(error) if error.downcast_ref::<std::io::Error>().is_some() => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Sends text lines and reads JSON reply lines.
pub struct TextConnection {
    stream: tokio::io::BufReader<TcpStream>,
}

impl TextConnection {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<TextConnection> {
        Ok(TextConnection {
            stream: tokio::io::BufReader::new(TcpStream::connect(addr).await?),
        })
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.get_mut().write_all(bytes).await?;
        Ok(())
    }

    /// Reads one reply line as JSON; `None` at end of stream.
    pub async fn reply(&mut self) -> anyhow::Result<Option<serde_json::Value>> {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        let read = tokio::time::timeout(STEP_TIMEOUT, self.stream.read_line(&mut line))
            .await
            .context("timed out waiting for a reply line")??;
        if read == 0 {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&line).with_context(|| format!("reply is not JSON: {line:?}"))?,
        ))
    }

    /// Half-closes the connection: the server sees end of input.
    pub async fn shutdown_write(&mut self) -> anyhow::Result<()> {
        self.stream.get_mut().shutdown().await?;
        Ok(())
    }

    /// Sends one command line and returns its reply.
    pub async fn command(&mut self, line: &str) -> anyhow::Result<serde_json::Value> {
        self.send(format!("{line}\n").as_bytes()).await?;
        self.reply()
            .await?
            .context("connection closed instead of replying")
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// `GET path` with `Authorization: Bearer <token>`; the status and body.
pub async fn http_get_bearer(
    addr: SocketAddr,
    path: &str,
    token: &str,
) -> anyhow::Result<(u16, String)> {
    http_request(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await
}

/// `POST path` with a JSON `body` on a fresh connection; the status and body.
pub async fn http_post(addr: SocketAddr, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    http_post_as(addr, path, Some("application/json"), body).await
}

/// `http_post` with another `Content-Type` header, or none.
pub async fn http_post_as(
    addr: SocketAddr,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let content_type =
        content_type.map_or(String::new(), |value| format!("Content-Type: {value}\r\n"));
    http_request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// Sends `request` (a whole HTTP/1.1 request) on a fresh connection; the status and body.
pub async fn http_request(addr: SocketAddr, request: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .context("HTTP response timed out")??;
    let text = String::from_utf8(raw)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    let status = head
        .split(' ')
        .nth(1)
        .context("no status code")?
        .parse()
        .context("bad status code")?;
    Ok((status, body.to_owned()))
}

/// Lines of a `--help` text that speak of the project's own plans instead of what the binary
/// does now ("... arrives with the cache-shard issue", "there is no authentication yet"): such
/// text goes stale the day the plan lands. Every binary's help is checked with this.
pub fn stale_help(help: &str) -> Vec<String> {
    const WORDS: [&str; 9] = [
        "issue", "issues", "yet", "future", "todo", "soon", "planned", "arrives", "will",
    ];
    help.lines()
        .filter(|line| {
            line.split(|c: char| !c.is_alphanumeric())
                .any(|word| WORDS.contains(&word.to_lowercase().as_str()))
        })
        .map(str::to_owned)
        .collect()
}
