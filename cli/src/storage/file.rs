//! `file://` backend: objects are plain files under a root directory, laid out
//! exactly like the keys (`root/ltx/0/….ltx`), as Litestream's file replica does.
//!
//! Durability: a put writes `<dir>/.tmp-<random>`, fsyncs it, publishes it under
//! the final name (hard link when `if_none_match`, so "exists" is decided
//! atomically by the kernel; `rename` otherwise) and fsyncs the directory. New
//! parent directories are created one by one and their parents fsynced. Readers
//! therefore never observe a partial object, and [`super::Store::list`] skips the
//! temp files. Deletes are not fsynced (a resurrected file after a crash is
//! harmless for immutable, re-deletable objects).
//!
//! Metadata: [`METADATA_TIMESTAMP`] is stored as the file's mtime (Litestream's file
//! backend reads mtime as the LTX timestamp). Any other metadata (walvault's integrity
//! data) goes into a sidecar JSON file under `<root>/.walvault-meta/<key>.json`, outside
//! every path Litestream reads. It is published (temp file, fsync, rename) *before* the
//! object, so a crash between the two never leaves a visible object without its
//! digests; a conditional put whose object already exists returns before touching the
//! existing sidecar. `metadata()` merges both.
//!
//! All blocking file-system work runs on `tokio::task::spawn_blocking`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    Downloaded, METADATA_TIMESTAMP, ObjectInfo, PutBody, StoreError, TEMP_PREFIX,
    format_timestamp_ms, parse_timestamp_ms, validate_key, validate_prefix,
};

/// Directory (under the root) holding the metadata sidecars; never listed as objects.
const META_DIR: &str = ".walvault-meta";

