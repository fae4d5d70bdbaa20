//! Who listens to what, for one character. Filters are indexed in a segment
//! trie so that finding the clients for a published topic walks only the
//! branches the topic can match (a topic has at most four segments), never
//! every client or every filter. The reverse direction (client -> filters)
//! and per-filter counts are kept alongside, updated on every change.

use crate::topic::{Topic, TopicFilter};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

/// One trie level. The path from the root spells a filter prefix.
#[derive(Debug)]
struct Node<C> {
    /// Children for literal segments.
    children: HashMap<Box<str>, Node<C>>,
    /// Child for a `*` segment.
    star: Option<Box<Node<C>>>,
    /// Clients whose filter ends exactly here.
    exact: HashSet<C>,
    /// Clients whose filter has `>` right after this prefix.
    rest: HashSet<C>,
}

impl<C> Default for Node<C> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            star: None,
            exact: HashSet::new(),
            rest: HashSet::new(),
        }
    }
}

impl<C: Copy + Eq + Hash> Node<C> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.exact.is_empty()
            && self.rest.is_empty()
    }

    fn insert(&mut self, segs: &[&str], c: C) -> bool {
        match segs {
            [] => self.exact.insert(c),
            [">"] => self.rest.insert(c),
            ["*", tail @ ..] => self.star.get_or_insert_with(Box::default).insert(tail, c),
            [head, tail @ ..] => self
                .children
                .entry((*head).into())
                .or_default()
                .insert(tail, c),
        }
    }

    /// Removes `c` under `segs`, pruning children left empty.
    fn remove(&mut self, segs: &[&str], c: C) -> bool {
        match segs {
            [] => self.exact.remove(&c),
            [">"] => self.rest.remove(&c),
            ["*", tail @ ..] => {
                let Some(star) = self.star.as_mut() else {
                    return false;
                };
                let removed = star.remove(tail, c);
                if star.is_empty() {
                    self.star = None;
                }
                removed
            }
            [head, tail @ ..] => {
                let Some(child) = self.children.get_mut(*head) else {
                    return false;
                };
                let removed = child.remove(tail, c);
                if child.is_empty() {
                    self.children.remove(*head);
                }
                removed
            }
        }
    }

    fn collect(&self, segs: &[&str], out: &mut Vec<C>) {
        let Some((head, tail)) = segs.split_first() else {
            out.extend(self.exact.iter().copied());
            return;
        };
        out.extend(self.rest.iter().copied());
        if let Some(child) = self.children.get(*head) {
            child.collect(tail, out);
        }
        if let Some(star) = &self.star {
            star.collect(tail, out);
        }
    }

    fn node_count(&self) -> usize {
        1 + self.children.values().map(Node::node_count).sum::<usize>()
            + self.star.as_ref().map_or(0, |s| s.node_count())
    }
}

/// Subscriptions of one character, indexed both ways.
#[derive(Debug)]
pub struct SubscriptionMap<C> {
    root: Node<C>,
    /// Client -> its filters, in subscription order.
    by_client: HashMap<C, Vec<TopicFilter>>,
    /// Filter -> number of clients holding it; absent when zero.
    counts: BTreeMap<TopicFilter, usize>,
}

impl<C: Copy + Eq + Hash + Ord> Default for SubscriptionMap<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Copy + Eq + Hash + Ord> SubscriptionMap<C> {
    /// An empty map.
    pub fn new() -> Self {
        SubscriptionMap {
            root: Node::default(),
            by_client: HashMap::new(),
            counts: BTreeMap::new(),
        }
    }

    /// Adds `f` for `c`; true if it was not already held. A client with no
    /// filters is still known (see [`Self::add_client`]) once subscribed.
    pub fn subscribe(&mut self, c: C, f: TopicFilter) -> bool {
        let list = self.by_client.entry(c).or_default();
        if list.contains(&f) {
            return false;
        }
        let segs: Vec<&str> = f.segments().collect();
        self.root.insert(&segs, c);
        *self.counts.entry(f.clone()).or_insert(0) += 1;
        list.push(f);
        true
    }

    /// Registers `c` with no filters, so it counts as a client.
    pub fn add_client(&mut self, c: C) {
        self.by_client.entry(c).or_default();
    }

    /// Drops `f` for `c`; true if it was held. The client stays known even
    /// when it has no filters left (it is still connected).
    pub fn unsubscribe(&mut self, c: C, f: &TopicFilter) -> bool {
        let Some(list) = self.by_client.get_mut(&c) else {
            return false;
        };
        let Some(pos) = list.iter().position(|x| x == f) else {
            return false;
        };
        list.remove(pos);
        self.forget(c, f);
        true
    }

