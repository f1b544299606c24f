//! "The last reading of every host" from the engine's last-value cache.
//!
//! `SELECT DISTINCT ON (<tags>) ... FROM t ORDER BY <tags>, time DESC` keeps, for each
//! combination of the `ON` tags, the row with the largest time. That row is the newest
//! row of one of the table's series (a series is one combination of all tags), so the
//! query gives the same answer over the newest row of every series as over the whole
//! table. [`LastValueRule`] rewrites the scan under such a `DISTINCT ON` to read those
//! rows from the cache instead of the table.
//!
//! The rewrite applies only when nothing between the `DISTINCT ON` and the scan could
//! change which row is newest: filters may name tags only (a filter on time or a field
//! could exclude a series' newest row and make an older one the answer), projections
//! may only pick columns, and the ordering must be the `ON` tags then `time DESC`.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{
    Distinct, DistinctOn, Expr, LogicalPlan, LogicalPlanBuilder, TableScan,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_plan::ExecutionPlan;
use vigil_engine::{ColumnKind, Engine, TIME_COLUMN, newest_rows};

use crate::scan::{ScanInfo, VigilScanExec};
use crate::table::VigilTable;

/// Reads the newest row per series from the cache under a qualifying `DISTINCT ON`.
#[derive(Debug, Default)]
pub(crate) struct LastValueRule;

impl AnalyzerRule for LastValueRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up(|node| {
            let LogicalPlan::Distinct(Distinct::On(on)) = &node else {
                return Ok(Transformed::no(node));
            };
            match rewrite(on)? {
                Some(new) => Ok(Transformed::yes(new)),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "vigil_last_value_cache"
    }
}

fn rewrite(on: &DistinctOn) -> Result<Option<LogicalPlan>> {
    let Some(sort) = &on.sort_expr else {
        return Ok(None);
    };
    let Some(on_columns) = on
        .on_expr
        .iter()
        .map(|e| match e {
            Expr::Column(c) => Some(c.name.clone()),
            _ => None,
        })
        .collect::<Option<HashSet<String>>>()
    else {
        return Ok(None);
    };
    let Some((newest, leading)) = sort.split_last() else {
        return Ok(None);
    };
    let newest_first =
        matches!(&newest.expr, Expr::Column(c) if c.name == TIME_COLUMN) && !newest.asc;
    let leading_are_on = leading.len() == on_columns.len()
        && leading
            .iter()
            .all(|s| matches!(&s.expr, Expr::Column(c) if on_columns.contains(&c.name)));
    if !newest_first || !leading_are_on {
        return Ok(None);
    }
    let Some(found) = cached_input(&on.input, &on_columns)? else {
        return Ok(None);
    };
    if !on_columns.iter().all(|c| found.tags.contains(c)) {
        return Ok(None);
    }
    if let Some(grouped) = found.grouped {
        // The scan already keeps the newest row per `ON` group: what is left of the
        // DISTINCT ON is its order and its select list.
        let plan = LogicalPlanBuilder::from(grouped)
            .sort(sort.clone())?
            .project(on.select_expr.clone())?
            .build()?;
        if plan.schema() == &on.schema {
            return Ok(Some(plan));
        }
    }
    Ok(Some(LogicalPlan::Distinct(Distinct::On(DistinctOn {
        input: Arc::new(found.plan),
        ..on.clone()
    }))))
}

/// The input of a DISTINCT ON, rewritten to read the last-value cache.
struct Cached {
    /// Reads the newest row of every series.
    plan: LogicalPlan,
    /// Reads the newest row of every `ON` group: only when no filter sits between the
    /// DISTINCT ON and the scan (a filter must see every series' row first).
    grouped: Option<LogicalPlan>,
    tags: HashSet<String>,
}

/// `plan` with its Vigil table scan reading the last-value cache, and the table's tags;
/// `None` when a node on the way could change which row of a series is the newest.
fn cached_input(plan: &LogicalPlan, on: &HashSet<String>) -> Result<Option<Cached>> {
    let (child, check): (&LogicalPlan, Option<&Expr>) = match plan {
        LogicalPlan::TableScan(scan) => return cached_scan(scan, on),
        LogicalPlan::Filter(f) => (&f.input, Some(&f.predicate)),
        LogicalPlan::SubqueryAlias(a) => (&a.input, None),
        LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
            (&p.input, None)
        }
        _ => return Ok(None),
    };
    let Some(found) = cached_input(child, on)? else {
        return Ok(None);
    };
    if let Some(predicate) = check
        && !predicate
            .column_refs()
            .iter()
            .all(|c| found.tags.contains(&c.name))
    {
        return Ok(None);
    }
    let grouped = match found.grouped {
        Some(g) if check.is_none() => Some(plan.with_new_exprs(plan.expressions(), vec![g])?),
        _ => None,
    };
    Ok(Some(Cached {
        plan: plan.with_new_exprs(plan.expressions(), vec![found.plan])?,
        grouped,
        tags: found.tags,
    }))
}

