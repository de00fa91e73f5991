//! Self-monitoring events (`SUTRA_EVENTS=on`), the seed's "Grid events": the server records
//! what happens to it as concepts of type [`EVENT_TYPE`] in its own store, so an operator with
//! nothing but the protocol can ask `TYPE sutra_event` (binary: QueryByType) what happened.
//! `/metrics` stays the place for dashboards; events are the log a person reads afterwards.
//!
//! Each event is written through the engine's `record_event`: durable and in the log like any
//! store, but outside `MAX_CONCEPTS` (an event never takes a user's room nor evicts a user's
//! concept) and never the reason for a timed checkpoint. It has the TTL `SUTRA_EVENTS_TTL_SECS`, no vector,
//! and an id `evt-<unix ms, 13 digits>-<sequence>`, so a type query lists events in time
//! order. The content is one sentence; attributes carry `kind` and the numbers.
//!
//! | kind | when | attributes besides `kind` |
//! |---|---|---|
//! | `start` | serving begins | `version`, `role`, `vector_dimension`, `addr`, `concepts`; with a data directory `snapshot_concepts`, `replayed_records`, `dropped_tail_bytes`, `recovery_ms` |
//! | `stop` | graceful shutdown begins | `uptime_seconds`, `requests` |
//! | `checkpoint` | checkpoints were written in the last interval | `count`, `checkpoint_lsn`, `seconds` (their total time) |
//! | `evictions` | LRU evictions in the last interval | `count`, `total` |
//! | `expirations` | TTL expirations in the last interval | `count`, `total` |
//! | `errors` | error answers in the last interval | `count`, `total` (per code: `/metrics`) |
//! | `read_only` | the log refused a write and the store became read-only | — |
//!
//! Interval events are summaries, written at most once per `SUTRA_EVENTS_INTERVAL_SECS` and
//! only when something happened, so an idle server writes nothing. Events about events are
//! not a loop: writing one changes none of the counters above (it evicts nothing, makes no
//! checkpoint due, and its expiry is not counted under `expirations`). Clients cannot store
//! concepts of type `sutra_event`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sutra_protocol::{Attributes, ConceptId, Limits, StoreConcept};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::EventsConfig;
use crate::executor::{Executor, VERSION};

/// The concept type of events (the engine keeps them outside `MAX_CONCEPTS`).
pub use sutra_engine::EVENT_TYPE;

/// Writes events into the server's own store.
pub struct Events {
    service: Arc<Executor>,
    config: EventsConfig,
    sequence: AtomicU64,
}

impl Events {
    /// Events for `service`'s store.
    pub fn new(service: Arc<Executor>, config: EventsConfig) -> Events {
        Events {
            service,
            config,
            sequence: AtomicU64::new(0),
        }
    }

