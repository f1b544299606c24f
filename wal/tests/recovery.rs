use std::fs::OpenOptions;
use std::sync::Arc;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use vigil_wal::{Error, FsStorage, RecoveryMode, Storage, WalConfig};

use crate::fault::{CrashKind, FaultStorage};
use crate::{Rec, open_collect, payload_for, small_segments};

fn write_all(storage: Arc<dyn Storage>, config: WalConfig, payloads: &[(u8, Vec<u8>)]) -> Vec<Rec> {
    let (wal, _) = open_collect(storage, config, 0).unwrap();
    let tickets: Vec<_> = payloads
        .iter()
        .map(|(k, p)| wal.submit(*k, p.clone()).unwrap())
        .collect();
    let recs = tickets
        .into_iter()
        .zip(payloads)
        .map(|(t, (kind, payload))| Rec {
            lsn: t.wait_blocking().unwrap(),
            kind: *kind,
            payload: payload.clone(),
        })
        .collect();
    wal.close();
    recs
}

fn arb_records() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    prop::collection::vec(
        (1u8..=255, prop::collection::vec(any::<u8>(), 0..600)),
        1..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn records_round_trip(payloads in arb_records()) {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::open(dir.path()).unwrap());
        let written = write_all(Arc::clone(&storage), small_segments(), &payloads);
        let (_wal, read) = open_collect(storage, small_segments(), 0).unwrap();
        prop_assert_eq!(read, written);
    }

    /// Cutting the newest segment at any byte recovers exactly the records wholly before
    /// the cut, and the log accepts appends again afterwards.
    #[test]
    fn truncate_anywhere_recovers_exact_prefix(payloads in arb_records(), cut in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::open(dir.path()).unwrap());
        let written = write_all(Arc::clone(&storage), small_segments(), &payloads);
        let mut names: Vec<String> = storage.list().unwrap();
        names.sort();
        // The newest segment is empty (started by close-less reopen); cut the one before.
        let last = names.iter().rev().find(|n| std::fs::metadata(dir.path().join(n)).unwrap().len() > 32).unwrap().clone();
        let path = dir.path().join(&last);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        let at = cut.index(len + 1);
        OpenOptions::new().write(true).open(&path).unwrap().set_len(at as u64).unwrap();
        let removed_later: Vec<_> = names.iter().filter(|n| **n > last).collect();
        for n in removed_later { std::fs::remove_file(dir.path().join(n)).unwrap(); }

        let (wal, read) = open_collect(Arc::clone(&storage), small_segments(), 0).unwrap();
        prop_assert!(read.len() <= written.len());
        prop_assert_eq!(&read[..], &written[..read.len()]);
        // Everything in earlier segments survived.
        let first_in_last: u64 = last.trim_end_matches(".wal").parse().unwrap();
        prop_assert!(read.len() as u64 >= first_in_last - 1);

        let lsn = wal.submit(9, b"after".to_vec()).unwrap().wait_blocking().unwrap();
        prop_assert_eq!(lsn, read.len() as u64 + 1);
        drop(wal);
        let (_wal, again) = open_collect(storage, small_segments(), 0).unwrap();
        prop_assert_eq!(again.len(), read.len() + 1);
        prop_assert_eq!(&again.last().unwrap().payload, b"after");
    }
}

/// Simulated power loss after random appends: every acknowledged record is recovered,
/// and what is recovered is a prefix of what was submitted.
#[test]
fn crash_keeps_every_acknowledged_record() {
    for seed in 0..200u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let kind = [CrashKind::Forget, CrashKind::Tear][seed as usize % 2];
        let storage = FaultStorage::default();
        let (wal, _) = open_collect(Arc::new(storage.clone()), small_segments(), 0).unwrap();
        let mut acked = 0;
        let mut submitted = Vec::new();
        for i in 1..=rand::Rng::random_range(&mut rng, 1..80u64) {
            let ticket = wal
                .submit(1, payload_for(i, (i as usize * 37) % 500))
                .unwrap();
            submitted.push(payload_for(i, (i as usize * 37) % 500));
            if rand::Rng::random_bool(&mut rng, 0.3) {
                acked = ticket.wait_blocking().unwrap();
            }
        }
        let image = storage.crash(kind, &mut rng);
        wal.close();
        let (_wal, read) = open_collect(Arc::new(image), small_segments(), 0)
            .unwrap_or_else(|e| panic!("seed {seed}: recovery failed: {e}"));
        assert!(
            read.len() as u64 >= acked,
            "seed {seed}: lost acknowledged records"
        );
        for (r, p) in read.iter().zip(&submitted) {
            assert_eq!(&r.payload, p, "seed {seed}");
        }
    }
}

