#![allow(
    clippy::indexing_slicing,
    clippy::type_complexity,
    clippy::case_sensitive_file_extension_comparisons,
    reason = "test code"
)]

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::segment::{self, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::sim::{SimRng, SimStorage};
use crate::*;

fn config(segment_bytes: u64) -> WalConfig {
    WalConfig {
        segment_bytes,
        max_record_bytes: 1024,
        ..WalConfig::default()
    }
}

fn open(
    storage: &SimStorage,
    config: &WalConfig,
    after: Lsn,
) -> Result<(Wal, Vec<(Lsn, Vec<u8>)>, Recovery), WalError> {
    let mut replayed = Vec::new();
    let (wal, recovery) = Wal::open(Arc::new(storage.clone()), config, after, |lsn, payload| {
        replayed.push((lsn, payload.to_vec()));
        Ok(())
    })?;
    Ok((wal, replayed, recovery))
}

/// Appends and waits for the acknowledgement.
fn append(wal: &Wal, payload: &[u8]) -> Result<Lsn, WalError> {
    let (sender, receiver) = mpsc::channel();
    wal.append(
        payload.to_vec(),
        Box::new(move |result| drop(sender.send(result))),
    );
    receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("acknowledged")
}

fn payload(index: u64) -> Vec<u8> {
    format!(
        "record number {index} {}",
        "x".repeat((index % 50) as usize)
    )
    .into_bytes()
}

#[test]
fn records_round_trip_in_order_across_reopen() {
    let storage = SimStorage::new();
    let (wal, replayed, recovery) = open(&storage, &config(1 << 20), 0).unwrap();
    assert!(replayed.is_empty());
    assert_eq!(recovery.next_lsn, 1);
    for index in 1..=100 {
        assert_eq!(append(&wal, &payload(index)).unwrap(), index);
    }
    wal.shutdown().unwrap();
    let (wal, replayed, recovery) = open(&storage, &config(1 << 20), 0).unwrap();
    assert_eq!(
        replayed,
        (1..=100)
            .map(|index| (index, payload(index)))
            .collect::<Vec<_>>()
    );
    assert_eq!(recovery.next_lsn, 101);
    assert_eq!(append(&wal, b"after").unwrap(), 101);
    wal.shutdown().unwrap();
}

/// Appends from many threads at once, each thread leading when it finds the writer free
/// (under `Always`, the log thread writing what they queue): every record is acknowledged once, under its own LSN, LSNs run without a gap, and
/// recovery returns each payload under the LSN it was acknowledged with. Deferred appends
/// (written by `write_queued`) share batches.
#[test]
fn concurrent_appenders_lead_in_turn_and_lose_nothing() {
    for fsync in [FsyncPolicy::EverySec, FsyncPolicy::Always] {
        concurrent_appends(&WalConfig {
            fsync,
            ..config(1 << 16)
        });
    }
}

fn concurrent_appends(config: &WalConfig) {
    const THREADS: u64 = 8;
    const EACH: u64 = 300;
    let storage = SimStorage::new();
    let (wal, _, _) = open(&storage, config, 0).unwrap();
    let wal = Arc::new(wal);
    let acknowledged: Vec<(Lsn, Vec<u8>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let wal = Arc::clone(&wal);
                scope.spawn(move || {
                    let (sender, receiver) = mpsc::channel();
                    for index in 0..EACH {
                        let body = payload(thread * EACH + index);
                        let (sender, record) = (sender.clone(), body.clone());
                        let ack: Ack = Box::new(move |result| {
                            drop(sender.send(result.map(|lsn| (lsn, record))));
                        });
                        // Every third append is deferred in groups, like a pipeline.
                        if index % 3 == 0 {
                            wal.append(body, ack);
                        } else {
                            wal.append_deferred(body, ack);
                            if index % 3 == 2 {
                                wal.write_queued();
                            }
                        }
                    }
                    wal.write_queued();
                    (0..EACH)
                        .map(|_| {
                            receiver
                                .recv_timeout(Duration::from_secs(10))
                                .expect("acknowledged")
                                .expect("written")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    let mut acknowledged = acknowledged;
    acknowledged.sort_by_key(|(lsn, _)| *lsn);
    let lsns: Vec<Lsn> = acknowledged.iter().map(|(lsn, _)| *lsn).collect();
    assert_eq!(lsns, (1..=THREADS * EACH).collect::<Vec<_>>());
    let stats = wal.stats();
    assert_eq!(stats.appends.load(Ordering::Relaxed), THREADS * EACH);
    assert!(
        stats.batches.load(Ordering::Relaxed) < THREADS * EACH,
        "deferred appends share batches"
    );
    Arc::into_inner(wal).unwrap().shutdown().unwrap();
    let (wal, replayed, _) = open(&storage, config, 0).unwrap();
    assert_eq!(replayed, acknowledged);
    wal.shutdown().unwrap();
}

/// A deferred append waits in the queue until some thread writes: here the next plain
/// append, which writes both in LSN order.
#[test]
fn deferred_appends_are_written_by_the_next_append() {
    let storage = SimStorage::new();
    let (wal, _, _) = open(&storage, &config(1 << 20), 0).unwrap();
    let (sender, receiver) = mpsc::channel();
    let deferred = sender.clone();
    wal.append_deferred(
        b"deferred".to_vec(),
        Box::new(move |result| drop(deferred.send(result))),
    );
    assert!(receiver.try_recv().is_err(), "queued, not written");
    assert_eq!(append(&wal, b"leader").unwrap(), 2);
    assert_eq!(receiver.try_recv().unwrap().unwrap(), 1);
    wal.shutdown().unwrap();
}

#[test]
fn a_torn_last_record_is_dropped_at_every_byte_offset() {
    let storage = SimStorage::new();
    let (wal, _, _) = open(&storage, &config(1 << 20), 0).unwrap();
    for index in 1..=5 {
        append(&wal, &payload(index)).unwrap();
    }
    wal.shutdown().unwrap();
    let name = segment::segment_name(1);
    // The last record starts where the first four end.
    let mut start = SEGMENT_HEADER_BYTES;
    for index in 1..=4 {
        start += segment::record_span(payload(index).len()).unwrap();
    }
    let end = start + RECORD_HEADER_BYTES + payload(5).len();
    for cut in start..end {
        let torn = storage.fork();
        torn.corrupt(&name, cut as u64, &vec![0; end - cut]);
        let (wal, replayed, recovery) = open(&torn, &config(1 << 20), 0)
            .unwrap_or_else(|error| panic!("cut at {cut}: {error}"));
        assert_eq!(replayed.len(), 4, "cut at {cut}");
        assert_eq!(recovery.dropped_bytes > 0, cut > start, "cut at {cut}");
        // The log continues after the dropped record, and a second recovery agrees.
        assert_eq!(append(&wal, b"next").unwrap(), 5);
        wal.shutdown().unwrap();
        let (wal, replayed, recovery) = open(&torn, &config(1 << 20), 0).unwrap();
        assert_eq!(
            replayed
                .last()
                .map(|(lsn, payload)| (*lsn, payload.as_slice())),
            Some((5, b"next".as_slice()))
        );
        assert_eq!(recovery.dropped_bytes, 0);
        wal.shutdown().unwrap();
    }
}

#[test]
fn a_bit_flip_in_the_middle_stops_recovery() {
    let storage = SimStorage::new();
    let (wal, _, _) = open(&storage, &config(1 << 20), 0).unwrap();
    for index in 1..=10 {
        append(&wal, &payload(index)).unwrap();
    }
    wal.shutdown().unwrap();
    let name = segment::segment_name(1);
    let image = storage.read(&name).unwrap();
    // Flip one bit in the third record's payload.
    let offset = SEGMENT_HEADER_BYTES
        + segment::record_span(payload(1).len()).unwrap()
        + segment::record_span(payload(2).len()).unwrap()
        + RECORD_HEADER_BYTES
        + 3;
    storage.corrupt(&name, offset as u64, &[image[offset] ^ 0x10]);
    let error = open(&storage, &config(1 << 20), 0)
        .err()
        .expect("corruption is an error");
    assert!(matches!(error, WalError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("middle of the log"), "{error}");
}

#[test]
fn segments_roll_over_and_checkpoints_truncate_them() {
    let storage = SimStorage::new();
    let config = config(4096);
    let (wal, _, _) = open(&storage, &config, 0).unwrap();
    for index in 1..=200 {
        append(&wal, &payload(index)).unwrap();
    }
    let segments_before = wal.stats().segments.load(Ordering::Relaxed);
    assert!(segments_before >= 4, "{segments_before} segments");
    wal.truncate(150).unwrap();
    wal.shutdown().unwrap();
    let remaining: Vec<String> = storage
        .list()
        .unwrap()
        .into_iter()
        .filter(|name| name.ends_with(".seg"))
        .collect();
    assert!((remaining.len() as u64) < segments_before);
    // Replay after the checkpoint sees exactly the later records.
    let (wal, replayed, _) = open(&storage, &config, 150).unwrap();
    assert_eq!(
        replayed.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>(),
        (151..=200).collect::<Vec<_>>()
    );
    wal.shutdown().unwrap();
    // A checkpoint older than the first remaining segment leaves a gap: refuse to start.
    assert!(matches!(
        open(&storage, &config, 0).err(),
        Some(WalError::Gap { .. })
    ));
}

#[test]
fn a_failed_sync_poisons_the_log_and_nothing_unsynced_is_acknowledged() {
    let storage = SimStorage::new();
    let (wal, _, _) = open(&storage, &config(1 << 20), 0).unwrap();
    append(&wal, b"one").unwrap();
    storage.fail_syncs_after(Some(0));
    let error = append(&wal, b"two").unwrap_err();
    assert!(matches!(error, WalError::Io { op: "sync", .. }), "{error}");
    assert!(wal.is_poisoned());
    storage.fail_syncs_after(None);
    assert!(
        matches!(append(&wal, b"three"), Err(WalError::Poisoned)),
        "no retry after a failed sync"
    );
    wal.halt();
    storage.crash(&mut SimRng::new(1));
    let (wal, replayed, _) = open(&storage, &config(1 << 20), 0).unwrap();
    assert_eq!(
        replayed.first().map(|(_, payload)| payload.as_slice()),
        Some(b"one".as_slice())
    );
    assert!(replayed
        .iter()
        .all(|(_, payload)| payload.as_slice() != b"three"));
    wal.shutdown().unwrap();
}

#[test]
fn a_full_disk_at_segment_creation_fails_writes_and_recovers_when_space_returns() {
    let storage = SimStorage::new();
    let config = config(4096);
    let (wal, _, _) = open(&storage, &config, 0).unwrap();
    let mut acknowledged = Vec::new();
    let mut index = 0;
    append(&wal, b"first segment exists")
        .map(|lsn| acknowledged.push((lsn, b"first segment exists".to_vec())))
        .unwrap();
    storage.fail_allocations(true);
    // Appends succeed until the first segment is full and the next cannot be allocated.
    let error = loop {
        index += 1;
        match append(&wal, &payload(index)) {
            Ok(lsn) => acknowledged.push((lsn, payload(index))),
            Err(error) => break error,
        }
    };
    assert!(error.is_disk_full(), "{error}");
    assert!(!wal.is_poisoned(), "a full disk is not a corruption risk");
    storage.fail_allocations(false);
    let lsn = append(&wal, b"space is back").unwrap();
    acknowledged.push((lsn, b"space is back".to_vec()));
    wal.shutdown().unwrap();
    let (wal, replayed, _) = open(&storage, &config, 0).unwrap();
    assert_eq!(replayed, acknowledged);
    wal.shutdown().unwrap();
}

#[test]
fn oversized_and_empty_records_are_refused() {
    let storage = SimStorage::new();
    let (wal, _, _) = open(&storage, &config(1 << 20), 0).unwrap();
    assert!(matches!(
        append(&wal, &[7; 1025]),
        Err(WalError::RecordTooLarge {
            len: 1025,
            max: 1024
        })
    ));
    assert!(append(&wal, &[7; 1024]).is_ok());
    assert!(matches!(append(&wal, &[]), Err(WalError::EmptyRecord)));
    wal.shutdown().unwrap();
}

/// Simulated power cuts (1,000 seeds, three crashes each): appends in random bursts, a halt at a random moment, a crash image
/// that keeps a random prefix of unsynced writes (tearing the last), then recovery. Every
/// record acknowledged under `Always` must come back, in order, byte for byte.
#[test]
fn acknowledged_records_survive_simulated_power_cuts() {
    for seed in 0..1000 {
        let mut rng = SimRng::new(seed);
        let storage = SimStorage::new();
        let config = config(2048 + rng.below(4096));
        let mut acknowledged: Vec<(Lsn, Vec<u8>)> = Vec::new();
        let mut next = 0_u64;
        for _restart in 0..3 {
            let (wal, replayed, _) =
                open(&storage, &config, 0).unwrap_or_else(|error| panic!("seed {seed}: {error}"));
            let recovered: Vec<&(Lsn, Vec<u8>)> = replayed
                .iter()
                .filter(|(lsn, _)| acknowledged.iter().any(|(acked, _)| acked == lsn))
                .collect();
            assert_eq!(
                recovered.len(),
                acknowledged.len(),
                "seed {seed}: acknowledged records lost"
            );
            for ((lsn, payload), (acked_lsn, acked_payload)) in recovered
                .iter()
                .map(|entry| (&entry.0, &entry.1))
                .zip(&acknowledged)
            {
                assert_eq!((lsn, payload), (acked_lsn, acked_payload), "seed {seed}");
            }
            // Only the replayed log counts from here on (unacknowledged records may or may not
            // have survived, and are part of the log if they did).
            acknowledged = replayed;
            let bursts = 1 + rng.below(6);
            let (sender, receiver) = mpsc::channel();
            for _ in 0..bursts {
                let size = 1 + rng.below(8);
                for _ in 0..size {
                    next += 1;
                    let body = payload(next);
                    let sender = sender.clone();
                    let record = body.clone();
                    wal.append(
                        body,
                        Box::new(move |result| drop(sender.send(result.map(|lsn| (lsn, record))))),
                    );
                }
                if rng.below(3) == 0 {
                    break;
                }
                for _ in 0..size {
                    if let Ok(Ok(entry)) = receiver.recv_timeout(Duration::from_secs(10)) {
                        acknowledged.push(entry);
                    }
                }
            }
            wal.halt();
            while let Ok(result) = receiver.try_recv() {
                if let Ok(entry) = result {
                    acknowledged.push(entry);
                }
            }
            acknowledged.sort_by_key(|(lsn, _)| *lsn);
            storage.crash(&mut rng);
        }
    }
}

/// The fuzz target `wal` recovers one segment file of arbitrary bytes; its seeds
/// (`fuzz/seeds/wal/`) are valid segments written with the encoder here, so mutations start
/// from files that get past the header. `UPDATE_FUZZ_SEEDS=1 cargo test -p sutra-wal fuzz_seeds`
/// rewrites them.
#[test]
fn fuzz_seeds_match_the_encoder() {
    const SEGMENT: usize = 4096;
    let segment_with = |records: u64| {
        let mut bytes = segment::encode_header(0x5eed_0001, 1).to_vec();
        for lsn in 1..=records {
            segment::encode_record(&mut bytes, 0x5eed_0001, lsn, &payload(lsn));
        }
        bytes.resize(SEGMENT.max(bytes.len()), 0);
        bytes
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/wal");
    for (name, bytes) in [
        ("empty-segment", segment_with(0)),
        ("one-record", segment_with(1)),
        ("twelve-records", segment_with(12)),
    ] {
        let path = root.join(name);
        if std::env::var_os("UPDATE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(&root).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let current = std::fs::read(&path).unwrap_or_default();
            assert!(
                current == bytes,
                "fuzz seed wal/{name} differs from the encoder"
            );
        }
    }
    // The seeds are recoverable segments, as the target reads them.
    let storage = SimStorage::new();
    storage.put(&segment::segment_name(1), &segment_with(12));
    let (wal, replayed, _) = open(&storage, &config(SEGMENT as u64), 0).unwrap();
    assert_eq!(replayed.len(), 12);
    wal.shutdown().unwrap();
}
