//! Local file IO on a small dedicated pool: [`PooledStore`] wraps the local-disk object store of
//! every Delta table and of the lake ([`register`]), so their blocking reads and writes run on
//! [`IO_THREADS`] threads instead of the caller's blocking pool: `get_ranges` (Parquet column
//! chunks), reads up to 8 MiB, puts, multipart parts, copies, renames and directory listings by
//! delimiter. Left where the caller runs them, as `LocalFileSystem` does: recursive listings
//! (streams), deletes, a multipart upload's completion and reads larger than 8 MiB.
//!
//! Why (issue 17, measured on the demo's SQL project, 2 cores): `object_store`'s
//! `LocalFileSystem` runs every read in `spawn_blocking`, and tokio's blocking pool grows to
//! 512 threads. A build reached 55 threads; each thread that allocated read buffers kept its
//! own mimalloc heap, and a buffer freed by a query thread goes back to that heap, which an
//! idle thread never collects. With this pool the median peak resident memory fell from
//! 543 to 454 MiB and from 535 to 462 MiB (two series of 10 alternating runs) at the same
//! speed (3.00 vs 2.94 s, 2.95 vs 2.95 s).
//!
//! The cap cannot go on the main runtime's blocking pool: Delta's kernel blocks a blocking
//! thread on futures that need another one (a snapshot load waits for its own listing), and
//! two concurrent loads deadlocked a pool of two. The pool's jobs run outside any tokio
//! runtime, where `LocalFileSystem` makes its blocking calls inline: a job waits on nothing but
//! the disk, so capping the pool is safe (`a_full_blocking_pool_still_reads` checks the escape).

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

use crate::error::{Result, WarehouseError};

/// Blocking threads of the IO pool: the most local reads and writes in flight at once.
/// Measured on 2 cores (issue 17, demo's SQL project, one run per cap set on the whole
/// blocking pool before this pool existed): 4 threads 450 MB peak / 2.32 s, 8 → 489 MB /
/// 2.29 s, 16 → 501 MB / 2.34 s, 512 (tokio's default) → 579 MB / 2.48 s.
pub const IO_THREADS: usize = 4;

/// Reads (whole objects or ranges) up to this many bytes are done on the IO pool in one piece;
/// a larger one is left to stream from its file where it is consumed (as `LocalFileSystem`
/// does), so a streaming reader does not hold it all at once. Parquet column chunks come
/// through `get_ranges`, which always runs on the pool.
const READ_WHOLE_BYTES: u64 = 8 << 20;

/// A request to the IO pool: runs on one of its threads.
type Job = Box<dyn FnOnce() + Send>;

/// The IO pool's queue: [`IO_THREADS`] plain threads (named `rainbow-io`) taking jobs from one
/// channel. Plain threads, not a tokio runtime's: outside a runtime `LocalFileSystem` does its
/// blocking call inline, so a read is one hand-off to a pool thread and one back (a runtime
/// would add a hop through its worker). Started on first use, kept for the process; a failure
/// to start a thread is kept too (every later store reports it).
fn io_queue() -> std::io::Result<flume::Sender<Job>> {
    // Built once, inside `get_or_init`, so concurrent first uses share one pool.
    static QUEUE: OnceLock<Result<flume::Sender<Job>, (std::io::ErrorKind, String)>> =
        OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (sender, receiver) = flume::unbounded::<Job>();
            for _ in 0..IO_THREADS {
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name("rainbow-io".into())
                    .spawn(move || {
                        for job in receiver.iter() {
                            job();
                        }
                    })
                    .map_err(|e| (e.kind(), e.to_string()))?;
            }
            Ok(sender)
        })
        .clone()
        .map_err(|(kind, message)| std::io::Error::new(kind, message))
}

/// A local-disk object store whose operations run on the IO pool. Listings stream from the
/// caller's context (they are rare and small); everything that moves file contents runs on
/// the pool.
#[derive(Debug, Clone)]
pub struct PooledStore {
    inner: Arc<LocalFileSystem>,
    queue: flume::Sender<Job>,
}

impl PooledStore {
    /// Wraps `inner`; fails only if the IO pool's threads cannot be started.
    pub fn new(inner: LocalFileSystem) -> std::io::Result<Self> {
        Ok(Self {
            inner: Arc::new(inner),
            queue: io_queue()?,
        })
    }

    /// Runs `f` (an operation of the inner store) on the IO pool.
    async fn on_pool<T, F, Fut>(&self, f: F) -> object_store::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<LocalFileSystem>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let inner = self.inner.clone();
        run(&self.queue, move || f(inner)).await
    }
}

