//! The load loops: one task per connection, closed loop (batches of `-P`) or open loop
//! (requests at scheduled times, latency from the schedule).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use indicatif::ProgressBar;
use sutra_protocol::{
    decode_response, ErrorCode, FrameCodec, Request, RequestFrame, Response, HEADER_BYTES,
    MAX_FRAME_BYTES_CAP, STATUS_OK,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::{Decoder, Encoder};

use crate::args::Test;
use crate::report::{Tally, TestReport};
use crate::workload::{Generator, Ids, Kind, Templates};

/// Read buffer per connection; grows only for answers larger than this.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// How one test runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Which requests.
    pub test: Test,
    /// `host:port`.
    pub address: String,
    /// Connections.
    pub clients: u32,
    /// Requests in flight per connection.
    pub pipeline: u32,
    /// Stop after this many requests ...
    pub requests: u64,
    /// ... or after this long, if set.
    pub duration: Option<Duration>,
    /// Open loop at this many requests/s overall.
    pub rate: Option<u64>,
    /// Random or sequential ids.
    pub ids: Ids,
    /// Keys the ids range over.
    pub keyspace: u64,
    /// Share of gets in the mixed test.
    pub get_percent: u8,
    /// Seed of the id generators.
    pub seed: u64,
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// `SUTRA_AUTH_TOKEN` of the server, sent on every connection before the test.
    pub auth: Option<String>,
}

/// Hands out request numbers to the connections until the count or the deadline is reached.
#[derive(Debug)]
struct Budget {
    issued: AtomicU64,
    total: u64,
    deadline: Option<Instant>,
    progress: Option<ProgressBar>,
}

impl Budget {
    /// Claims up to `want` requests; returns the first sequence number and how many.
    fn claim(&self, want: u64) -> Option<(u64, u64)> {
        if let Some(deadline) = self.deadline {
            if Instant::now() >= deadline {
                return None;
            }
            return Some((self.issued.fetch_add(want, Ordering::Relaxed), want));
        }
        let first = self.issued.fetch_add(want, Ordering::Relaxed);
        if first >= self.total {
            return None;
        }
        Some((first, want.min(self.total - first)))
    }

    fn answered(&self, count: u64) {
        if let Some(progress) = &self.progress {
            progress.inc(count);
        }
    }
}

/// Sends one request on an otherwise idle `stream` and reads its answer.
pub async fn exchange(stream: &mut TcpStream, request: Request) -> anyhow::Result<Response> {
    let mut codec = FrameCodec::new(MAX_FRAME_BYTES_CAP);
    let mut buffer = BytesMut::new();
    codec.encode(
        RequestFrame {
            request_id: 1,
            request,
        },
        &mut buffer,
    )?;
    stream.write_all(&buffer).await?;
    buffer.clear();
    loop {
        if let Some(payload) = codec.decode(&mut buffer)? {
            return Ok(decode_response(&payload)?.response);
        }
        if stream.read_buf(&mut buffer).await? == 0 {
            bail!("the server closed the connection without answering");
        }
    }
}

/// Authenticates `stream` (servers started with `SUTRA_AUTH_TOKEN`).
pub async fn authenticate(stream: &mut TcpStream, token: &str) -> anyhow::Result<()> {
    let request = Request::Auth {
        token: token.to_owned(),
    };
    match exchange(stream, request).await? {
        Response::Authenticated => Ok(()),
        Response::Error(error) => bail!("authentication failed: {}", error.message),
        other => bail!("unexpected answer to Auth: {other:?}"),
    }
}

/// Runs one test and returns its report. `progress`, if given, is advanced per answer.
pub async fn run(
    plan: &Plan,
    templates: &Arc<Templates>,
    progress: Option<ProgressBar>,
) -> anyhow::Result<TestReport> {
    let mut streams = Vec::with_capacity(plan.clients as usize);
    for _ in 0..plan.clients {
        let stream = tokio::time::timeout(plan.timeout, TcpStream::connect(&plan.address))
            .await
            .with_context(|| format!("connecting to {} timed out", plan.address))?
            .with_context(|| format!("connecting to {}", plan.address))?;
        stream.set_nodelay(true)?;
        let mut stream = stream;
        if let Some(token) = &plan.auth {
            tokio::time::timeout(plan.timeout, authenticate(&mut stream, token))
                .await
                .with_context(|| format!("{} did not answer Auth in time", plan.address))??;
        }
        streams.push(stream);
    }
    let budget = Arc::new(Budget {
        issued: AtomicU64::new(0),
        total: plan.requests,
        deadline: plan.duration.map(|duration| Instant::now() + duration),
        progress,
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, stream) in (0u64..).zip(streams) {
        let generator = Generator::new(
            Arc::clone(templates),
            plan.seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(index),
            plan.keyspace,
            plan.get_percent,
            plan.ids,
        );
        let connection = Connection::new(stream, generator, plan.test, plan.timeout);
        let budget = Arc::clone(&budget);
        let pipeline = u64::from(plan.pipeline);
        match plan.rate {
            None => tasks.spawn(connection.closed_loop(budget, pipeline)),
            Some(rate) => {
                // Connection i sends at started + (k * clients + i) / rate.
                #[allow(clippy::cast_precision_loss, reason = "bounded far below 2^52")]
                let (interval, offset) = (
                    Duration::from_secs_f64(f64::from(plan.clients) / rate as f64),
                    Duration::from_secs_f64(index as f64 / rate as f64),
                );
                tasks.spawn(connection.open_loop(budget, pipeline, started + offset, interval))
            }
        };
    }
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let connection_tally = joined.context("a connection task failed")??;
        tally.merge(&connection_tally);
    }
    Ok(TestReport {
        test: plan.test,
        tally,
        elapsed: started.elapsed(),
    })
}

