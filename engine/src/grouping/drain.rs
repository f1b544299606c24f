//! Online clustering of masked messages, after Drain (He et al., ICWS 2017).
//!
//! Clusters live in a partition per (`service`, `event_type`). Within a partition a
//! message is looked up first by its exact template (a hash map: the common case), then
//! among the clusters with the same number of words and the same first word, where the
//! most similar cluster takes it if at least [`DrainConfig::similarity`] of the compared
//! words are equal. Joining a cluster turns the words where they differ into `<*>`. A
//! cluster's fingerprint is fixed when it is created, from its first template, so every
//! later member gets the same fingerprint even as the template generalises.

use std::collections::HashMap;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::mask::{Masked, WILDCARD};

/// Tuning of the clustering.
#[derive(Debug, Clone)]
pub struct DrainConfig {
    /// Share of compared words that must be equal for a message to join a cluster.
    pub similarity: f64,
    /// Most clusters kept; past it, unmatched templates get a fingerprint of their own
    /// but form no cluster.
    pub max_clusters: usize,
    /// Most exact templates remembered (the fast path).
    pub max_exact: usize,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            similarity: 0.5,
            max_clusters: 100_000,
            max_exact: 1_000_000,
        }
    }
}

/// One group of messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cluster {
    pub fingerprint: u64,
    /// The grouping version that created it.
    pub version: u32,
    pub service: Option<String>,
    pub event_type: Option<String>,
    /// The current template, generalised by every member so far.
    pub template: String,
}

/// The clustering state.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    config: DrainConfig,
    clusters: Vec<Cluster>,
    by_fingerprint: HashMap<u64, u32>,
    /// (partition, word count, first word) → clusters.
    leaves: HashMap<u64, Vec<u32>>,
    /// (partition, word count) → clusters.
    by_length: HashMap<u64, Vec<u32>>,
    /// (partition, exact template) → cluster.
    exact: HashMap<u64, u32>,
}

/// The outcome of grouping one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The message belongs to this cluster (index into [`Drain::cluster`]).
    Cluster(u32),
    /// No cluster: the state is full. The fingerprint of the template alone.
    Unclustered(u64),
}

impl Drain {
    pub(crate) fn new(config: DrainConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub(crate) fn cluster(&self, index: u32) -> &Cluster {
        &self.clusters[index as usize]
    }

    pub(crate) fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    pub(crate) fn cluster_by_fingerprint(&self, fingerprint: u64) -> Option<&Cluster> {
        self.by_fingerprint
            .get(&fingerprint)
            .map(|&i| &self.clusters[i as usize])
    }

    /// The exact-template entries, for persistence.
    pub(crate) fn exact_entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.exact
            .iter()
            .map(|(&k, &i)| (k, self.clusters[i as usize].fingerprint))
    }

    /// The fast path: the cluster of an exact template seen before.
    pub(crate) fn find_exact(&self, partition: u64, masked: &Masked) -> Option<u32> {
        self.exact.get(&exact_key(partition, masked)).copied()
    }

    /// Groups a message (the slow path): matches it against similar clusters, generalises
    /// the one it joins, or creates a cluster.
    pub(crate) fn insert(
        &mut self,
        version: u32,
        service: Option<&str>,
        event_type: Option<&str>,
        masked: &Masked,
    ) -> Lookup {
        let partition = partition_key(service, event_type);
        let key = exact_key(partition, masked);
        if let Some(&i) = self.exact.get(&key) {
            return Lookup::Cluster(i);
        }
        let leaf = leaf_key(partition, masked);
        let best = self
            .leaves
            .get(&leaf)
            .and_then(|ids| self.most_similar(ids, masked))
            .or_else(|| self.same_but_first_word(partition, masked));
        let index = match best {
            Some(i) => {
                self.generalise(i, masked);
                i
            }
            None if self.clusters.len() < self.config.max_clusters => {
                let fingerprint = fingerprint_of(version, service, event_type, &masked.text);
                self.add(Cluster {
                    fingerprint,
                    version,
                    service: service.map(str::to_string),
                    event_type: event_type.map(str::to_string),
                    template: masked.text.clone(),
                })
            }
            None => {
                return Lookup::Unclustered(fingerprint_of(
                    version,
                    service,
                    event_type,
                    &masked.text,
                ));
            }
        };
        if self.exact.len() < self.config.max_exact {
            self.exact.insert(key, index);
        }
        Lookup::Cluster(index)
    }

