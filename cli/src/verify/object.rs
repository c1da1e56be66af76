//! Reading and checking one object: header, metadata, index and trailer (default
//! mode), or every byte and page (`--full`).

#[allow(unused_imports)]
use super::*;

/// Reads and checks one object. `Ok(None)`: it disappeared since the listing.
/// `full`: `--full` mode, the temporary file to download it to and whether to keep its
/// page checksums.
pub(super) async fn inspect(
    store: &Store,
    file: RemoteFile,
    key: String,
    full: Option<(PathBuf, bool)>,
) -> Result<Option<(Entry, Vec<Problem>)>> {
    let mut problems = Vec::new();
    let meta = match retry(|| store.metadata(&key)).await {
        Ok(Some(m)) => m,
        Ok(None) | Err(StoreError::NotFound(_)) => return Ok(None),
        // The file backend keeps walvault's metadata in a sidecar JSON file: a damaged
        // sidecar is damage in the backup, not a failure to reach the store.
        Err(StoreError::Permanent(msg))
            if store.layout() == storage::Layout::File && msg.contains("metadata sidecar") =>
        {
            problems.push(problem(
                "bad_metadata",
                &key,
                msg,
                Some("a JSON object of metadata".into()),
                Some("unreadable".into()),
            ));
            match retry(|| store.head(&key)).await {
                Ok(Some(info)) => info
                    .last_modified_ms
                    .map(|ms| {
                        (
                            METADATA_TIMESTAMP.to_string(),
                            storage::format_timestamp_ms(ms),
                        )
                    })
                    .into_iter()
                    .collect(),
                Ok(None) | Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => {
                    return Err(anyhow!(e)).with_context(|| format!("reading {key}"));
                }
            }
        }
        Err(e) => return Err(anyhow!(e)).with_context(|| format!("reading the metadata of {key}")),
    };
    let meta: BTreeMap<String, String> = meta
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let recorded_sha = digest_meta(&meta, METADATA_SHA256, &key, &mut problems);
    let recorded_prev = digest_meta(&meta, METADATA_PREV_SHA256, &key, &mut problems);
    let mut entry = Entry {
        file,
        key,
        header: None,
        pages: None,
        recorded_sha,
        recorded_prev,
        actual_sha: None,
        bytes_decoded: 0,
        meta,
        page_sums: None,
    };
    let found = match full {
        Some((tmp, sums)) => read_full(store, &mut entry, &tmp, sums, &mut problems).await?,
        None => read_ends(store, &mut entry, &mut problems).await?,
    };
    if !found {
        return Ok(None);
    }
    let key = entry.key.as_str();
    let id = entry.file.id;
    if let Some(h) = entry.header {
        if h.min_txid != id.min_txid || h.max_txid != id.max_txid {
            problems.push(problem(
                "header_mismatch",
                key,
                "the header's TXID range is not the one in the object's name (objects swapped or replaced?)",
                Some(format!("{}-{}", hex(id.min_txid), hex(id.max_txid))),
                Some(format!("{}-{}", hex(h.min_txid), hex(h.max_txid))),
            ));
        }
        if let Some(ts) = entry.meta.get(METADATA_TIMESTAMP)
            && let Some(ms) = storage::parse_timestamp_ms(ts)
            && ms != h.timestamp_ms
        {
            problems.push(problem(
                "timestamp_mismatch",
                key,
                format!("the header time differs from the object's {METADATA_TIMESTAMP}"),
                Some(format_rfc3339_ms(ms)),
                Some(format_rfc3339_ms(h.timestamp_ms)),
            ));
        }
    }
    if id.level == SNAPSHOT_LEVEL && id.min_txid != 1 {
        problems.push(problem(
            "level_mismatch",
            key,
            "a level-9 (snapshot) file must start at TXID 1",
            Some(hex(1)),
            Some(hex(id.min_txid)),
        ));
    }
    if let (Some(recorded), Some(actual)) = (&entry.recorded_sha, &entry.actual_sha)
        && recorded != actual
    {
        problems.push(problem(
            "sha256_mismatch",
            key,
            format!("the object's SHA-256 is not the one recorded in {METADATA_SHA256}"),
            Some(recorded.clone()),
            Some(actual.clone()),
        ));
    }
    Ok(Some((entry, problems)))
}

