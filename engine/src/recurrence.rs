//! Recurrence statistics per fingerprint, maintained incrementally at ingest: count,
//! first and last seen, a sample message, the template, the distinct services and
//! systems, and counts per minute of event time.
//!
//! Every operation is a commutative merge, so statistics built from the same events in
//! any order or split are equal: a write's [`Recurrence`] is computed from its rows and
//! merged into the live statistics once the write is logged, and the flusher merges the
//! flushed rows into the checkpointed statistics it saves with every checkpoint.

use std::collections::{BTreeSet, HashMap};

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{Int32Type, TimestampNanosecondType, UInt64Type};

use crate::error::Result;
use crate::grouping::{Reader, put_str, put_u64};

/// Width of the stored buckets: one minute.
pub const BUCKET_NANOS: i64 = 60_000_000_000;
/// Most distinct services (and systems) listed per fingerprint.
pub const MAX_LISTED: usize = 32;
/// Most fingerprints with statistics: events of further fingerprints are counted in
/// [`Recurrence::untracked`] only (a client sending a new fingerprint per event must not
/// exhaust memory).
pub const MAX_FINGERPRINTS: usize = 200_000;

/// What is known about one fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintStats {
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    /// The message of the earliest event.
    pub sample: String,
    /// The template of the latest event.
    pub template: String,
    /// Up to [`MAX_LISTED`] services, smallest first.
    pub services: BTreeSet<String>,
    /// Up to [`MAX_LISTED`] systems, smallest first.
    pub systems: BTreeSet<String>,
    /// Events per minute of event time.
    pub buckets: Buckets,
}

impl FingerprintStats {
    fn new(time: i64, message: &str, template: &str) -> Self {
        Self {
            count: 0,
            first_seen: time,
            last_seen: time,
            sample: message.to_string(),
            template: template.to_string(),
            services: BTreeSet::new(),
            systems: BTreeSet::new(),
            buckets: Buckets::default(),
        }
    }

    fn merge(&mut self, other: FingerprintStats) {
        self.count += other.count;
        if other.first_seen < self.first_seen
            || (other.first_seen == self.first_seen && other.sample < self.sample)
        {
            self.first_seen = other.first_seen;
            self.sample = other.sample;
        }
        if other.last_seen > self.last_seen
            || (other.last_seen == self.last_seen && other.template > self.template)
        {
            self.last_seen = other.last_seen;
            self.template = other.template;
        }
        add_listed(&mut self.services, other.services);
        add_listed(&mut self.systems, other.systems);
        self.buckets.merge(&other.buckets);
    }

    /// Events with a time in `[from, to)`, both whole minutes.
    pub fn count_between(&self, from: i64, to: i64) -> u64 {
        self.buckets.range(from, to).iter().map(|(_, n)| n).sum()
    }
}

/// Counts per minute (start of the minute in ns since the epoch), in time order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buckets(Vec<(i64, u64)>);

impl Buckets {
    /// Adds `n` events to the minute starting at `minute`.
    pub fn add(&mut self, minute: i64, n: u64) {
        // Events mostly arrive in time order: the last minute, or a new one after it.
        match self.0.last_mut() {
            Some((m, count)) if *m == minute => *count += n,
            Some((m, _)) if *m > minute => match self.0.binary_search_by_key(&minute, |e| e.0) {
                Ok(i) => self.0[i].1 += n,
                Err(i) => self.0.insert(i, (minute, n)),
            },
            _ => self.0.push((minute, n)),
        }
    }

    fn merge(&mut self, other: &Buckets) {
        if self
            .0
            .last()
            .is_none_or(|l| other.0.first().is_none_or(|f| l.0 < f.0))
        {
            self.0.extend_from_slice(&other.0);
            return;
        }
        let mut merged = Vec::with_capacity(self.0.len() + other.0.len());
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if j == b.len() || (i < a.len() && a[i].0 < b[j].0) {
                merged.push(a[i]);
                i += 1;
            } else if i == a.len() || b[j].0 < a[i].0 {
                merged.push(b[j]);
                j += 1;
            } else {
                merged.push((a[i].0, a[i].1 + b[j].1));
                i += 1;
                j += 1;
            }
        }
        self.0 = merged;
    }

    /// The minutes in `[from, to)`.
    pub fn range(&self, from: i64, to: i64) -> &[(i64, u64)] {
        let lo = self.0.partition_point(|e| e.0 < from);
        let hi = self.0.partition_point(|e| e.0 < to);
        &self.0[lo..hi.max(lo)]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(i64, u64)> {
        self.0.iter()
    }
}

