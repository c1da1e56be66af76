//! Running every damage case against a backup: apply the damage, then what restore
//! (with and without `--force`) and `verify` (default and `--full`) must say, and
//! that nothing on disk changed.

use super::*;

/// What a damage case showed.
struct Seen {
    restore_force: Output,
    restore_new: Output,
    verify: Output,
    verify_full: Output,
}

/// Runs the four commands of one case at once (they only read the replica).
fn observe(rig: &Rig, existing: &Path, fresh: &Path) -> Seen {
    let (e, f) = (existing.to_str().unwrap(), fresh.to_str().unwrap());
    let url = rig.url.as_str();
    let mut cmds = [
        rig.walvault(&["restore", NAME, "-o", e, "-b", url, "--force"]),
        rig.walvault(&["restore", NAME, "-o", f, "-b", url]),
        rig.walvault(&["verify", NAME, "-b", url]),
        rig.walvault(&["verify", NAME, "-b", url, "--full"]),
    ];
    let children: Vec<_> = cmds.iter_mut().map(|c| c.output()).collect();
    let mut outs = children.into_iter().map(|o| o.unwrap());
    Seen {
        restore_force: outs.next().unwrap(),
        restore_new: outs.next().unwrap(),
        verify: outs.next().unwrap(),
        verify_full: outs.next().unwrap(),
    }
}

fn dir_listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Applies `damage` to `t` and returns the objects to heal afterwards.
fn apply(rig: &Rig, t: &Target, damage: Damage) -> Vec<FileId> {
    let (bytes, meta) = &rig.pristine[&t.victim];
    match damage {
        Damage::FlipHeaderTxid => rig.put(t.victim, &flip(bytes, 27), meta),
        Damage::FlipHeaderTime => rig.put(t.victim, &flip(bytes, 39), meta),
        Damage::FlipPage => rig.put(t.victim, &flip(bytes, ltx::HEADER_SIZE + 6 + 4 + 5), meta),
        Damage::FlipTrailer => rig.put(t.victim, &flip(bytes, bytes.len() - 1), meta),
        Damage::Truncate => rig.put(t.victim, &bytes[..bytes.len() * 2 / 3], meta),
        Damage::Delete => rig.delete(t.victim),
        Damage::Reorder => {
            let (other, other_meta) = &rig.pristine[&t.partner];
            rig.put(t.victim, other, meta);
            rig.put(t.partner, bytes, other_meta);
            return vec![t.victim, t.partner];
        }
        Damage::Replace => {
            // What another writer uploads: the file and its time, no walvault digests.
            let foreign: Meta = meta
                .iter()
                .filter(|(k, _)| k.as_str() == walvault::storage::METADATA_TIMESTAMP)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            rig.put(t.victim, &replacement(bytes), &foreign);
        }
    }
    vec![t.victim]
}

/// Whether default-mode `verify` is expected to catch `damage` at `t` (see the table
/// in the module docs); `verify --full` must catch every damage.
fn caught_by_default(rig: &Rig, t: &Target, damage: Damage) -> bool {
    match damage {
        Damage::FlipPage | Damage::FlipTrailer => false,
        Damage::Replace => t.walvault && t.label == "L0" && rig.s3,
        _ => true,
    }
}

/// A checksum or digest mismatch in `msg` (LTX file checksum, SHA-256, hash-chain
/// link, database checksum) and whether it names both values: `None` when `msg` reports
/// no such mismatch, `Some(true)` when it reads `expected <hex>..., got <hex>` with two
/// different values of the same length.
fn mismatch_values(msg: &str) -> Option<bool> {
    let lower = msg.to_ascii_lowercase();
    if !["checksum", "sha-256", "hash chain"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return None;
    }
    let hex_after = |s: &str, word: &str| -> Option<(String, usize)> {
        let at = s.find(word)? + word.len();
        let rest = s[at..].trim_start_matches("0x");
        let v: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
        (v.len() >= 16).then_some((v, at))
    };
    let Some((expected, at)) = hex_after(&lower, "expected ") else {
        return Some(false);
    };
    let Some((actual, _)) = hex_after(&lower[at..], ", got ") else {
        return Some(false);
    };
    Some(expected.len() == actual.len() && expected != actual)
}