/// A well-formed digest from the metadata, or a `bad_metadata` problem.
pub(super) fn digest_meta(
    meta: &BTreeMap<String, String>,
    name: &str,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let v = meta.get(name)?.trim().to_ascii_lowercase();
    if v.len() == 64 && v.bytes().all(|c| c.is_ascii_hexdigit()) {
        Some(v)
    } else {
        problems.push(problem(
            "bad_metadata",
            key,
            format!("metadata {name} is not a SHA-256 digest"),
            Some("64 hex digits".into()),
            Some(format!("'{v}'")),
        ));
        None
    }
}

/// Default mode: the header and the tail (index + trailer), without the page data.
/// `Ok(false)` when the object is gone.
pub(super) async fn read_ends(
    store: &Store,
    e: &mut Entry,
    problems: &mut Vec<Problem>,
) -> Result<bool> {
    let size = e.file.size;
    let key = e.key.clone();
    let get = |off: u64, len: u64| {
        let key = key.clone();
        async move {
            match retry(|| store.get_range(&key, off, len)).await {
                Ok(b) => Ok(Some(b)),
                Err(StoreError::NotFound(_)) => Ok(None),
                Err(err) => Err(anyhow!(err)).with_context(|| format!("reading {key}")),
            }
        }
    };
    let (head, mut tail, mut tail_off) = if size <= TAIL_READ {
        let Some(all) = get(0, size).await? else {
            return Ok(false);
        };
        (all.clone(), all, 0)
    } else {
        let Some(head) = get(0, HEADER_SIZE as u64).await? else {
            return Ok(false);
        };
        let Some(tail) = get(size - TAIL_READ, TAIL_READ).await? else {
            return Ok(false);
        };
        (head, tail, size - TAIL_READ)
    };
    // The object may have been rewritten since the listing: judge what was read.
    let size = if size <= TAIL_READ {
        tail.len() as u64
    } else {
        size
    };
    if head.len() < HEADER_SIZE {
        problems.push(problem(
            "invalid_header",
            &key,
            "the object is shorter than an LTX header (truncated?)",
            Some(format!("at least {HEADER_SIZE} bytes")),
            Some(format!("{} bytes", head.len())),
        ));
        return Ok(true);
    }
    let h = match Header::decode(&head) {
        Ok(h) => h,
        Err(err) => {
            problems.push(problem(
                "invalid_header",
                &key,
                format!("the LTX header does not decode: {err}"),
                Some("a valid LTX header".into()),
                Some(header_summary(&head)),
            ));
            return Ok(true);
        }
    };
    e.header = Some(h);
    loop {
        match check_tail(&h, size, tail_off, &tail) {
            Tail::Pages(pages) => {
                e.pages = Some(pages);
                break;
            }
            Tail::NeedFrom(off) => {
                let Some(more) = get(off, size - off).await? else {
                    return Ok(false);
                };
                if more.len() as u64 != size - off {
                    problems.push(problem(
                        "invalid_index",
                        &key,
                        "the object changed size while being read",
                        Some(format!("{size} bytes")),
                        Some(format!("{} bytes", off + more.len() as u64)),
                    ));
                    break;
                }
                tail = more;
                tail_off = off;
            }
            Tail::Bad(p) => {
                problems.push(p.into_problem(&key));
                break;
            }
        }
    }
    Ok(true)
}

/// The first fields of a header that failed to decode, for the report.
pub(super) fn header_summary(b: &[u8]) -> String {
    let be32 = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .unwrap_or(0)
    };
    let magic: String = b
        .iter()
        .take(4)
        .map(|&c| if c.is_ascii_graphic() { c as char } else { '?' })
        .collect();
    format!(
        "magic '{magic}', flags {:#x}, page size {}",
        be32(4),
        be32(8)
    )
}

pub(super) struct BadTail {
    pub(super) kind: &'static str,
    pub(super) detail: String,
    pub(super) expected: Option<String>,
    pub(super) actual: Option<String>,
}

impl BadTail {
    fn into_problem(self, key: &str) -> Problem {
        problem(self.kind, key, self.detail, self.expected, self.actual)
    }
}

pub(super) enum Tail {
    Pages(Vec<u32>),
    /// The index starts before the bytes read: read from this offset to the end.
    NeedFrom(u64),
    Bad(BadTail),
}

pub(super) fn bad(
    kind: &'static str,
    detail: impl Into<String>,
    expected: String,
    actual: String,
) -> Tail {
    Tail::Bad(BadTail {
        kind,
        detail: detail.into(),
        expected: Some(expected),
        actual: Some(actual),
    })
}

