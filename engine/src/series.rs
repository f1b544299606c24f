//! Which series each row of a batch belongs to, and the order of those series.
//!
//! A series is one combination of values of the key columns (a metric table's tags). Both
//! the flush (sorting by series) and the last-value cache (newest row per series) need it
//! for every buffered row, so it must be cheap: each key column is first reduced to one
//! integer code per row, equal values getting equal codes and codes comparing like the
//! values (null first, then strings byte by byte). A dictionary column is coded through its
//! dictionary, so each distinct string is hashed and compared a handful of times rather
//! than once per row. Rows are then told apart by their tuple of codes.
//!
//! Columns that are neither strings nor dictionaries of strings fall back to Arrow's row
//! format, which handles every type.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int32Type};
use arrow::row::{RowConverter, SortField};

use crate::error::Result;

/// The series of every row of a batch.
pub(crate) struct Series {
    /// Per row, its series: `0..count`, numbered in order of first appearance.
    pub(crate) ids: Vec<u32>,
    /// Per series, its rank among the batch's series in key order (`0..count`).
    pub(crate) ranks: Vec<u32>,
}

impl Series {
    /// Per row, the rank of its series.
    pub(crate) fn row_ranks(&self) -> Vec<u32> {
        self.ids.iter().map(|&id| self.ranks[id as usize]).collect()
    }
}

/// The series of every row of `batch` over the columns named `keys` (absent names are
/// skipped; no key columns make one series).
pub(crate) fn series_of(batch: &RecordBatch, keys: &[&str]) -> Result<Series> {
    let columns: Vec<ArrayRef> = keys
        .iter()
        .filter_map(|k| batch.column_by_name(k).map(Arc::clone))
        .collect();
    let rows = batch.num_rows();
    if columns.is_empty() {
        return Ok(Series {
            ids: vec![0; rows],
            ranks: if rows == 0 { Vec::new() } else { vec![0] },
        });
    }
    match columns.iter().map(value_codes).collect::<Option<Vec<_>>>() {
        Some(codes) => Ok(by_codes(&codes, rows)),
        None => by_row_format(&columns),
    }
}

/// Series from per-column codes: each row's tuple of codes, interned.
fn by_codes(codes: &[Vec<u32>], rows: usize) -> Series {
    let width = codes.len();
    let mut tuples = Vec::with_capacity(rows * width);
    for row in 0..rows {
        tuples.extend(codes.iter().map(|c| c[row]));
    }
    let mut index: HashMap<&[u32], u32, foldhash::fast::RandomState> = HashMap::default();
    let mut distinct: Vec<&[u32]> = Vec::new();
    let ids = tuples
        .chunks_exact(width)
        .map(|t| {
            *index.entry(t).or_insert_with(|| {
                distinct.push(t);
                (distinct.len() - 1) as u32
            })
        })
        .collect();
    Series {
        ids,
        ranks: ranks_of(&distinct),
    }
}

/// Series through Arrow's row format, for key columns of any type.
fn by_row_format(columns: &[ArrayRef]) -> Result<Series> {
    let fields = columns
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let rows = RowConverter::new(fields)?.convert_columns(columns)?;
    let mut index: HashMap<&[u8], u32, foldhash::fast::RandomState> = HashMap::default();
    let mut distinct: Vec<&[u8]> = Vec::new();
    let ids = (0..rows.num_rows())
        .map(|i| {
            let bytes = rows.row(i).data();
            *index.entry(bytes).or_insert_with(|| {
                distinct.push(bytes);
                (distinct.len() - 1) as u32
            })
        })
        .collect();
    Ok(Series {
        ids,
        ranks: ranks_of(&distinct),
    })
}

/// The rank of each item in sorted order.
fn ranks_of<T: Ord + ?Sized>(distinct: &[&T]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..distinct.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| distinct[a as usize].cmp(distinct[b as usize]));
    let mut rank = vec![0u32; distinct.len()];
    for (r, &id) in order.iter().enumerate() {
        rank[id as usize] = r as u32;
    }
    rank
}

/// Per row, a code for the column's value: 0 for null, else 1 + the value's rank among the
/// column's distinct values. `None` for a type without a fast path.
fn value_codes(column: &ArrayRef) -> Option<Vec<u32>> {
    match column.data_type() {
        DataType::Dictionary(key, value)
            if **key == DataType::Int32 && **value == DataType::Utf8 =>
        {
            let dict = column.as_dictionary::<Int32Type>();
            let values = dict.values().as_string_opt::<i32>()?;
            let per_value = string_codes(values);
            let keys = dict.keys();
            Some(
                (0..keys.len())
                    .map(|i| {
                        if keys.is_null(i) {
                            0
                        } else {
                            // Keys of a valid dictionary array index its values.
                            per_value.get(keys.value(i) as usize).copied().unwrap_or(0)
                        }
                    })
                    .collect(),
            )
        }
        DataType::Utf8 => Some(string_codes(column.as_string::<i32>())),
        _ => None,
    }
}