fn cached_scan(scan: &TableScan, on: &HashSet<String>) -> Result<Option<Cached>> {
    if !scan.filters.is_empty() || scan.fetch.is_some() {
        return Ok(None);
    }
    let Ok(provider) = source_as_provider(&scan.source) else {
        return Ok(None);
    };
    let Some(table) = provider.downcast_ref::<VigilTable>() else {
        return Ok(None);
    };
    let Some(schema) = table.engine().table_schema(table.name()) else {
        return Ok(None);
    };
    let tags: HashSet<String> = schema
        .columns()
        .iter()
        .filter(|c| c.kind == ColumnKind::Tag)
        .map(|c| c.name.clone())
        .collect();
    if tags.is_empty() {
        return Ok(None);
    }
    let with = |group_by: Option<Vec<String>>| {
        let cached = LastValuesTable {
            engine: Arc::clone(table.engine()),
            name: table.name().to_string(),
            schema: table.schema(),
            group_by,
        };
        LogicalPlan::TableScan(TableScan {
            source: provider_as_source(Arc::new(cached)),
            ..scan.clone()
        })
    };
    let mut on: Vec<String> = on.iter().cloned().collect();
    on.sort();
    Ok(Some(Cached {
        plan: with(None),
        grouped: Some(with(Some(on))),
        tags,
    }))
}

/// The newest row of every series of a table, from the engine's last-value cache.
pub(crate) struct LastValuesTable {
    engine: Arc<Engine>,
    name: String,
    schema: SchemaRef,
    /// Keep only the newest row per combination of these tags.
    group_by: Option<Vec<String>>,
}

impl std::fmt::Debug for LastValuesTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LastValuesTable({})", self.name)
    }
}

#[async_trait]
impl TableProvider for LastValuesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let engine = Arc::clone(&self.engine);
        let name = self.name.clone();
        // The first use after a start reads the table's files: off the async threads.
        let rows = tokio::task::spawn_blocking(move || engine.last_rows(&name))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .ok_or_else(|| DataFusionError::Plan(format!("table '{}' not found", self.name)))?;
        let rows = planned_columns(&self.schema, &rows)?;
        let series = rows.num_rows();
        let rows = match &self.group_by {
            Some(columns) => {
                let keys: Vec<&str> = columns.iter().map(String::as_str).collect();
                newest_rows(&rows, &keys).map_err(|e| DataFusionError::External(Box::new(e)))?
            }
            None => rows,
        };
        let memory = MemorySourceConfig::try_new_exec(
            &[vec![rows]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(Arc::new(VigilScanExec::new(
            memory,
            Vec::new(),
            ScanInfo::last_values(&self.name, series, self.group_by.clone()),
        )))
    }
}

/// `rows` with the columns the query was planned with (a column added since is left
/// out; the cache always has every column of the planned schema).
fn planned_columns(schema: &SchemaRef, rows: &RecordBatch) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            rows.column_by_name(f.name()).cloned().ok_or_else(|| {
                DataFusionError::Internal(format!("last-value rows lack column '{}'", f.name()))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