/// Checks the page index and the trailer of an object of `size` bytes, given its
/// last bytes (`tail`, starting at offset `tail_off`): the index must sit between the
/// page block's terminator and the trailer, describe pages laid end to end from the
/// header on, stay within `commit`, and (snapshots) list every page.
pub(super) fn check_tail(h: &Header, size: u64, tail_off: u64, tail: &[u8]) -> Tail {
    if size < MIN_LTX_SIZE {
        return bad(
            "invalid_index",
            "the object is too short to hold an LTX file (truncated?)",
            format!("at least {MIN_LTX_SIZE} bytes"),
            format!("{size} bytes"),
        );
    }
    let at = |off: u64, len: usize| -> Option<&[u8]> {
        let start = usize::try_from(off.checked_sub(tail_off)?).ok()?;
        tail.get(start..start + len)
    };
    let Some(trailer_bytes) = at(size - TRAILER_SIZE as u64, TRAILER_SIZE) else {
        return Tail::NeedFrom(size - TRAILER_SIZE as u64);
    };
    let trailer = Trailer::decode(trailer_bytes).unwrap_or(Trailer {
        post_apply_checksum: 0,
        file_checksum: 0,
    });
    if let Err(e) = trailer.validate(h) {
        return bad(
            "invalid_trailer",
            format!("{e} (truncated or damaged?)"),
            "a valid LTX trailer".into(),
            format!(
                "post-apply checksum {:#018x}, file checksum {:#018x}",
                trailer.post_apply_checksum, trailer.file_checksum
            ),
        );
    }
    let len_off = size - (TRAILER_SIZE + 8) as u64;
    let Some(len_bytes) = at(len_off, 8) else {
        return Tail::NeedFrom(len_off);
    };
    let index_len = u64::from_be_bytes(len_bytes.try_into().unwrap_or([0xff; 8]));
    let first_after_pages = (HEADER_SIZE + ltx::PAGE_HEADER_SIZE) as u64;
    let index_start = match len_off.checked_sub(index_len) {
        Some(s) if s >= first_after_pages && index_len > 0 => s,
        _ => {
            return bad(
                "invalid_index",
                "the page index does not fit the object (truncated or damaged?)",
                format!("an index length of 1..={}", len_off - first_after_pages),
                format!("{index_len} in a {size}-byte object"),
            );
        }
    };
    let terminator_off = index_start - ltx::PAGE_HEADER_SIZE as u64;
    let Some(term) = at(terminator_off, ltx::PAGE_HEADER_SIZE) else {
        return Tail::NeedFrom(terminator_off);
    };
    if term.iter().any(|&b| b != 0) {
        return bad(
            "invalid_index",
            "no page-block terminator before the index (truncated or damaged?)",
            "6 zero bytes".into(),
            format!("{term:02x?} at offset {terminator_off}"),
        );
    }
    let index = at(index_start, (index_len + 8) as usize).unwrap_or(&[]);
    let mut pages = Vec::new();
    let mut next_off = HEADER_SIZE as u64;
    let lock = h.lock_pgno();
    let parsed = ltx::index::parse_index(index, |i, e| {
        if e.offset != next_off || e.size < ltx::PAGE_HEADER_SIZE as u64 {
            return Err(LtxError::IndexMismatch(format!(
                "entry {i} (page {}) at offset {} size {}, expected at offset {next_off}",
                e.pgno, e.offset, e.size
            )));
        }
        if e.pgno > h.commit || e.pgno == lock {
            return Err(LtxError::IndexMismatch(format!(
                "entry {i}: page {} is above the commit size {} or the lock page",
                e.pgno, h.commit
            )));
        }
        next_off += e.size;
        pages.push(e.pgno);
        Ok(())
    });
    match parsed {
        Ok(used) if used as u64 == index_len + 8 => {}
        Ok(used) => {
            return bad(
                "invalid_index",
                "the page index length is wrong",
                format!("{} bytes", index_len + 8),
                format!("{used} bytes"),
            );
        }
        Err(e) => {
            return bad(
                "invalid_index",
                format!("the page index is damaged: {e}"),
                "a consistent page index".into(),
                format!("{index_len}-byte index in a {size}-byte object"),
            );
        }
    }
    if next_off != terminator_off {
        return bad(
            "invalid_index",
            "the pages the index lists do not end at the page-block terminator",
            format!("pages ending at offset {terminator_off}"),
            format!("pages ending at offset {next_off}"),
        );
    }
    if h.min_txid == 1 {
        let want = if h.commit >= lock {
            h.commit - 1
        } else {
            h.commit
        };
        if pages.len() as u64 != u64::from(want) {
            return bad(
                "incomplete_snapshot",
                "a snapshot must hold every page of the database",
                format!("{want} pages"),
                format!("{} pages", pages.len()),
            );
        }
    }
    Tail::Pages(pages)
}

