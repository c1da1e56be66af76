//! Results of work done off a database's task (uploads, content checks), handed back to
//! it. A mutex-guarded `Vec` and a `Notify` instead of a channel: an unbounded tokio
//! channel allocates a 32-slot block per database up front (~2.6 kB each, 2.6 MB at
//! 1 000 idle databases), where an empty `Vec` allocates nothing.

use std::sync::Mutex;

use tokio::sync::Notify;
use walvault_engine::keys::FileId;
use walvault_engine::replicator::{CheckResult, UploadResult};

pub enum Completion {
    Upload {
        file: FileId,
        attempt: u32,
        result: UploadResult,
    },
    Check {
        file: FileId,
        attempt: u32,
        result: CheckResult,
    },
}

#[derive(Default)]
pub struct CompletionQueue {
    items: Mutex<Vec<Completion>>,
    ready: Notify,
}

impl CompletionQueue {
    pub fn send(&self, c: Completion) {
        self.items.lock().unwrap_or_else(|e| e.into_inner()).push(c);
        self.ready.notify_one();
    }

    /// Waits for at least one completion and returns all that are there, oldest first.
    pub async fn next_batch(&self) -> Vec<Completion> {
        loop {
            let batch = std::mem::take(&mut *self.items.lock().unwrap_or_else(|e| e.into_inner()));
            if !batch.is_empty() {
                return batch;
            }
            // A `send` since the check left a permit: this returns at once.
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(n: u64) -> Completion {
        Completion::Upload {
            file: FileId {
                level: 0,
                min_txid: n,
                max_txid: n,
            },
            attempt: 1,
            result: UploadResult::Stored,
        }
    }

    fn txids(b: &[Completion]) -> Vec<u64> {
        b.iter()
            .map(|c| match c {
                Completion::Upload { file, .. } | Completion::Check { file, .. } => file.max_txid,
            })
            .collect()
    }

    #[tokio::test]
    async fn delivers_in_order_and_wakes_a_waiting_receiver() {
        let q = std::sync::Arc::new(CompletionQueue::default());
        q.send(upload(1));
        q.send(upload(2));
        assert_eq!(txids(&q.next_batch().await), [1, 2]);
        let sender = std::sync::Arc::clone(&q);
        let t = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            sender.send(upload(3));
        });
        assert_eq!(txids(&q.next_batch().await), [3]);
        t.await.unwrap();
    }
}