    fn forget(&mut self, c: C, f: &TopicFilter) {
        let segs: Vec<&str> = f.segments().collect();
        self.root.remove(&segs, c);
        if let Some(n) = self.counts.get_mut(f) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(f);
            }
        }
    }

    /// Forgets `c` entirely; returns the filters it held, in subscription order.
    pub fn remove_client(&mut self, c: C) -> Vec<TopicFilter> {
        let list = self.by_client.remove(&c).unwrap_or_default();
        for f in &list {
            self.forget(c, f);
        }
        list
    }

    /// The filters of `c` in subscription order (empty if unknown).
    pub fn filters_of(&self, c: C) -> Vec<TopicFilter> {
        self.by_client.get(&c).cloned().unwrap_or_default()
    }

    /// How many filters `c` holds.
    pub fn filter_count_of(&self, c: C) -> usize {
        self.by_client.get(&c).map_or(0, Vec::len)
    }

    /// Every client with a filter matching `t`, once each, ascending.
    pub fn matching(&self, t: &Topic) -> Vec<C> {
        let segs: Vec<&str> = t.segments().collect();
        let mut out = Vec::new();
        self.root.collect(&segs, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Filter -> number of clients holding it (only filters held by someone).
    pub fn filter_counts(&self) -> BTreeMap<String, usize> {
        self.counts
            .iter()
            .map(|(f, n)| (f.as_str().to_owned(), *n))
            .collect()
    }

    /// Number of known clients, including those with no filters.
    pub fn client_count(&self) -> usize {
        self.by_client.len()
    }

    /// True if `c` is known.
    pub fn contains_client(&self, c: C) -> bool {
        self.by_client.contains_key(&c)
    }

    /// Trie size, for checking that churn does not leak nodes.
    pub fn trie_nodes(&self) -> usize {
        self.root.node_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }
    fn t(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }

    #[test]
    fn basic_both_directions() {
        let mut m = SubscriptionMap::<u32>::new();
        assert!(m.subscribe(1, f("face")));
        assert!(!m.subscribe(1, f("face")));
        assert!(m.subscribe(1, f(">")));
        assert!(m.subscribe(2, f("body.*")));
        assert!(m.subscribe(3, f("body.>")));
        assert_eq!(m.matching(&t("face")), vec![1]);
        assert_eq!(m.matching(&t("body.arms")), vec![1, 2, 3]);
        assert_eq!(m.matching(&t("body")), vec![1]);
        assert_eq!(m.matching(&t("body.arms.left")), vec![1, 3]);
        assert_eq!(m.filters_of(1), vec![f("face"), f(">")]);
        assert_eq!(m.filter_count_of(1), 2);
        assert_eq!(m.client_count(), 3);
        let counts = m.filter_counts();
        assert_eq!(counts.get("face"), Some(&1));
        assert!(m.unsubscribe(1, &f("face")));
        assert!(!m.unsubscribe(1, &f("face")));
        assert!(m.contains_client(1));
        assert_eq!(m.remove_client(1), vec![f(">")]);
        assert!(!m.contains_client(1));
        assert_eq!(m.matching(&t("face")), Vec::<u32>::new());
    }

    #[test]
    fn churn_prunes_trie() {
        let mut m = SubscriptionMap::<u32>::new();
        let base = m.trie_nodes();
        for i in 0..100u32 {
            m.subscribe(i, f(&format!("a{i}.*.c.>")));
            m.subscribe(i, f("x.y"));
        }
        assert!(m.trie_nodes() > base);
        for i in 0..100u32 {
            m.remove_client(i);
        }
        assert_eq!(m.trie_nodes(), base);
        assert!(m.filter_counts().is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Sub(u8, usize),
        Unsub(u8, usize),
        Remove(u8),
    }

    const FILTERS: &[&str] = &[
        ">", "*", "a", "b", "a.*", "a.>", "*.b", "a.b", "*.*.>", "b.a.c",
    ];
    const TOPICS: &[&str] = &[
        "a", "b", "c", "a.b", "a.a", "b.b", "a.b.c", "b.a.c", "c.a.b.a",
    ];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..5, 0..FILTERS.len()).prop_map(|(c, i)| Op::Sub(c, i)),
            (0u8..5, 0..FILTERS.len()).prop_map(|(c, i)| Op::Unsub(c, i)),
            (0u8..5).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_brute_force(ops in prop::collection::vec(op(), 0..60)) {
            let mut m = SubscriptionMap::<u8>::new();
            let mut model: BTreeMap<u8, Vec<TopicFilter>> = BTreeMap::new();
            for o in ops {
                match o {
                    Op::Sub(c, i) => {
                        let fl = f(FILTERS[i]);
                        let l = model.entry(c).or_default();
                        let new = !l.contains(&fl);
                        if new { l.push(fl.clone()); }
                        prop_assert_eq!(m.subscribe(c, fl), new);
                    }
                    Op::Unsub(c, i) => {
                        let fl = f(FILTERS[i]);
                        let held = model.get_mut(&c).and_then(|l| {
                            l.iter().position(|x| *x == fl).map(|p| l.remove(p))
                        }).is_some();
                        prop_assert_eq!(m.unsubscribe(c, &fl), held);
                    }
                    Op::Remove(c) => {
                        let had = model.remove(&c).unwrap_or_default();
                        prop_assert_eq!(m.remove_client(c), had);
                    }
                }
                prop_assert_eq!(m.client_count(), model.len());
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                for (c, l) in &model {
                    prop_assert_eq!(&m.filters_of(*c), l);
                    for fl in l { *counts.entry(fl.as_str().to_owned()).or_default() += 1; }
                }
                prop_assert_eq!(m.filter_counts(), counts);
                for topic in TOPICS {
                    let tp = t(topic);
                    let want: Vec<u8> = model.iter()
                        .filter(|(_, l)| l.iter().any(|fl| fl.matches(&tp)))
                        .map(|(c, _)| *c).collect();
                    prop_assert_eq!(m.matching(&tp), want);
                }
            }
            for c in 0..5 { m.remove_client(c); }
            prop_assert_eq!(m.trie_nodes(), 1);
        }
    }
}