    /// Restores a cluster known by its fingerprint and template (from a saved state or
    /// from replayed events): creates it, or generalises it by `template`.
    pub(crate) fn teach(&mut self, cluster: Cluster, masked_template: &Masked) -> u32 {
        match self.by_fingerprint.get(&cluster.fingerprint) {
            Some(&i) => {
                if self.clusters[i as usize].template != cluster.template {
                    self.generalise(i, masked_template);
                }
                i
            }
            None => self.add(cluster),
        }
    }

    /// Remembers that `masked` (within its partition) belongs to the cluster with
    /// `fingerprint`, unless it is already known or the cluster is not.
    pub(crate) fn teach_exact(&mut self, partition: u64, masked: &Masked, fingerprint: u64) {
        self.teach_exact_key(exact_key(partition, masked), fingerprint);
    }

    /// [`Drain::teach_exact`] with the key already computed (a saved state).
    pub(crate) fn teach_exact_key(&mut self, key: u64, fingerprint: u64) {
        if self.exact.len() >= self.config.max_exact {
            return;
        }
        if let Some(&i) = self.by_fingerprint.get(&fingerprint) {
            self.exact.entry(key).or_insert(i);
        }
    }

    fn add(&mut self, cluster: Cluster) -> u32 {
        let index = self.clusters.len() as u32;
        let mut words = Masked::default();
        super::mask::split_template(&cluster.template, &mut words);
        let partition = partition_key(cluster.service.as_deref(), cluster.event_type.as_deref());
        self.leaves
            .entry(leaf_key(partition, &words))
            .or_default()
            .push(index);
        self.by_length
            .entry(length_key(partition, &words))
            .or_default()
            .push(index);
        self.by_fingerprint.insert(cluster.fingerprint, index);
        self.clusters.push(cluster);
        index
    }

    /// A cluster of the same length whose words all equal the message's but the first
    /// (a leading word that varies: `cupsd startup succeeded`, `crond startup succeeded`).
    fn same_but_first_word(&self, partition: u64, masked: &Masked) -> Option<u32> {
        if masked.len() < 3 {
            return None;
        }
        let ids = self.by_length.get(&length_key(partition, masked))?;
        ids.iter().copied().find(|&i| {
            let template = &self.clusters[i as usize].template;
            template
                .split(' ')
                .zip(masked.tokens())
                .skip(1)
                .all(|(a, b)| a == b)
        })
    }

