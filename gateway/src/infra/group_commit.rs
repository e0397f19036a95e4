//! Group commit for a fjall database that several threads write: one fsync makes durable every
//! batch committed before it, and it runs without holding fjall's journal lock.
//!
//! fjall's `Database::persist(SyncAll)` holds the journal's lock through the fsync, so every
//! commit of another thread waits for the fsync in flight: the notification ledger's writers
//! (which commit under their own lock and sync after releasing it) spent more than half of the
//! time they held their lock waiting on fjall's, with a core idle.
//!
//! fjall writes its journal as `N.jnl` files in the database's directory, `N` counting up, and
//! fsyncs a journal before it starts the next one (`journal::writer::Writer::rotate`): bytes
//! not yet durable can only be in the newest journal. So a sync hands the journal's buffered
//! bytes to the OS under fjall's lock (`PersistMode::Buffer`, no waiting on the disk), then
//! fsyncs the newest journal through a handle of its own, while commits go on.

use fjall::{Database, OwnedWriteBatch, PersistMode};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub struct GroupCommit {
    db: Database,
    dir: PathBuf,
    /// Batches committed, and how many of them are known durable.
    committed: AtomicU64,
    synced: AtomicU64,
    /// The newest journal seen and a handle on it; held through a sync, so syncs go one at a
    /// time and a caller that waited for one finds its batch covered.
    newest: Mutex<Option<(u64, File)>>,
}

impl GroupCommit {
    /// For `db`, opened from directory `dir`.
    pub fn new(db: Database, dir: &Path) -> Self {
        Self {
            db,
            dir: dir.to_path_buf(),
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            newest: Mutex::new(None),
        }
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// A batch that [`GroupCommit::commit`] applies to the journal's buffers.
    pub fn batch(&self) -> OwnedWriteBatch {
        self.db.batch().durability(Some(PersistMode::Buffer))
    }

    /// Commits `batch` (from [`GroupCommit::batch`]); [`GroupCommit::sync`] makes it durable.
    pub fn commit(&self, batch: OwnedWriteBatch) -> fjall::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        super::fjall::commit(batch)?;
        self.committed.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Makes every batch committed before this call durable: at once if an fsync since has
    /// covered it, else with one fsync for it and every other batch committed by then.
    /// A failure stops the process (see [`super::fatal`]): the next fsync of the same file could
    /// succeed with the data gone.
    pub fn sync(&self) -> io::Result<()> {
        self.sync_once()
            .inspect_err(|e| super::fatal::raise(format!("an fsync failed: {e}")))
    }

    fn sync_once(&self) -> io::Result<()> {
        let mine = self.committed.load(Ordering::Acquire);
        if self.synced.load(Ordering::Acquire) >= mine {
            return Ok(());
        }
        let mut newest = self.newest.lock().expect("journal sync lock");
        if self.synced.load(Ordering::Acquire) >= mine {
            return Ok(());
        }
        let target = self.committed.load(Ordering::Acquire);
        self.db
            .persist(PersistMode::Buffer)
            .map_err(io::Error::other)?;
        let known = match &*newest {
            Some((id, _)) => *id,
            None => self.newest_on_disk()?,
        };
        // A journal started since the last look: the older ones were fsynced when it started.
        let mut id = known;
        while self.journal(id + 1).try_exists()? {
            id += 1;
        }
        let file = match newest.take() {
            Some((seen, file)) if seen == id => file,
            _ => File::open(self.journal(id))?,
        };
        let synced = file.sync_all();
        *newest = Some((id, file));
        synced?;
        self.synced.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    fn journal(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.jnl"))
    }

    fn newest_on_disk(&self) -> io::Result<u64> {
        let mut newest = None;
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_suffix(".jnl")?.parse().ok());
            newest = newest.max(id);
        }
        newest.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no journal in {}", self.dir.display()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::fjall::open_database;
    use fjall::KeyspaceCreateOptions;

    #[test]
    fn syncs_the_newest_journal_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(dir.path()).unwrap();
        let space = db.keyspace("s", KeyspaceCreateOptions::default).unwrap();
        let group = GroupCommit::new(db.clone(), dir.path());
        let newest = || group.newest.lock().unwrap().as_ref().unwrap().0;
        let write = |key: &str| {
            let mut batch = group.batch();
            batch.insert(&space, key, "1");
            group.commit(batch).unwrap();
            group.sync().unwrap();
        };
        write("a");
        assert_eq!(newest(), 0);
        // fjall starts a new journal at a flush once the journal passes 64 MB (of random
        // bytes: the journal compresses its values).
        let mut value = vec![0u8; 1 << 20];
        for i in 0..65u32 {
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut value);
            space.insert(i.to_be_bytes(), &value).unwrap();
        }
        space.rotate_memtable().unwrap();
        let started = std::time::Instant::now();
        while !dir.path().join("1.jnl").exists() {
            assert!(started.elapsed().as_secs() < 30, "no new journal");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        write("b");
        assert_eq!(newest(), 1, "the journal started since the last sync");
    }

    #[test]
    fn a_directory_without_a_journal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let space = db.keyspace("s", KeyspaceCreateOptions::default).unwrap();
        let group = GroupCommit::new(db.clone(), dir.path());
        let mut batch = group.batch();
        batch.insert(&space, "a", "1");
        group.commit(batch).unwrap();
        assert_eq!(group.sync().unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
