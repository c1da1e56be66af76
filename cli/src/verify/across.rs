//! Checks across objects: one page size, a snapshot and TXID continuity, the restore
//! plan to the newest TXID, and walvault's hash chain.

#[allow(unused_imports)]
use super::*;

/// Files whose page size differs from the one most files have.
pub(super) fn page_size_problems(entries: &[Entry]) -> Vec<Problem> {
    let mut counts: BTreeMap<u32, (usize, u64)> = BTreeMap::new();
    for e in entries {
        if let Some(h) = e.header {
            let c = counts.entry(h.page_size).or_insert((0, 0));
            c.0 += 1;
            c.1 = c.1.max(e.file.id.max_txid);
        }
    }
    let Some((&expected, _)) = counts.iter().max_by_key(|(_, c)| **c) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            let h = e.header?;
            (h.page_size != expected).then(|| {
                problem(
                    "page_size_mismatch",
                    &e.key,
                    "the page size differs from the rest of the backup",
                    Some(expected.to_string()),
                    Some(h.page_size.to_string()),
                )
            })
        })
        .collect()
}

/// A snapshot exists, and every TXID up to the newest is in some file.
pub(super) fn continuity_problems(store: &Store, name: &str, entries: &[Entry]) -> Vec<Problem> {
    let mut ids: Vec<FileId> = entries.iter().map(|e| e.file.id).collect();
    ids.sort_by_key(|id| (id.min_txid, id.max_txid));
    let mut problems = Vec::new();
    let mut covered = 0u64;
    for id in &ids {
        if id.min_txid > covered + 1 {
            let (s, e) = (covered + 1, id.min_txid - 1);
            if s == 1 {
                let key = remote::key(store, name, snapshot_id(e));
                problems.push(problem(
                    "no_snapshot",
                    &key,
                    format!(
                        "no file starts at TXID 1, so nothing can be restored: the oldest file starts at {} (a snapshot {key} is missing?)",
                        hex(id.min_txid)
                    ),
                    Some(format!("a file starting at {}", hex(1))),
                    Some(format!("the first file starts at {}", hex(id.min_txid))),
                ));
            } else {
                let level = guess_level(&ids, s, e);
                let key = remote::key(
                    store,
                    name,
                    FileId {
                        level,
                        min_txid: s,
                        max_txid: e,
                    },
                );
                let snap = remote::key(store, name, snapshot_id(e));
                problems.push(problem(
                    "gap",
                    &key,
                    format!(
                        "no file holds TXIDs {}..{}: no state from {} on can be restored; missing object: {key} (or a snapshot {snap})",
                        hex(s),
                        hex(e),
                        hex(s)
                    ),
                    Some(format!("a file covering {}-{}", hex(s), hex(e))),
                    Some("none".into()),
                ));
            }
        }
        covered = covered.max(id.max_txid);
    }
    problems
}

pub(super) fn snapshot_id(max_txid: u64) -> FileId {
    FileId {
        level: SNAPSHOT_LEVEL,
        min_txid: 1,
        max_txid,
    }
}

/// The level a missing file `s..=e` most likely had: one with neighbours on both
/// sides, else the level of the file that follows the gap, else of the one before it.
pub(super) fn guess_level(ids: &[FileId], s: u64, e: u64) -> u8 {
    let before: BTreeSet<u8> = ids
        .iter()
        .filter(|id| id.max_txid + 1 == s)
        .map(|id| id.level)
        .collect();
    let after: BTreeSet<u8> = ids
        .iter()
        .filter(|id| id.min_txid == e + 1)
        .map(|id| id.level)
        .collect();
    before
        .intersection(&after)
        .next()
        .or_else(|| after.iter().next())
        .or_else(|| before.iter().next())
        .copied()
        .unwrap_or(0)
}

/// `walvault-prev-sha256` of every walvault file against the file it extends.
///
/// The file a link points to ended at `min_txid - 1` and was the lowest-level one
/// there when the link was written (walvault's own previous level-0 file, or the file
/// it resumed from). A link is verified when any file ending there has that digest
/// (recorded digest by default, computed digest with `--full`). Otherwise, if a
/// level-0 file ends there it must be the one: a different digest breaks the chain,
/// and no digest at all means it was replaced by a writer that records none. When only
/// compactions or snapshots end there, the level-0 file was retired (Litestream's
/// retention) and the link cannot be checked.
pub(super) fn hash_chain_problems(
    entries: &[Entry],
    full: bool,
    links: &mut Links,
) -> Vec<Problem> {
    let mut by_end: BTreeMap<u64, Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        by_end.entry(e.file.id.max_txid).or_default().push(e);
    }
    let digest = |e: &Entry| -> Option<String> {
        if full {
            e.actual_sha.clone()
        } else {
            e.recorded_sha.clone()
        }
    };
    let mut problems = Vec::new();
    for e in entries {
        let Some(prev) = &e.recorded_prev else {
            continue;
        };
        if e.file.id.min_txid <= 1 {
            continue;
        }
        let cands = by_end
            .get(&(e.file.id.min_txid - 1))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if cands.iter().any(|c| digest(c).as_ref() == Some(prev)) {
            links.verified += 1;
            continue;
        }
        let Some(pred) = cands
            .iter()
            .filter(|c| c.file.id.level == 0)
            .min_by_key(|c| c.file.id)
        else {
            links.unverifiable += 1;
            continue;
        };
        if full && pred.recorded_sha.as_ref() == Some(prev) {
            // The link agrees with the metadata; the content changed since, which is
            // reported as `sha256_mismatch` on the object itself.
            continue;
        }
        match digest(pred) {
            Some(d) => problems.push(problem(
                "hash_chain_broken",
                &pred.key,
                format!(
                    "its SHA-256 is not the one {} records as its predecessor ({METADATA_PREV_SHA256})",
                    e.key
                ),
                Some(prev.clone()),
                Some(d),
            )),
            None => problems.push(problem(
                "missing_metadata",
                &pred.key,
                format!(
                    "{} extends it in walvault's hash chain, but it has no {METADATA_SHA256} (replaced by another writer?)",
                    e.key
                ),
                Some(format!("{METADATA_SHA256} {prev}")),
                Some("no walvault metadata".into()),
            )),
        }
    }
    problems
}

