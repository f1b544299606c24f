//! Integration tests of `vigil-wal`: round trips, torn tails, corruption, faults.

mod fault;
mod recovery;
mod writer;

use std::sync::Arc;

use vigil_wal::{Storage, Wal, WalConfig};

/// A record as the tests submit it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    lsn: u64,
    kind: u8,
    payload: Vec<u8>,
}

fn small_segments() -> WalConfig {
    WalConfig {
        segment_size: 4096,
        ..WalConfig::default()
    }
}

/// Opens the log and collects every replayed record.
fn open_collect(
    storage: Arc<dyn Storage>,
    config: WalConfig,
    after: u64,
) -> vigil_wal::Result<(Wal, Vec<Rec>)> {
    let mut recs = Vec::new();
    let (wal, _) = Wal::open(storage, config, after, |lsn, kind, payload| {
        recs.push(Rec {
            lsn,
            kind,
            payload: payload.to_vec(),
        });
        Ok(())
    })?;
    Ok((wal, recs))
}

fn payload_for(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}