fn add_listed(set: &mut BTreeSet<String>, more: BTreeSet<String>) {
    for s in more {
        set.insert(s);
    }
    while set.len() > MAX_LISTED {
        set.pop_last();
    }
}

/// Statistics of many fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recurrence {
    pub by_fingerprint: HashMap<u64, FingerprintStats>,
    /// Events not tracked because [`MAX_FINGERPRINTS`] was reached.
    pub untracked: u64,
}

impl Recurrence {
    /// The statistics of the events in `batch` (events schema).
    pub fn of_batch(batch: &RecordBatch) -> Result<Self> {
        let mut out = Self::default();
        out.add_batch(batch)?;
        Ok(out)
    }

    /// Adds the events of `batch` (events schema).
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let col = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| {
                crate::error::Error::Arrow(arrow::error::ArrowError::SchemaError(format!(
                    "events batch has no column '{name}'"
                )))
            })
        };
        let time = col("time")?.as_primitive::<TimestampNanosecondType>();
        let fingerprint = col("fingerprint")?.as_primitive::<UInt64Type>();
        let message = string_column(col("message")?)?;
        let template = string_column(col("template")?)?;
        let service = col("service")?.as_dictionary::<Int32Type>();
        let service_values = string_column(service.values())?;
        let system = col("system_id")?.as_dictionary::<Int32Type>();
        let system_values = string_column(system.values())?;
        for row in 0..batch.num_rows() {
            self.add_event(
                fingerprint.value(row),
                time.value(row),
                message.value(row),
                template.value(row),
                service
                    .is_valid(row)
                    .then(|| service_values.value(service.keys().value(row) as usize)),
                system
                    .is_valid(row)
                    .then(|| system_values.value(system.keys().value(row) as usize)),
            );
        }
        Ok(())
    }

    /// Adds one event.
    pub fn add_event(
        &mut self,
        fingerprint: u64,
        time: i64,
        message: &str,
        template: &str,
        service: Option<&str>,
        system: Option<&str>,
    ) {
        let t = time;
        if self.by_fingerprint.len() >= MAX_FINGERPRINTS
            && !self.by_fingerprint.contains_key(&fingerprint)
        {
            self.untracked += 1;
            return;
        }
        let stats = self
            .by_fingerprint
            .entry(fingerprint)
            .or_insert_with(|| FingerprintStats::new(t, message, template));
        stats.count += 1;
        if t < stats.first_seen || (t == stats.first_seen && message < stats.sample.as_str()) {
            stats.first_seen = t;
            stats.sample = message.to_string();
        }
        if t > stats.last_seen || (t == stats.last_seen && template > stats.template.as_str()) {
            stats.last_seen = t;
            stats.template = template.to_string();
        }
        stats
            .buckets
            .add(t.div_euclid(BUCKET_NANOS) * BUCKET_NANOS, 1);
        for (set, value) in [(&mut stats.services, service), (&mut stats.systems, system)] {
            if let Some(v) = value
                && set.len() < MAX_LISTED
                && !set.contains(v)
            {
                set.insert(v.to_string());
            }
        }
    }

    /// Adds another set of statistics.
    pub fn merge(&mut self, other: Recurrence) {
        self.untracked += other.untracked;
        for (fingerprint, stats) in other.by_fingerprint {
            let full = self.by_fingerprint.len() >= MAX_FINGERPRINTS;
            match self.by_fingerprint.get_mut(&fingerprint) {
                Some(mine) => mine.merge(stats),
                None if full => self.untracked += stats.count,
                None => {
                    self.by_fingerprint.insert(fingerprint, stats);
                }
            }
        }
    }

    /// Encodes the statistics (format in `docs/fingerprinting.md`), fingerprints in order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut keys: Vec<&u64> = self.by_fingerprint.keys().collect();
        keys.sort();
        put_u64(out, self.untracked);
        put_u64(out, keys.len() as u64);
        for fp in keys {
            let s = &self.by_fingerprint[fp];
            put_u64(out, *fp);
            put_u64(out, s.count);
            put_u64(out, s.first_seen as u64);
            put_u64(out, s.last_seen as u64);
            put_str(out, &s.sample);
            put_str(out, &s.template);
            for set in [&s.services, &s.systems] {
                put_u64(out, set.len() as u64);
                for v in set {
                    put_str(out, v);
                }
            }
            put_u64(out, s.buckets.len() as u64);
            for (b, n) in s.buckets.iter() {
                put_u64(out, *b as u64);
                put_u64(out, *n);
            }
        }
    }

    /// Decodes statistics written by [`Recurrence::encode`].
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let mut out = Self {
            untracked: r.u64()?,
            ..Self::default()
        };
        for _ in 0..r.u64()? {
            let fp = r.u64()?;
            let count = r.u64()?;
            let first_seen = r.i64()?;
            let last_seen = r.i64()?;
            let sample = r.str()?;
            let template = r.str()?;
            let mut sets = [BTreeSet::new(), BTreeSet::new()];
            for set in &mut sets {
                for _ in 0..r.u64()? {
                    set.insert(r.str()?);
                }
            }
            let mut buckets = Buckets::default();
            for _ in 0..r.u64()? {
                let b = r.i64()?;
                let n = r.u64()?;
                buckets.add(b, n);
            }
            let [services, systems] = sets;
            out.by_fingerprint.insert(
                fp,
                FingerprintStats {
                    count,
                    first_seen,
                    last_seen,
                    sample,
                    template,
                    services,
                    systems,
                    buckets,
                },
            );
        }
        Ok(out)
    }
}

