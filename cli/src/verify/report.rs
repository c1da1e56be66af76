//! The verify report: problems, what to do about each, and the human rendering.

#[allow(unused_imports)]
use super::*;

pub(super) fn problem(
    kind: &'static str,
    key: &str,
    detail: impl Into<String>,
    expected: Option<String>,
    actual: Option<String>,
) -> Problem {
    Problem {
        kind,
        key: key.to_string(),
        detail: detail.into(),
        expected,
        actual,
        recommendation: recommendation(kind).to_string(),
    }
}

pub(super) fn recommendation(kind: &str) -> &'static str {
    match kind {
        "invalid_header"
        | "header_mismatch"
        | "level_mismatch"
        | "invalid_index"
        | "invalid_trailer"
        | "incomplete_snapshot"
        | "corrupt_data"
        | "sha256_mismatch" => {
            "the object is damaged or was replaced: put back an intact copy if you have one \
             (bucket versioning, a replica of the bucket); otherwise run `walvault snapshot` \
             on the source database so the newest state no longer depends on it"
        }
        "page_size_mismatch" => {
            "this file comes from a database with another page size (a different database \
             replicated under the same name?): make sure one database maps to one replica path, \
             then run `walvault snapshot` on the right source"
        }
        "timestamp_mismatch" => {
            "the object was rewritten, or copied without its time metadata: --timestamp restores \
             may pick other files; run `walvault verify --full` to check its contents"
        }
        "bad_metadata" => {
            "walvault's integrity metadata is malformed (rewritten by another tool?): run \
             `walvault verify --full` to check the object's contents"
        }
        "missing_metadata" => {
            "another writer (Litestream or a second walvault?) replaced this object: make sure \
             only one tool replicates this database, run `walvault verify --full`, and run \
             `walvault snapshot` on the source"
        }
        "hash_chain_broken" => {
            "one of the two objects was replaced or rewritten (another writer?): make sure only \
             one tool replicates this database, put back intact copies if you have them, and run \
             `walvault snapshot` on the source"
        }
        "gap" => {
            "objects holding these TXIDs are gone: put them back if you have a copy; otherwise run \
             `walvault snapshot` on the source so the newest state is restorable again (states \
             inside the gap stay lost)"
        }
        "no_snapshot" => {
            "nothing can be restored: run `walvault snapshot` on the source database now"
        }
        "state_checksum_mismatch" => {
            "a file of the newest state's restore plan was replaced or altered (another writer, \
             or a damaged compaction or snapshot; the files without walvault's digest are the \
             suspects): restore refuses this state; make sure only one tool replicates this \
             database, put back intact copies if you have them, and run `walvault snapshot` on \
             the source"
        }
        "missing_growth_pages" => {
            "a restore through this file cannot rebuild the pages the database grew by (Litestream \
             refuses it with \"nonsequential page numbers\"): run `walvault snapshot` on the source"
        }
        _ => "run `walvault verify --full` and `walvault snapshot` on the source",
    }
}

pub(super) fn human(r: &Report) -> String {
    let mut out = String::new();
    for p in &r.problems {
        let _ = write!(out, "PROBLEM {} {}: {}", p.kind, p.key, p.detail);
        match (&p.expected, &p.actual) {
            (Some(e), Some(a)) => {
                let _ = write!(out, " (expected {e}, actual {a})");
            }
            (Some(e), None) => {
                let _ = write!(out, " (expected {e})");
            }
            (None, Some(a)) => {
                let _ = write!(out, " (actual {a})");
            }
            (None, None) => {}
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "  recommendation: {}", p.recommendation);
    }
    let levels: Vec<String> = r
        .files_per_level
        .iter()
        .map(|(l, n)| format!("L{l}: {n}"))
        .collect();
    let what = if r.mode == "full" {
        format!("full mode: every page decoded, {} bytes", r.bytes_decoded)
    } else {
        "default mode: headers, indexes, trailers, metadata; --full decodes every page".to_string()
    };
    let _ = writeln!(
        out,
        "checked {} files of '{}' ({}; {} bytes) in {what}",
        r.files_checked,
        r.database,
        levels.join(", "),
        r.bytes_listed
    );
    if r.files_vanished > 0 {
        let _ = writeln!(
            out,
            "{} files disappeared while being verified (retention?) and were left out",
            r.files_vanished
        );
    }
    let _ = writeln!(
        out,
        "hash chain: {} links verified, {} unverifiable (predecessor retired or written by another tool)",
        r.hash_links.verified, r.hash_links.unverifiable
    );
    match &r.restorable {
        Some(w) => {
            let t = |p: &Point| p.time.clone().unwrap_or_else(|| "time unknown".into());
            let _ = writeln!(
                out,
                "restorable (by the listing): TXID {} ({}) through {} ({})",
                w.earliest.txid,
                t(&w.earliest),
                w.latest.txid,
                t(&w.latest)
            );
        }
        None => {
            let _ = writeln!(out, "restorable: nothing (no usable snapshot)");
        }
    }
    let verdict = if r.latest_restorable {
        "restorable".to_string()
    } else if !r.damaged_in_plan.is_empty() {
        format!(
            "NOT restorable: its restore plan needs damaged objects ({})",
            r.damaged_in_plan.join(", ")
        )
    } else {
        match &r.restorable {
            Some(w) => format!("NOT restorable: the chain stops at {}", w.latest.txid),
            None => "NOT restorable".to_string(),
        }
    };
    let _ = writeln!(out, "latest TXID {}: {verdict}", r.latest_txid);
    if r.ok {
        let _ = writeln!(out, "result: OK");
    } else {
        let _ = writeln!(
            out,
            "result: {} problem{} found",
            r.problems.len(),
            if r.problems.len() == 1 { "" } else { "s" }
        );
    }
    out
}