/// A store rooted at an absolute directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(root: PathBuf) -> FileStore {
        FileStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Transient(format!("file-store worker failed: {e}")))?
    }

    pub async fn check(&self) -> Result<(), StoreError> {
        let root = self.root.clone();
        Self::blocking(move || {
            if root.exists() && !root.is_dir() {
                return Err(StoreError::Permanent(format!(
                    "replica path '{}' exists but is not a directory: point the URL at a directory",
                    root.display()
                )));
            }
            create_dirs_synced(&root).map_err(|e| {
                io_err(
                    e,
                    &format!("cannot create replica directory '{}'", root.display()),
                )
            })?;
            let (probe, _) = create_temp(&root).map_err(|e| {
                io_err(
                    e,
                    &format!("replica directory '{}' is not writable", root.display()),
                )
            })?;
            let _ = fs::remove_file(probe);
            Ok(())
        })
        .await
    }

    pub async fn put(
        &self,
        key: &str,
        body: PutBody<'_>,
        metadata: &[(&str, String)],
        if_none_match: bool,
    ) -> Result<(), StoreError> {
        let dest = self.path_of(key)?;
        let mtime = match metadata.iter().find(|(k, _)| *k == METADATA_TIMESTAMP) {
            None => None,
            Some((_, v)) => Some(parse_timestamp_ms(v).ok_or_else(|| {
                StoreError::Permanent(format!(
                    "invalid {METADATA_TIMESTAMP} metadata '{v}' for '{key}': expected RFC 3339, e.g. 2024-01-02T03:04:05.678Z"
                ))
            })?),
        };
        let source = match body {
            PutBody::Bytes(b) => Source::Bytes(b.to_vec()),
            PutBody::File(p) => Source::File(p.to_path_buf()),
        };
        let extra: BTreeMap<String, String> = metadata
            .iter()
            .filter(|(k, _)| *k != METADATA_TIMESTAMP)
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let sidecar = (!extra.is_empty()).then(|| (self.sidecar_of(key), extra));
        let key = key.to_string();
        Self::blocking(move || {
            // The sidecar goes first: once the object is visible its integrity data is
            // already durable, so a crash (SIGKILL) between the two steps can leave an
            // orphan sidecar for a key that does not exist (overwritten by the retry,
            // never listed), but never a published object without its digests.
            if let Some((path, extra)) = &sidecar {
                if if_none_match && dest.exists() {
                    // The retry of a put that did land: leave the stored pair alone.
                    return Err(StoreError::AlreadyExists(key));
                }
                let staged = stage_sidecar(path, extra)?;
                publish_sidecar(&staged, path)?;
            }
            put_blocking(&key, &dest, source, mtime, if_none_match)
        })
        .await
    }

    fn sidecar_of(&self, key: &str) -> PathBuf {
        self.root.join(META_DIR).join(format!("{key}.json"))
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        Self::blocking(move || fs::read(&path).map_err(|e| read_err(e, &key, &path))).await
    }

    pub async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        Self::blocking(move || {
            let mut f = File::open(&path).map_err(|e| read_err(e, &key, &path))?;
            let size = f.metadata().map_err(|e| read_err(e, &key, &path))?.len();
            if offset >= size || len == 0 {
                return Ok(Vec::new());
            }
            let n = len.min(size - offset);
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| read_err(e, &key, &path))?;
            let mut buf = Vec::with_capacity(n as usize);
            f.take(n)
                .read_to_end(&mut buf)
                .map_err(|e| read_err(e, &key, &path))?;
            Ok(buf)
        })
        .await
    }

    pub async fn get_to_file(&self, key: &str, dest: &Path) -> Result<Downloaded, StoreError> {
        let path = self.path_of(key)?;
        let owned_key = key.to_string();
        let owned_dest = dest.to_path_buf();
        let len = Self::blocking(move || {
            let (key, dest) = (owned_key, owned_dest);
            let mut src = File::open(&path).map_err(|e| read_err(e, &key, &path))?;
            let result = (|| {
                let mut out = File::create(&dest)?;
                let n = io::copy(&mut src, &mut out)?;
                Ok::<u64, io::Error>(n)
            })();
            result.map_err(|e| {
                let _ = fs::remove_file(&dest);
                io_err(e, &format!("cannot copy '{key}' to '{}'", dest.display()))
            })
        })
        .await?;
        match self.metadata(key).await {
            Ok(Some(metadata)) => Ok(Downloaded { len, metadata }),
            // Removed between the copy and the stat: report it as the GET would have.
            Ok(None) => {
                let _ = fs::remove_file(dest);
                Err(StoreError::NotFound(key.to_string()))
            }
            Err(e) => {
                let _ = fs::remove_file(dest);
                Err(e)
            }
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        Self::blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key,
                size: m.len(),
                last_modified_ms: mtime_ms(&m),
            })),
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(io_err(e, &format!("cannot stat '{}'", path.display()))),
        })
        .await
    }

    pub async fn metadata(
        &self,
        key: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let Some(info) = self.head(key).await? else {
            return Ok(None);
        };
        let sidecar = self.sidecar_of(key);
        let mut meta: BTreeMap<String, String> = Self::blocking(move || match fs::read(&sidecar) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::Permanent(format!(
                    "metadata sidecar '{}' is damaged: {e}",
                    sidecar.display()
                ))
            }),
            Err(e) if is_not_found(&e) => Ok(BTreeMap::new()),
            Err(e) => Err(io_err(e, &format!("cannot read '{}'", sidecar.display()))),
        })
        .await?;
        if let Some(ms) = info.last_modified_ms {
            meta.insert(METADATA_TIMESTAMP.to_string(), format_timestamp_ms(ms));
        }
        Ok(Some(meta))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        validate_prefix(prefix)?;
        let root = self.root.clone();
        let prefix = prefix.to_string();
        Self::blocking(move || {
            // Walk only the deepest directory the prefix pins down.
            let dir_part = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let mut out = Vec::new();
            walk(&root, dir_part, &mut |key, meta| {
                if key.starts_with(prefix.as_str()) {
                    out.push(ObjectInfo {
                        key: key.to_string(),
                        size: meta.len(),
                        last_modified_ms: mtime_ms(meta),
                    });
                }
                true
            })?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        let root = self.root.clone();
        let dir = prefix.trim_end_matches('/').to_string();
        Self::blocking(move || {
            let base = if dir.is_empty() {
                root.clone()
            } else {
                root.join(&dir)
            };
            let entries = match fs::read_dir(&base) {
                Ok(e) => e,
                Err(e) if is_not_found(&e) || e.kind() == io::ErrorKind::NotADirectory => {
                    return Ok(Vec::new());
                }
                Err(e) => return Err(io_err(e, &format!("cannot list '{}'", base.display()))),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry =
                    entry.map_err(|e| io_err(e, &format!("cannot list '{}'", base.display())))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with(TEMP_PREFIX) || name == META_DIR || !entry.path().is_dir() {
                    continue;
                }
                let sub = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                // S3 has no empty directories: report only those holding an object.
                let mut found = false;
                walk(&root, &sub, &mut |_, _| {
                    found = true;
                    false
                })?;
                if found {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    pub async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let mut paths = keys
            .iter()
            .map(|k| self.path_of(k))
            .collect::<Result<Vec<_>, _>>()?;
        paths.extend(keys.iter().map(|k| self.sidecar_of(k)));
        Self::blocking(move || {
            for p in paths {
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(io_err(e, &format!("cannot delete '{}'", p.display()))),
                }
            }
            Ok(())
        })
        .await
    }
}

enum Source {
    Bytes(Vec<u8>),
    File(PathBuf),
}

fn put_blocking(
    key: &str,
    dest: &Path,
    source: Source,
    mtime_ms: Option<i64>,
    if_none_match: bool,
) -> Result<(), StoreError> {
    let dir = dest
        .parent()
        .expect("validated key has a parent under root");
    create_dirs_synced(dir)
        .map_err(|e| io_err(e, &format!("cannot create directory '{}'", dir.display())))?;
    let (tmp, mut file) = create_temp(dir)
        .map_err(|e| io_err(e, &format!("cannot create a file in '{}'", dir.display())))?;
    // Until the object is published, any failure leaves no trace but the temp file,
    // which we remove: nothing ambiguous can happen before that point.
    let written = (|| -> Result<(), StoreError> {
        match &source {
            Source::Bytes(b) => file
                .write_all(b)
                .map_err(|e| io_err(e, &format!("cannot write '{}'", tmp.display())))?,
            Source::File(src) => {
                let mut input = File::open(src).map_err(|e| {
                    StoreError::Permanent(format!(
                        "cannot read upload source '{}': {e}",
                        src.display()
                    ))
                })?;
                io::copy(&mut input, &mut file).map_err(|e| {
                    io_err(
                        e,
                        &format!("cannot copy '{}' into the replica", src.display()),
                    )
                })?;
            }
        }
        if let Some(ms) = mtime_ms {
            file.set_modified(system_time(ms))
                .map_err(|e| io_err(e, &format!("cannot set mtime of '{}'", tmp.display())))?;
        }
        file.sync_all()
            .map_err(|e| io_err(e, &format!("cannot fsync '{}'", tmp.display())))
    })();
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }

    let published = if if_none_match {
        match fs::hard_link(&tmp, dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&tmp);
                return Err(StoreError::AlreadyExists(key.to_string()));
            }
            // File systems without hard links (some FUSE/SMB mounts): fall back to a
            // check-then-rename, which is only atomic against other walvault
            // processes if a single writer holds the replica (the normal case).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
                ) =>
            {
                if dest.exists() {
                    let _ = fs::remove_file(&tmp);
                    return Err(StoreError::AlreadyExists(key.to_string()));
                }
                fs::rename(&tmp, dest)
            }
            Err(e) => Err(e),
        }
    } else {
        fs::rename(&tmp, dest)
    };
    if let Err(e) = published {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(e, &format!("cannot publish '{}'", dest.display())));
    }
    let _ = fs::remove_file(&tmp); // hard-link path: drop the temp name (no-op after rename)
    // The object is visible now; if the directory fsync fails it may not survive a
    // crash, so the outcome is genuinely ambiguous.
    sync_dir(dir).map_err(|e| {
        StoreError::Ambiguous(format!(
            "wrote '{}' but could not fsync its directory: {e}",
            dest.display()
        ))
    })
}

