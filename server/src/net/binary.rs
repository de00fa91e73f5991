//! The binary session: frames in, responses out, in request order.
//!
//! Pipelined requests are answered in batches: the session decodes and executes every frame
//! already in its read buffer, encodes each response into its write buffer, and flushes once
//! when the input is drained (or the buffered responses reach `MAX_WRITE_BACKLOG_BYTES`).
//! Writes in a batch wait for the log together (one group commit), and a read waits for the
//! writes queued before it. That keeps order, batches syscalls and bounds memory: a client that sends but never reads
//! stalls its own session once the backlog is full, and is closed after the idle timeout.

use std::net::SocketAddr;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use sutra_protocol::{decode_request, FrameCodec, FrameError, Response, ResponseFrame};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::{Encoder, Framed};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use super::session::{close_after_shutdown, next_item, SessionError, SessionTimer, Shared};
use crate::auth::Gate;
use crate::executor::Executor;
use crate::reply::{self, Reply};

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
    let executor = &*shared.executor;
    let mut pipeline = Pipeline::default();
    let mut gate = Gate::new(executor.auth());
    let mut timer = SessionTimer::new(shared.config.idle_timeout, shared.config.read_timeout);
    loop {
        let Some(mut item) = next_item(&mut framed, &mut timer, shutdown, peer).await else {
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
                Some(Ok(payload)) => pipeline.push(executor, &mut gate, &payload, peer).await,
                Some(Err(FrameError::TooLarge { len, max })) => {
                    // The stream cannot be delimited any more: answer what came before, reply,
                    // then close.
                    let error = FrameError::TooLarge { len, max };
                    let response = Response::error(error.code(), error.to_string());
                    pipeline.queue.push_back((0, 0, Reply::Ready(response)));
                    pipeline
                        .drain(executor, &mut encoder, &mut framed, shared, peer)
                        .await?;
                    flush(&mut framed, shared).await?;
                    return Err(error.into());
                }
                Some(Err(error)) => return Err(error.into()),
            }
            if pipeline.queue.len() >= MAX_PIPELINE_REQUESTS {
                pipeline
                    .drain(executor, &mut encoder, &mut framed, shared, peer)
                    .await?;
            }
            if framed.write_buffer().len() >= shared.config.max_write_backlog_bytes {
                flush(&mut framed, shared).await?;
            }
            match framed.next().now_or_never() {
                Some(next) => item = next,
                None => break,
            }
        }
        pipeline
            .drain(executor, &mut encoder, &mut framed, shared, peer)
            .await?;
        flush(&mut framed, shared).await?;
        if gate.exhausted() {
            debug!(%peer, "closed: too many wrong tokens");
            break;
        }
        if closing {
            break;
        }
    }
    flush(&mut framed, shared).await?;
    if shutdown.is_cancelled() {
        close_after_shutdown(framed.into_inner()).await;
    }
    Ok(())
}

/// Most requests answered in one batch before their responses are encoded.
const MAX_PIPELINE_REQUESTS: usize = 1024;

/// Replies not yet encoded, in request order. Writes wait for the log while later requests
/// are decoded, so a pipeline of writes shares one group commit. A read that follows a
/// waiting write waits for it first, so a connection always reads its own writes.
#[derive(Default)]
struct Pipeline {
    queue: VecDeque<(u32, u8, Reply)>,
}

impl Pipeline {
    async fn push(
        &mut self,
        executor: &Executor,
        gate: &mut Gate,
        payload: &Bytes,
        peer: SocketAddr,
    ) {
        match decode_request(payload, executor.limits()) {
            Ok(frame) => {
                let opcode = frame.request.opcode();
                if let Some(answer) = gate
                    .check(executor.auth(), &frame.request, peer, "binary")
                    .await
                {
                    self.queue
                        .push_back((frame.request_id, opcode as u8, Reply::Ready(answer)));
                    return;
                }
                if !opcode.is_write()
                    && self
                        .queue
                        .iter()
                        .any(|(_, _, reply)| matches!(reply, Reply::Pending(_)))
                {
                    self.settle().await;
                }
                self.queue.push_back((
                    frame.request_id,
                    opcode as u8,
                    executor.call(frame.request),
                ));
            }
            Err(failure) => {
                debug!(%peer, error = %failure.error, "undecodable request");
                let (request_id, opcode) = failure
                    .header
                    .map_or((0, 0), |header| (header.request_id, header.opcode));
                self.queue.push_back((
                    request_id,
                    opcode,
                    Reply::Ready(reply::decode_error(&failure.error)),
                ));
            }
        }
    }

    /// Waits for every pending write, keeping the replies queued in order.
    async fn settle(&mut self) {
        for (_, _, reply) in &mut self.queue {
            if let Reply::Pending(pending) = reply {
                *reply = Reply::Ready(pending.await);
            }
        }
    }

    /// Waits for every reply and encodes them in order, flushing whenever the encoded
    /// responses reach `MAX_WRITE_BACKLOG_BYTES`: a client that does not read stalls here
    /// (and is closed after the idle timeout) with at most the backlog plus one response
    /// buffered, however large its pipeline.
    async fn drain(
        &mut self,
        executor: &Executor,
        encoder: &mut FrameCodec,
        framed: &mut Framed<TcpStream, FrameCodec>,
        shared: &Shared,
        peer: SocketAddr,
    ) -> Result<(), SessionError> {
        while let Some((request_id, opcode, reply)) = self.queue.pop_front() {
            let response = match reply {
                Reply::Ready(response) => response,
                Reply::Pending(pending) => pending.await,
            };
            executor.count_response(&response);
            encode(
                encoder,
                ResponseFrame {
                    request_id,
                    opcode,
                    response,
                },
                framed.write_buffer_mut(),
                peer,
            );
            if framed.write_buffer().len() >= shared.config.max_write_backlog_bytes {
                flush(framed, shared).await?;
            }
        }
        Ok(())
    }
}

fn encode(encoder: &mut FrameCodec, frame: ResponseFrame, dst: &mut BytesMut, peer: SocketAddr) {
    let (request_id, opcode) = (frame.request_id, frame.opcode);
    if let Err(failure) = encoder.encode(frame, dst) {
        // Limits are validated so every response fits a frame; reaching this is a bug.
        error!(%peer, %failure, request_id, "response could not be encoded");
        let fallback = ResponseFrame {
            request_id,
            opcode,
            response: reply::internal_error(),
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
