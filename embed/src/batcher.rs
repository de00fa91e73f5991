//! Dynamic batching: concurrent callers are merged into one model run on a dedicated worker
//! thread (inference never runs on the async runtime's threads).
//!
//! The worker takes the first waiting request and every other request already queued, up to
//! `max_batch` texts; requests that arrive while it runs are merged into the next run. An
//! idle worker answers a lone request at once (it never waits for companions). A busy one —
//! its next request was already queued when a run ended — waits for more while they keep
//! coming: until [`ARRIVAL_GAP`] passes with none, the batch is full, or the oldest request
//! in it has waited `batch_timeout`. So under a stream of requests runs fill up, and a fixed
//! set of clients (8 callers each waiting for its answer) is served as soon as all of them
//! have asked, not after `batch_timeout` (which cut 8 clients' throughput to 8 answers per
//! 50 ms).
//! The queue is bounded: when it is full, callers get [`EmbedError::Busy`] instead of waiting
//! without limit.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::model::{EmbedError, ModelDir};

/// How long a busy worker waits for the next request to join a batch before it runs what it
/// has: longer than the gaps within a burst of requests, far shorter than a model run.
pub const ARRIVAL_GAP: Duration = Duration::from_millis(2);
use crate::pipeline::{Embedded, Output, Pipeline};

/// The batcher's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most texts per model run (`ML_BASE_MAX_BATCH_SIZE`); a larger single request runs alone.
    pub max_batch: usize,
    /// Most requests waiting (`EMBED_QUEUE_LEN`).
    pub queue_len: usize,
    /// Longest a request waits for companions when the worker is busy
    /// (`ML_BASE_BATCH_TIMEOUT_MS`); zero never waits.
    pub batch_timeout: Duration,
}

impl BatcherConfig {
    /// Default `ML_BASE_MAX_BATCH_SIZE`.
    pub const DEFAULT_MAX_BATCH: usize = 64;
    /// Default `EMBED_QUEUE_LEN`.
    pub const DEFAULT_QUEUE_LEN: usize = 1024;
    /// Default `ML_BASE_BATCH_TIMEOUT_MS`.
    pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_millis(50);
}

impl Default for BatcherConfig {
    fn default() -> BatcherConfig {
        BatcherConfig {
            max_batch: Self::DEFAULT_MAX_BATCH,
            queue_len: Self::DEFAULT_QUEUE_LEN,
            batch_timeout: Self::DEFAULT_BATCH_TIMEOUT,
        }
    }
}

struct Job {
    enqueued: Instant,
    texts: Vec<String>,
    output: Output,
    reply: oneshot::Sender<Result<Vec<Embedded>, EmbedError>>,
}

/// A handle to the embedding worker; clones share it. The worker stops when every handle is
/// dropped.
#[derive(Clone)]
pub struct Batcher {
    jobs: SyncSender<Job>,
    info: Arc<ModelDir>,
    runs: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("model", &self.info.name)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the worker thread (`sutra-embed`) that owns `pipeline`.
    pub fn spawn(pipeline: Pipeline, config: BatcherConfig) -> std::io::Result<Batcher> {
        let (jobs, queue) = sync_channel(config.queue_len.max(1));
        let info = Arc::new(pipeline.info().clone());
        let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let worker_runs = Arc::clone(&runs);
        std::thread::Builder::new()
            .name("sutra-embed".to_owned())
            .spawn(move || work(&pipeline, &queue, config, &worker_runs))?;
        Ok(Batcher { jobs, info, runs })
    }

    /// The model's facts.
    pub fn info(&self) -> &ModelDir {
        &self.info
    }

    /// Model runs so far (each may serve several requests).
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Embeds `texts`, merged with whatever else is waiting.
    pub async fn embed(
        &self,
        texts: Vec<String>,
        output: Output,
    ) -> Result<Vec<Embedded>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job {
                enqueued: Instant::now(),
                texts,
                output,
                reply,
            })
            .map_err(|error| match error {
                TrySendError::Full(_) => EmbedError::Busy,
                TrySendError::Disconnected(_) => EmbedError::Stopped,
            })?;
        answer.await.map_err(|_| EmbedError::Stopped)?
    }
}

fn work(
    pipeline: &Pipeline,
    queue: &Receiver<Job>,
    config: BatcherConfig,
    runs: &std::sync::atomic::AtomicU64,
) {
    let max_batch = config.max_batch.max(1);
    loop {
        // A request already queued when the last run ended means the worker is under load.
        let (first, loaded) = match queue.try_recv() {
            Ok(job) => (job, true),
            Err(TryRecvError::Empty) => match queue.recv() {
                Ok(job) => (job, false),
                Err(_) => return,
            },
            Err(TryRecvError::Disconnected) => return,
        };
        let deadline = first.enqueued + config.batch_timeout;
        let mut count = first.texts.len();
        let mut jobs = vec![first];
        while count < max_batch {
            let next = match queue.try_recv() {
                Ok(job) => Some(job),
                Err(_) if loaded => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        None
                    } else {
                        queue.recv_timeout(left.min(ARRIVAL_GAP)).ok()
                    }
                }
                Err(_) => None,
            };
            let Some(job) = next else { break };
            count += job.texts.len();
            jobs.push(job);
        }
        runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let texts: Vec<&str> = jobs
            .iter()
            .flat_map(|job| job.texts.iter().map(String::as_str))
            .collect();
        match pipeline.pool(&texts) {
            Ok(pooled) => {
                let mut pooled = pooled.into_iter();
                for job in jobs {
                    let result = pooled
                        .by_ref()
                        .take(job.texts.len())
                        .map(|item| item.finish(job.output))
                        .collect();
                    let _ = job.reply.send(result);
                }
            }
            Err(error) => {
                let message = error.to_string();
                tracing::warn!(%message, texts = texts.len(), "embedding run failed");
                for job in jobs {
                    let _ = job.reply.send(Err(EmbedError::Run(message.clone())));
                }
            }
        }
    }
}
