//! The in-memory object store (`If-None-Match: *` semantics), the store's tip as the
//! shell computes it (cli/src/remote.rs `tip`), and restore as `walvault restore` does
//! it: plan over the stored files, decode each, write pages newest-wins, truncate to
//! the last file's commit size.

use std::collections::BTreeMap;

use super::source::PS;
use crate::keys::FileId;
use crate::ltx::{self, Header};
use crate::replicator::RemoteTip;
use crate::restore_plan::{self, RemoteFile, Target};

struct Object {
    bytes: Vec<u8>,
    header: Header,
    pages: Vec<(u32, Vec<u8>)>,
}

#[derive(Default)]
pub struct Store {
    objects: BTreeMap<FileId, Object>,
}

impl Store {
    /// A conditional PUT: stores `bytes` unless the key is taken. Every stored file
    /// must decode and its header must match its key.
    pub fn put_if_absent(&mut self, file: FileId, bytes: &[u8]) -> bool {
        if self.objects.contains_key(&file) {
            return false;
        }
        let (header, pages, _) = ltx::decode_all(bytes)
            .unwrap_or_else(|e| panic!("the engine built an undecodable file {file}: {e}"));
        assert_eq!(
            (header.min_txid, header.max_txid),
            (file.min_txid, file.max_txid),
            "{file}: header TXIDs differ from the key"
        );
        assert_eq!(header.page_size, PS);
        self.objects.insert(
            file,
            Object {
                bytes: bytes.to_vec(),
                header,
                pages,
            },
        );
        true
    }

    pub fn get(&self, file: FileId) -> Option<&[u8]> {
        self.objects.get(&file).map(|o| &o.bytes[..])
    }

    pub fn header(&self, file: FileId) -> Option<&Header> {
        self.objects.get(&file).map(|o| &o.header)
    }

    /// Decoded pages of a stored file.
    pub fn pages(&self, file: FileId) -> Option<&[(u32, Vec<u8>)]> {
        self.objects.get(&file).map(|o| &o.pages[..])
    }

    pub fn ids(&self) -> Vec<FileId> {
        self.objects.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn max_txid(&self) -> u64 {
        self.objects.keys().map(|f| f.max_txid).max().unwrap_or(0)
    }

    /// Level-0 files in TXID order.
    pub fn level0(&self) -> Vec<FileId> {
        let mut v: Vec<FileId> = self.ids().into_iter().filter(|f| f.level == 0).collect();
        v.sort_by_key(|f| (f.min_txid, f.max_txid));
        v
    }

    /// The store's tip exactly as the shell computes it (cli/src/remote.rs): the highest
    /// TXID, how far a restore reaches, and the header of the lowest-level file there.
    pub fn tip(&self) -> RemoteTip {
        let max = self.max_txid();
        let files: Vec<crate::restore_plan::RemoteFile> = self
            .objects
            .keys()
            .map(|&id| crate::restore_plan::RemoteFile {
                id,
                size: 0,
                timestamp_ms: None,
            })
            .collect();
        let chain_end = match crate::restore_plan::plan(&files, crate::restore_plan::Target::Latest)
        {
            Ok(p) => p.txid,
            Err(crate::restore_plan::PlanError::Gap { after }) => after,
            Err(_) => 0,
        };
        let newest = self
            .objects
            .iter()
            .filter(|(id, _)| chain_end > 0 && id.max_txid == chain_end)
            .min_by_key(|(id, _)| id.level)
            .map(|(_, o)| o.header);
        RemoteTip {
            max_txid: max,
            chain_end,
            newest,
        }
    }

    /// TXIDs in `1..=upto` that no level-0 file covers.
    pub fn level0_holes(&self, upto: u64) -> Vec<u64> {
        let mut covered = 0u64;
        let mut holes = Vec::new();
        for f in self.level0() {
            if f.min_txid > covered + 1 {
                holes.extend((covered + 1..f.min_txid).take_while(|&t| t <= upto));
            }
            covered = covered.max(f.max_txid);
        }
        holes.extend((covered + 1)..=upto);
        holes
    }

    /// Whether a level-0 file covers `txid` strictly inside a multi-TXID range (a full
    /// file that replaced failed ones).
    pub fn superseded(&self, txid: u64) -> bool {
        self.objects
            .keys()
            .any(|f| f.level == 0 && f.min_txid < txid && txid <= f.max_txid)
    }

    /// Restores `target`: returns the restored TXID and the database image.
    pub fn restore(&self, target: Target) -> Result<(u64, Vec<u8>), String> {
        let files: Vec<RemoteFile> = self
            .objects
            .iter()
            .map(|(id, o)| RemoteFile {
                id: *id,
                size: o.bytes.len() as u64,
                timestamp_ms: Some(o.header.timestamp_ms),
            })
            .collect();
        let plan = restore_plan::plan(&files, target).map_err(|e| e.to_string())?;
        let ps = PS as usize;
        let mut image: Vec<u8> = Vec::new();
        let mut commit = 0u32;
        for f in &plan.files {
            let o = &self.objects[&f.id];
            for (pgno, data) in &o.pages {
                let start = (*pgno as usize - 1) * ps;
                if image.len() < start + ps {
                    image.resize(start + ps, 0);
                }
                image[start..start + ps].copy_from_slice(data);
            }
            commit = o.header.commit;
        }
        image.resize(commit as usize * ps, 0);
        Ok((plan.txid, image))
    }
}

/// First differing page of two images, for readable failures.
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<String> {
    let ps = PS as usize;
    if a == b {
        return None;
    }
    if a.len() != b.len() {
        return Some(format!("{} pages vs {} pages", a.len() / ps, b.len() / ps));
    }
    let page = a
        .chunks(ps)
        .zip(b.chunks(ps))
        .position(|(x, y)| x != y)
        .unwrap_or(0);
    Some(format!("page {} differs", page + 1))
}
