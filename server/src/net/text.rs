//! The text session for `nc`/`telnet`: one command per line, one JSON line per reply.
//!
//! Lines are at most `MAX_FRAME_BYTES` long; a longer line gets an error and the connection
//! is closed (the rest of it cannot be told from the next command). Bad UTF-8, unknown
//! commands and bad arguments get an error line and the session continues.

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use sutra_protocol::text::{parse_text_command, TextCommand, HELP};
use sutra_protocol::{ErrorCode, Response};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Framed};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::session::{close_after_shutdown, next_item, SessionError, SessionTimer, Shared};
use crate::auth::Gate;
use crate::executor::Executor;
use crate::json;

enum Step {
    Continue,
    Quit,
}

pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let max_line_bytes = shared.config.limits.max_frame_bytes as usize;
    let codec =
        AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), b"\n".to_vec(), max_line_bytes);
    let mut framed = Framed::new(stream, codec);
    let executor = &*shared.executor;
    let mut timer = SessionTimer::new(shared.config.idle_timeout, shared.config.read_timeout);
    let mut gate = Gate::new(executor.auth());
    loop {
        let Some(mut item) = next_item(&mut framed, &mut timer, shutdown, peer).await else {
            break;
        };
        let mut step;
        loop {
            match item {
                None => {
                    step = Step::Quit;
                    break;
                }
                Some(Ok(line)) => {
                    step =
                        answer(executor, &mut gate, peer, &line, framed.write_buffer_mut()).await;
                    if gate.exhausted() {
                        step = Step::Quit;
                    }
                }
                Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                    let message = format!(
                        "line longer than MAX_FRAME_BYTES ({max_line_bytes} bytes); closing"
                    );
                    let response = Response::error(ErrorCode::FrameTooLarge, message);
                    executor.count_response(&response);
                    write_line(framed.write_buffer_mut(), &json::reply(&response));
                    flush(&mut framed, shared).await?;
                    debug!(%peer, "closed: text line over MAX_FRAME_BYTES");
                    return Ok(());
                }
                Some(Err(AnyDelimiterCodecError::Io(error))) => return Err(error.into()),
            }
            if matches!(step, Step::Quit)
                || framed.write_buffer().len() >= shared.config.max_write_backlog_bytes
            {
                break;
            }
            match framed.next().now_or_never() {
                Some(next) => item = next,
                None => break,
            }
        }
        flush(&mut framed, shared).await?;
        if matches!(step, Step::Quit) {
            break;
        }
    }
    flush(&mut framed, shared).await?;
    if shutdown.is_cancelled() {
        close_after_shutdown(framed.into_inner()).await;
    }
    Ok(())
}

async fn answer(
    executor: &Executor,
    gate: &mut Gate,
    peer: SocketAddr,
    line: &[u8],
    out: &mut BytesMut,
) -> Step {
    let Ok(line) = std::str::from_utf8(line) else {
        let response = Response::error(ErrorCode::InvalidArgument, "line is not valid UTF-8");
        executor.count_response(&response);
        write_line(out, &json::reply(&response));
        return Step::Continue;
    };
    match parse_text_command(line, executor.limits()) {
        Ok(None) => Step::Continue,
        Ok(Some(TextCommand::Quit)) => {
            write_line(out, &json!({ "ok": true, "bye": true }));
            Step::Quit
        }
        Ok(Some(TextCommand::Help)) => {
            write_line(out, &json!({ "ok": true, "commands": HELP }));
            Step::Continue
        }
        Ok(Some(TextCommand::Request(request))) => {
            let response = match gate.check(executor.auth(), &request, peer, "text").await {
                Some(answer) => {
                    executor.count_response(&answer);
                    answer
                }
                None => executor.call_and_wait(request).await,
            };
            write_line(out, &json::reply(&response));
            Step::Continue
        }
        Err(error) => {
            let response = Response::error(error.code(), error.to_string());
            executor.count_response(&response);
            write_line(out, &json::reply(&response));
            Step::Continue
        }
    }
}

fn write_line(out: &mut BytesMut, value: &serde_json::Value) {
    let mut writer = out.writer();
    // Writing JSON values into memory cannot fail.
    let _ = serde_json::to_writer(&mut writer, value);
    writer.into_inner().put_u8(b'\n');
}

async fn flush(
    framed: &mut Framed<TcpStream, AnyDelimiterCodec>,
    shared: &Shared,
) -> Result<(), SessionError> {
    match timeout(shared.config.idle_timeout, SinkExt::<&str>::flush(framed)).await {
        // Flushing never checks line lengths, so MaxChunkLengthExceeded cannot occur here.
        Ok(Ok(()) | Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => Ok(()),
        Ok(Err(AnyDelimiterCodecError::Io(error))) => Err(error.into()),
        Err(_) => Err(SessionError::WriteTimeout),
    }
}
