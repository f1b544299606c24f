//! Arbitrary bytes as a whole WAL segment file: recovery returns records or an error,
//! never panics.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vigil_wal::{FsStorage, Wal, WalConfig};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("vigil-fuzz-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("00000000000000000001.wal"), data).unwrap();
    let storage = Arc::new(FsStorage::open(&dir).unwrap());
    let config = WalConfig {
        durability: vigil_wal::Durability::None,
        ..WalConfig::default()
    };
    if let Ok((wal, _)) = Wal::open(storage, config, 0, |_, _, _| Ok(())) {
        wal.close();
    }
});