    fn most_similar(&self, ids: &[u32], masked: &Masked) -> Option<u32> {
        let mut best: Option<(f64, usize, u32)> = None;
        for &i in ids {
            let template = &self.clusters[i as usize].template;
            let (similarity, wildcards) = similarity(template, masked);
            if similarity < self.config.similarity {
                continue;
            }
            let better =
                best.is_none_or(|(s, w, _)| similarity > s || (similarity == s && wildcards > w));
            if better {
                best = Some((similarity, wildcards, i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    fn generalise(&mut self, index: u32, masked: &Masked) {
        let cluster = &mut self.clusters[index as usize];
        let merged: Vec<&str> = cluster
            .template
            .split(' ')
            .zip(masked.tokens())
            .map(|(a, b)| if a == b { a } else { WILDCARD })
            .collect();
        let merged = merged.join(" ");
        if merged != cluster.template {
            cluster.template = merged;
        }
    }
}

/// Share of equal words between a template and a message of the same length, over the
/// positions where the template has a constant word; and the template's wildcard count.
fn similarity(template: &str, masked: &Masked) -> (f64, usize) {
    let mut equal = 0usize;
    let mut constants = 0usize;
    let mut wildcards = 0usize;
    for (a, b) in template.split(' ').zip(masked.tokens()) {
        if a == WILDCARD {
            wildcards += 1;
            continue;
        }
        constants += 1;
        if a == b {
            equal += 1;
        }
    }
    if constants == 0 {
        return (1.0, wildcards);
    }
    (equal as f64 / constants as f64, wildcards)
}

/// The fingerprint of a cluster created by `version` from `template`: xxh3-64 over the
/// grouping key (see `docs/fingerprinting.md`).
pub fn fingerprint_of(
    version: u32,
    service: Option<&str>,
    event_type: Option<&str>,
    template: &str,
) -> u64 {
    let mut key = Vec::with_capacity(template.len() + 64);
    key.extend_from_slice(format!("vigil-grouping/{version}").as_bytes());
    for part in [service.unwrap_or(""), event_type.unwrap_or(""), template] {
        key.push(0);
        key.extend_from_slice(part.as_bytes());
    }
    xxh3_64(&key)
}

/// Identifies a (service, event_type) partition.
pub(crate) fn partition_key(service: Option<&str>, event_type: Option<&str>) -> u64 {
    let mut h = Xxh3::new();
    for part in [service, event_type] {
        match part {
            Some(p) => {
                h.update(&[1]);
                h.update(p.as_bytes());
                h.update(&[0]);
            }
            None => h.update(&[2]),
        }
    }
    h.digest()
}

fn exact_key(partition: u64, masked: &Masked) -> u64 {
    let mut h = Xxh3::new();
    h.update(&partition.to_le_bytes());
    h.update(masked.text.as_bytes());
    h.digest()
}

fn length_key(partition: u64, masked: &Masked) -> u64 {
    let mut h = Xxh3::new();
    h.update(&partition.to_le_bytes());
    h.update(&(masked.len() as u64).to_le_bytes());
    h.digest()
}

fn leaf_key(partition: u64, masked: &Masked) -> u64 {
    let first = masked.tokens().next().unwrap_or("");
    let first = if first.contains(WILDCARD) {
        WILDCARD
    } else {
        first
    };
    let mut h = Xxh3::new();
    h.update(&partition.to_le_bytes());
    h.update(&(masked.len() as u64).to_le_bytes());
    h.update(first.as_bytes());
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::super::mask::mask_into;
    use super::*;

    fn group(d: &mut Drain, msg: &str) -> (u64, String) {
        let mut m = Masked::default();
        mask_into(msg, &mut m);
        match d.insert(1, Some("svc"), None, &m) {
            Lookup::Cluster(i) => (d.cluster(i).fingerprint, d.cluster(i).template.clone()),
            Lookup::Unclustered(f) => (f, m.text.clone()),
        }
    }

    #[test]
    fn word_variables_join_one_cluster_with_a_stable_fingerprint() {
        let mut d = Drain::new(DrainConfig::default());
        let (a, t1) = group(
            &mut d,
            "Accepted password for root from 10.0.0.1 port 22 ssh2",
        );
        assert_eq!(t1, "Accepted password for root from <*> port <*> <*>");
        let (b, t2) = group(
            &mut d,
            "Accepted password for alice from 10.0.0.2 port 2222 ssh2",
        );
        assert_eq!(a, b, "same group, same fingerprint as the first member");
        assert_eq!(t2, "Accepted password for <*> from <*> port <*> <*>");
        let (c, _) = group(
            &mut d,
            "Accepted password for root from 10.9.9.9 port 1 ssh2",
        );
        assert_eq!(a, c);
        let (other, _) = group(
            &mut d,
            "Failed password for invalid user bob from 1.2.3.4 port 5 ssh2",
        );
        assert_ne!(a, other);
    }

    #[test]
    fn full_state_still_fingerprints_by_template() {
        let mut d = Drain::new(DrainConfig {
            max_clusters: 1,
            ..DrainConfig::default()
        });
        let (a, _) = group(&mut d, "disk full on sda");
        let (b, _) = group(&mut d, "fan failure in chassis 3");
        let (c, _) = group(&mut d, "fan failure in chassis 4");
        assert_ne!(a, b);
        assert_eq!(b, c);
        assert_eq!(d.clusters().len(), 1);
    }

    #[test]
    fn teaching_restores_the_same_assignment() {
        let mut d = Drain::new(DrainConfig::default());
        let (fp, template) = group(&mut d, "user alice logged in");
        group(&mut d, "user bob logged in");
        let mut e = Drain::new(DrainConfig::default());
        for c in d.clusters() {
            let mut m = Masked::default();
            super::super::mask::split_template(&c.template, &mut m);
            e.teach(c.clone(), &m);
        }
        assert_eq!(group(&mut e, "user carol logged in").0, fp);
        assert_ne!(template, "user <*> logged in");
    }
}
