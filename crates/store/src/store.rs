//! Opening a store: the file lock, the schema version check, and transactions.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, StorageBackend, TableHandle};

use crate::error::{Result, StoreError};
use crate::read::ReadView;
use crate::read::StoreRead;
use crate::schema::{self, META, META_FEED_SEQ, META_SCHEMA_VERSION, SCHEMA_VERSION};
use crate::write::WriteBatch;

/// Tuning knobs of a store. The defaults suit a phone and a hub alike.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb page cache size in bytes.
    pub cache_bytes: usize,
    /// A document is compacted when its chunks total more than
    /// `max(compact_min_bytes, snapshot size)` bytes...
    pub compact_min_bytes: u64,
    /// ...or when it has more than this many chunks.
    pub compact_max_chunks: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
            compact_min_bytes: 16 << 10,
            compact_max_chunks: 128,
        }
    }
}

/// Paths of the stores open in this process. redb's file lock already refuses a second writer
/// in another process; this set makes a second open in the same process fail the same way on
/// every platform.
static OPEN_PATHS: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn claim_path(path: &Path) -> Result<()> {
    let mut guard = OPEN_PATHS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if !set.insert(path.to_owned()) {
        return Err(StoreError::AlreadyOpen {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn release_path(path: &Path) {
    let mut guard = OPEN_PATHS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(set) = guard.as_mut() {
        set.remove(path);
    }
}

/// The durable store of one node. One `Store` per file.
///
/// Every method that returns `Ok` after writing has committed a redb transaction with immediate
/// durability: the write survives a crash or `kill -9` from then on. A method that returns `Err`
/// has written nothing.
///
/// All methods block (file I/O and fsync). In async code call them from `spawn_blocking`, and
/// never hold a [`ReadView`] across an `.await`. redb allows one write transaction at a time:
/// concurrent [`Store::write`] calls queue up.
#[derive(Debug)]
pub struct Store {
    db: Database,
    /// The canonical path of the file, if the store is file-backed (released on drop).
    path: Option<PathBuf>,
    options: StoreOptions,
    /// Mirror of the committed `feed_seq`, so that the document cache can tell cheaply whether
    /// anything was written since it last looked.
    feed_seq: AtomicU64,
    /// Set by [`Store::open_existing`] when redb repaired damage it found.
    repaired: bool,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            release_path(path);
        }
    }
}

impl Store {
    /// Opens the store at `path`, creating it if the file does not exist.
    ///
    /// Errors: [`StoreError::AlreadyOpen`] if a `Store` in this or another process has it open,
    /// [`StoreError::SchemaVersion`] if it was written by another schema version,
    /// [`StoreError::NotAStore`] if it is some other redb database.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(path, StoreOptions::default())
    }

    /// [`Store::open`], waiting up to `wait` while another `Store` has the file open: a short
    /// command waits for the session or command holding the store (a device serving LAN peers
    /// opens it only for each session) instead of failing at once. Other errors return at once.
    pub fn open_waiting(path: impl AsRef<Path>, wait: std::time::Duration) -> Result<Store> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Store::open(path.as_ref()) {
                Err(StoreError::AlreadyOpen { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// [`Store::open_existing`], waiting up to `wait` while another `Store` has the file open
    /// (see [`Store::open_waiting`]).
    pub fn open_existing_waiting(
        path: impl AsRef<Path>,
        wait: std::time::Duration,
    ) -> Result<Store> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Store::open_existing(path.as_ref()) {
                Err(StoreError::AlreadyOpen { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// [`Store::open`] with explicit options.
    pub fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let path = path.as_ref();
        if !path.exists() {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| StoreError::Io {
                    path: path.to_owned(),
                    source,
                })?;
        }
        Store::open_file(path, options, false)
    }

    /// Opens the store at `path`, which must exist (a mistyped path creates nothing), and checks
    /// every page of it first, so that damage is reported once, here, before anything reads it.
    ///
    /// For a store small enough to read whole at every start (a device's). Errors as
    /// [`Store::open`], and [`StoreError::Missing`] if there is no file, [`StoreError::Damaged`]
    /// if a page does not match its checksum or the file is not a redb database.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        Store::open_file(path, StoreOptions::default(), true)
    }

    /// Opens an existing file; with `verify`, checks its integrity before the schema.
    fn open_file(path: &Path, options: StoreOptions, verify: bool) -> Result<Store> {
        let canonical = path.canonicalize().map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        claim_path(&canonical)?;
        // redb reports most damage as errors, but some (a page whose bytes were overwritten)
        // as a panic inside its b-tree code: both become `Damaged`, and nothing else is read.
        let opened = catch_quietly(|| {
            let mut db = Database::builder()
                .set_cache_size(options.cache_bytes)
                .create(&canonical)?;
            // `false`: redb found damage it could repair, possibly by going back to the commit
            // before the last one.
            let repaired = verify && !db.check_integrity()?;
            Ok((db, repaired))
        });
        let (db, repaired) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                release_path(&canonical);
                return Err(match e {
                    redb::DatabaseError::DatabaseAlreadyOpen => {
                        StoreError::AlreadyOpen { path: canonical }
                    }
                    redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => {
                        StoreError::Damaged {
                            path: canonical,
                            detail: why,
                        }
                    }
                    other if verify => StoreError::Damaged {
                        path: canonical,
                        detail: other.to_string(),
                    },
                    other => StoreError::Open(other),
                });
            }
            Err(panic) => {
                release_path(&canonical);
                return Err(StoreError::Damaged {
                    path: canonical,
                    detail: format!("its pages do not decode (redb: {})", panic_text(&*panic)),
                });
            }
        };
        // On error the Store's Drop releases the path.
        let mut store = Store::init(db, Some(canonical), options)?;
        store.repaired = repaired;
        Ok(store)
    }

    /// Whether [`Store::open_existing`] found damage that redb repaired: the store is
    /// consistent again, but its latest commits may have been rolled back.
    pub fn was_repaired(&self) -> bool {
        self.repaired
    }

    /// Opens a store on a custom redb storage backend (tests: in-memory images, failing disks).
    pub fn open_with_backend(backend: impl StorageBackend, options: StoreOptions) -> Result<Store> {
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create_with_backend(backend)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
                    path: PathBuf::from("<backend>"),
                },
                other => StoreError::Open(other),
            })?;
        Store::init(db, None, options)
    }

    fn init(db: Database, path: Option<PathBuf>, options: StoreOptions) -> Result<Store> {
        let store = Store {
            db,
            path,
            options,
            feed_seq: AtomicU64::new(0),
            repaired: false,
        };
        let seq = store.check_or_create_schema()?;
        store.feed_seq.store(seq, Ordering::SeqCst);
        Ok(store)
    }

    /// Checks the schema version, creating the tables of a fresh file; returns the feed seq.
    fn check_or_create_schema(&self) -> Result<u64> {
        let found = {
            let read = self.db.begin_read()?;
            let has_meta = read.list_tables()?.any(|t| t.name() == "meta");
            if has_meta {
                let meta = read.open_table(META)?;
                let version = meta.get(META_SCHEMA_VERSION)?;
                match version {
                    Some(v) => Some(schema::u32_from_meta(v.value(), META_SCHEMA_VERSION)?),
                    None => {
                        return Err(StoreError::NotAStore(
                            "meta table has no schema version".into(),
                        ));
                    }
                }
            } else {
                let mut names: Vec<String> =
                    read.list_tables()?.map(|t| t.name().to_owned()).collect();
                names.sort();
                if !names.is_empty() {
                    return Err(StoreError::NotAStore(format!(
                        "redb file with foreign tables {names:?}"
                    )));
                }
                None
            }
        };
        match found {
            Some(v) if v == SCHEMA_VERSION => self.read()?.feed_head(),
            Some(v) => migrate(v),
            None => {
                let mut tx = self.db.begin_write()?;
                tx.set_durability(Durability::Immediate)?;
                crate::write::create_tables(&tx)?;
                {
                    let mut meta = tx.open_table(META)?;
                    meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_le_bytes().as_slice())?;
                    meta.insert(META_FEED_SEQ, 0u64.to_le_bytes().as_slice())?;
                }
                tx.commit()?;
                Ok(0)
            }
        }
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// A consistent read-only snapshot of the store. Cheap; many can be live at once.
    pub fn read(&self) -> Result<ReadView> {
        Ok(ReadView::new(self.db.begin_read()?))
    }

    /// Runs `f` in one write transaction and commits it durably if `f` returns `Ok`.
    ///
    /// Everything `f` wrote is durable when this returns `Ok`, and nothing of it when this
    /// returns `Err` (from `f` or from the commit). Blocks while another write is running.
    pub fn write<R>(&self, f: impl FnOnce(&mut WriteBatch<'_>) -> Result<R>) -> Result<R> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        let (out, seq) = {
            let mut batch = WriteBatch::new(&tx, &self.options);
            let out = f(&mut batch)?;
            (out, batch.feed_seq_written())
        };
        tx.commit()?;
        if let Some(seq) = seq {
            // Writers commit one at a time but may publish out of order: keep the maximum.
            self.feed_seq.fetch_max(seq, Ordering::SeqCst);
        }
        Ok(out)
    }

    /// The committed feed head, as last written through this `Store`.
    pub(crate) fn cached_feed_seq(&self) -> u64 {
        self.feed_seq.load(Ordering::SeqCst)
    }

    /// Checks redb's integrity structures (slow: reads the whole file). `Ok(true)` if clean.
    pub fn check_integrity(&mut self) -> Result<bool> {
        self.db
            .check_integrity()
            .map_err(|e| StoreError::Db(e.into()))
    }
}

thread_local! {
    /// Set while this thread runs [`catch_quietly`]: its panics are caught and reported as
    /// errors, so the panic hook stays silent for them.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err` with its payload, without the panic hook printing it.
/// Panics on other threads are printed as before.
fn catch_quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    out
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "the database panicked while reading it".to_owned())
}

/// Brings a store of schema version `found` to [`SCHEMA_VERSION`]. There is no older released
/// schema yet, so every other version is refused with both numbers named.
fn migrate(found: u32) -> Result<u64> {
    Err(StoreError::SchemaVersion {
        found,
        supported: SCHEMA_VERSION,
    })
}
