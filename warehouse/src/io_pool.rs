//! Local file IO on a small dedicated pool: [`PooledStore`] wraps the local-disk object store of
//! every Delta table and of the lake ([`register`]), so their blocking reads and writes run on
//! at most [`IO_THREADS`] threads of one runtime instead of the caller's blocking pool.
//!
//! Why (issue 17, measured on the demo's SQL project, 2 cores): `object_store`'s
//! `LocalFileSystem` runs every read in `spawn_blocking`, and tokio's blocking pool grows to
//! 512 threads. A build reached 55 threads; each thread that allocated read buffers kept its
//! own mimalloc heap, and a buffer freed by a query thread goes back to that heap, which an
//! idle thread never collects. On this pool the build has 14 threads and its peak resident
//! memory fell from a median of 538 to 461 MiB (10 alternating runs each), at the same speed
//! (median 2.81 against 2.90 s).
//!
//! The cap cannot go on the main runtime's blocking pool: Delta's kernel blocks a blocking
//! thread on futures that need another one (a snapshot load waits for its own listing), and
//! two concurrent loads deadlocked a pool of two. The IO pool's tasks wait on nothing but
//! the disk, so capping it is safe (`a_full_blocking_pool_still_reads` checks the escape).

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use tokio::runtime::{Handle, Runtime};

use crate::error::{Result, WarehouseError};

/// Blocking threads of the IO pool: the most local reads and writes in flight at once.
/// Measured on 2 cores (issue 17, demo's SQL project, one run per cap set on the whole
/// blocking pool before this pool existed): 4 threads 450 MB peak / 2.32 s, 8 → 489 MB /
/// 2.29 s, 16 → 501 MB / 2.34 s, 512 (tokio's default) → 579 MB / 2.48 s.
pub const IO_THREADS: usize = 4;

/// Whole objects up to this many bytes are read on the IO pool in one piece; a larger one is
/// left to stream from its file where it is consumed (as `LocalFileSystem` does).
const READ_WHOLE_BYTES: u64 = 64 << 20;

/// The IO runtime's handle: one worker thread (the stores' own futures do little), at most
/// [`IO_THREADS`] blocking threads. Built on first use, kept for the process.
fn io_handle() -> std::io::Result<Handle> {
    // Built once, inside `get_or_init`: a runtime built by a losing racer would be dropped
    // here, in an async context, which panics.
    static RUNTIME: OnceLock<Result<Runtime, (std::io::ErrorKind, String)>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .max_blocking_threads(IO_THREADS)
                .thread_name("rainbow-io")
                .enable_all()
                .build()
                .map_err(|e| (e.kind(), e.to_string()))
        })
        .as_ref()
        .map(|runtime| runtime.handle().clone())
        .map_err(|(kind, message)| std::io::Error::new(*kind, message.clone()))
}

/// An object store whose operations run on the IO pool. Listings stream from the caller's
/// context (they are rare and small); everything that moves file contents runs on the pool.
#[derive(Debug, Clone)]
pub struct PooledStore {
    inner: Arc<dyn ObjectStore>,
    handle: Handle,
}

impl PooledStore {
    /// Wraps `inner` (a local-disk store); fails only if the IO runtime cannot be started.
    pub fn new(inner: Arc<dyn ObjectStore>) -> std::io::Result<Self> {
        Ok(Self {
            inner,
            handle: io_handle()?,
        })
    }

    /// Runs `f` (an operation of the inner store) on the IO pool.
    async fn on_pool<T, F>(&self, f: F) -> object_store::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(
                Arc<dyn ObjectStore>,
            ) -> futures::future::BoxFuture<'static, object_store::Result<T>>
            + Send
            + 'static,
    {
        let inner = self.inner.clone();
        joined(self.handle.spawn(async move { f(inner).await }).await)
    }
}

