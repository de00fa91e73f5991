//! One TCP connection: a writer task that batches outgoing frames and a reader task that
//! routes responses to their callers by request id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use sutra_protocol::{decode_response, FrameCodec, Request, RequestFrame, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Encoder, FramedRead};
use tracing::debug;

use crate::config::ClientConfig;
use crate::error::ClientError;

type Reply = oneshot::Sender<Result<Response, ClientError>>;

/// Callers waiting for a response, by request id.
#[derive(Default)]
struct Pending {
    waiting: Mutex<HashMap<u32, Reply>>,
}

impl Pending {
    fn insert(&self, request_id: u32, reply: Reply) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request_id, reply);
    }

    fn take(&self, request_id: u32) -> Option<Reply> {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&request_id)
    }

    fn fail_all(&self, error: &ClientError) {
        let drained: Vec<Reply> = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, reply)| reply)
            .collect();
        for reply in drained {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

struct Outgoing {
    frame: RequestFrame,
    reply: Reply,
}

/// A cheap handle to a live connection.
#[derive(Clone)]
pub(crate) struct Handle {
    outgoing: mpsc::Sender<Outgoing>,
    pending: Arc<Pending>,
    open: Arc<AtomicBool>,
}

impl Handle {
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire) && !self.outgoing.is_closed()
    }

    pub(crate) async fn call(
        &self,
        request_id: u32,
        request: Request,
        request_timeout: Duration,
    ) -> Result<Response, ClientError> {
        let (reply, response) = oneshot::channel();
        let outgoing = Outgoing {
            frame: RequestFrame {
                request_id,
                request,
            },
            reply,
        };
        self.outgoing
            .send(outgoing)
            .await
            .map_err(|_| ClientError::ConnectionClosed)?;
        match tokio::time::timeout(request_timeout, response).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::ConnectionClosed),
            Err(_) => {
                self.pending.take(request_id);
                Err(ClientError::Timeout)
            }
        }
    }
}

/// Opens a connection and starts its reader and writer tasks.
pub(crate) async fn open(addr: &str, config: &ClientConfig) -> Result<Handle, ClientError> {
    let stream = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            return Err(ClientError::Connect {
                addr: addr.to_owned(),
                message: error.to_string(),
            })
        }
        Err(_) => {
            return Err(ClientError::ConnectTimeout {
                addr: addr.to_owned(),
            })
        }
    };
    stream
        .set_nodelay(true)
        .map_err(|error| ClientError::Connect {
            addr: addr.to_owned(),
            message: error.to_string(),
        })?;
    let (read_half, write_half) = stream.into_split();
    let pending = Arc::new(Pending::default());
    let open = Arc::new(AtomicBool::new(true));
    let (outgoing_tx, outgoing_rx) = mpsc::channel(config.max_in_flight.max(1));
    let codec = FrameCodec::new(config.max_frame_bytes);
    tokio::spawn(write_loop(
        write_half,
        outgoing_rx,
        codec.clone(),
        Arc::clone(&pending),
        Arc::clone(&open),
    ));
    tokio::spawn(read_loop(
        read_half,
        codec,
        Arc::clone(&pending),
        Arc::clone(&open),
    ));
    Ok(Handle {
        outgoing: outgoing_tx,
        pending,
        open,
    })
}

/// Most frames encoded before one write: pipelined callers share syscalls.
const MAX_BATCH_FRAMES: usize = 256;

async fn write_loop(
    mut socket: OwnedWriteHalf,
    mut outgoing: mpsc::Receiver<Outgoing>,
    mut codec: FrameCodec,
    pending: Arc<Pending>,
    open: Arc<AtomicBool>,
) {
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    while let Some(first) = outgoing.recv().await {
        if !open.load(Ordering::Acquire) {
            let _ = first.reply.send(Err(ClientError::ConnectionClosed));
            break;
        }
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(Outgoing { frame, reply }) = next.take() {
            let request_id = frame.request_id;
            match codec.encode(frame, &mut buffer) {
                Ok(()) => pending.insert(request_id, reply),
                Err(error) => {
                    let _ = reply.send(Err(ClientError::InvalidRequest(error.to_string())));
                }
            }
            batched += 1;
            if batched < MAX_BATCH_FRAMES {
                next = outgoing.try_recv().ok();
            }
        }
        if let Err(error) = socket.write_all(&buffer).await {
            debug!(%error, "write failed; closing the connection");
            break;
        }
        buffer.clear();
        // The reader marks the connection closed before failing its callers, so a caller
        // registered after that is failed below instead of waiting for its timeout.
        if !open.load(Ordering::Acquire) {
            break;
        }
    }
    open.store(false, Ordering::Release);
    outgoing.close();
    // Anything still queued will never be sent.
    while let Ok(Outgoing { reply, .. }) = outgoing.try_recv() {
        let _ = reply.send(Err(ClientError::ConnectionClosed));
    }
    pending.fail_all(&ClientError::ConnectionClosed);
}

async fn read_loop(
    socket: OwnedReadHalf,
    codec: FrameCodec,
    pending: Arc<Pending>,
    open: Arc<AtomicBool>,
) {
    let mut frames = FramedRead::new(socket, codec);
    let failure = loop {
        let payload = match frames.next().await {
            Some(Ok(payload)) => payload,
            Some(Err(error)) => break ClientError::Protocol(error.to_string()),
            None => break ClientError::ConnectionClosed,
        };
        let frame = match decode_response(&payload) {
            Ok(frame) => frame,
            Err(error) => break ClientError::Protocol(error.to_string()),
        };
        if frame.request_id == 0 {
            // A connection-level error (Busy, FrameTooLarge): it answers every caller.
            break match frame.response {
                Response::Error(error) => ClientError::Server {
                    code: error.code,
                    message: error.message,
                },
                other => ClientError::Protocol(format!("unsolicited response {other:?}")),
            };
        }
        match pending.take(frame.request_id) {
            Some(reply) => {
                let _ = reply.send(Ok(frame.response));
            }
            None => debug!(
                request_id = frame.request_id,
                "response for a request that timed out"
            ),
        }
    };
    open.store(false, Ordering::Release);
    pending.fail_all(&failure);
}
