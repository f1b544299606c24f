//! Templates and fingerprints of events (rules in `docs/fingerprinting.md`).
//!
//! A message is masked ([`mask`]) and then clustered online ([`drain`]); the cluster
//! decides the event's `fingerprint` (fixed when the cluster is created) and `template`
//! (the cluster's template so far). A client may set its own grouping with a
//! `fingerprint` list, where `{{default}}` stands for the computed fingerprint.
//!
//! Stability: the clusters and the exact templates that led to them are saved with every
//! checkpoint, and replaying the WAL teaches the clusters of the replayed events back, so
//! an event gets the same fingerprint before and after a restart.

pub(crate) mod drain;
pub(crate) mod mask;

use std::cell::RefCell;

use parking_lot::RwLock;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
pub use drain::DrainConfig;
use drain::{Cluster, Drain, Lookup, partition_key};
use mask::{Masked, mask_into, split_template};

pub use drain::fingerprint_of;
pub use mask::{WILDCARD, mask as template};

/// Version of the grouping rules (masking and clustering). Every cluster records the
/// version that created it, and the version is part of its fingerprint, so a later
/// normaliser cannot silently regroup history: clusters made before keep their
/// fingerprints, and new ones cannot collide with them.
pub const GROUPING_VERSION: u32 = 1;

/// The placeholder for the computed fingerprint in a client's `fingerprint` list.
pub const DEFAULT_PLACEHOLDER: &str = "{{default}}";

thread_local! {
    static SCRATCH: RefCell<Masked> = RefCell::new(Masked::default());
}

/// A fingerprint and template for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouped {
    pub fingerprint: u64,
    pub template: String,
}

/// What is known about a fingerprint's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub version: u32,
    pub template: String,
}

/// The thread-safe grouper of one engine.
#[derive(Debug)]
pub struct Grouper {
    drain: RwLock<Drain>,
}

impl Default for Grouper {
    fn default() -> Self {
        Self::new(DrainConfig::default())
    }
}

impl Grouper {
    pub fn new(config: DrainConfig) -> Self {
        Self {
            drain: RwLock::new(Drain::new(config)),
        }
    }

    /// The fingerprint and template of a message. `custom` is a client's own grouping.
    pub fn group(
        &self,
        service: Option<&str>,
        event_type: Option<&str>,
        message: &str,
        custom: Option<&[String]>,
    ) -> Grouped {
        SCRATCH.with_borrow_mut(|masked| {
            mask_into(message, masked);
            let mut grouped = self.group_masked(service, event_type, masked);
            if let Some(parts) = custom {
                grouped.fingerprint = custom_fingerprint(parts, grouped.fingerprint);
            }
            grouped
        })
    }

    fn group_masked(
        &self,
        service: Option<&str>,
        event_type: Option<&str>,
        masked: &Masked,
    ) -> Grouped {
        let partition = partition_key(service, event_type);
        {
            let drain = self.drain.read();
            if let Some(i) = drain.find_exact(partition, masked) {
                let c = drain.cluster(i);
                return Grouped {
                    fingerprint: c.fingerprint,
                    template: c.template.clone(),
                };
            }
        }
        let mut drain = self.drain.write();
        match drain.insert(GROUPING_VERSION, service, event_type, masked) {
            Lookup::Cluster(i) => {
                let c = drain.cluster(i);
                Grouped {
                    fingerprint: c.fingerprint,
                    template: c.template.clone(),
                }
            }
            Lookup::Unclustered(fingerprint) => Grouped {
                fingerprint,
                template: masked.text.clone(),
            },
        }
    }

    /// Teaches the grouper an event that was grouped before (replayed from the WAL): its
    /// cluster is restored or generalised, and its exact template points at it again.
    /// Events with a client's fingerprint (`custom`) teach nothing.
    pub fn learn(
        &self,
        service: Option<&str>,
        event_type: Option<&str>,
        message: &str,
        fingerprint: u64,
        template: &str,
        custom: bool,
    ) {
        if custom {
            return;
        }
        let mut drain = self.drain.write();
        SCRATCH.with_borrow_mut(|masked| {
            split_template(template, masked);
            drain.teach(
                Cluster {
                    fingerprint,
                    version: GROUPING_VERSION,
                    service: service.map(str::to_string),
                    event_type: event_type.map(str::to_string),
                    template: template.to_string(),
                },
                masked,
            );
            mask_into(message, masked);
            drain.teach_exact(partition_key(service, event_type), masked, fingerprint);
        });
    }

    /// The version and current template of a fingerprint's cluster, if it has one.
    pub fn info(&self, fingerprint: u64) -> Option<GroupInfo> {
        self.drain
            .read()
            .cluster_by_fingerprint(fingerprint)
            .map(|c| GroupInfo {
                version: c.version,
                template: c.template.clone(),
            })
    }

    /// The number of clusters.
    pub fn clusters(&self) -> usize {
        self.drain.read().clusters().len()
    }

