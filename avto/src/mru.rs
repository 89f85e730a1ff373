//! A tiny most-recently-used cache: the last `N` (key, value) pairs, newest first, found by a
//! linear scan. For per-thread caches of values that are a pure function of a small key and cost
//! more to make than to clone: the keyed HMAC states of `protocol::sign` and parsed URLs
//! ([`parse_url`]: webhook targets, and the request URLs of the worker SDK and the typed client).
//! Bounded whatever the keys, and cheap for the handful of keys a deployment uses: a lookup of
//! the hottest key compares one entry.

use std::borrow::Borrow;

/// The last `N` values made, by key, newest first (see the module docs).
#[derive(Debug)]
pub(crate) struct Mru<K, V, const N: usize> {
    entries: Vec<(K, V)>,
}

impl<K, V, const N: usize> Mru<K, V, N> {
    /// An empty cache (const, for `thread_local!`).
    pub(crate) const fn new() -> Self {
        Mru { entries: Vec::new() }
    }

    /// The value for `key`, made by `make` if the cache does not hold it (then kept, the oldest
    /// entry dropped past `N`; an `Err` keeps nothing). The entry found or made becomes the newest.
    pub(crate) fn get_or_try_insert_with<Q, E>(&mut self, key: &Q, make: impl FnOnce() -> Result<V, E>) -> Result<&V, E>
    where
        Q: PartialEq + ?Sized,
        K: Borrow<Q> + for<'q> From<&'q Q>,
    {
        match self.entries.iter().position(|(k, _)| k.borrow() == key) {
            Some(i) => self.entries[..=i].rotate_right(1),
            None => {
                let value = make()?;
                self.entries.truncate(N.saturating_sub(1));
                self.entries.insert(0, (K::from(key), value));
            }
        }
        Ok(&self.entries[0].1)
    }

    /// [`Mru::get_or_try_insert_with`] for a `make` that cannot fail.
    pub(crate) fn get_or_insert_with<Q>(&mut self, key: &Q, make: impl FnOnce() -> V) -> &V
    where
        Q: PartialEq + ?Sized,
        K: Borrow<Q> + for<'q> From<&'q Q>,
    {
        match self.get_or_try_insert_with(key, || Ok::<V, std::convert::Infallible>(make())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// How many entries the cache holds (at most `N`).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// How many distinct URLs each thread's parse cache holds.
#[cfg(any(feature = "server", feature = "worker", feature = "client"))]
const URLS_PER_THREAD: usize = 8;

#[cfg(any(feature = "server", feature = "worker", feature = "client"))]
thread_local! {
    /// The URLs this thread parsed last, newest first: a process sends most requests to a few
    /// URLs (a worker's poll and result endpoints, a deployment's webhook receivers).
    static URLS: std::cell::RefCell<Mru<Box<str>, url::Url, URLS_PER_THREAD>> = const { std::cell::RefCell::new(Mru::new()) };
}

/// `url::Url::parse(raw)` from a small per-thread cache of the last URLs that parsed (parsing is
/// a pure function of the text, so a cached URL is the one a new parse would give; a clone is a
/// copy of its text). Bounded: at most [`URLS_PER_THREAD`] URLs per thread, whatever the input.
#[cfg(any(feature = "server", feature = "worker", feature = "client"))]
pub(crate) fn parse_url(raw: &str) -> Result<url::Url, url::ParseError> {
    URLS.with_borrow_mut(|cache| cache.get_or_try_insert_with(raw, || url::Url::parse(raw)).cloned())
}

/// A reqwest request to `url`, parsed through [`parse_url`] (reqwest parses each URL twice more
/// on its own, so the parse we own is the one worth caching); a URL that does not parse goes to
/// reqwest as text, for reqwest's own error when the request is sent.
#[cfg(any(feature = "worker", feature = "client"))]
pub(crate) fn request_to(http: &reqwest::Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    match parse_url(&url) {
        Ok(parsed) => http.request(method, parsed),
        Err(_) => http.request(method, url),
    }
}

#[cfg(test)]
mod tests {
    use super::Mru;

    fn get(cache: &mut Mru<Box<str>, String, 3>, key: &str, made: &mut Vec<String>) -> String {
        let ok: Result<_, ()> = cache.get_or_try_insert_with(key, || {
            made.push(key.to_owned());
            Ok(key.to_uppercase())
        });
        ok.unwrap().clone()
    }

    #[test]
    fn keeps_the_most_recent_entries_and_makes_each_value_once_while_kept() {
        let mut cache = Mru::<Box<str>, String, 3>::new();
        let mut made = Vec::new();
        for key in ["a", "b", "a", "c", "a", "b"] {
            assert_eq!(get(&mut cache, key, &mut made), key.to_uppercase());
        }
        assert_eq!(made, ["a", "b", "c"]);
        assert_eq!(cache.len(), 3);
        // "d" pushes out the least recently used entry, "c" ("b" and "a" were used after it).
        get(&mut cache, "d", &mut made);
        get(&mut cache, "a", &mut made);
        get(&mut cache, "b", &mut made);
        assert_eq!(made, ["a", "b", "c", "d"]);
        get(&mut cache, "c", &mut made);
        assert_eq!(made, ["a", "b", "c", "d", "c"]);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn a_failure_keeps_nothing() {
        let mut cache = Mru::<Box<str>, u32, 2>::new();
        assert_eq!(cache.get_or_try_insert_with("x", || Err("bad")), Err("bad"));
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.get_or_try_insert_with("x", || Ok::<_, ()>(7)), Ok(&7));
        assert_eq!(cache.get_or_try_insert_with("x", || Err(())), Ok(&7));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_cache_of_one_holds_the_last_key() {
        let mut cache = Mru::<Box<[u8]>, usize, 1>::new();
        for (i, key) in [&b"k1"[..], b"k2", b"k2", b"k1"].into_iter().enumerate() {
            let v = *cache.get_or_try_insert_with(key, || Ok::<_, ()>(i)).unwrap();
            assert_eq!(v, if i == 2 { 1 } else { i });
            assert_eq!(cache.len(), 1);
        }
    }

    #[cfg(any(feature = "server", feature = "worker", feature = "client"))]
    #[test]
    fn cached_url_parses_are_fresh_parses_and_the_cache_stays_small() {
        use super::{parse_url, URLS, URLS_PER_THREAD};
        let raws: Vec<String> = (0..20).map(|i| format!("http://user:pw@h{i}.example:80/p/../q?a=b#f")).collect();
        for _ in 0..3 {
            for raw in raws.iter().chain(raws.iter().rev()) {
                assert_eq!(parse_url(raw).unwrap(), url::Url::parse(raw).unwrap());
                assert_eq!(parse_url(raw).unwrap().as_str(), url::Url::parse(raw).unwrap().as_str());
            }
        }
        assert!(parse_url("not a url").is_err() && parse_url("not a url").is_err());
        assert!(URLS.with_borrow(|c| c.len()) <= URLS_PER_THREAD);
    }
}
