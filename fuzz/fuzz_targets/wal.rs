//! WAL recovery on an arbitrary segment file (the seeds are valid segments; see
//! `fuzz/seeds/wal`). Recovery either refuses with an error or yields consecutive records,
//! and a log it accepted stays usable: one more append survives a clean reopen, after
//! exactly the records recovered the first time.
#![no_main]

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sutra_wal::segment::segment_name;
use sutra_wal::sim::SimStorage;
use sutra_wal::{FsyncPolicy, Lsn, Wal, WalConfig};

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 4096,
        max_record_bytes: 1024,
        fsync: FsyncPolicy::Always,
        ..WalConfig::default()
    }
}

fn recover(storage: &SimStorage) -> Option<(Wal, Vec<(Lsn, Vec<u8>)>, Lsn)> {
    let mut replayed = Vec::new();
    let (wal, recovery) = Wal::open(Arc::new(storage.clone()), &config(), 0, |lsn, payload| {
        replayed.push((lsn, payload.to_vec()));
        Ok(())
    })
    .ok()?;
    Some((wal, replayed, recovery.next_lsn))
}

fuzz_target!(|data: &[u8]| {
    let storage = SimStorage::new();
    storage.put(&segment_name(1), data);
    let Some((wal, replayed, next_lsn)) = recover(&storage) else {
        return;
    };
    for (index, (lsn, _)) in replayed.iter().enumerate() {
        assert_eq!(
            *lsn,
            index as u64 + 1,
            "records are consecutive from the first"
        );
    }
    assert_eq!(next_lsn, replayed.len() as u64 + 1);
    let (sender, receiver) = mpsc::channel();
    wal.append(
        b"after recovery".to_vec(),
        Box::new(move |result| drop(sender.send(result))),
    );
    let appended = receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("the append is acknowledged");
    assert_eq!(appended.expect("the append succeeds"), next_lsn);
    wal.shutdown().expect("a clean shutdown");
    let (wal, again, _) = recover(&storage).expect("a log recovered once reopens");
    let mut expected = replayed;
    expected.push((next_lsn, b"after recovery".to_vec()));
    assert_eq!(again, expected);
    wal.shutdown().expect("a clean shutdown");
});
