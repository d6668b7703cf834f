//! [`Coalescer`]: requests that arrive while the database is busy share one statement.
//!
//! Callers queue an item and wait for its answer; a few worker tasks each take whatever is
//! queued (up to a maximum) and answer all of it with one piece of database work. There is no
//! timer: a free worker takes the queue at once, so a lone request waits for nothing, and
//! under load the requests that arrive while every worker is busy form the next group —
//! the size of a group follows the load (the DataLoader pattern, or a database's group commit).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::sync::{Mutex, mpsc, oneshot};

/// The work for one group: an answer per item, in the items' order.
pub type GroupWork<T, R> =
    Arc<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = Vec<R>> + Send>> + Send + Sync>;

type Queue<T, R> = mpsc::UnboundedSender<(T, oneshot::Sender<R>)>;
type SharedReceiver<T, R> = Arc<Mutex<mpsc::UnboundedReceiver<(T, oneshot::Sender<R>)>>>;

/// Coalesces items of type `T` answered with `R`.
pub struct Coalescer<T, R> {
    work: GroupWork<T, R>,
    workers: usize,
    max_group: usize,
    queue: Arc<OnceLock<Queue<T, R>>>,
}

impl<T, R> Clone for Coalescer<T, R> {
    fn clone(&self) -> Self {
        Coalescer {
            work: Arc::clone(&self.work),
            workers: self.workers,
            max_group: self.max_group,
            queue: Arc::clone(&self.queue),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// At most `workers` groups in flight, each of at most `max_group` items.
    pub fn new(workers: usize, max_group: usize, work: GroupWork<T, R>) -> Self {
        Coalescer {
            work,
            workers: workers.max(1),
            max_group: max_group.max(1),
            queue: Arc::default(),
        }
    }

    /// Queues `item` and waits for its answer; `None` when no worker can answer (the runtime
    /// is shutting down).
    pub async fn submit(&self, item: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        // Workers start on first use, inside the runtime serving requests.
        let queue = self.queue.get_or_init(|| self.start());
        queue.send((item, reply)).ok()?;
        answer.await.ok()
    }

    fn start(&self) -> Queue<T, R> {
        let (send, receive) = mpsc::unbounded_channel();
        let receive = Arc::new(Mutex::new(receive));
        for _ in 0..self.workers {
            tokio::spawn(run_groups(
                Arc::clone(&self.work),
                Arc::clone(&receive),
                self.max_group,
            ));
        }
        send
    }
}

/// One worker: takes everything queued, runs it as one group, answers; until every sender
/// is gone.
async fn run_groups<T, R>(work: GroupWork<T, R>, queue: SharedReceiver<T, R>, max_group: usize) {
    let mut taken = Vec::with_capacity(max_group);
    loop {
        {
            let mut queue = queue.lock().await;
            if queue.recv_many(&mut taken, max_group).await == 0 {
                return;
            }
        }
        // Requests whose client went away need no answer (nor work).
        let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) = taken
            .drain(..)
            .filter(|(_, reply)| !reply.is_closed())
            .unzip();
        if items.is_empty() {
            continue;
        }
        let answers = work(items).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_item_gets_its_own_answer_and_groups_form_under_load() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let work: GroupWork<u32, u32> = Arc::new(move |items: Vec<u32>| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                seen.lock().expect("lock").push(items.len());
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                items.iter().map(|i| i * 10).collect()
            })
        });
        let coalescer = Coalescer::new(1, 8, work);
        let mut handles = Vec::new();
        for i in 0..50u32 {
            let c = coalescer.clone();
            handles.push(tokio::spawn(async move { (i, c.submit(i).await) }));
        }
        for h in handles {
            let (i, answer) = h.await.expect("join");
            assert_eq!(answer, Some(i * 10));
        }
        let sizes = sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 50);
        assert!(sizes.iter().all(|&n| n <= 8), "{sizes:?}");
        assert!(
            sizes.len() < 50,
            "some requests shared a statement: {sizes:?}"
        );
    }
}
