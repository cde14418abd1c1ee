//! Opening a store that must exist, and one whose bytes were damaged.

use std::io::{Seek, SeekFrom, Write};

use sellsync_store::{Store, StoreError, StoreRead};

#[test]
fn open_existing_creates_nothing_for_a_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mistyped.redb");
    let err = Store::open_existing(&path).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(!path.exists());
}

#[test]
fn a_damaged_store_is_one_damaged_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    {
        let store = Store::open(&path).unwrap();
        for i in 0..200u32 {
            let value = vec![i as u8; 512];
            store
                .write(|w| w.kv_put(&format!("key-{i}"), &value))
                .unwrap();
        }
    }
    assert!(Store::open_existing(&path).is_ok(), "intact before");
    let size = std::fs::metadata(&path).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut at = 8192;
    while at + 4096 < size {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[0xA5; 4096]).unwrap();
        at += 8192;
    }
    f.sync_all().unwrap();
    drop(f);
    let err = Store::open_existing(&path).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    assert!(err.to_string().starts_with("store damaged: "), "{err}");
    // The path is free again: the failed open holds nothing.
    let again = Store::open_existing(&path).unwrap_err();
    assert!(matches!(again, StoreError::Damaged { .. }), "{again}");
}

#[test]
fn the_feed_floor_only_ever_rises() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("node.redb")).unwrap();
    assert_eq!(store.write(|w| w.raise_feed_floor(1_000)).unwrap(), 1_000);
    assert_eq!(store.write(|w| w.raise_feed_floor(10)).unwrap(), 1_000);
    assert_eq!(store.read().unwrap().feed_head().unwrap(), 1_000);
}