#[test]
fn mismatch_values_reads_expected_and_got() {
    let (a, b) = ("0123456789abcdef", "fedcba9876543210");
    assert_eq!(mismatch_values("the header covers TXIDs 1-2"), None);
    assert_eq!(
        mismatch_values(&format!("k: checksum mismatch: expected 0x{a}, got 0x{b}")),
        Some(true)
    );
    assert_eq!(
        mismatch_values(&format!(
            "k: SHA-256 mismatch: expected {a} (recorded), got {b}: x"
        )),
        Some(true)
    );
    assert_eq!(
        mismatch_values(&format!("k: checksum mismatch: expected {a}, got {a}")),
        Some(false)
    );
    assert_eq!(mismatch_values("k: checksum mismatch"), Some(false));
    assert_eq!(
        mismatch_values(&format!("the hash chain is broken: {a} vs {b}")),
        Some(false)
    );
}

/// The message names the damaged object: its key (for a reorder, either of the two
/// swapped objects), or for a deleted object a TXID it held.
fn names(msg: &str, keys: &[String], victim: FileId, damage: Damage) -> bool {
    if keys.iter().any(|k| msg.contains(k.as_str())) {
        return true;
    }
    damage == Damage::Delete
        && (victim.min_txid..=victim.max_txid).any(|t| msg.contains(&format!("{t:016x}")))
}

