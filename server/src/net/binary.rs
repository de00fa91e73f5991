//! The binary session: frames in, responses out, in request order.
//!
//! Pipelined requests are answered in batches: the session decodes and executes every frame
//! already in its read buffer, encodes each response into its write buffer, and flushes once
//! when the input is drained (or the buffered responses reach `MAX_WRITE_BACKLOG_BYTES`).
//! That keeps order, batches syscalls and bounds memory: a client that sends but never reads
//! stalls its own session once the backlog is full, and is closed after the idle timeout.

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use sutra_protocol::{decode_request, FrameCodec, FrameError, Response, ResponseFrame};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::{Encoder, Framed};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use super::{SessionError, Shared};
use crate::service::{self, Service};

/// Initial read and write buffer size; buffers grow only as far as one frame needs.
const INITIAL_BUFFER_BYTES: usize = 8 * 1024;

pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let max_frame_bytes = shared.config.limits.max_frame_bytes;
    let mut framed = Framed::with_capacity(
        stream,
        FrameCodec::new(max_frame_bytes),
        INITIAL_BUFFER_BYTES,
    );
    let mut encoder = FrameCodec::new(max_frame_bytes);
    let service = &*shared.service;
    loop {
        let Some(mut item) = super::next_item(&mut framed, shared, shutdown, peer).await else {
            break;
        };
        // Answer this frame and every complete frame already buffered, then flush once.
        let mut closing = false;
        loop {
            match item {
                None => {
                    closing = true;
                    break;
                }
                Some(Ok(payload)) => {
                    let frame = respond(service, &payload, peer);
                    encode(&mut encoder, frame, framed.write_buffer_mut(), peer);
                }
                Some(Err(FrameError::TooLarge { len, max })) => {
                    // The stream cannot be delimited any more: reply, then close.
                    let error = FrameError::TooLarge { len, max };
                    let response = Response::error(error.code(), error.to_string());
                    service.count_response(&response);
                    encode(
                        &mut encoder,
                        ResponseFrame {
                            request_id: 0,
                            opcode: 0,
                            response,
                        },
                        framed.write_buffer_mut(),
                        peer,
                    );
                    flush(&mut framed, shared).await?;
                    return Err(error.into());
                }
                Some(Err(error)) => return Err(error.into()),
            }
            if framed.write_buffer().len() >= shared.config.max_write_backlog_bytes {
                flush(&mut framed, shared).await?;
            }
            match framed.next().now_or_never() {
                Some(next) => item = next,
                None => break,
            }
        }
        flush(&mut framed, shared).await?;
        if closing {
            break;
        }
    }
    flush(&mut framed, shared).await
}

/// Decodes and executes one payload. A bad payload gets an error response echoing whatever
/// of the header could be read; the connection stays usable.
fn respond(service: &Service, payload: &Bytes, peer: SocketAddr) -> ResponseFrame {
    match decode_request(payload, service.limits()) {
        Ok(frame) => {
            let opcode = frame.request.opcode() as u8;
            ResponseFrame {
                request_id: frame.request_id,
                opcode,
                response: service.call(frame.request),
            }
        }
        Err(failure) => {
            debug!(%peer, error = %failure.error, "undecodable request");
            let (request_id, opcode) = failure
                .header
                .map_or((0, 0), |header| (header.request_id, header.opcode));
            let response = service::decode_error(&failure.error);
            service.count_response(&response);
            ResponseFrame {
                request_id,
                opcode,
                response,
            }
        }
    }
}

fn encode(
    encoder: &mut FrameCodec,
    frame: ResponseFrame,
    dst: &mut bytes::BytesMut,
    peer: SocketAddr,
) {
    let (request_id, opcode) = (frame.request_id, frame.opcode);
    if let Err(failure) = encoder.encode(frame, dst) {
        // Limits are validated so every response fits a frame; reaching this is a bug.
        error!(%peer, %failure, request_id, "response could not be encoded");
        let fallback = ResponseFrame {
            request_id,
            opcode,
            response: service::internal_error(),
        };
        if let Err(failure) = encoder.encode(fallback, dst) {
            error!(%peer, %failure, "error response could not be encoded");
        }
    }
}

async fn flush(
    framed: &mut Framed<TcpStream, FrameCodec>,
    shared: &Shared,
) -> Result<(), SessionError> {
    match timeout(
        shared.config.idle_timeout,
        SinkExt::<ResponseFrame>::flush(framed),
    )
    .await
    {
        Ok(result) => Ok(result?),
        Err(_) => Err(SessionError::WriteTimeout),
    }
}
