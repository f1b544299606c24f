//! Newest first: a query that groups rows into time buckets and keeps the newest few
//! (`GROUP BY date_bin(stride, time) … ORDER BY <that bucket> DESC LIMIT k`) needs only
//! the newest time range that holds k buckets. It is run with an added filter
//! `time >= bound`, starting with the k newest buckets the query's own time filters and
//! the data allow, and widened (4× each time) while the answer has fewer than k rows;
//! once the bound reaches the table's oldest row, the query runs as written.
//!
//! Why the answer is the same: `bound` is a bucket boundary, so every bucket at or after
//! it is complete (all of its rows pass the added filter) and gets the same aggregates
//! and `HAVING` decisions as without the filter; every bucket left out lies before the
//! bound and sorts after all of those. When the bounded query yields its full `LIMIT`,
//! no left-out row could have been among them.

use std::sync::Arc;

use arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Aggregate, BinaryExpr, Expr, Filter, LogicalPlan, Operator, lit};
use vigil_engine::TIME_COLUMN;

/// At most this many rows (OFFSET + LIMIT) are answered newest first.
const MAX_ROWS: usize = 10_000;

/// Each widening multiplies the number of buckets read by this.
const GROWTH: i64 = 4;

/// A query that can run newest first.
#[derive(Debug, Clone)]
pub(crate) struct NewestFirst {
    /// The table whose rows are bucketed.
    pub(crate) table: String,
    /// The `LIMIT`.
    fetch: usize,
    /// `OFFSET` + `LIMIT`: buckets to read at least.
    rows: usize,
    stride: i64,
    origin: i64,
    time: Column,
    /// The largest time the query's filters admit.
    upper: Option<i64>,
}

impl NewestFirst {
    /// The query's shape, when `plan` (as planned from SQL, before optimisation) is one.
    pub(crate) fn detect(plan: &LogicalPlan) -> Option<Self> {
        let LogicalPlan::Limit(limit) = plan else {
            return None;
        };
        let FetchType::Literal(Some(fetch)) = limit.get_fetch_type().ok()? else {
            return None;
        };
        let SkipType::Literal(skip) = limit.get_skip_type().ok()? else {
            return None;
        };
        let rows = skip.checked_add(fetch)?;
        if fetch == 0 || rows > MAX_ROWS {
            return None;
        }
        // Down to the aggregate through projections, `HAVING` filters and one sort, with
        // the leading sort key rewritten into the terms of each node's input.
        let mut node = limit.input.as_ref();
        let mut key: Option<Expr> = None;
        let agg = loop {
            match node {
                LogicalPlan::Sort(sort) if key.is_none() => {
                    let first = sort.expr.first()?;
                    if first.asc {
                        return None;
                    }
                    key = Some(first.expr.clone());
                    node = sort.input.as_ref();
                }
                LogicalPlan::Projection(p) => {
                    if let Some(k) = key.take() {
                        key = Some(through_projection(k, p)?);
                    }
                    node = p.input.as_ref();
                }
                LogicalPlan::Filter(f) => node = f.input.as_ref(),
                LogicalPlan::Aggregate(agg) => break agg,
                _ => return None,
            }
        };
        let key = key?;
        if agg
            .group_expr
            .iter()
            .any(|g| matches!(g, Expr::GroupingSet(_)))
        {
            return None;
        }
        let group = match &key {
            Expr::Column(c) => agg.group_expr.get(agg.schema.index_of_column(c).ok()?)?,
            other => {
                let name = other.schema_name().to_string();
                agg.group_expr
                    .iter()
                    .find(|g| g.schema_name().to_string() == name)?
            }
        };
        let (stride, time, origin) = date_bin(group)?;
        // Below the aggregate: filters over one table scan.
        let mut node = agg.input.as_ref();
        let mut upper: Option<i64> = None;
        let table = loop {
            match node {
                LogicalPlan::Filter(f) => {
                    for e in split_conjunction(&f.predicate) {
                        if let Some(u) = upper_bound(e, &time) {
                            upper = Some(upper.map_or(u, |v| v.min(u)));
                        }
                    }
                    node = f.input.as_ref();
                }
                LogicalPlan::TableScan(scan) => break scan.table_name.table().to_string(),
                _ => return None,
            }
        };
        Some(Self {
            table,
            fetch,
            rows,
            stride,
            origin,
            time,
            upper,
        })
    }

