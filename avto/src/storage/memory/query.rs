//! The query indexes of [`super::MemoryJobs`] (see [`crate::storage::JobQuery`]): every job,
//! per status and per blueprint, overall and per client, each ordered by `(created_at_ms, id)`,
//! and the ids in lexical order (id prefixes). Kept under the store's index lock by insert,
//! every saved status change and removal, like the other indexes.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::job::JobStatus;
use crate::storage::{
    CheckedQuery, JobCursor, JOB_QUERY_COUNT_LIMIT, JOB_QUERY_PREFIX_CANDIDATES, JOB_QUERY_SCAN_LIMIT,
};

/// A position in the order: `(created_at_ms, id)`.
type Pos = (u64, Arc<str>);

// Keyed by statuses (a handful of values) and client ids (named by the server's configuration):
// `FastMap`s. Blueprint names come from requests and keep SipHash.
use super::FastMap;

/// Whether a status has its own index: every status but `finished`, which most kept jobs have
/// (its own index would cost the most and narrow the least; a query for it walks all jobs).
pub(crate) fn status_indexed(status: JobStatus) -> bool {
    status != JobStatus::Finished
}

/// What a query needs to know of one job besides its position.
pub(super) struct Facts<'a> {
    pub client: &'a str,
    pub status: JobStatus,
    pub blueprint: &'a str,
    pub created_at_ms: u64,
}

/// The ordered sets of one scope (every client, or one).
#[derive(Default)]
struct Sets {
    all: BTreeSet<Pos>,
    status: FastMap<JobStatus, BTreeSet<Pos>>,
    blueprint: HashMap<Arc<str>, BTreeSet<Pos>>,
}

impl Sets {
    fn insert(&mut self, pos: &Pos, status: JobStatus, blueprint: &Arc<str>) {
        self.all.insert(pos.clone());
        if status_indexed(status) {
            self.status.entry(status).or_default().insert(pos.clone());
        }
        self.blueprint.entry(blueprint.clone()).or_default().insert(pos.clone());
    }