    /// Stores one event and waits until it is durable. A failure (a full or read-only store)
    /// is logged and otherwise ignored: monitoring never stops the server.
    pub async fn record(&self, kind: &str, message: String, details: &[(&str, String)]) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let id = format!("evt-{now_ms:013}-{sequence:06}");
        let Ok(id) = ConceptId::new(&id, &Limits::default()) else {
            return;
        };
        let mut attributes = Attributes::new();
        attributes.insert("kind".to_owned(), kind.to_owned());
        for (key, value) in details {
            attributes.insert((*key).to_owned(), value.clone());
        }
        let mut request = StoreConcept::new(id, message);
        request.model = "sutra".to_owned();
        request.attributes = attributes;
        request.ttl_seconds = Some(self.config.ttl.as_secs().max(1));
        let written = match self.service.engine().record_event(request) {
            Ok(pending) => pending.wait().await.map(|_| ()),
            Err(error) => Err(error),
        };
        match written {
            Ok(()) => debug!(kind, "event recorded"),
            Err(error) => warn!(kind, %error, "could not record a sutra_event"),
        }
    }

    /// The `start` event: what this server is and what recovery found.
    pub async fn started(&self, addr: std::net::SocketAddr) {
        let stats = self.service.stats();
        let counter = |name: &str| stats.get(name).unwrap_or(0);
        let mut details = vec![
            ("version", VERSION.to_owned()),
            ("role", stats.role.clone()),
            ("vector_dimension", stats.vector_dimension.to_string()),
            ("addr", addr.to_string()),
            ("concepts", counter("concepts").to_string()),
        ];
        let mut message = format!(
            "sutra-storage {VERSION} started on {addr} as {} with {} concepts",
            stats.role,
            counter("concepts")
        );
        if let Some(recovery) = self.service.engine().recovery() {
            let _ = write!(
                message,
                "; recovery loaded {} from the snapshot and replayed {} log records in {} ms",
                recovery.snapshot_concepts,
                recovery.replayed_records,
                recovery.elapsed.as_millis()
            );
            if recovery.dropped_tail_bytes > 0 {
                let _ = write!(
                    message,
                    ", dropping a torn tail of {} bytes",
                    recovery.dropped_tail_bytes
                );
            }
            details.extend([
                ("snapshot_concepts", recovery.snapshot_concepts.to_string()),
                ("replayed_records", recovery.replayed_records.to_string()),
                (
                    "dropped_tail_bytes",
                    recovery.dropped_tail_bytes.to_string(),
                ),
                ("recovery_ms", recovery.elapsed.as_millis().to_string()),
            ]);
        }
        self.record("start", message, &details).await;
    }

    /// The `stop` event, written before the engine shuts down.
    pub async fn stopping(&self) {
        let stats = self.service.stats();
        let uptime = stats.get("uptime_seconds").unwrap_or(0);
        let requests = stats.get("requests_total").unwrap_or(0);
        self.record(
            "stop",
            format!("sutra-storage stopping after {uptime} s and {requests} requests"),
            &[
                ("uptime_seconds", uptime.to_string()),
                ("requests", requests.to_string()),
            ],
        )
        .await;
    }

    /// Writes interval summaries until `shutdown` is cancelled.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        // The counters start at zero with the process: the first summary covers everything
        // since start-up (evictions down to a lowered MAX_CONCEPTS included).
        let mut last = Snapshot {
            checkpoints: 0,
            checkpoint_lsn: 0,
            checkpoint_seconds: 0.0,
            evictions: 0,
            expirations: 0,
            errors: 0,
            writable: true,
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = Snapshot::take(&self.service);
            self.summarise(&last, &now).await;
            last = now;
        }
    }

    async fn summarise(&self, last: &Snapshot, now: &Snapshot) {
        let seconds = self.config.interval.as_secs_f64();
        let checkpoints = now.checkpoints.saturating_sub(last.checkpoints);
        if checkpoints > 0 {
            let took = (now.checkpoint_seconds - last.checkpoint_seconds).max(0.0);
            self.record(
                "checkpoint",
                format!(
                    "{checkpoints} checkpoint(s) written in {took:.3} s; the log is cut at LSN {}",
                    now.checkpoint_lsn
                ),
                &[
                    ("count", checkpoints.to_string()),
                    ("checkpoint_lsn", now.checkpoint_lsn.to_string()),
                    ("seconds", format!("{took:.6}")),
                ],
            )
            .await;
        }
        for (kind, what, count, total) in [
            (
                "evictions",
                "concepts evicted (LRU at MAX_CONCEPTS)",
                now.evictions.saturating_sub(last.evictions),
                now.evictions,
            ),
            (
                "expirations",
                "concepts expired (TTL)",
                now.expirations.saturating_sub(last.expirations),
                now.expirations,
            ),
            (
                "errors",
                "error answers (per code: /metrics)",
                now.errors.saturating_sub(last.errors),
                now.errors,
            ),
        ] {
            if count > 0 {
                self.record(
                    kind,
                    format!("{count} {what} in the last {seconds:.0} s; {total} since start"),
                    &[("count", count.to_string()), ("total", total.to_string())],
                )
                .await;
            }
        }
        if last.writable && !now.writable {
            self.record(
                "read_only",
                "the log refused a write (a failed fsync or write, or a full disk): the store is read-only until a restart".to_owned(),
                &[],
            )
            .await;
        }
    }
}

/// The counters the summaries compare.
struct Snapshot {
    checkpoints: u64,
    checkpoint_lsn: u64,
    checkpoint_seconds: f64,
    evictions: u64,
    expirations: u64,
    errors: u64,
    writable: bool,
}

impl Snapshot {
    fn take(service: &Executor) -> Snapshot {
        let stats = service.stats();
        let counter = |name: &str| stats.get(name).unwrap_or(0);
        Snapshot {
            checkpoints: counter("checkpoints"),
            checkpoint_lsn: counter("checkpoint_lsn"),
            checkpoint_seconds: service
                .engine()
                .latencies()
                .map_or(0.0, |latencies| latencies.checkpoint.sum_seconds),
            evictions: counter("evictions"),
            expirations: counter("expirations"),
            errors: counter("errors_total"),
            writable: counter("writable") == 1,
        }
    }
}