    /// The LIMIT: a bounded run that yields this many rows is the answer.
    pub(crate) fn fetch(&self) -> usize {
        self.fetch
    }

    /// The successive lower bounds to try for a table whose rows span `oldest..=newest`:
    /// each a bucket boundary, holding `OFFSET + LIMIT` buckets first, then 4× as many
    /// each time; none at or before `oldest` (then the query must run as written).
    pub(crate) fn bounds(&self, oldest: i64, newest: i64) -> impl Iterator<Item = i64> {
        let top = self.upper.map_or(newest, |u| u.min(newest));
        let last_bucket = self.bucket_start(top);
        let stride = self.stride;
        let mut buckets = self.rows as i64;
        std::iter::from_fn(move || {
            let bound = last_bucket.checked_sub(buckets.checked_sub(1)?.checked_mul(stride)?)?;
            if bound <= oldest {
                return None;
            }
            buckets = buckets.checked_mul(GROWTH)?;
            Some(bound)
        })
    }

    fn bucket_start(&self, t: i64) -> i64 {
        let since = t.saturating_sub(self.origin);
        self.origin
            .saturating_add(since.div_euclid(self.stride) * self.stride)
    }

    /// `plan` with `time >= bound` added below the aggregate.
    pub(crate) fn bounded(&self, plan: &LogicalPlan, bound: i64) -> Result<LogicalPlan> {
        let at_or_after = Expr::Column(self.time.clone()).gt_eq(lit(
            ScalarValue::TimestampNanosecond(Some(bound), Some("UTC".into())),
        ));
        plan.clone()
            .transform_down(|node| match node {
                LogicalPlan::Aggregate(agg) => {
                    let filter = Filter::try_new(at_or_after.clone(), Arc::clone(&agg.input))?;
                    let agg = Aggregate::try_new(
                        Arc::new(LogicalPlan::Filter(filter)),
                        agg.group_expr,
                        agg.aggr_expr,
                    )?;
                    Ok(Transformed::new(
                        LogicalPlan::Aggregate(agg),
                        true,
                        TreeNodeRecursion::Jump,
                    ))
                }
                other => Ok(Transformed::no(other)),
            })
            .map(|t| t.data)
    }
}

/// `key`, an expression over the output of projection `p`, over its input instead.
fn through_projection(key: Expr, p: &datafusion::logical_expr::Projection) -> Option<Expr> {
    key.transform(|e| match e {
        Expr::Column(c) => {
            let i = p.schema.index_of_column(&c)?;
            Ok(Transformed::yes(p.expr[i].clone().unalias()))
        }
        other => Ok(Transformed::no(other)),
    })
    .ok()
    .map(|t| t.data)
}

/// `date_bin(stride, time[, origin])` with a fixed stride (no months) and a literal
/// origin: (stride, time column, origin) in nanoseconds.
fn date_bin(e: &Expr) -> Option<(i64, Column, i64)> {
    let Expr::ScalarFunction(f) = e.clone().unalias() else {
        return None;
    };
    if f.func.name() != "date_bin" || !(2..=3).contains(&f.args.len()) {
        return None;
    }
    let stride = match &f.args[0] {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(i)), _) if i.months == 0 => {
            i64::from(i.days)
                .checked_mul(86_400_000_000_000)?
                .checked_add(i.nanoseconds)?
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(i)), _) => i64::from(i.days)
            .checked_mul(86_400_000_000_000)?
            .checked_add(i64::from(i.milliseconds).checked_mul(1_000_000)?)?,
        _ => return None,
    };
    if stride <= 0 {
        return None;
    }
    let Expr::Column(time) = &f.args[1] else {
        return None;
    };
    if time.name != TIME_COLUMN {
        return None;
    }
    let origin = match f.args.get(2) {
        None => 0,
        Some(Expr::Literal(v, _)) => timestamp(v)?,
        Some(_) => return None,
    };
    Some((stride, time.clone(), origin))
}