/// The result of a task run on the IO pool; its panic goes on in the caller.
fn joined<T>(
    result: Result<object_store::Result<T>, tokio::task::JoinError>,
) -> object_store::Result<T> {
    match result {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Err(object_store::Error::JoinError { source: e }),
        },
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
        self.on_pool(move |s| async move { s.put_opts(&location, payload, opts).await }.boxed())
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let location = location.clone();
        let inner = self
            .on_pool(move |s| async move { s.put_multipart_opts(&location, opts).await }.boxed())
            .await?;
        Ok(Box::new(PooledUpload {
            inner,
            handle: self.handle.clone(),
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
                let result = s.get_opts(&location, options).await?;
                let length = result.range.end - result.range.start;
                if !matches!(result.payload, GetResultPayload::File(..))
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
            .boxed()
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
        self.on_pool(move |s| async move { s.get_ranges(&location, &ranges).await }.boxed())
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
        self.on_pool(move |s| async move { s.list_with_delimiter(prefix.as_ref()).await }.boxed())
            .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let (from, to) = (from.clone(), to.clone());
        self.on_pool(move |s| async move { s.copy_opts(&from, &to, options).await }.boxed())
            .await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let (from, to) = (from.clone(), to.clone());
        self.on_pool(move |s| async move { s.rename_opts(&from, &to, options).await }.boxed())
            .await
    }
}

/// A multipart upload whose parts are written on the IO pool.
#[derive(Debug)]
struct PooledUpload {
    inner: Box<dyn MultipartUpload>,
    handle: Handle,
}

#[async_trait]
impl MultipartUpload for PooledUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.handle.spawn(self.inner.put_part(data));
        async move { joined(part.await) }.boxed()
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
        config: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<(deltalake::logstore::ObjectStoreRef, Path)> {
        let (store, path) = object_store::parse_url_opts(url, config.raw())?;
        let store = PooledStore::new(Arc::from(store)).map_err(|e| {
            deltalake::DeltaTableError::Generic(format!("cannot start the IO pool: {e}"))
        })?;
        Ok((Arc::new(store), path))
    }
}

/// Puts local files on the IO pool: in `runtime` (the lake's external tables, read by
/// DataFusion) and, once per process, for every Delta table opened by a `file://` URL
/// (delta-rs keeps one registry of object store factories per process).
///
/// Errors: the IO pool's runtime cannot be started ([`WarehouseError::IoPool`]).
pub(crate) fn register(runtime: &RuntimeEnv) -> Result<()> {
    let file = url::Url::parse("file:///").map_err(|e| WarehouseError::Unsupported {
        context: "registering the local object store".into(),
        message: e.to_string(),
    })?;
    let local = PooledStore::new(Arc::new(object_store::local::LocalFileSystem::new()))
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
    use object_store::local::LocalFileSystem;

    fn stores() -> (tempfile::TempDir, Arc<dyn ObjectStore>, PooledStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let local: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
        let pooled = PooledStore::new(local.clone()).expect("IO pool");
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

    /// Delta's kernel blocks a blocking thread on a future that reads a file. With the read on
    /// the caller's pool and that pool full, the read never starts; on the IO pool it does.
    #[test]
    fn a_full_blocking_pool_still_reads() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (_dir, _local, pooled) = stores();
        let path = Path::from("log/00000.json");
        runtime
            .block_on(pooled.put(&path, b"{}".to_vec().into()))
            .expect("put");
        let handle = runtime.handle().clone();
        let read = runtime.block_on(async move {
            let blocking = tokio::task::spawn_blocking(move || {
                handle.block_on(async { pooled.get(&path).await?.bytes().await })
            });
            // A deadlock detector, not a timing: the read takes microseconds.
            tokio::time::timeout(std::time::Duration::from_secs(30), blocking).await
        });
        let bytes = read
            .expect("the read finished")
            .expect("the task joined")
            .expect("the read succeeded");
        assert_eq!(bytes.as_ref(), b"{}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_reads_use_at_most_the_pools_threads() {
        let (_dir, _local, pooled) = stores();
        let path = Path::from("f");
        pooled
            .put(&path, vec![7u8; 1 << 20].into())
            .await
            .expect("put");
        let reads = (0..256u64).map(|i| {
            let pooled = pooled.clone();
            let path = path.clone();
            tokio::spawn(async move { pooled.get_range(&path, i * 4096..(i + 1) * 4096).await })
        });
        for read in futures::future::join_all(reads).await {
            assert_eq!(read.expect("joined").expect("read").len(), 4096);
        }
        let pool_threads = std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() == "rainbow-io")
            .count();
        assert!(pool_threads >= 1, "the reads ran on the IO pool");
        assert!(
            pool_threads <= IO_THREADS + 1,
            "{pool_threads} IO threads: at most {IO_THREADS} blocking and one worker"
        );
    }
}
