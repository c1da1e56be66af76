//! `walvault verify`: checks a database's backup without restoring it, and says what
//! is wrong, object by object.
//!
//! Default mode reads the listing, each object's metadata (one HEAD) and its two ends
//! with ranged GETs: the 100-byte header, and the tail that holds the page index and
//! the trailer (an object up to 64 KiB is read in one GET). Requests run a bounded
//! number at a time. `--full` downloads every object instead (streamed through a
//! temporary file, one per object in flight), decodes every page, checks the file
//! checksum and compares the object's SHA-256 with walvault's metadata.
//!
//! What is checked:
//! * per object: the header is valid and matches the key (TXID range, level-9 files
//!   start at TXID 1); the index and trailer fit the object (a truncated object fails
//!   here); a snapshot lists every page; the header time equals the
//!   `litestream-timestamp` metadata; walvault's metadata is well formed; `--full`: every
//!   page decodes, the file checksum holds, the SHA-256 equals `walvault-sha256`;
//! * across objects: one page size; a snapshot (a file from TXID 1) exists; every TXID
//!   up to the newest is in some file (Litestream's retention removes level-0 files once
//!   a compaction or snapshot covers them, which leaves no TXID uncovered, so that is
//!   not reported); the restore plan to the newest TXID reaches it and each file in it
//!   holds the pages its growth needs; the hash chain: `walvault-prev-sha256` of each
//!   walvault file equals the digest of the file it extends; `--full`: the state the
//!   restore plan to the newest TXID builds has the database checksum walvault recorded
//!   for the plan's newest file (`walvault-db-checksum`), which catches a replaced
//!   compaction or snapshot that no hash link points at (restore makes the same check).
//!
//! Exit codes: 0 no problem, 1 problems (each names its object), 2 cannot verify
//! (bad URL, unreachable or unreadable store, no backup of that name).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use walvault_engine::keys::{FileId, SNAPSHOT_LEVEL};
use walvault_engine::ltx::{self, Decoder, HEADER_SIZE, Header, LtxError, TRAILER_SIZE, Trailer};
use walvault_engine::restore_plan::{self, PlanError, RemoteFile, Target};
use walvault_engine::time::format_rfc3339_ms;

use crate::integrity::HashingReader;
use crate::remote;
use crate::restore::{PlanState, state_mismatch};
use crate::storage::{
    self, METADATA_DB_CHECKSUM, METADATA_PREV_SHA256, METADATA_SHA256, METADATA_TIMESTAMP, Store,
    StoreError,
};

mod across;
mod object;
mod report;

use across::*;
use object::*;
use report::*;

/// Requests in flight in default mode.
const CONCURRENCY: usize = 16;
/// Objects downloaded at once in `--full` mode (each goes through a temporary file).
const FULL_CONCURRENCY: usize = 4;
/// Objects up to this size are read in one GET; larger ones as header + tail.
const TAIL_READ: u64 = 64 * 1024;
/// Smallest possible LTX file: header, terminator, empty index (0 + u64), trailer.
const MIN_LTX_SIZE: u64 = (HEADER_SIZE + ltx::PAGE_HEADER_SIZE + 1 + 8 + TRAILER_SIZE) as u64;

pub struct VerifyOptions {
    pub name: String,
    pub full: bool,
    pub json: bool,
}

/// One thing wrong with the backup.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// Stable identifier, e.g. `header_mismatch`, `gap`, `sha256_mismatch`.
    pub kind: &'static str,
    /// The object concerned (relative to the replica URL); for a missing object the
    /// key it would have.
    pub key: String,
    pub detail: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
    pub recommendation: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub txid: String,
    /// Header time of the file ending at this TXID (RFC 3339), if readable.
    pub time: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub earliest: Point,
    pub latest: Point,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Links {
    /// `walvault-prev-sha256` values that match the file they point to.
    pub verified: usize,
    /// Links whose predecessor is gone (retired after a compaction) or is a
    /// compaction/snapshot, so they cannot be checked.
    pub unverifiable: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub database: String,
    /// `default` (headers, indexes, metadata) or `full` (every byte).
    pub mode: &'static str,
    pub files_checked: usize,
    pub files_per_level: BTreeMap<u8, usize>,
    pub bytes_listed: u64,
    /// Bytes downloaded and decoded (`--full` only).
    pub bytes_decoded: u64,
    /// Files listed but gone by the time they were read (left out of every check).
    pub files_vanished: usize,
    pub latest_txid: String,
    /// Some file starts at TXID 1. Without one nothing can be restored and the backup
    /// cannot be verified: exit code 2, with the problems found listed anyway.
    pub has_snapshot: bool,
    /// The newest TXID can be restored (plan complete, none of its files damaged).
    pub latest_restorable: bool,
    /// Objects of the newest TXID's restore plan that have problems.
    pub damaged_in_plan: Vec<String>,
    /// From the oldest snapshot to the furthest TXID the restore plan reaches, as the
    /// listing allows (damaged files in the plan are in `damaged_in_plan`).
    pub restorable: Option<Window>,
    pub hash_links: Links,
    pub problems: Vec<Problem>,
}