    fn remove(&mut self, pos: &Pos, status: JobStatus, blueprint: &str) {
        self.all.remove(pos);
        remove_from(&mut self.status, &status, pos);
        remove_from(&mut self.blueprint, blueprint, pos);
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

fn remove_from<
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
    S: std::hash::BuildHasher,
>(
    map: &mut HashMap<K, BTreeSet<Pos>, S>,
    key: &Q,
    pos: &Pos,
) {
    if let Some(set) = map.get_mut(key) {
        set.remove(pos);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

#[derive(Default)]
pub(super) struct QueryIndex {
    global: Sets,
    clients: FastMap<Arc<str>, Sets>,
    ids: BTreeSet<Arc<str>>,
}

/// What a query walks: the union of these sets, within the time range and after the cursor.
struct Walk<'s> {
    sources: Vec<&'s BTreeSet<Pos>>,
    /// The filters the sources do not decide already.
    check_status: bool,
    check_blueprint: bool,
}

impl QueryIndex {
    /// The blueprint name as the indexes hold it (one allocation per name while it has jobs).
    pub(super) fn intern_blueprint(&self, blueprint: &str) -> Arc<str> {
        match self.global.blueprint.get_key_value(blueprint) {
            Some((k, _)) => k.clone(),
            None => Arc::from(blueprint),
        }
    }

    /// The client id as the indexes hold it (one allocation per client while it has jobs).
    pub(super) fn intern_client(&self, client: &str) -> Arc<str> {
        match self.clients.get_key_value(client) {
            Some((k, _)) => k.clone(),
            None => Arc::from(client),
        }
    }

    pub(super) fn insert(
        &mut self,
        id: &Arc<str>,
        client: &Arc<str>,
        status: JobStatus,
        blueprint: &Arc<str>,
        created: u64,
    ) {
        let pos = (created, id.clone());
        self.global.insert(&pos, status, blueprint);
        match self.clients.get_mut(client) {
            Some(sets) => sets.insert(&pos, status, blueprint),
            None => {
                let mut sets = Sets::default();
                sets.insert(&pos, status, blueprint);
                self.clients.insert(client.clone(), sets);
            }
        }
        self.ids.insert(id.clone());
    }

    /// Moves a job between the per-status sets.
    pub(super) fn status(&mut self, id: &Arc<str>, client: &str, created: u64, old: JobStatus, new: JobStatus) {
        let pos = (created, id.clone());
        let mut scopes = vec![&mut self.global];
        if let Some(sets) = self.clients.get_mut(client) {
            scopes.push(sets);
        }
        for sets in scopes {
            remove_from(&mut sets.status, &old, &pos);
            if status_indexed(new) {
                sets.status.entry(new).or_default().insert(pos.clone());
            }
        }
    }

    pub(super) fn remove(&mut self, id: &Arc<str>, client: &str, status: JobStatus, blueprint: &str, created: u64) {
        let pos = (created, id.clone());
        self.global.remove(&pos, status, blueprint);
        if let Some(sets) = self.clients.get_mut(client) {
            sets.remove(&pos, status, blueprint);
            if sets.is_empty() {
                self.clients.remove(client);
            }
        }
        self.ids.remove(id);
    }

    /// The smallest walk that covers the query, or `None` when nothing can match (an unknown
    /// client).
    fn walk(&self, q: &CheckedQuery<'_>) -> Option<Walk<'_>> {
        #[derive(PartialEq)]
        enum By {
            All,
            Status,
            Blueprint,
        }
        let sets = match q.client {
            None => &self.global,
            Some(c) => self.clients.get(c)?,
        };
        let mut best = (sets.all.len(), By::All);
        if !q.statuses.is_empty() && q.statuses.iter().all(|s| status_indexed(*s)) {
            let n = q.statuses.iter().filter_map(|s| sets.status.get(s)).map(BTreeSet::len).sum();
            if n <= best.0 {
                best = (n, By::Status);
            }
        }
        if let Some(b) = q.blueprint {
            let n = sets.blueprint.get(b).map_or(0, BTreeSet::len);
            if n <= best.0 {
                best = (n, By::Blueprint);
            }
        }
        let sources = match best.1 {
            By::All => vec![&sets.all],
            By::Status => q.statuses.iter().filter_map(|s| sets.status.get(s)).collect(),
            By::Blueprint => q.blueprint.and_then(|b| sets.blueprint.get(b)).into_iter().collect(),
        };
        Some(Walk {
            check_status: !q.statuses.is_empty() && best.1 != By::Status,
            check_blueprint: q.blueprint.is_some() && best.1 != By::Blueprint,
            sources,
        })
    }

    /// Whether the job at `id` passes the filters the walk does not decide.
    fn passes<'f>(q: &CheckedQuery<'_>, walk: &Walk<'_>, id: &str, facts: &impl Fn(&str) -> Option<Facts<'f>>) -> bool {
        if q.id_prefix.is_some_and(|p| !id.starts_with(p)) {
            return false;
        }
        if !walk.check_status && !walk.check_blueprint {
            return true;
        }
        let Some(f) = facts(id) else { return false };
        (!walk.check_status || q.statuses.contains(&f.status))
            && (!walk.check_blueprint || q.blueprint.is_none_or(|b| b == f.blueprint))
    }

    /// Walks the query's sets newest first from its cursor, calling `visit` with each entry in
    /// the time range (and its position) until `visit` answers false or `budget` entries were
    /// seen. Answers whether the walk ended (nothing left).
    fn each(&self, q: &CheckedQuery<'_>, walk: &Walk<'_>, budget: usize, mut visit: impl FnMut(&Pos) -> bool) -> bool {
        let lo: Pos = (q.from_ms, Arc::from(""));
        let hi = match (q.after, q.to_ms) {
            (Some(c), to) if c.created_at_ms <= to => Bound::Excluded((c.created_at_ms, Arc::from(c.id.as_str()))),
            (_, u64::MAX) => Bound::Unbounded,
            (_, to) => Bound::Excluded((to + 1, Arc::from(""))),
        };
        if q.from_ms > q.to_ms {
            return true;
        }
        let mut iters: Vec<_> =
            walk.sources.iter().map(|s| s.range((Bound::Included(lo.clone()), hi.clone())).rev()).collect();
        let mut heads: Vec<Option<&Pos>> = iters.iter_mut().map(Iterator::next).collect();
        for _ in 0..budget {
            // The sources are disjoint (one status or blueprint each): a k-way merge.
            let Some(i) = (0..heads.len()).filter(|i| heads[*i].is_some()).max_by_key(|i| heads[*i]) else {
                return true;
            };
            let pos = heads[i].take().expect("a head");
            heads[i] = iters[i].next();
            if !visit(pos) {
                return heads.iter().all(Option::is_none);
            }
        }
        heads.iter().all(Option::is_none)
    }

    /// One page: the ids (newest first) and where the next page starts.
    pub(super) fn page<'f>(
        &self,
        q: &CheckedQuery<'_>,
        facts: impl Fn(&str) -> Option<Facts<'f>>,
    ) -> (Vec<Arc<str>>, Option<JobCursor>) {
        if let Some(candidates) = self.prefix_candidates(q, &facts) {
            let more = candidates.len() > q.limit;
            let page: Vec<Pos> = candidates.into_iter().take(q.limit).collect();
            let next =
                page.last().filter(|_| more).map(|(ms, id)| JobCursor { created_at_ms: *ms, id: id.to_string() });
            return (page.into_iter().map(|(_, id)| id).collect(), next);
        }
        let Some(walk) = self.walk(q) else { return (Vec::new(), None) };
        let mut ids = Vec::with_capacity(q.limit);
        let mut last: Option<Pos> = None;
        let ended = self.each(q, &walk, JOB_QUERY_SCAN_LIMIT, |pos| {
            last = Some(pos.clone());
            if Self::passes(q, &walk, &pos.1, &facts) {
                ids.push(pos.1.clone());
            }
            ids.len() < q.limit
        });
        let next = match (ended, last) {
            (false, Some((ms, id))) => Some(JobCursor { created_at_ms: ms, id: id.to_string() }),
            _ => None,
        };
        (ids, next)
    }

    /// How many jobs match (see [`crate::storage::JobQuery`], "Counting").
    pub(super) fn count<'f>(&self, q: &CheckedQuery<'_>, facts: impl Fn(&str) -> Option<Facts<'f>>) -> u64 {
        let q = &CheckedQuery { after: None, ..q.clone() };
        if let Some(candidates) = self.prefix_candidates(q, &facts) {
            return candidates.len() as u64;
        }
        let Some(walk) = self.walk(q) else { return 0 };
        if q.from_ms > q.to_ms {
            return 0;
        }
        let in_range = |s: &BTreeSet<Pos>| -> usize {
            if q.from_ms == 0 && q.to_ms == u64::MAX {
                return s.len();
            }
            let hi = if q.to_ms == u64::MAX { Bound::Unbounded } else { Bound::Excluded((q.to_ms + 1, Arc::from(""))) };
            s.range((Bound::Included((q.from_ms, Arc::from(""))), hi)).count()
        };
        if !walk.check_status && !walk.check_blueprint && q.id_prefix.is_none() {
            return walk.sources.iter().map(|s| in_range(s) as u64).sum();
        }
        let (mut seen, mut matched) = (0u64, 0u64);
        let ended = self.each(q, &walk, JOB_QUERY_COUNT_LIMIT, |pos| {
            seen += 1;
            matched += u64::from(Self::passes(q, &walk, &pos.1, &facts));
            true
        });
        if ended || seen == 0 {
            return matched;
        }
        let total: u64 = walk.sources.iter().map(|s| in_range(s) as u64).sum();
        (matched as f64 * total as f64 / seen as f64).round() as u64
    }

    /// With an id prefix that at most [`JOB_QUERY_PREFIX_CANDIDATES`] ids share: every match
    /// after the cursor, newest first (else `None`: the walk checks the prefix).
    fn prefix_candidates<'f>(
        &self,
        q: &CheckedQuery<'_>,
        facts: &impl Fn(&str) -> Option<Facts<'f>>,
    ) -> Option<Vec<Pos>> {
        let prefix = q.id_prefix?;
        let ids: Vec<&Arc<str>> = self
            .ids
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|id| id.starts_with(prefix))
            .take(JOB_QUERY_PREFIX_CANDIDATES + 1)
            .collect();
        if ids.len() > JOB_QUERY_PREFIX_CANDIDATES {
            return None;
        }
        let mut out: Vec<Pos> = ids
            .into_iter()
            .filter_map(|id| {
                let f = facts(id)?;
                let ok = q.client.is_none_or(|c| c == f.client)
                    && (q.statuses.is_empty() || q.statuses.contains(&f.status))
                    && q.blueprint.is_none_or(|b| b == f.blueprint)
                    && (q.from_ms..=q.to_ms).contains(&f.created_at_ms)
                    && q.after_cursor(f.created_at_ms, id);
                ok.then(|| (f.created_at_ms, id.clone()))
            })
            .collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        Some(out)
    }
}
