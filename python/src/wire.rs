//! [`Wire`]: the protocol without the I/O, for the asyncio client, whose event loop drives its
//! own socket (`asyncio.Protocol`).
//!
//! Handing each batch to a runtime thread and its answers back to the loop cost two thread
//! wake-ups on top of the server's round trip (about 120 µs for one call on this project's
//! 2-core VM, against 45 µs for a blocking call); with the loop reading and writing the socket
//! itself an asyncio call wakes no thread but the server. The encoding, the framing and the
//! Python objects of the answers are the same as the blocking client's
//! ([`crate::convert`]).

use bytes::BytesMut;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use sutra_client::sutra_protocol::{decode_response, FrameCodec, Request, RequestFrame, Response};
use sutra_client::ClientError;
use tokio_util::codec::{Decoder, Encoder};

use crate::convert::{answer, build, client_error};

/// One answer: `(request_id, ok, value_or_exception)`.
type Answer = (u32, bool, Py<PyAny>);

/// One connection's framing and request ids: `encode` turns calls into bytes to write, `feed`
/// turns bytes read into answers. Owned by one connection on one event loop.
#[pyclass(module = "sutra_storage_client_tcp._native")]
pub(crate) struct Wire {
    codec: FrameCodec,
    /// Bytes read and not yet a whole frame.
    incoming: BytesMut,
    /// Request ids run from 1 and wrap past 0, which the server keeps for connection-level
    /// errors.
    next_id: u32,
}

impl Wire {
    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn encode_request(
        &mut self,
        py: Python<'_>,
        request: Request,
        out: &mut BytesMut,
    ) -> PyResult<u32> {
        let request_id = self.take_id();
        let frame = RequestFrame {
            request_id,
            request,
        };
        self.codec
            .encode(frame, out)
            .map_err(|error| client_error(py, &ClientError::InvalidRequest(error.to_string())))?;
        Ok(request_id)
    }
}

#[pymethods]
impl Wire {
    /// A connection's wire state; a response over `max_frame_bytes` (at most the protocol's
    /// cap, the default) breaks the connection.
    #[new]
    #[pyo3(signature = (max_frame_bytes=u32::MAX))]
    fn new(max_frame_bytes: u32) -> Wire {
        Wire {
            codec: FrameCodec::new(max_frame_bytes),
            incoming: BytesMut::new(),
            next_id: 1,
        }
    }

    /// Encodes calls `[(name, args), ...]` (as `Client.batch` takes them) into one buffer:
    /// `(data, ids)`, where `ids[i]` is call `i`'s request id, or the exception refusing its
    /// arguments (nothing of it is in `data`).
    fn encode<'py>(
        &mut self,
        py: Python<'py>,
        calls: Vec<(String, Bound<'py, PyTuple>)>,
    ) -> (Bound<'py, PyBytes>, Vec<Py<PyAny>>) {
        let mut out = BytesMut::with_capacity(calls.len() * 64);
        let mut ids = Vec::with_capacity(calls.len());
        for (name, args) in calls {
            let encoded = build(py, &name, &args)
                .and_then(|request| self.encode_request(py, request, &mut out));
            ids.push(match encoded {
                Ok(id) => id
                    .into_pyobject(py)
                    .map_or_else(|_| py.None(), |id| id.into_any().unbind()),
                Err(failure) => failure.into_value(py).into_any(),
            });
        }
        (PyBytes::new(py, &out), ids)
    }

    /// `Auth` with `token`: `(data, request_id)`.
    fn auth<'py>(
        &mut self,
        py: Python<'py>,
        token: String,
    ) -> PyResult<(Bound<'py, PyBytes>, u32)> {
        let mut out = BytesMut::new();
        let id = self.encode_request(py, Request::Auth { token }, &mut out)?;
        Ok((PyBytes::new(py, &out), id))
    }

    /// Takes bytes read from the socket: `(answers, failure)`, the answers of every whole
    /// response frame so far, `[(request_id, ok, value_or_exception), ...]`, and `None`, or
    /// the exception that ends the connection when the stream cannot be read on (a frame too
    /// large, a malformed response) or the server reports a connection-level error (request
    /// id 0: `Busy`, ...).
    fn feed(&mut self, py: Python<'_>, data: &[u8]) -> (Vec<Answer>, Py<PyAny>) {
        self.incoming.extend_from_slice(data);
        let mut answers = Vec::new();
        let failure = loop {
            let payload = match self.codec.decode(&mut self.incoming) {
                Ok(Some(payload)) => payload,
                Ok(None) => return (answers, py.None()),
                Err(error) => break ClientError::Protocol(error.to_string()),
            };
            let frame = match decode_response(&payload) {
                Ok(frame) => frame,
                Err(error) => break ClientError::Protocol(error.to_string()),
            };
            let response = match frame.response {
                Response::Error(error) => Err(ClientError::Server {
                    code: error.code,
                    message: error.message,
                }),
                response => Ok(response),
            };
            if frame.request_id == 0 {
                break match response {
                    Err(failure) => failure,
                    Ok(other) => ClientError::Protocol(format!("unsolicited response {other:?}")),
                };
            }
            answers.push(match answer(py, response) {
                Ok(value) => (frame.request_id, true, value),
                Err(failure) => (frame.request_id, false, failure.into_value(py).into_any()),
            });
        };
        self.incoming.clear();
        (
            answers,
            client_error(py, &failure).into_value(py).into_any(),
        )
    }
}