/// `--full`: downloads the object into `tmp`, hashes and decodes all of it (keeping
/// each page's checksum with `sums`). `Ok(false)` when the object is gone.
pub(super) async fn read_full(
    store: &Store,
    e: &mut Entry,
    tmp: &Path,
    sums: bool,
    problems: &mut Vec<Problem>,
) -> Result<bool> {
    match retry(|| store.get_to_file(&e.key, tmp)).await {
        Ok(_) => {}
        Err(StoreError::NotFound(_)) => return Ok(false),
        Err(err) => return Err(anyhow!(err)).with_context(|| format!("downloading {}", e.key)),
    }
    let path = tmp.to_path_buf();
    let decoded = tokio::task::spawn_blocking(move || {
        let r = decode_file(&path, sums);
        let _ = fs::remove_file(&path);
        r
    })
    .await
    .context("decoding worker failed")?
    .with_context(|| format!("reading the downloaded copy of {}", e.key))?;
    e.actual_sha = Some(decoded.sha256);
    e.bytes_decoded = decoded.bytes;
    match decoded.header {
        Ok(h) => e.header = Some(h),
        Err(err) => {
            problems.push(problem(
                "invalid_header",
                &e.key,
                format!("the LTX header does not decode: {err}"),
                Some("a valid LTX header".into()),
                Some(header_summary(&decoded.head)),
            ));
            return Ok(true);
        }
    }
    match decoded.body {
        Ok(pages) => {
            e.pages = Some(pages);
            e.page_sums = decoded.page_sums;
        }
        Err(err) => {
            let (expected, actual) = match &err {
                LtxError::ChecksumMismatch { expected, actual } => (
                    Some(format!("file checksum {expected:#018x}")),
                    Some(format!("{actual:#018x}")),
                ),
                _ => (None, Some(err.to_string())),
            };
            problems.push(problem(
                "corrupt_data",
                &e.key,
                format!("decoding every page failed: {err}"),
                expected,
                actual,
            ));
        }
    }
    Ok(true)
}

pub(super) struct Decoded {
    pub(super) head: Vec<u8>,
    pub(super) header: Result<Header, LtxError>,
    pub(super) body: Result<Vec<u32>, LtxError>,
    pub(super) sha256: String,
    pub(super) bytes: u64,
    /// (page number, page checksum) of every page, when asked for.
    pub(super) page_sums: Option<Vec<(u32, u64)>>,
}

/// Reads `path` once: SHA-256 of every byte, header, every page, index and trailer;
/// with `sums`, each page's checksum.
pub(super) fn decode_file(path: &Path, sums: bool) -> io::Result<Decoded> {
    let mut head = Vec::with_capacity(HEADER_SIZE);
    File::open(path)?
        .take(HEADER_SIZE as u64)
        .read_to_end(&mut head)?;
    let mut r = HashingReader::new(BufReader::with_capacity(256 * 1024, File::open(path)?));
    let mut header = Err(LtxError::Truncated("header"));
    let mut page_sums = sums.then(Vec::new);
    let body = match Decoder::new(&mut r) {
        Err(e) => Err(e),
        Ok(mut dec) => {
            header = Ok(*dec.header());
            let mut buf = vec![0u8; dec.header().page_size as usize];
            let mut result = Ok(());
            loop {
                match dec.next_page(&mut buf) {
                    Ok(Some(pgno)) => {
                        if let Some(s) = page_sums.as_mut() {
                            s.push((pgno, ltx::page_checksum(pgno, &buf)));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            result.and_then(|()| {
                let pages: Vec<u32> = dec.pages_seen().iter().map(|e| e.pgno).collect();
                dec.finish().map(|_| pages)
            })
        }
    };
    // Whatever the decoder left unread still counts for the digest.
    let (sha256, bytes) = r.finish()?;
    Ok(Decoded {
        head,
        header,
        body,
        sha256,
        bytes,
        page_sums,
    })
}

/// A private directory for `--full` downloads, removed on drop.
pub(super) struct Scratch {
    pub(super) dir: PathBuf,
}

impl Scratch {
    pub(super) fn new() -> Result<Scratch> {
        let base = std::env::temp_dir();
        for n in 0..100u32 {
            let dir = base.join(format!("walvault-verify-{}-{n}", std::process::id()));
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(Scratch { dir }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("creating a scratch directory in {}", base.display())
                    });
                }
            }
        }
        bail!("cannot create a scratch directory in {}", base.display())
    }

    pub(super) fn path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{i}.ltx"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
