//! Refusing to replicate a database that a running `litestream replicate` process
//! covers: two replicators on one database overwrite each other's files.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Two replicators on one database corrupt each other's chain (Litestream overwrites
/// without conditions). Refuse to start while a `litestream replicate` process on this
/// machine names this database, on its command line or in its config file. (Handing a
/// database over from a stopped Litestream is fine: walvault continues its chain.)
pub fn refuse_if_litestream_is_running(path: &Path) -> Result<()> {
    let Ok(abs) = std::fs::canonicalize(path) else {
        return Ok(());
    };
    if let Some(pid) = litestream_replicating(&abs) {
        bail!(
            "Litestream (pid {pid}) is replicating {} right now: stop it before starting walvault. \
             Two replicators on one database overwrite each other's files; walvault continues \
             Litestream's chain once Litestream has stopped",
            path.display()
        );
    }
    Ok(())
}

/// A running `litestream replicate`: its pid, working directory and arguments.
struct LitestreamProcess {
    pid: u32,
    cwd: PathBuf,
    args: Vec<String>,
}

/// How long one scan of `/proc` answers for: `watch` opens its databases one after the
/// other, and 1 000 databases must not mean 1 000 scans of every process's cmdline.
const PROCESS_SCAN_REUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// The running `litestream replicate` processes, from a scan at most
/// [`PROCESS_SCAN_REUSE`] old.
fn litestream_processes() -> std::sync::Arc<Vec<LitestreamProcess>> {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    static LAST: Mutex<Option<(Instant, Arc<Vec<LitestreamProcess>>)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, found)) = last.as_ref()
        && at.elapsed() < PROCESS_SCAN_REUSE
    {
        return Arc::clone(found);
    }
    let found = Arc::new(scan_litestream_processes());
    *last = Some((Instant::now(), Arc::clone(&found)));
    found
}

fn scan_litestream_processes() -> Vec<LitestreamProcess> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_litestream = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .is_some_and(|n| n == "litestream");
        if !is_litestream || !args.iter().any(|a| a == "replicate") {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        found.push(LitestreamProcess { pid, cwd, args });
    }
    found
}

/// The pid of a running `litestream replicate` that covers `db` (an absolute path).
fn litestream_replicating(db: &Path) -> Option<u32> {
    let db_s = db.to_string_lossy();
    for p in litestream_processes().iter() {
        let names_db = |arg: &str| std::fs::canonicalize(p.cwd.join(arg)).is_ok_and(|c| c == db);
        if p.args
            .iter()
            .skip(2)
            .any(|a| !a.starts_with('-') && names_db(a))
        {
            return Some(p.pid);
        }
        let config = p
            .args
            .iter()
            .position(|a| a == "-config" || a == "--config")
            .and_then(|i| p.args.get(i + 1))
            .map(|c| p.cwd.join(c))
            .unwrap_or_else(|| PathBuf::from("/etc/litestream.yml"));
        if std::fs::read_to_string(&config).is_ok_and(|text| text.contains(db_s.as_ref())) {
            return Some(p.pid);
        }
    }
    None
}