/// Per element of `values`, 0 for null, else 1 + its rank among the distinct values.
fn string_codes(values: &StringArray) -> Vec<u32> {
    let mut index: HashMap<&str, u32, foldhash::fast::RandomState> = HashMap::default();
    let mut distinct: Vec<&str> = Vec::new();
    let ids: Vec<Option<u32>> = values
        .iter()
        .map(|v| {
            v.map(|s| {
                *index.entry(s).or_insert_with(|| {
                    distinct.push(s);
                    (distinct.len() - 1) as u32
                })
            })
        })
        .collect();
    let rank = ranks_of(&distinct);
    ids.into_iter()
        .map(|id| id.map_or(0, |id| rank[id as usize] + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, Int64Array, StringDictionaryBuilder};
    use proptest::prelude::*;

    /// The reference: ranks through the row format, whatever the column types.
    fn reference(batch: &RecordBatch, keys: &[&str]) -> Vec<u32> {
        let columns: Vec<ArrayRef> = keys
            .iter()
            .filter_map(|k| batch.column_by_name(k).map(Arc::clone))
            .collect();
        by_row_format(&columns).unwrap().row_ranks()
    }

    fn dict(values: &[Option<&str>]) -> ArrayRef {
        let mut b = StringDictionaryBuilder::<Int32Type>::new();
        for v in values {
            b.append_option(*v);
        }
        Arc::new(b.finish())
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn ranks_follow_values_nulls_first_and_ignore_dictionary_layout() {
        // "b" appears twice in the dictionary (as after concatenating two batches).
        let keys = arrow::array::Int32Array::from(vec![Some(0), Some(1), None, Some(2), Some(0)]);
        let values = Arc::new(StringArray::from(vec!["b", "a", "b"]));
        let host: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).unwrap());
        let dc = dict(&[Some("x"), Some("x"), Some("x"), Some("y"), Some("x")]);
        let b = batch(vec![("host", host), ("dc", dc)]);
        let s = series_of(&b, &["host", "dc"]).unwrap();
        // (b,x) (a,x) (null,x) (b,y) (b,x): rows 0 and 4 are one series.
        assert_eq!(s.ids, [0, 1, 2, 3, 0]);
        assert_eq!(s.row_ranks(), [2, 1, 0, 3, 2]);
        assert_eq!(s.row_ranks(), reference(&b, &["host", "dc"]));
    }

    #[test]
    fn other_types_and_no_keys() {
        let b = batch(vec![
            ("n", Arc::new(Int64Array::from(vec![3, 1, 3])) as ArrayRef),
            (
                "s",
                Arc::new(StringArray::from(vec!["z", "z", "a"])) as ArrayRef,
            ),
        ]);
        let s = series_of(&b, &["n", "s"]).unwrap();
        assert_eq!(s.ids, [0, 1, 2]);
        assert_eq!(s.row_ranks(), [2, 0, 1]);
        let s = series_of(&b, &["absent"]).unwrap();
        assert_eq!((s.ids, s.ranks), (vec![0, 0, 0], vec![0]));
        let empty = b.slice(0, 0);
        assert!(series_of(&empty, &[]).unwrap().ranks.is_empty());
    }

    proptest! {
        #[test]
        fn codes_rank_series_like_the_row_format(
            rows in proptest::collection::vec(
                (proptest::option::of("[ab]{0,2}"), proptest::option::of("[é\u{0}z]{0,2}"), "[xy]"),
                0..40,
            ),
        ) {
            let first: Vec<Option<&str>> = rows.iter().map(|r| r.0.as_deref()).collect();
            let second: Vec<Option<&str>> = rows.iter().map(|r| r.1.as_deref()).collect();
            let third: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
            let b = batch(vec![
                ("a", dict(&first)),
                ("b", dict(&second)),
                ("c", Arc::new(StringArray::from(third)) as ArrayRef),
            ]);
            let keys = ["a", "b", "c"];
            let s = series_of(&b, &keys).unwrap();
            prop_assert_eq!(s.row_ranks(), reference(&b, &keys));
            // Same series exactly when same values.
            for i in 0..rows.len() {
                for j in 0..rows.len() {
                    prop_assert_eq!(s.ids[i] == s.ids[j], rows[i] == rows[j]);
                }
            }
        }
    }
}
