use super::*;
use std::sync::atomic::AtomicUsize;

#[tokio::test]
async fn a_stampede_of_misses_makes_one_load() {
    let hub = CacheHub::local();
    let cache = hub.cache("stampede");
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks = (0..1000).map(|_| {
        let cache = cache.clone();
        let loads = loads.clone();
        tokio::spawn(async move {
            cache
                .get_or_load("k", || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(Bytes::from_static(b"v"))
                })
                .await
                .unwrap()
        })
    });
    for value in futures::future::join_all(tasks).await {
        assert_eq!(value.unwrap(), Bytes::from_static(b"v"));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn invalidation_makes_the_next_read_load_again() {
    let hub = CacheHub::local();
    let cache = hub.cache("inv");
    let v1 = cache
        .get_or_load("k", || async { Ok(Bytes::from_static(b"1")) })
        .await
        .unwrap();
    let cached = cache
        .get_or_load("k", || async { Ok(Bytes::from_static(b"x")) })
        .await
        .unwrap();
    assert_eq!((v1.as_ref(), cached.as_ref()), (&b"1"[..], &b"1"[..]));
    cache.invalidate("k").await;
    let v2 = cache
        .get_or_load("k", || async { Ok(Bytes::from_static(b"2")) })
        .await
        .unwrap();
    assert_eq!(v2.as_ref(), b"2");
}

#[tokio::test]
async fn errors_are_not_cached() {
    let hub = CacheHub::local();
    let cache = hub.cache("err");
    let failed = cache
        .get_or_load("k", || async { Err(Error::not_found("course k")) })
        .await;
    assert!(matches!(failed, Err(Error::NotFound { .. })));
    let ok = cache
        .get_or_load("k", || async { Ok(Bytes::from_static(b"ok")) })
        .await
        .unwrap();
    assert_eq!(ok.as_ref(), b"ok");
}