/// A torn write with a flipped bit in the unsynced tail is still just a torn tail.
#[test]
fn flipped_bits_in_the_unsynced_tail_are_truncated() {
    for seed in 0..100u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let storage = FaultStorage::default();
        let (wal, _) = open_collect(Arc::new(storage.clone()), small_segments(), 0).unwrap();
        let acked = wal
            .submit(1, payload_for(0, 100))
            .unwrap()
            .wait_blocking()
            .unwrap();
        for i in 1..20 {
            let _unacked = wal.submit(1, payload_for(i, 300)).unwrap();
        }
        let image = storage.crash(CrashKind::TearAndFlip, &mut rng);
        wal.close();
        match open_collect(Arc::new(image), small_segments(), 0) {
            Ok((_w, read)) => assert!(read.len() as u64 >= acked),
            // A flip before a valid later frame is corruption; that must name file and offset.
            Err(Error::Corruption { file, offset, .. }) => {
                assert!(file.ends_with(".wal") && offset > 0)
            }
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
}

#[test]
fn corruption_before_the_tail_stops_recovery_with_file_and_offset() {
    let storage = FaultStorage::default();
    let (wal, _) = open_collect(Arc::new(storage.clone()), WalConfig::default(), 0).unwrap();
    for i in 0..10 {
        wal.submit(1, payload_for(i, 100))
            .unwrap()
            .wait_blocking()
            .unwrap();
    }
    wal.close();
    let name = storage.names()[0].clone();
    // Second record's payload: header 32 + frame 132 + frame header 32 + 5.
    let offset = 32 + 132 + 32 + 5;
    storage.flip(&name, offset);
    match open_collect(Arc::new(storage.clone()), WalConfig::default(), 0) {
        Err(Error::Corruption {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, name);
            assert_eq!(offset, 32 + 132, "offset of the damaged frame");
            assert!(reason.contains("checksum"), "{reason}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("corruption went unnoticed"),
    }
    let skip = WalConfig {
        recovery: RecoveryMode::SkipCorrupt,
        ..WalConfig::default()
    };
    let (_wal, read) = open_collect(Arc::new(storage), skip, 0).unwrap();
    let lsns: Vec<u64> = read.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, vec![1, 3, 4, 5, 6, 7, 8, 9, 10]);
}

#[test]
fn corrupt_segment_header_is_reported() {
    let storage = FaultStorage::default();
    let (wal, _) = open_collect(Arc::new(storage.clone()), small_segments(), 0).unwrap();
    for i in 0..40 {
        wal.submit(1, payload_for(i, 400))
            .unwrap()
            .wait_blocking()
            .unwrap();
    }
    wal.close();
    let first = storage.names()[0].clone();
    storage.flip(&first, 3);
    let err = open_collect(Arc::new(storage), small_segments(), 0)
        .err()
        .expect("must fail");
    assert!(matches!(err, Error::Corruption { offset: 0, .. }), "{err}");
    assert!(err.to_string().contains(&first));
}

#[test]
fn replay_starts_after_the_checkpoint_and_old_segments_are_deleted() {
    let storage = FaultStorage::default();
    let (wal, _) = open_collect(Arc::new(storage.clone()), small_segments(), 0).unwrap();
    for i in 0..50 {
        wal.submit(1, payload_for(i, 400))
            .unwrap()
            .wait_blocking()
            .unwrap();
    }
    wal.close();
    let before = storage.names().len();
    assert!(before > 3);
    let (wal, read) = open_collect(Arc::new(storage.clone()), small_segments(), 30).unwrap();
    assert_eq!(read.first().map(|r| r.lsn), Some(31));
    assert_eq!(read.len(), 20);
    assert!(
        storage.names().len() < before,
        "segments behind the checkpoint were removed"
    );
    wal.close();
    // Everything checkpointed: an empty log still continues the LSN sequence.
    let (wal, read) = open_collect(Arc::new(storage.clone()), small_segments(), 50).unwrap();
    assert!(read.is_empty());
    assert_eq!(wal.submit(1, vec![1]).unwrap().wait_blocking().unwrap(), 51);
}

#[test]
fn empty_and_header_only_logs_open() {
    let storage = FaultStorage::default();
    let (wal, read) = open_collect(Arc::new(storage.clone()), small_segments(), 0).unwrap();
    assert!(read.is_empty());
    wal.close();
    // A segment cut inside its header (crash during creation) is discarded.
    let name = storage.names()[0].clone();
    assert_eq!(storage.len(&name), 32);
    vigil_wal::Storage::truncate(&storage, &name, 10).unwrap();
    let (_wal, read) = open_collect(Arc::new(storage), small_segments(), 0).unwrap();
    assert!(read.is_empty());
}