/// One connection's state.
struct Connection {
    stream: TcpStream,
    generator: Generator,
    test: Test,
    timeout: Duration,
}

impl Connection {
    fn new(stream: TcpStream, generator: Generator, test: Test, timeout: Duration) -> Connection {
        Connection {
            stream,
            generator,
            test,
            timeout,
        }
    }

    /// Sends a batch of up to `pipeline` requests in one write, reads every answer, repeats.
    async fn closed_loop(mut self, budget: Arc<Budget>, pipeline: u64) -> anyhow::Result<Tally> {
        let mut tally = Tally::default();
        let mut out = Vec::new();
        let mut expected = Vec::new();
        let mut reader = FrameReader::new(self.timeout);
        while let Some((first, count)) = budget.claim(pipeline) {
            out.clear();
            expected.clear();
            for sequence in first..first + count {
                expected.push(self.generator.append(self.test, sequence, &mut out));
            }
            let sent = Instant::now();
            self.stream
                .write_all(&out)
                .await
                .context("sending requests")?;
            for &(request_id, kind) in &expected {
                let payload = reader.next(&mut self.stream).await?;
                tally.record(sent.elapsed());
                classify(&payload, request_id, kind, &mut tally)?;
            }
            budget.answered(count);
        }
        Ok(tally)
    }

    /// Sends each request at its scheduled time (or at once when late), at most `pipeline`
    /// unanswered; latency runs from the scheduled time when the request had to wait for the
    /// pipeline, else from its send.
    async fn open_loop(
        self,
        budget: Arc<Budget>,
        pipeline: u64,
        first_send: Instant,
        interval: Duration,
    ) -> anyhow::Result<Tally> {
        let Connection {
            stream,
            mut generator,
            test,
            timeout,
        } = self;
        let (mut read_half, mut write_half) = stream.into_split();
        let permits = Arc::new(Semaphore::new(usize::try_from(pipeline).unwrap_or(1)));
        let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(Instant, u32, Kind)>();
        let writer = {
            let permits = Arc::clone(&permits);
            let budget = Arc::clone(&budget);
            async move {
                let mut out = Vec::new();
                let mut scheduled = first_send;
                while let Some((sequence, _)) = budget.claim(1) {
                    tokio::time::sleep_until(scheduled.into()).await;
                    // A request that waits for an earlier answer (the pipeline is full) is
                    // charged from its scheduled time: that wait is the server's doing and a
                    // closed loop would hide it. One that could go at once is charged from
                    // its send, so the timer's 1 ms resolution is not counted against the
                    // server.
                    let start = if let Ok(permit) = permits.try_acquire() {
                        permit.forget();
                        Instant::now()
                    } else {
                        permits.acquire().await?.forget();
                        scheduled
                    };
                    out.clear();
                    let (request_id, kind) = generator.append(test, sequence, &mut out);
                    write_half
                        .write_all(&out)
                        .await
                        .context("sending a request")?;
                    if sent_tx.send((start, request_id, kind)).is_err() {
                        break;
                    }
                    scheduled += interval;
                }
                anyhow::Ok(())
            }
        };
        let reader = async move {
            let mut tally = Tally::default();
            let mut frames = FrameReader::new(timeout);
            while let Some((start, request_id, kind)) = sent_rx.recv().await {
                let payload = frames.next(&mut read_half).await?;
                tally.record(start.elapsed());
                classify(&payload, request_id, kind, &mut tally)?;
                permits.add_permits(1);
                budget.answered(1);
            }
            anyhow::Ok(tally)
        };
        let ((), tally) = tokio::try_join!(writer, reader)?;
        Ok(tally)
    }
}

/// Reads whole response frames from a stream.
struct FrameReader {
    buffer: BytesMut,
    codec: FrameCodec,
    timeout: Duration,
    ready: VecDeque<Bytes>,
}

impl FrameReader {
    fn new(timeout: Duration) -> FrameReader {
        FrameReader {
            buffer: BytesMut::with_capacity(READ_BUFFER_BYTES),
            codec: FrameCodec::new(MAX_FRAME_BYTES_CAP),
            timeout,
            ready: VecDeque::new(),
        }
    }

