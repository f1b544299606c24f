use std::sync::Arc;

use vigil_wal::{Durability, Error, Wal, WalConfig};

use crate::fault::FaultStorage;
use crate::{open_collect, payload_for, small_segments};

#[test]
fn concurrent_appenders_share_fsyncs() {
    let storage = FaultStorage::default();
    let (wal, _) = open_collect(Arc::new(storage.clone()), WalConfig::default(), 0).unwrap();
    let wal = Arc::new(wal);
    let syncs_before = storage.syncs();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..200 {
                    wal.submit(1, payload_for(t * 1000 + i, 64))
                        .unwrap()
                        .wait_blocking()
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let syncs = storage.syncs() - syncs_before;
    assert!(
        syncs < 1600,
        "1600 appends took {syncs} fsyncs: no group commit"
    );
    assert_eq!(wal.durable_lsn(), 1600);
    wal.close();
    let (_w, read) = open_collect(Arc::new(storage), WalConfig::default(), 0).unwrap();
    assert_eq!(read.len(), 1600);
    assert!(read.windows(2).all(|w| w[1].lsn == w[0].lsn + 1));
}

#[test]
fn failed_fsync_poisons_the_log() {
    let storage = FaultStorage::default();
    let (wal, _) = open_collect(Arc::new(storage.clone()), WalConfig::default(), 0).unwrap();
    wal.submit(1, b"ok".to_vec())
        .unwrap()
        .wait_blocking()
        .unwrap();
    storage.fail_sync_after(0);
    let err = wal
        .submit(1, b"lost".to_vec())
        .unwrap()
        .wait_blocking()
        .unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(wal.poisoned().unwrap().contains("injected fsync failure"));
    // No retry: later appends are refused even though fsync would work again.
    storage.fail_sync_after(1_000_000);
    assert!(matches!(
        wal.submit(1, b"later".to_vec()),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(wal.durable_lsn(), 1);
}

#[test]
fn durability_none_skips_fsync() {
    let storage = FaultStorage::default();
    let config = WalConfig {
        durability: Durability::None,
        ..small_segments()
    };
    let (wal, _) = open_collect(Arc::new(storage.clone()), config.clone(), 0).unwrap();
    for i in 0..100 {
        wal.submit(1, payload_for(i, 200))
            .unwrap()
            .wait_blocking()
            .unwrap();
    }
    assert_eq!(storage.syncs(), 0);
}

#[test]
fn rejects_reserved_kind_and_oversized_records() {
    let storage = FaultStorage::default();
    let (wal, _) = open_collect(Arc::new(storage), WalConfig::default(), 0).unwrap();
    assert!(matches!(wal.submit(0, vec![]), Err(Error::ReservedKind)));
    let big = vec![0u8; vigil_wal::MAX_PAYLOAD_LEN + 1];
    assert!(matches!(
        wal.submit(1, big),
        Err(Error::RecordTooLarge { .. })
    ));
}

#[test]
fn segments_rotate_by_size_and_truncate_behind_a_checkpoint() {
    let storage = FaultStorage::default();
    let (wal, _) = open_collect(Arc::new(storage.clone()), small_segments(), 0).unwrap();
    for i in 0..60 {
        wal.submit(1, payload_for(i, 500))
            .unwrap()
            .wait_blocking()
            .unwrap();
    }
    let segments = storage.names().len();
    assert!(segments >= 6, "only {segments} segments");
    let removed = wal.truncate_through(60).unwrap();
    assert_eq!(removed, segments - 1, "all but the active segment go");
    assert!(wal.truncate_through(60).unwrap() == 0);
}

#[tokio::test]
async fn async_append_waits_for_durability() {
    let storage = FaultStorage::default();
    let (wal, _) = open_collect(Arc::new(storage.clone()), WalConfig::default(), 0).unwrap();
    let lsn = wal.append(3, b"x".to_vec()).await.unwrap();
    assert_eq!(lsn, 1);
    assert!(storage.syncs() >= 1);
    let _ = Wal::durable_lsn(&wal);
}
