//! The canonical trace of a run: every event and decision, encoded as fixed-width
//! little-endian integers and hashed with SHA-256. Two runs of one seed must produce
//! the same hash whatever the build profile or verbosity: text lines are rendered only
//! when printing and never feed the hash.

use sha2::{Digest, Sha256};

pub struct Trace {
    hasher: Sha256,
    records: u64,
    print: bool,
}

impl Trace {
    pub fn new(print: bool) -> Trace {
        Trace {
            hasher: Sha256::new(),
            records: 0,
            print,
        }
    }

    pub fn printing(&self) -> bool {
        self.print
    }

    /// Records one event: its time, a kind tag, integer fields, optional bytes (error
    /// texts, keys), and a human-readable line rendered only when printing.
    pub fn record(
        &mut self,
        t: u64,
        kind: &str,
        fields: &[u64],
        bytes: &[u8],
        text: impl FnOnce() -> String,
    ) {
        self.records += 1;
        self.hasher.update(t.to_le_bytes());
        self.hasher.update((kind.len() as u32).to_le_bytes());
        self.hasher.update(kind.as_bytes());
        self.hasher.update((fields.len() as u32).to_le_bytes());
        for f in fields {
            self.hasher.update(f.to_le_bytes());
        }
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        if self.print {
            use std::io::Write;
            let line = format!("{:>9}ms {:<14} {}\n", t, kind, text());
            if let Err(e) = std::io::stdout().lock().write_all(line.as_bytes()) {
                // A closed pipe (`| head`) ends the run quietly, like other CLI tools.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    std::process::exit(141);
                }
            }
        }
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// The hash so far, as lowercase hex.
    pub fn hash_hex(&self) -> String {
        let d = self.hasher.clone().finalize();
        d.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_text_and_printing() {
        let mut a = Trace::new(false);
        let mut b = Trace::new(false);
        a.record(5, "x", &[1, 2], b"k", || "one".into());
        b.record(5, "x", &[1, 2], b"k", || "two".into());
        assert_eq!(a.hash_hex(), b.hash_hex());
        b.record(6, "x", &[], b"", String::new);
        assert_ne!(a.hash_hex(), b.hash_hex());
        assert_eq!(b.records(), 2);
    }
}
