//! A full disk: writes fail with a clear error, and what was committed before is intact.
//!
//! Guards against a store that reports a failed write as done, or whose cache keeps a change
//! the disk refused. The disk is a redb `StorageBackend` over shared memory that refuses to
//! grow past a byte limit, like a full filesystem.

mod common;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use common::{get_int, put_int, rid};
use redb::StorageBackend;
use sellsync_store::{Docs, Store, StoreError, StoreOptions, StoreRead};

/// A disk image shared between successive opens.
#[derive(Debug, Default)]
struct Image(RwLock<Vec<u8>>);

/// A backend over an [`Image`] that fails any write or growth past `limit` bytes.
#[derive(Debug)]
struct LimitedDisk {
    image: Arc<Image>,
    limit: Arc<AtomicU64>,
}

fn full() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "no space left on device")
}

impl StorageBackend for LimitedDisk {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.image.0.read().unwrap().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let data = self.image.0.read().unwrap();
        let start = offset as usize;
        let end = start + out.len();
        if end > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        }
        out.copy_from_slice(&data[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        if len > self.limit.load(Ordering::SeqCst) {
            return Err(full());
        }
        self.image.0.write().unwrap().resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if offset + data.len() as u64 > self.limit.load(Ordering::SeqCst) {
            return Err(full());
        }
        let mut image = self.image.0.write().unwrap();
        let start = offset as usize;
        if start + data.len() > image.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "write past end",
            ));
        }
        image[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

fn open(image: &Arc<Image>, limit: &Arc<AtomicU64>) -> Store {
    let disk = LimitedDisk {
        image: image.clone(),
        limit: limit.clone(),
    };
    Store::open_with_backend(disk, StoreOptions::default()).unwrap()
}

#[test]
fn a_full_disk_fails_the_write_clearly_and_keeps_what_was_committed() {
    let image = Arc::new(Image::default());
    let limit = Arc::new(AtomicU64::new(u64::MAX));
    let store = Arc::new(open(&image, &limit));
    let mut docs = Docs::new(store.clone(), 1 << 20);
    for i in 0..20 {
        docs.with_doc_mut(&rid(&format!("d{i}")), "deal", |d| put_int(d, "v", i))
            .unwrap();
        store
            .write(|w| w.kv_put(&format!("k{i}"), &[i as u8]))
            .unwrap();
    }

    // The disk is now full: nothing more may grow the file.
    limit.store(image.0.read().unwrap().len() as u64, Ordering::SeqCst);
    // A document change that cannot be written is not kept in memory either.
    let err = docs
        .with_doc_mut(&rid("d0"), "deal", |d| {
            for n in 0..20_000 {
                put_int(d, &format!("f{n}"), n);
            }
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err}");
    let chain = format!("{err}: {err:?}");
    assert!(
        chain.contains("no space left") || chain.contains("StorageFull"),
        "{chain}"
    );
    assert!(!docs.is_cached(&rid("d0")));
    assert_eq!(
        docs.with_doc(&rid("d1"), |d| get_int(d, "v")).unwrap(),
        Some(Some(1))
    );

    // Once redb has seen an I/O error it refuses further writes until reopened.
    let big = vec![7u8; 4 << 20];
    let err = store.write(|w| w.kv_put("huge", &big)).unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err}");

    drop(docs);
    drop(store);

    // After "freeing space", the reopened store holds exactly what was acknowledged.
    limit.store(u64::MAX, Ordering::SeqCst);
    let store = Arc::new(open(&image, &limit));
    let view = store.read().unwrap();
    assert_eq!(view.kv_get("huge").unwrap(), None);
    for i in 0..20 {
        assert_eq!(view.kv_get(&format!("k{i}")).unwrap(), Some(vec![i as u8]));
    }
    assert_eq!(view.feed_head().unwrap(), 20);
    drop(view);
    let mut docs = Docs::new(store.clone(), 1 << 20);
    for i in 0..20 {
        let (v, f) = docs
            .with_doc(&rid(&format!("d{i}")), |d| {
                (get_int(d, "v"), get_int(d, "f0"))
            })
            .unwrap()
            .unwrap();
        assert_eq!((v, f), (Some(i), None));
    }
    // And it accepts writes again.
    docs.with_doc_mut(&rid("d0"), "deal", |d| put_int(d, "v", 100))
        .unwrap();
}