/// Writes the sidecar JSON to a temp file beside its final place (fsynced).
fn stage_sidecar(path: &Path, meta: &BTreeMap<String, String>) -> Result<PathBuf, StoreError> {
    let dir = path.parent().expect("sidecar path has a parent");
    create_dirs_synced(dir)
        .map_err(|e| io_err(e, &format!("cannot create directory '{}'", dir.display())))?;
    let (tmp, mut file) = create_temp(dir)
        .map_err(|e| io_err(e, &format!("cannot create a file in '{}'", dir.display())))?;
    let json = serde_json::to_vec(meta)
        .map_err(|e| StoreError::Permanent(format!("encoding metadata: {e}")))?;
    let written = file.write_all(&json).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(e, &format!("cannot write '{}'", tmp.display())));
    }
    Ok(tmp)
}

/// Moves a staged sidecar into place, before its object is published: a failure
/// here leaves nothing visible, so it is an ordinary (retryable) error.
fn publish_sidecar(tmp: &Path, path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().expect("sidecar path has a parent");
    fs::rename(tmp, path)
        .and_then(|()| sync_dir(dir))
        .map_err(|e| {
            let _ = fs::remove_file(tmp);
            io_err(
                e,
                &format!("cannot store the metadata sidecar '{}'", path.display()),
            )
        })
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Create `dir/.tmp-<unique>` exclusively.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, File)> {
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{TEMP_PREFIX}{:x}-{n:x}-{nanos:08x}", std::process::id());
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `create_dir_all`, fsyncing the parent of every directory it creates.
fn create_dirs_synced(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_synced(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Depth-first walk of `root/rel` calling `f(key, meta)` for every regular,
/// non-temp file; `f` returns `false` to stop. Missing directories are empty.
fn walk(
    root: &Path,
    rel: &str,
    f: &mut dyn FnMut(&str, &fs::Metadata) -> bool,
) -> Result<bool, StoreError> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if is_not_found(&e) || e.kind() == io::ErrorKind::NotADirectory => return Ok(true),
        Err(e) => return Err(io_err(e, &format!("cannot list '{}'", dir.display()))),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err(e, &format!("cannot list '{}'", dir.display())))?;
        let Ok(name) = entry.file_name().into_string() else {
            tracing::warn!(path = %entry.path().display(), "skipping non-UTF-8 file name in replica");
            continue;
        };
        if name.starts_with(TEMP_PREFIX) || (rel.is_empty() && name == META_DIR) {
            continue;
        }
        let key = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = match fs::metadata(entry.path()) {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => continue, // deleted while listing
            Err(e) => {
                return Err(io_err(
                    e,
                    &format!("cannot stat '{}'", entry.path().display()),
                ));
            }
        };
        if meta.is_dir() {
            if !walk(root, &key, f)? {
                return Ok(false);
            }
        } else if meta.is_file() && !f(&key, &meta) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

fn mtime_ms(m: &fs::Metadata) -> Option<i64> {
    let t = m.modified().ok()?;
    Some(match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).ok()?,
        Err(e) => -i64::try_from(e.duration().as_millis()).ok()?,
    })
}

fn system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

fn read_err(e: io::Error, key: &str, path: &Path) -> StoreError {
    if is_not_found(&e) {
        StoreError::NotFound(key.to_string())
    } else {
        io_err(e, &format!("cannot read '{}'", path.display()))
    }
}

/// Classify a local I/O error: configuration problems are permanent, the rest
/// (disk full, EIO, …) may clear up.
fn io_err(e: io::Error, what: &str) -> StoreError {
    use io::ErrorKind as K;
    match e.kind() {
        K::PermissionDenied => StoreError::Permanent(format!(
            "{what}: permission denied: check the directory's owner and permissions"
        )),
        K::ReadOnlyFilesystem => StoreError::Permanent(format!(
            "{what}: read-only file system: use a writable directory"
        )),
        K::NotADirectory
        | K::IsADirectory
        | K::AlreadyExists
        | K::InvalidFilename
        | K::InvalidInput => StoreError::Permanent(format!(
            "{what}: {e}: a file and a directory collide in the replica path"
        )),
        _ => StoreError::Transient(format!("{what}: {e}")),
    }
}