/// Runs the future `make()` gives to completion on a pool thread. Outside a tokio runtime
/// `LocalFileSystem`'s futures complete without waiting on anything but the disk, which is
/// what makes a bounded pool safe.
async fn run<T, F, Fut>(queue: &flume::Sender<Job>, make: F) -> object_store::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = object_store::Result<T>>,
{
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // A caller that stopped waiting (its query was cancelled) needs no read.
        if done.is_closed() {
            return;
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            futures::executor::block_on(make())
        }))
        .unwrap_or_else(|panic| {
            // As `LocalFileSystem` on a runtime gives a panicked blocking task: an error.
            let message = panic
                .downcast_ref::<&str>()
                .map(|m| (*m).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            Err(pool_error(&format!("panicked in a request: {message}")))
        });
        let _ = done.send(outcome);
    });
    queue.send(job).map_err(|_| pool_error("has stopped"))?;
    result
        .await
        .unwrap_or_else(|_| Err(pool_error("dropped a request")))
}

/// An error of the pool itself (its threads gone), as an object store error.
fn pool_error(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "IO pool",
        source: format!("the IO pool {what}").into(),
    }
}

impl std::fmt::Display for PooledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (IO pool)", self.inner)
    }
}

#[async_trait]
impl ObjectStore for PooledStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let location = location.clone();
        self.on_pool(move |s| async move { s.put_opts(&location, payload, opts).await })
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let location = location.clone();
        let inner = self
            .on_pool(move |s| async move { s.put_multipart_opts(&location, opts).await })
            .await?;
        Ok(Box::new(PooledUpload {
            inner,
            queue: self.queue.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let location = location.clone();
        self.on_pool(move |s| {
            async move {
                // `head()` asks for the metadata only (`LocalFileSystem` still opens the file).
                let head = options.head;
                let result = s.get_opts(&location, options).await?;
                let length = result.range.end - result.range.start;
                if head
                    || !matches!(result.payload, GetResultPayload::File(..))
                    || length > READ_WHOLE_BYTES
                {
                    return Ok(result);
                }
                // Read here, on the pool, rather than wherever the caller consumes the file.
                let meta = result.meta.clone();
                let range = result.range.clone();
                let attributes = result.attributes.clone();
                let bytes = result.bytes().await?;
                Ok(GetResult {
                    payload: GetResultPayload::Stream(
                        futures::stream::once(async { Ok(bytes) }).boxed(),
                    ),
                    meta,
                    range,
                    attributes,
                })
            }
        })
        .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let location = location.clone();
        let ranges = ranges.to_vec();
        self.on_pool(move |s| async move { s.get_ranges(&location, &ranges).await })
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = prefix.cloned();
        self.on_pool(move |s| async move { s.list_with_delimiter(prefix.as_ref()).await })
            .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let (from, to) = (from.clone(), to.clone());
        self.on_pool(move |s| async move { s.copy_opts(&from, &to, options).await })
            .await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let (from, to) = (from.clone(), to.clone());
        self.on_pool(move |s| async move { s.rename_opts(&from, &to, options).await })
            .await
    }
}

/// A multipart upload whose parts are written on the IO pool.
#[derive(Debug)]
struct PooledUpload {
    inner: Box<dyn MultipartUpload>,
    queue: flume::Sender<Job>,
}

#[async_trait]
impl MultipartUpload for PooledUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let queue = self.queue.clone();
        async move { run(&queue, move || part).await }.boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

/// Delta Lake's object store for `file://` tables: `LocalFileSystem` (as delta-rs's default
/// factory builds it) on the IO pool. Registered once per process by [`register`].
#[derive(Debug)]
struct PooledLocalFactory;

impl deltalake::logstore::ObjectStoreFactory for PooledLocalFactory {
    fn parse_url_opts(
        &self,
        url: &url::Url,
        _config: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<(deltalake::logstore::ObjectStoreRef, Path)> {
        // Local files take no options: what `object_store::parse_url_opts` builds for them.
        let (scheme, path) = object_store::ObjectStoreScheme::parse(url)
            .map_err(|e| deltalake::DeltaTableError::InvalidTableLocation(format!("{url}: {e}")))?;
        if scheme != object_store::ObjectStoreScheme::Local {
            return Err(deltalake::DeltaTableError::InvalidTableLocation(
                url.to_string(),
            ));
        }
        let store = PooledStore::new(LocalFileSystem::new()).map_err(|e| {
            deltalake::DeltaTableError::Generic(format!("cannot start the IO pool: {e}"))
        })?;
        Ok((Arc::new(store), path))
    }
}

/// Puts local files on the IO pool: in `runtime` (the lake's external tables, read by
/// DataFusion) and, once per process, for every Delta table opened by a `file://` URL
/// (delta-rs keeps one registry of object store factories per process).
///
/// Errors: the IO pool's threads cannot be started ([`WarehouseError::IoPool`]).
pub(crate) fn register(runtime: &RuntimeEnv) -> Result<()> {
    let file = url::Url::parse("file:///").map_err(|e| WarehouseError::Unsupported {
        context: "registering the local object store".into(),
        message: e.to_string(),
    })?;
    let local = PooledStore::new(LocalFileSystem::new())
        .map_err(|source| WarehouseError::IoPool { source })?;
    runtime.register_object_store(&file, Arc::new(local));
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        deltalake::logstore::object_store_factories().insert(file, Arc::new(PooledLocalFactory));
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt as _;

    fn stores() -> (tempfile::TempDir, Arc<dyn ObjectStore>, PooledStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let local: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
        let pooled =
            PooledStore::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"))
                .expect("IO pool");
        (dir, local, pooled)
    }

    #[tokio::test]
    async fn every_operation_gives_what_the_local_store_gives() {
        let (_dir, local, pooled) = stores();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let path = Path::from("t/part-0.parquet");
        pooled.put(&path, data.clone().into()).await.expect("put");
        assert_eq!(
            local
                .get(&path)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes"),
            data
        );
        // Whole, ranged and multi-range reads, and the object's metadata with them.
        let whole = pooled.get(&path).await.expect("get");
        assert_eq!(whole.meta.size, 100_000);
        assert_eq!(whole.range, 0..100_000);
        assert_eq!(whole.bytes().await.expect("bytes"), data);
        let ranged = pooled.get_range(&path, 10..2_000).await.expect("range");
        assert_eq!(ranged, data[10..2_000]);
        let ranges = pooled
            .get_ranges(&path, &[0..4, 50_000..50_100, 99_990..100_000])
            .await
            .expect("ranges");
        assert_eq!(ranges[1], data[50_000..50_100]);
        assert_eq!(ranges[2], data[99_990..100_000]);
        let missing = pooled
            .get(&Path::from("t/none"))
            .await
            .expect_err("missing");
        assert!(
            matches!(missing, object_store::Error::NotFound { .. }),
            "{missing}"
        );
        // A multipart upload, its parts written on the pool.
        let big = Path::from("t/part-1.parquet");
        let mut upload = pooled.put_multipart(&big).await.expect("multipart");
        upload
            .put_part(data[..60_000].to_vec().into())
            .await
            .expect("part");
        upload
            .put_part(data[60_000..].to_vec().into())
            .await
            .expect("part");
        upload.complete().await.expect("complete");
        assert_eq!(
            local
                .get(&big)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes"),
            data
        );
        // Copy, rename, listings, deletes.
        pooled
            .copy(&big, &Path::from("u/copy"))
            .await
            .expect("copy");
        pooled
            .rename(&Path::from("u/copy"), &Path::from("u/moved"))
            .await
            .expect("rename");
        let listed = pooled.list_with_delimiter(None).await.expect("list");
        let prefixes: Vec<_> = listed
            .common_prefixes
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(prefixes, ["t", "u"]);
        let mut under_u: Vec<_> = pooled
            .list(Some(&Path::from("u")))
            .map(|m| m.expect("meta").location.to_string())
            .collect()
            .await;
        under_u.sort();
        assert_eq!(under_u, ["u/moved"]);
        pooled.delete(&Path::from("u/moved")).await.expect("delete");
        assert!(local.head(&Path::from("u/moved")).await.is_err());
    }

    #[tokio::test]
    async fn small_objects_arrive_read_and_large_ones_as_their_file() {
        let (_dir, _local, pooled) = stores();
        let small = Path::from("small");
        pooled
            .put(&small, vec![1u8; 1000].into())
            .await
            .expect("put");
        let got = pooled.get(&small).await.expect("get");
        assert!(
            matches!(got.payload, GetResultPayload::Stream(_)),
            "read on the pool"
        );
        let large = Path::from("large");
        let size = usize::try_from(READ_WHOLE_BYTES).expect("fits") + 1;
        pooled
            .put(&large, vec![2u8; size].into())
            .await
            .expect("put");
        let got = pooled.get(&large).await.expect("get");
        assert!(
            matches!(got.payload, GetResultPayload::File(..)),
            "left to stream"
        );
        let bytes = got.bytes().await.expect("bytes");
        assert_eq!(bytes.len(), size);
        // A range of the large object is small again: read on the pool.
        let got = pooled
            .get_opts(
                &large,
                GetOptions {
                    range: Some((0..10).into()),
                    ..Default::default()
                },
            )
            .await
            .expect("get range");
        assert!(matches!(got.payload, GetResultPayload::Stream(_)));
        assert_eq!(got.bytes().await.expect("bytes").as_ref(), [2u8; 10]);
    }

    #[tokio::test]
    async fn heads_and_conditional_writes_keep_their_meaning() {
        let (_dir, _local, pooled) = stores();
        let path = Path::from("_delta_log/00000000000000000000.json");
        pooled.put(&path, b"{}".to_vec().into()).await.expect("put");
        // `head()` reads no contents.
        let meta = pooled.head(&path).await.expect("head");
        assert_eq!(meta.size, 2);
        let head = pooled
            .get_opts(
                &path,
                GetOptions {
                    head: true,
                    ..Default::default()
                },
            )
            .await
            .expect("head get");
        assert!(
            matches!(head.payload, GetResultPayload::File(..)),
            "not read"
        );
        // A Delta commit is a create-if-absent put: the second writer must lose.
        let again = pooled
            .put_opts(
                &path,
                b"[]".to_vec().into(),
                object_store::PutMode::Create.into(),
            )
            .await
            .expect_err("the version exists");
        assert!(
            matches!(again, object_store::Error::AlreadyExists { .. }),
            "{again}"
        );
        let other = Path::from("other");
        pooled.put(&other, b"x".to_vec().into()).await.expect("put");
        let refused = [
            pooled.copy_if_not_exists(&other, &path).await,
            pooled.rename_if_not_exists(&other, &path).await,
        ];
        for result in refused {
            let e = result.expect_err("the target exists");
            assert!(
                matches!(e, object_store::Error::AlreadyExists { .. }),
                "{e}"
            );
        }
        let kept = pooled
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(kept.as_ref(), b"{}");
    }

    /// Delta's kernel blocks a blocking thread on a future that reads or writes a file. With
    /// the IO on the caller's blocking pool and that pool full, it never starts; on the IO
    /// pool it does.
    #[test]
    fn a_full_blocking_pool_still_reads_and_writes() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (_dir, _local, pooled) = stores();
        let handle = runtime.handle().clone();
        let outcome = runtime.block_on(async move {
            let blocking = tokio::task::spawn_blocking(move || {
                handle.block_on(async {
                    let path = Path::from("log/00000.json");
                    pooled.put(&path, b"{}".to_vec().into()).await?;
                    let whole = pooled.get(&path).await?.bytes().await?;
                    let ranges = pooled.get_ranges(&path, &[0..1, 1..2]).await?;
                    Ok::<_, object_store::Error>((whole, ranges))
                })
            });
            // A deadlock detector, not a timing: the IO takes microseconds.
            tokio::time::timeout(std::time::Duration::from_secs(30), blocking).await
        });
        // A stuck blocking thread would make dropping the runtime wait for ever.
        runtime.shutdown_background();
        let (whole, ranges) = outcome
            .expect("the IO finished")
            .expect("the task joined")
            .expect("the IO succeeded");
        assert_eq!(whole.as_ref(), b"{}");
        assert_eq!(ranges, [&b"{"[..], &b"}"[..]]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn many_concurrent_reads_start_no_blocking_threads() {
        const NAME: &str = "io-pool-test";
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(NAME)
            .enable_all()
            .build()
            .expect("runtime");
        let (_dir, _local, pooled) = stores();
        let named = || {
            std::fs::read_dir("/proc/self/task")
                .expect("tasks")
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim_end() == NAME)
                .count()
        };
        runtime.block_on(async {
            let path = Path::from("f");
            pooled
                .put(&path, vec![7u8; 1 << 20].into())
                .await
                .expect("put");
            let reads = (0..256u64).map(|i| {
                let pooled = pooled.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    let range = i * 4096..(i + 1) * 4096;
                    let one = pooled.get_range(&path, range.clone()).await?;
                    let many = pooled.get_ranges(&path, &[range]).await?;
                    Ok::<_, object_store::Error>((one, many))
                })
            });
            for read in futures::future::join_all(reads).await {
                let (one, many) = read.expect("joined").expect("read");
                assert_eq!((one.len(), many[0].len()), (4096, 4096));
            }
        });
        // The runtime's workers only: `LocalFileSystem` alone starts a blocking thread (named
        // as the runtime's) per concurrent read.
        assert_eq!(named(), 2, "threads named {NAME}");
        runtime.shutdown_background();
    }
}