    async fn next<R: AsyncReadExt + Unpin>(&mut self, stream: &mut R) -> anyhow::Result<Bytes> {
        loop {
            if let Some(payload) = self.ready.pop_front() {
                return Ok(payload);
            }
            while let Some(payload) = self.codec.decode(&mut self.buffer)? {
                self.ready.push_back(payload);
            }
            if !self.ready.is_empty() {
                continue;
            }
            if self.buffer.capacity() - self.buffer.len() < READ_BUFFER_BYTES / 4 {
                self.buffer.reserve(READ_BUFFER_BYTES);
            }
            let read = tokio::time::timeout(self.timeout, stream.read_buf(&mut self.buffer))
                .await
                .with_context(|| format!("no answer within {:?}", self.timeout))?
                .context("reading answers")?;
            if read == 0 {
                bail!("the server closed the connection");
            }
        }
    }
}

/// Counts one answer: ok, a miss (NotFound to a get or delete) or an error. A wrong request
/// id or an undecodable answer fails the run: the numbers would mean nothing.
fn classify(payload: &[u8], request_id: u32, kind: Kind, tally: &mut Tally) -> anyhow::Result<()> {
    let Some(header) = payload.get(..=HEADER_BYTES) else {
        bail!(
            "an answer of {} bytes is shorter than a header",
            payload.len()
        );
    };
    let answered = u32::from_le_bytes([header[2], header[3], header[4], header[5]]);
    if answered != request_id {
        bail!("expected the answer to request {request_id}, got {answered}");
    }
    if header[HEADER_BYTES] == STATUS_OK {
        tally.ok += 1;
        return Ok(());
    }
    match decode_response(payload)
        .context("decoding an error answer")?
        .response
    {
        Response::Error(error) if error.code == ErrorCode::NotFound && kind.not_found_is_miss() => {
            tally.misses += 1;
        }
        Response::Error(error) => {
            tally.errors += 1;
            if tally.first_error.is_none() {
                tally.first_error = Some(format!("{:?}: {}", error.code, error.message));
            }
        }
        other => bail!("status byte says error but the body is {other:?}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sutra_protocol::{ResponseFrame, StoreOutcome};
    use tokio_util::codec::Encoder;

    use super::*;

    fn payload(request_id: u32, response: Response) -> Bytes {
        let mut bytes = BytesMut::new();
        ResponseFrame {
            request_id,
            opcode: 3,
            response,
        }
        .encode_payload(&mut bytes)
        .unwrap();
        bytes.freeze()
    }

    #[test]
    fn classify_tells_misses_from_errors() {
        let mut tally = Tally::default();
        let ok = payload(
            1,
            Response::Stored(StoreOutcome {
                created: true,
                created_at_ms: 1,
                expires_at_ms: None,
            }),
        );
        classify(&ok, 1, Kind::Store, &mut tally).unwrap();
        let missing = payload(2, Response::error(ErrorCode::NotFound, "no such id"));
        classify(&missing, 2, Kind::Get, &mut tally).unwrap();
        classify(&missing, 2, Kind::Store, &mut tally).unwrap();
        let busy = payload(3, Response::error(ErrorCode::Busy, "full"));
        classify(&busy, 3, Kind::Get, &mut tally).unwrap();
        assert_eq!((tally.ok, tally.misses, tally.errors), (1, 1, 2));
        assert!(tally.first_error.as_deref().unwrap().contains("no such id"));
        assert!(
            classify(&ok, 9, Kind::Store, &mut tally).is_err(),
            "wrong request id"
        );
        assert!(
            classify(&ok[..4], 1, Kind::Store, &mut tally).is_err(),
            "short answer"
        );
    }

    #[tokio::test]
    async fn frame_reader_splits_coalesced_and_partial_frames() {
        let mut framed = BytesMut::new();
        let mut codec = FrameCodec::new(MAX_FRAME_BYTES_CAP);
        for request_id in 1..=3 {
            codec
                .encode(
                    ResponseFrame {
                        request_id,
                        opcode: 1,
                        response: Response::error(ErrorCode::Busy, "x"),
                    },
                    &mut framed,
                )
                .unwrap();
        }
        let (mut near, mut far) = tokio::io::duplex(64);
        let bytes = framed.to_vec();
        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(5) {
                far.write_all(chunk).await.unwrap();
            }
        });
        let mut reader = FrameReader::new(Duration::from_secs(5));
        for request_id in 1..=3 {
            let frame = decode_response(&reader.next(&mut near).await.unwrap()).unwrap();
            assert_eq!(frame.request_id, request_id);
        }
        writer.await.unwrap();
        let closed = reader.next(&mut near).await.unwrap_err().to_string();
        assert!(closed.contains("closed"), "{closed}");
    }

    #[test]
    fn budget_stops_at_the_count() {
        let budget = Budget {
            issued: AtomicU64::new(0),
            total: 10,
            deadline: None,
            progress: None,
        };
        assert_eq!(budget.claim(4), Some((0, 4)));
        assert_eq!(budget.claim(4), Some((4, 4)));
        assert_eq!(budget.claim(4), Some((8, 2)));
        assert_eq!(budget.claim(4), None);
        let expired = Budget {
            deadline: Some(Instant::now()),
            ..budget
        };
        assert_eq!(expired.claim(1), None);
    }
}