fn string_column(array: &dyn Array) -> Result<&StringArray> {
    array.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
        crate::error::Error::Arrow(arrow::error::ArrowError::SchemaError(
            "expected a Utf8 column".into(),
        ))
    })
}

/// How a fingerprint's recent count compares with the window before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecurrenceStatus {
    /// First seen within the window.
    New,
    /// Count at least `escalation` times the previous window's (and at least
    /// `escalation` events).
    Escalating,
    /// Seen in the window, not escalating.
    Ongoing,
    /// Seen in the previous window, not in this one.
    Quiet,
}

impl RecurrenceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Escalating => "escalating",
            Self::Ongoing => "ongoing",
            Self::Quiet => "quiet",
        }
    }
}

/// One fingerprint's recurrence over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct RecurrenceRow {
    pub fingerprint: u64,
    pub template: String,
    pub sample: String,
    pub count: u64,
    /// Events per bucket, averaged over the window.
    pub rate: f64,
    pub previous_count: u64,
    pub status: RecurrenceStatus,
    pub first_seen: i64,
    pub last_seen: i64,
    pub services: Vec<String>,
    pub systems: Vec<String>,
    /// Counts per bucket over the window, oldest first.
    pub buckets: Vec<u64>,
}

fn ceil_minute(nanos: i64) -> i64 {
    nanos.div_euclid(BUCKET_NANOS) * BUCKET_NANOS
        + if nanos.rem_euclid(BUCKET_NANOS) == 0 {
            0
        } else {
            BUCKET_NANOS
        }
}

/// The question `recurrence(since, bucket)` asks: the window is the `since` before
/// `now`, in whole minutes ending with the minute `now` is in; the previous window is
/// the `since` before it.
#[derive(Debug, Clone, Copy)]
pub struct RecurrenceQuery {
    pub now: i64,
    pub since: i64,
    pub bucket: i64,
    /// Ratio to the previous window from which a fingerprint is escalating; default 2.
    pub escalation: f64,
}