/// The largest time `e` admits, when `e` is `time < t`, `time <= t` or the mirror image.
fn upper_bound(e: &Expr, time: &Column) -> Option<i64> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    let (op, value) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) if c.name == time.name => (*op, v),
        (Expr::Literal(v, _), Expr::Column(c)) if c.name == time.name => (op.swap()?, v),
        _ => return None,
    };
    let t = timestamp(value)?;
    match op {
        Operator::Lt => t.checked_sub(1),
        Operator::LtEq => Some(t),
        _ => None,
    }
}

/// A literal as nanoseconds since the epoch: a timestamp, or text in RFC 3339 form.
fn timestamp(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampNanosecond(Some(t), _) => Some(*t),
        ScalarValue::TimestampMicrosecond(Some(t), _) => t.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(t), _) => t.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(t), _) => t.checked_mul(1_000_000_000),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => {
            string_to_timestamp_nanos(s).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    const MINUTE: i64 = 60_000_000_000;

    async fn plan(sql: &str) -> LogicalPlan {
        let schema = Arc::new(Schema::new(vec![
            Field::new("host", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
        ]));
        let ctx = SessionContext::new();
        let table = MemTable::try_new(schema, vec![vec![]]).unwrap();
        ctx.register_table("cpu", Arc::new(table)).unwrap();
        ctx.sql(sql).await.unwrap().logical_plan().clone()
    }

    #[tokio::test]
    async fn the_tsbs_shape_reads_the_newest_buckets_first_then_four_times_as_many() {
        let p = plan(
            "SELECT date_bin(INTERVAL '1 minute', time) AS minute, max(v) AS m FROM cpu \
             WHERE time < '1970-01-01T01:00:30Z' GROUP BY minute \
             ORDER BY minute DESC LIMIT 5",
        )
        .await;
        let nf = NewestFirst::detect(&p).expect("detected");
        assert_eq!(
            (nf.table.as_str(), nf.fetch(), nf.stride),
            ("cpu", 5, MINUTE)
        );
        // Data from minute 0 to minute 300; the query stops at 60:30, in bucket 60.
        let bounds: Vec<i64> = nf.bounds(0, 300 * MINUTE).collect();
        assert_eq!(bounds, [56 * MINUTE, 41 * MINUTE]);
        let bounded = nf
            .bounded(&p, 56 * MINUTE)
            .unwrap()
            .display_indent()
            .to_string();
        assert!(
            bounded
                .contains("Filter: cpu.time >= TimestampNanosecond(3360000000000, Some(\"UTC\"))"),
            "{bounded}"
        );
    }

    #[tokio::test]
    async fn other_shapes_run_as_written() {
        for sql in [
            // Oldest first.
            "SELECT date_bin(INTERVAL '1 minute', time) AS m, max(v) FROM cpu \
             GROUP BY m ORDER BY m LIMIT 5",
            // No LIMIT.
            "SELECT date_bin(INTERVAL '1 minute', time) AS m, max(v) FROM cpu \
             GROUP BY m ORDER BY m DESC",
            // Ordered by something else first.
            "SELECT host, date_bin(INTERVAL '1 minute', time) AS m, max(v) FROM cpu \
             GROUP BY host, m ORDER BY host DESC, m DESC LIMIT 5",
            // A calendar stride.
            "SELECT date_bin(INTERVAL '1 month', time) AS m, max(v) FROM cpu \
             GROUP BY m ORDER BY m DESC LIMIT 5",
            // Not an aggregate.
            "SELECT time FROM cpu ORDER BY time DESC LIMIT 5",
        ] {
            assert!(NewestFirst::detect(&plan(sql).await).is_none(), "{sql}");
        }
    }
}