    /// Encodes the state (format in `docs/fingerprinting.md`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let drain = self.drain.read();
        let clusters = drain.clusters();
        put_u64(out, clusters.len() as u64);
        for c in clusters {
            put_u64(out, c.fingerprint);
            put_u64(out, u64::from(c.version));
            put_opt_str(out, c.service.as_deref());
            put_opt_str(out, c.event_type.as_deref());
            put_str(out, &c.template);
        }
        let exact: Vec<(u64, u64)> = drain.exact_entries().collect();
        put_u64(out, exact.len() as u64);
        for (key, fingerprint) in exact {
            put_u64(out, key);
            put_u64(out, fingerprint);
        }
    }

    /// Restores a state written by [`Grouper::encode`].
    pub fn decode(&self, r: &mut Reader<'_>) -> Result<()> {
        let mut drain = self.drain.write();
        let mut words = Masked::default();
        for _ in 0..r.u64()? {
            let fingerprint = r.u64()?;
            let version = u32::try_from(r.u64()?).map_err(|_| r.bad("version"))?;
            let service = r.opt_str()?;
            let event_type = r.opt_str()?;
            let template = r.str()?;
            split_template(&template, &mut words);
            drain.teach(
                Cluster {
                    fingerprint,
                    version,
                    service,
                    event_type,
                    template,
                },
                &words,
            );
        }
        for _ in 0..r.u64()? {
            let key = r.u64()?;
            let fingerprint = r.u64()?;
            drain.teach_exact_key(key, fingerprint);
        }
        Ok(())
    }
}

/// The fingerprint of a client's grouping: xxh3-64 of `vigil-custom`, then each part
/// (with `{{default}}` replaced by the computed fingerprint as 16 hex digits), each
/// preceded by a zero byte.
pub fn custom_fingerprint(parts: &[String], computed: u64) -> u64 {
    let mut key = b"vigil-custom".to_vec();
    for part in parts {
        key.push(0);
        if part == DEFAULT_PLACEHOLDER {
            key.extend_from_slice(format!("{computed:016x}").as_bytes());
        } else {
            key.extend_from_slice(part.as_bytes());
        }
    }
    xxh3_64(&key)
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// Reads the little-endian fields of a saved state, naming the file on error.
pub struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
    pub(crate) file: &'a str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], file: &'a str) -> Self {
        Self {
            bytes,
            pos: 0,
            file,
        }
    }

    pub(crate) fn bad(&self, what: &str) -> Error {
        Error::State {
            path: self.file.to_string(),
            reason: format!("bad {what} at byte {}", self.pos),
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.bad("length (truncated)"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }

    pub(crate) fn str(&mut self) -> Result<String> {
        let n = usize::try_from(self.u64()?).map_err(|_| self.bad("length"))?;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| self.bad("text (not UTF-8)"))
    }

    fn opt_str(&mut self) -> Result<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(self.bad("optional text marker")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_fingerprints_extend_or_replace_the_default() {
        let g = Grouper::default();
        let plain = g.group(Some("api"), None, "timeout after 30s", None);
        let extended = g.group(
            Some("api"),
            None,
            "timeout after 31s",
            Some(&["{{default}}".into(), "db".into()]),
        );
        let replaced = g.group(Some("api"), None, "anything", Some(&["db-timeout".into()]));
        let replaced2 = g.group(Some("web"), None, "other", Some(&["db-timeout".into()]));
        assert_ne!(plain.fingerprint, extended.fingerprint);
        assert_eq!(extended.template, "timeout after <*>");
        assert_eq!(replaced.fingerprint, replaced2.fingerprint);
        assert_eq!(
            extended.fingerprint,
            custom_fingerprint(&["{{default}}".into(), "db".into()], plain.fingerprint)
        );
    }

    #[test]
    fn service_and_event_type_separate_groups() {
        let g = Grouper::default();
        let a = g.group(Some("api"), None, "request failed", None);
        let b = g.group(Some("web"), None, "request failed", None);
        let c = g.group(Some("api"), Some("audit"), "request failed", None);
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_eq!(
            a.fingerprint,
            fingerprint_of(1, Some("api"), None, "request failed")
        );
    }

    #[test]
    fn state_round_trips_and_keeps_fingerprints() {
        let g = Grouper::default();
        let first = g.group(None, None, "user alice logged in from 10.0.0.1", None);
        g.group(None, None, "user bob logged in from 10.0.0.2", None);
        let mut bytes = Vec::new();
        g.encode(&mut bytes);
        let h = Grouper::default();
        h.decode(&mut Reader::new(&bytes, "t")).unwrap();
        assert_eq!(h.clusters(), 1);
        let again = h.group(None, None, "user alice logged in from 10.0.0.9", None);
        assert_eq!(again.fingerprint, first.fingerprint);
        assert_eq!(again.template, "user <*> logged in from <*>");
        assert!(
            h.decode(&mut Reader::new(&bytes[..bytes.len() - 3], "t"))
                .is_err()
        );
    }

    #[test]
    fn learning_from_replayed_events_restores_clusters() {
        let g = Grouper::default();
        let a = g.group(Some("s"), None, "disk sda is full", None);
        let b = g.group(Some("s"), None, "disk sdb is full", None);
        let h = Grouper::default();
        h.learn(
            Some("s"),
            None,
            "disk sda is full",
            a.fingerprint,
            &a.template,
            false,
        );
        h.learn(
            Some("s"),
            None,
            "disk sdb is full",
            b.fingerprint,
            &b.template,
            false,
        );
        h.learn(Some("s"), None, "x", 77, "x", true);
        assert_eq!(h.clusters(), 1);
        let c = h.group(Some("s"), None, "disk sdc is full", None);
        assert_eq!(c.fingerprint, a.fingerprint);
        assert_eq!(h.info(a.fingerprint).unwrap().template, "disk <*> is full");
    }
}
