//! The answer to a connection over `MAX_CONNECTIONS`: Busy in its own dialect, then close.

use std::time::Duration;

use bytes::BytesMut;
use sutra_protocol::{ErrorCode, FrameCodec, Response, ResponseFrame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Encoder;

use super::sniff::looks_like_http;

/// Answers an over-limit connection with Busy in its dialect, then closes it.
pub(crate) async fn reject_busy(
    mut stream: TcpStream,
    sniff_timeout: Duration,
    max_frame_bytes: u32,
) {
    const MESSAGE: &str = "too many connections (MAX_CONNECTIONS reached); retry later";
    let mut prefix = [0_u8; 32];
    let peeked = tokio::time::timeout(sniff_timeout, stream.peek(&mut prefix)).await;
    let seen = match peeked {
        Ok(Ok(len)) => prefix.get(..len).unwrap_or_default(),
        _ => &[],
    };
    let reply: Vec<u8> = if seen.first().is_none_or(|byte| *byte == 0x00) {
        let mut dst = BytesMut::new();
        let frame = ResponseFrame {
            request_id: 0,
            opcode: 0,
            response: Response::error(ErrorCode::Busy, MESSAGE),
        };
        if FrameCodec::new(max_frame_bytes)
            .encode(frame, &mut dst)
            .is_err()
        {
            return;
        }
        dst.to_vec()
    } else if looks_like_http(seen) {
        let body = crate::json::failure(ErrorCode::Busy, MESSAGE).to_string();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    } else {
        let mut line = crate::json::failure(ErrorCode::Busy, MESSAGE).to_string();
        line.push('\n');
        line.into_bytes()
    };
    let write = async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(sniff_timeout, write).await;
}