pub(super) fn run_cases(rig: &Rig, targets: &[Target]) {
    let outdir = rig.work.path().join("out");
    std::fs::create_dir_all(&outdir).unwrap();
    let existing = outdir.join("existing.db");
    let fresh = outdir.join("fresh.db");
    const PRECIOUS: &[u8] = b"an existing database that a failed restore must not touch";
    std::fs::write(&existing, PRECIOUS).unwrap();
    let before = dir_listing(&outdir);

    // The intact backup verifies clean in both modes and restores to the source.
    let seen = observe(rig, &existing, &fresh);
    for (what, o) in [
        ("verify", &seen.verify),
        ("verify --full", &seen.verify_full),
    ] {
        assert_eq!(
            o.status.code(),
            Some(0),
            "{what} of the intact backup:\n{}",
            text(o)
        );
    }
    assert!(
        seen.restore_new.status.success(),
        "{}",
        text(&seen.restore_new)
    );
    let o = rig
        .walvault(&["verify", NAME, "-b", &rig.url, "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["latest_restorable"], true, "{v:#}");
    assert_eq!(v["files_checked"], rig.pristine.len(), "{v:#}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v:#}");
    checkpoint_truncate(&rig.source);
    walvault::compare::compare_pages(&rig.source, &fresh, page_size(&rig.source)).unwrap();
    std::fs::remove_file(&fresh).unwrap();
    std::fs::write(&existing, PRECIOUS).unwrap();

    let mut failures = Vec::new();
    let mut report = Vec::new();
    for t in targets {
        for damage in DAMAGES {
            let case = format!("{} {:?}", t.label, damage);
            let key = rig.key(t.victim);
            let mut keys = vec![key.clone()];
            if damage == Damage::Reorder {
                keys.push(rig.key(t.partner));
            }
            let healed = apply(rig, t, damage);
            let seen = observe(rig, &existing, &fresh);
            rig.heal(&healed);
            let by_default = caught_by_default(rig, t, damage);
            let mut fail = |what: &str, o: &Output| {
                failures.push(format!("{case} ({key}): {what}\n{}", text(o)));
            };

            // A failed restore changes nothing on disk: the existing output keeps its
            // bytes, the new path does not appear, no temporary file is left behind.
            let forced_failed = !seen.restore_force.status.success();
            let new_failed = !seen.restore_new.status.success();
            let mut expected_listing = before.clone();
            if !new_failed {
                expected_listing.insert("fresh.db".into());
            }
            if forced_failed && std::fs::read(&existing).unwrap() != PRECIOUS {
                fail(
                    "a failed restore --force changed the existing output",
                    &seen.restore_force,
                );
            }
            if new_failed && fresh.exists() {
                fail("a failed restore created its output", &seen.restore_new);
            }
            if dir_listing(&outdir) != expected_listing {
                fail(
                    &format!(
                        "files left in the output directory: {:?}",
                        dir_listing(&outdir)
                    ),
                    &seen.restore_new,
                );
            }
            for extra in dir_listing(&outdir).difference(&before) {
                let _ = std::fs::remove_file(outdir.join(extra));
            }
            std::fs::write(&existing, PRECIOUS).unwrap();
            let restore_caught = |o: &Output| {
                !o.status.success()
                    && names(&String::from_utf8_lossy(&o.stderr), &keys, t.victim, damage)
            };
            let verify_caught = |o: &Output| {
                o.status.code() == Some(1)
                    && names(&String::from_utf8_lossy(&o.stdout), &keys, t.victim, damage)
            };
            if std::env::var_os("CORRUPTION_VERBOSE").is_some() {
                eprintln!(
                    "=== {case}\nrestore: {}verify:\n{}verify --full:\n{}",
                    text(&seen.restore_new),
                    text(&seen.verify),
                    text(&seen.verify_full)
                );
            }
            report.push(format!(
                "{case:<22} restore: {:<7} verify: {:<7} verify --full: {}",
                if restore_caught(&seen.restore_new) {
                    "caught"
                } else {
                    "MISSED"
                },
                if verify_caught(&seen.verify) {
                    "caught"
                } else {
                    "-"
                },
                if verify_caught(&seen.verify_full) {
                    "caught"
                } else {
                    "MISSED"
                },
            ));
            for (what, o) in [
                ("restore --force over an existing file", &seen.restore_force),
                ("restore to a new path", &seen.restore_new),
            ] {
                if !restore_caught(o) {
                    fail(&format!("{what} did not fail naming the object"), o);
                }
                // A checksum or digest mismatch names both values; a damaged trailer
                // (the file checksum) and a replaced object (its digest, a hash link or
                // the database checksum) are always reported as one.
                let stderr = String::from_utf8_lossy(&o.stderr);
                match mismatch_values(&stderr) {
                    Some(true) => {}
                    Some(false) => fail(
                        &format!("{what}: the mismatch does not name expected and actual values"),
                        o,
                    ),
                    None if matches!(damage, Damage::FlipTrailer | Damage::Replace) => fail(
                        &format!("{what}: not reported as a checksum or digest mismatch"),
                        o,
                    ),
                    None => {}
                }
            }
            if by_default && !verify_caught(&seen.verify) {
                fail("verify did not exit 1 naming the object", &seen.verify);
            }
            if !verify_caught(&seen.verify_full) {
                fail(
                    "verify --full did not exit 1 naming the object",
                    &seen.verify_full,
                );
            }
        }
    }
    eprintln!(
        "{} corruption cases ({}):\n{}",
        report.len(),
        if rig.s3 { "S3" } else { "file://" },
        report.join("\n")
    );
    // The JSON report names the object with expected and actual values.
    let t = &targets[0];
    let healed = apply(rig, t, Damage::FlipHeaderTxid);
    let o = rig
        .walvault(&["verify", NAME, "-b", &rig.url, "--json"])
        .output()
        .unwrap();
    rig.heal(&healed);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["files_checked"], rig.pristine.len());
    let p = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == rig.key(t.victim).as_str())
        .unwrap_or_else(|| panic!("no problem names {}: {v:#}", rig.key(t.victim)));
    assert!(
        p["expected"].is_string() && p["actual"].is_string() && p["recommendation"].is_string(),
        "{p:#}"
    );
    // Healed: clean again.
    let o = rig
        .walvault(&["verify", NAME, "-b", &rig.url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "after healing:\n{}", text(&o));
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n\n{}",
        failures.len(),
        report.len(),
        failures.join("\n\n")
    );
}