impl Recurrence {
    /// Every fingerprint seen in the window or the one before, busiest first.
    pub fn query(&self, q: &RecurrenceQuery) -> Vec<RecurrenceRow> {
        // Stored counts are per minute, so the window is too: it ends with the current
        // minute, and `since` and `bucket` are whole minutes (rounded up).
        let end = ceil_minute(q.now);
        let since = ceil_minute(q.since.max(1));
        let bucket = ceil_minute(q.bucket.max(1)).min(since);
        let start = end - since;
        let previous_start = start - since;
        let n_buckets = (since + bucket - 1) / bucket;
        let mut rows: Vec<RecurrenceRow> = self
            .by_fingerprint
            .iter()
            .filter_map(|(&fingerprint, s)| {
                // One pass over the minutes of both windows.
                let mut buckets = vec![0u64; n_buckets as usize];
                let (mut count, mut previous_count) = (0, 0);
                for &(minute, n) in s.buckets.range(previous_start, end) {
                    if minute < start {
                        previous_count += n;
                    } else {
                        count += n;
                        buckets[((minute - start) / bucket) as usize] += n;
                    }
                }
                if count == 0 && previous_count == 0 {
                    return None;
                }
                let status = if count == 0 {
                    RecurrenceStatus::Quiet
                } else if s.first_seen >= start {
                    RecurrenceStatus::New
                } else if count as f64 >= q.escalation * previous_count as f64
                    && count as f64 >= q.escalation
                {
                    RecurrenceStatus::Escalating
                } else {
                    RecurrenceStatus::Ongoing
                };
                Some(RecurrenceRow {
                    fingerprint,
                    template: s.template.clone(),
                    sample: s.sample.clone(),
                    count,
                    rate: count as f64 / n_buckets as f64,
                    previous_count,
                    status,
                    first_seen: s.first_seen,
                    last_seen: s.last_seen,
                    services: s.services.iter().cloned().collect(),
                    systems: s.systems.iter().cloned().collect(),
                    buckets,
                })
            })
            .collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(b.previous_count.cmp(&a.previous_count))
                .then(a.fingerprint.cmp(&b.fingerprint))
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = BUCKET_NANOS;

    fn stats(times: &[i64]) -> FingerprintStats {
        let mut s = FingerprintStats::new(times[0], "m", "t");
        for &t in times {
            let mut one = FingerprintStats::new(t, "m", "t");
            one.count = 1;
            one.buckets.add(t.div_euclid(M) * M, 1);
            s.merge(one);
        }
        s
    }

    #[test]
    fn counts_between_respect_bucket_edges() {
        let s = stats(&[0, M, M + 1, 5 * M]);
        assert_eq!(s.count, 4);
        assert_eq!(s.count_between(0, 6 * M), 4);
        assert_eq!(s.count_between(M, 2 * M), 2);
        assert_eq!(s.count_between(2 * M, 5 * M), 0);
        assert_eq!(s.count_between(5 * M, 5 * M), 0);
    }

    #[test]
    fn statuses() {
        let mut r = Recurrence::default();
        r.by_fingerprint.insert(1, stats(&[10 * M, 25 * M])); // old, once before, once now
        r.by_fingerprint.insert(2, stats(&[25 * M, 26 * M])); // new
        r.by_fingerprint
            .insert(3, stats(&[15 * M, 21 * M, 22 * M, 23 * M])); // escalating
        r.by_fingerprint.insert(4, stats(&[15 * M])); // quiet
        r.by_fingerprint.insert(5, stats(&[M])); // too old: not listed
        let q = RecurrenceQuery {
            now: 30 * M,
            since: 10 * M,
            bucket: 5 * M,
            escalation: 2.0,
        };
        let rows = r.query(&q);
        let by: HashMap<u64, &RecurrenceRow> = rows.iter().map(|r| (r.fingerprint, r)).collect();
        assert_eq!(rows.len(), 4);
        assert_eq!(by[&1].status, RecurrenceStatus::Ongoing);
        assert_eq!(by[&2].status, RecurrenceStatus::New);
        assert_eq!(by[&3].status, RecurrenceStatus::Escalating);
        assert_eq!(by[&3].count, 3);
        assert_eq!(by[&3].previous_count, 1);
        assert_eq!(by[&3].buckets, vec![3, 0]);
        assert_eq!(by[&3].rate, 1.5);
        assert_eq!(by[&4].status, RecurrenceStatus::Quiet);
        assert_eq!(rows[0].fingerprint, 3, "busiest first");
    }

    #[test]
    fn buckets_stay_sorted_whatever_the_order() {
        let adds = [(5, 1), (1, 2), (5, 3), (9, 1), (3, 1), (1, 1), (7, 2)];
        let mut all = Buckets::default();
        let (mut a, mut b) = (Buckets::default(), Buckets::default());
        for (i, &(m, n)) in adds.iter().enumerate() {
            all.add(m * M, n);
            if i % 2 == 0 {
                a.add(m * M, n)
            } else {
                b.add(m * M, n)
            }
        }
        let expected: Vec<(i64, u64)> =
            vec![(M, 3), (3 * M, 1), (5 * M, 4), (7 * M, 2), (9 * M, 1)];
        assert_eq!(all.iter().copied().collect::<Vec<_>>(), expected);
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(all.range(3 * M, 7 * M), &[(3 * M, 1), (5 * M, 4)]);
        assert_eq!(all.range(8 * M, 2 * M), &[] as &[(i64, u64)]);
    }

    #[test]
    fn merging_is_order_independent_and_round_trips() {
        let a = stats(&[3 * M, M]);
        let b = stats(&[2 * M, 7 * M]);
        let mut x = a.clone();
        x.merge(b.clone());
        let mut y = b;
        y.merge(a);
        assert_eq!(x, y);
        let mut r = Recurrence::default();
        r.by_fingerprint.insert(9, x);
        let mut bytes = Vec::new();
        r.encode(&mut bytes);
        let back = Recurrence::decode(&mut Reader::new(&bytes, "t")).unwrap();
        assert_eq!(back, r);
    }
}