/// `walvault verify`: runs the checks and prints the report; returns the exit code.
pub async fn command(store: Result<Store>, opts: &VerifyOptions) -> ExitCode {
    let result = match store {
        Ok(store) => verify(&store, opts).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(report) => {
            if opts.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: cannot encode the report: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", human(&report));
            }
            if !report.has_snapshot {
                eprintln!(
                    "error: cannot verify '{}': no snapshot (no file starts at TXID 1), nothing can be restored",
                    opts.name
                );
                ExitCode::from(2)
            } else if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            let msg = format!("cannot verify '{}': {e:#}", opts.name);
            if opts.json {
                let v = serde_json::json!({
                    "ok": false,
                    "database": opts.name,
                    "verified": false,
                    "error": msg,
                });
                println!("{v:#}");
            }
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Everything known about one object after reading it.
struct Entry {
    file: RemoteFile,
    key: String,
    header: Option<Header>,
    /// Page numbers, ascending (from the index, or from decoding in `--full`).
    pages: Option<Vec<u32>>,
    recorded_sha: Option<String>,
    recorded_prev: Option<String>,
    /// Computed in `--full` mode.
    actual_sha: Option<String>,
    bytes_decoded: u64,
    /// Metadata, names lowercased.
    meta: BTreeMap<String, String>,
    /// `--full`, files of the restore plan: (page number, page checksum) of every page,
    /// when every page decoded.
    page_sums: Option<Vec<(u32, u64)>>,
}

/// Runs every check. `Err` means the backup could not be verified (exit 2).
pub async fn verify(store: &Store, opts: &VerifyOptions) -> Result<Report> {
    let name = opts.name.as_str();
    // A gap may be an upload in flight while walvault watch runs: listed again first.
    let files = remote::list_past_gaps(
        name,
        || retry(|| remote::list_files(store, name)),
        remote::latest_gap,
    )
    .await?;
    if files.is_empty() {
        bail!(
            "no backup of '{name}' in this replica: check the name (`walvault list -b URL` shows what is there)"
        );
    }
    let bytes_listed = files.iter().map(|f| f.size).sum();
    let scratch = if opts.full {
        Some(Scratch::new()?)
    } else {
        None
    };
    let limit = if opts.full {
        FULL_CONCURRENCY
    } else {
        CONCURRENCY
    };
    // `--full` keeps the page checksums of the files the restore plan needs.
    let planned: BTreeSet<FileId> = if opts.full {
        reach(&files)
            .0
            .iter()
            .flat_map(|p| &p.files)
            .map(|f| f.id)
            .collect()
    } else {
        BTreeSet::new()
    };
    let results = bounded(
        limit,
        files.iter().enumerate().map(|(i, f)| {
            let key = remote::key(store, name, f.id);
            let tmp = scratch
                .as_ref()
                .map(|s| (s.path(i), planned.contains(&f.id)));
            inspect(store, f.clone(), key, tmp)
        }),
    )
    .await;
    let mut problems = Vec::new();
    let mut entries = Vec::new();
    let mut vanished = 0;
    for r in results {
        match r? {
            None => vanished += 1,
            Some((entry, mut p)) => {
                problems.append(&mut p);
                entries.push(entry);
            }
        }
    }
    if entries.is_empty() {
        bail!("every file of '{name}' disappeared while it was being verified");
    }
    let mut links = Links::default();
    problems.extend(page_size_problems(&entries));
    problems.extend(continuity_problems(store, name, &entries));
    problems.extend(hash_chain_problems(&entries, opts.full, &mut links));
    let listed: Vec<RemoteFile> = entries.iter().map(|e| e.file.clone()).collect();
    let latest = listed.iter().map(|f| f.id.max_txid).max().unwrap_or(0);
    let (reach, plan_complete) = reach(&listed);
    if let Some(p) = &reach {
        problems.extend(growth_problems(&entries, p));
        if opts.full {
            problems.extend(state_problems(&entries, p));
        }
    }
    dedup(&mut problems);
    // One object's problems together, in key order (level, then TXID).
    problems.sort_by(|a, b| a.key.cmp(&b.key));
    // Objects a restore would refuse or read wrong (a time mismatch does not stop one).
    let damaged: BTreeSet<&str> = problems
        .iter()
        .filter(|p| p.kind != "timestamp_mismatch")
        .map(|p| p.key.as_str())
        .collect();
    let damaged_in_plan: Vec<String> = reach
        .iter()
        .flat_map(|p| &p.files)
        .map(|f| remote::key(store, name, f.id))
        .filter(|k| damaged.contains(k.as_str()))
        .collect();
    let latest_restorable = plan_complete && damaged_in_plan.is_empty();
    let restorable = reach.as_ref().and_then(|p| {
        let earliest = listed
            .iter()
            .filter(|f| f.id.min_txid == 1)
            .map(|f| f.id.max_txid)
            .min()?;
        Some(Window {
            earliest: point(&entries, earliest),
            latest: point(&entries, p.txid),
        })
    });
    let mut files_per_level = BTreeMap::new();
    for e in &entries {
        *files_per_level.entry(e.file.id.level).or_insert(0) += 1;
    }
    Ok(Report {
        ok: problems.is_empty(),
        database: name.to_string(),
        mode: if opts.full { "full" } else { "default" },
        files_checked: entries.len(),
        files_per_level,
        bytes_listed,
        bytes_decoded: entries.iter().map(|e| e.bytes_decoded).sum(),
        files_vanished: vanished,
        latest_txid: hex(latest),
        has_snapshot: listed.iter().any(|f| f.id.min_txid == 1),
        latest_restorable,
        damaged_in_plan,
        restorable,
        hash_links: links,
        problems,
    })
}

/// The restore plan to the newest TXID, or as far as the chain reaches; whether it
/// reaches the newest TXID.
fn reach(listed: &[RemoteFile]) -> (Option<restore_plan::Plan>, bool) {
    match restore_plan::plan(listed, Target::Latest) {
        Ok(p) => (Some(p), true),
        Err(PlanError::Gap { after }) => {
            (restore_plan::plan(listed, Target::Txid(after)).ok(), false)
        }
        Err(_) => (None, false),
    }
}

fn hex(txid: u64) -> String {
    format!("{txid:016x}")
}

fn point(entries: &[Entry], txid: u64) -> Point {
    let time = entries
        .iter()
        .filter(|e| e.file.id.max_txid == txid)
        .filter_map(|e| e.header.map(|h| (e.file.id.level, h.timestamp_ms)))
        .min()
        .map(|(_, t)| format_rfc3339_ms(t));
    Point {
        txid: hex(txid),
        time,
    }
}

fn dedup(problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    problems.retain(|p| seen.insert((p.kind, p.key.clone(), p.detail.clone())));
}

#[cfg(test)]
mod tests {
    use super::*;
    use walvault_engine::ltx::Encoder;

    fn id(level: u8, min: u64, max: u64) -> FileId {
        FileId {
            level,
            min_txid: min,
            max_txid: max,
        }
    }

    fn ltx_file(min: u64, max: u64, commit: u32, pages: &[u32]) -> (Header, Vec<u8>) {
        let h = Header {
            flags: ltx::FLAG_NO_CHECKSUM,
            page_size: 512,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: 1_700_000_000_000,
            ..Header::default()
        };
        let mut enc = Encoder::new(Vec::new(), &h).unwrap();
        for &p in pages {
            let data: Vec<u8> = (0..512u32).map(|i| (i * p) as u8).collect();
            enc.write_page(p, &data).unwrap();
        }
        (h, enc.finish(0).unwrap().0)
    }

    fn kind(t: Tail) -> &'static str {
        match t {
            Tail::Pages(_) => "ok",
            Tail::NeedFrom(_) => "need",
            Tail::Bad(b) => b.kind,
        }
    }

    #[test]
    fn tail_of_a_valid_file_lists_its_pages() {
        let (h, f) = ltx_file(1, 3, 4, &[1, 2, 3, 4]);
        match check_tail(&h, f.len() as u64, 0, &f) {
            Tail::Pages(p) => assert_eq!(p, vec![1, 2, 3, 4]),
            _ => panic!("valid file rejected"),
        }
        // Only the last bytes read: asks for the index.
        let off = f.len() as u64 - 30;
        match check_tail(&h, f.len() as u64, off, &f[off as usize..]) {
            Tail::NeedFrom(o) => {
                assert!(o < off);
                assert_eq!(
                    kind(check_tail(&h, f.len() as u64, o, &f[o as usize..])),
                    "ok"
                );
            }
            _ => panic!("expected a request for more bytes"),
        }
    }

    #[test]
    fn truncated_or_damaged_tails_are_caught() {
        let (h, f) = ltx_file(5, 5, 6, &[2, 5, 6]);
        for cut in [1, 8, 16, 17, 24, 25, f.len() / 2, f.len() - 120] {
            let t = &f[..f.len() - cut];
            assert_ne!(
                kind(check_tail(&h, t.len() as u64, 0, t)),
                "ok",
                "truncated by {cut}"
            );
        }
        // A commit below a page the file holds.
        let low = Header { commit: 5, ..h };
        assert_eq!(
            kind(check_tail(&low, f.len() as u64, 0, &f)),
            "invalid_index"
        );
        // A snapshot header over a file that lacks pages.
        let snap = Header { min_txid: 1, ..h };
        assert_eq!(
            kind(check_tail(&snap, f.len() as u64, 0, &f)),
            "incomplete_snapshot"
        );
        // The post-apply checksum must be zero with NoChecksum.
        let mut g = f.clone();
        let n = g.len();
        g[n - 9] ^= 1;
        assert_eq!(kind(check_tail(&h, n as u64, 0, &g)), "invalid_trailer");
    }

    fn entry(store: &Store, id: FileId, sha: Option<&str>, prev: Option<&str>) -> Entry {
        Entry {
            file: RemoteFile {
                id,
                size: 1,
                timestamp_ms: None,
            },
            key: remote::key(store, "db", id),
            header: None,
            pages: None,
            recorded_sha: sha.map(str::to_string),
            recorded_prev: prev.map(str::to_string),
            actual_sha: sha.map(str::to_string),
            bytes_decoded: 0,
            meta: BTreeMap::new(),
            page_sums: None,
        }
    }

    fn store() -> Store {
        Store::File(storage::file::FileStore::new("/nonexistent".into()))
    }

    #[test]
    fn retired_level0_files_are_not_gaps() {
        let s = store();
        // L0 1..10 retired under a snapshot and an L1 file; the tail is complete.
        let ids = [id(9, 1, 5), id(1, 6, 10), id(0, 11, 11), id(0, 12, 12)];
        let entries: Vec<Entry> = ids.iter().map(|&i| entry(&s, i, None, None)).collect();
        assert!(continuity_problems(&s, "db", &entries).is_empty());
    }

    #[test]
    fn uncovered_txids_are_a_gap_naming_the_missing_object() {
        let s = store();
        let ids = [id(9, 1, 5), id(1, 6, 10), id(0, 11, 11), id(0, 13, 13)];
        let entries: Vec<Entry> = ids.iter().map(|&i| entry(&s, i, None, None)).collect();
        let p = continuity_problems(&s, "db", &entries);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].kind, "gap");
        assert_eq!(p[0].key, "db/ltx/0/000000000000000c-000000000000000c.ltx");
        // A lost compaction: the level of the file after the gap.
        let ids = [id(9, 1, 5), id(1, 11, 12), id(0, 13, 13)];
        let entries: Vec<Entry> = ids.iter().map(|&i| entry(&s, i, None, None)).collect();
        let p = continuity_problems(&s, "db", &entries);
        assert_eq!(p[0].key, "db/ltx/1/0000000000000006-000000000000000a.ltx");
        // No file from TXID 1.
        let entries = vec![entry(&s, id(0, 3, 3), None, None)];
        let p = continuity_problems(&s, "db", &entries);
        assert_eq!(p[0].kind, "no_snapshot");
    }

    #[test]
    fn hash_links() {
        let s = store();
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let run = |entries: &[Entry], full: bool| {
            let mut links = Links::default();
            let p = hash_chain_problems(entries, full, &mut links);
            (p, links.verified, links.unverifiable)
        };
        // Intact chain.
        let chain = vec![
            entry(&s, id(0, 1, 1), Some(&a), None),
            entry(&s, id(0, 2, 2), Some(&b), Some(&a)),
            entry(&s, id(0, 3, 3), Some(&c), Some(&b)),
        ];
        let (p, v, u) = run(&chain, false);
        assert!(p.is_empty());
        assert_eq!((v, u), (2, 0));
        // The middle file replaced by a writer that records no digest.
        let mut replaced = chain;
        replaced[1].recorded_sha = None;
        replaced[1].recorded_prev = None;
        let (p, _, _) = run(&replaced, false);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, "missing_metadata");
        assert_eq!(p[0].key, replaced[1].key);
        // --full compares the actual digest.
        replaced[1].actual_sha = Some("d".repeat(64));
        let (p, _, _) = run(&replaced, true);
        assert_eq!(p[0].kind, "hash_chain_broken");
        // The predecessor was retired after a compaction: nothing to check.
        let retired = vec![
            entry(&s, id(9, 1, 1), Some(&a), None),
            entry(&s, id(1, 2, 2), None, None),
            entry(&s, id(0, 3, 3), Some(&c), Some(&b)),
        ];
        let (p, v, u) = run(&retired, false);
        assert!(p.is_empty());
        assert_eq!((v, u), (0, 1));
    }
}