/// Along the restore plan: each file that grows the database holds every new page
/// (Litestream's restore refuses a file without them).
pub(super) fn growth_problems(entries: &[Entry], plan: &restore_plan::Plan) -> Vec<Problem> {
    let by_id: BTreeMap<FileId, &Entry> = entries.iter().map(|e| (e.file.id, e)).collect();
    let mut problems = Vec::new();
    let mut prev_commit: Option<u32> = None;
    for f in &plan.files {
        let Some(e) = by_id.get(&f.id) else {
            prev_commit = None;
            continue;
        };
        let (Some(h), Some(pages)) = (e.header, e.pages.as_ref()) else {
            prev_commit = None;
            continue;
        };
        if let Some(pc) = prev_commit
            && h.commit > pc
        {
            let lock = h.lock_pgno();
            let missing: Vec<u32> = (pc + 1..=h.commit)
                .filter(|&p| p != lock && pages.binary_search(&p).is_err())
                .collect();
            if let Some(first) = missing.first() {
                problems.push(problem(
                    "missing_growth_pages",
                    &e.key,
                    format!(
                        "the database grows from {pc} to {} pages here, but {} of the new pages are not in the file (first: page {first})",
                        h.commit,
                        missing.len()
                    ),
                    Some(format!("pages {}..={}", pc + 1, h.commit)),
                    Some(format!("{} missing", missing.len())),
                ));
            }
        }
        prev_commit = Some(h.commit);
    }
    problems
}

/// `--full`: the state the restore plan builds must have the database checksum
/// walvault recorded for the plan's newest file, as restore checks it (shared code:
/// [`crate::restore::PlanState`], [`crate::restore::state_mismatch`]). Skipped when a
/// file of the plan could not be decoded (reported on its own) or nothing was recorded.
pub(super) fn state_problems(entries: &[Entry], plan: &restore_plan::Plan) -> Vec<Problem> {
    let by_id: BTreeMap<FileId, &Entry> = entries.iter().map(|e| (e.file.id, e)).collect();
    let Some(files) = plan
        .files
        .iter()
        .map(|f| by_id.get(&f.id).copied())
        .collect::<Option<Vec<&Entry>>>()
    else {
        return Vec::new();
    };
    let mut state = PlanState::default();
    for e in files.iter().rev() {
        let (Some(h), Some(sums)) = (e.header, e.page_sums.as_ref()) else {
            return Vec::new();
        };
        if state.begin_file(h.page_size, h.commit).is_err() {
            return Vec::new(); // Reported as `page_size_mismatch`.
        }
        for &(pgno, sum) in sums {
            if state.claim(pgno) {
                state.add(sum);
            }
        }
    }
    let meta: Vec<(&str, Option<&BTreeMap<String, String>>)> = files
        .iter()
        .map(|e| (e.key.as_str(), Some(&e.meta)))
        .collect();
    let Some(m) = state_mismatch(&meta, state.checksum()) else {
        return Vec::new();
    };
    vec![problem(
        "state_checksum_mismatch",
        &m.key,
        format!(
            "the state the restore plan to {} builds does not have the database checksum this file \
             records ({METADATA_DB_CHECKSUM}): a file of the plan was replaced or altered{}",
            hex(plan.txid),
            m.suspects()
        ),
        Some(m.expected),
        Some(m.actual),
    )]
}

// ---------------------------------------------------------------------------
// Plumbing

/// Retries transient store errors a few times (the store itself never retries).
pub(super) async fn retry<T, E, F, Fut>(mut op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Retryable,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if e.retryable() && attempt < 3 => {
                attempt += 1;
                tokio::time::sleep(delay).await;
                delay *= 3;
            }
            r => return r,
        }
    }
}

pub(super) trait Retryable {
    fn retryable(&self) -> bool;
}

impl Retryable for StoreError {
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
}

impl Retryable for anyhow::Error {
    fn retryable(&self) -> bool {
        self.chain().any(|c| {
            c.downcast_ref::<StoreError>()
                .is_some_and(StoreError::is_retryable)
        })
    }
}

/// Runs the futures with at most `limit` in flight, on this task; outputs in input
/// order.
pub(super) async fn bounded<T, F: Future<Output = T>>(
    limit: usize,
    futures: impl IntoIterator<Item = F>,
) -> Vec<T> {
    let mut pending = futures.into_iter().enumerate();
    let mut running: Vec<(usize, Pin<Box<F>>)> = Vec::new();
    let mut out: BTreeMap<usize, T> = BTreeMap::new();
    std::future::poll_fn(|cx| {
        loop {
            while running.len() < limit.max(1) {
                match pending.next() {
                    Some((i, f)) => running.push((i, Box::pin(f))),
                    None => break,
                }
            }
            if running.is_empty() {
                return Poll::Ready(());
            }
            let mut done = false;
            let mut j = 0;
            while j < running.len() {
                if let Poll::Ready(v) = running[j].1.as_mut().poll(cx) {
                    let (i, _) = running.swap_remove(j);
                    out.insert(i, v);
                    done = true;
                } else {
                    j += 1;
                }
            }
            if !done {
                return Poll::Pending;
            }
        }
    })
    .await;
    out.into_values().collect()
}
