//! Built-in SQL functions the query layer replaces with cheaper-to-plan equivalents.

use std::hash::{Hash, Hasher};

use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::functions::datetime::date_bin::DateBinFunc;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// DataFusion's `date_bin`, identical in every answer, but hashed by its name alone.
///
/// The planner hashes expressions many times per query (common subexpressions, duplicate
/// group keys, equivalence classes), and hashing a function call hashes the function. The
/// built-in's signature lists 48 argument-type combinations, each two or three data types
/// with time zone strings, so hashing `date_bin(...)` costs about a tenth of planning a
/// one-host TSBS query. There is only one `date_bin`, so its name identifies it.
#[derive(Debug, Default)]
pub(crate) struct DateBin(DateBinFunc);

impl DateBin {
    pub(crate) fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self::default())
    }
}

impl PartialEq for DateBin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for DateBin {}

impl Hash for DateBin {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name().hash(state);
    }
}

impl ScalarUDFImpl for DateBin {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn signature(&self) -> &Signature {
        self.0.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.0.return_type(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.0.invoke_with_args(args)
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.0.output_ordering(input)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.0.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::compute::SortOptions;

    #[test]
    fn date_bin_keeps_the_builtins_signature_and_ordering() {
        let ours = DateBin::udf();
        let builtin = ScalarUDF::new_from_impl(DateBinFunc::new());
        assert_eq!(ours.name(), builtin.name());
        assert_eq!(ours.signature(), builtin.signature());
        // Binning an ordered time column by a constant stride keeps it ordered: what lets
        // the planner stream sorted groups. The trait's default says "unordered".
        let input = [
            ExprProperties::new_unknown().with_order(SortProperties::Singleton),
            ExprProperties::new_unknown()
                .with_order(SortProperties::Ordered(SortOptions::default())),
        ];
        let ordering = ours.output_ordering(&input).unwrap();
        assert_eq!(ordering, builtin.output_ordering(&input).unwrap());
        assert!(
            matches!(ordering, SortProperties::Ordered(_)),
            "{ordering:?}"
        );
        let types = [
            DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
            DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
        ];
        assert_eq!(
            ours.return_type(&types).unwrap(),
            builtin.return_type(&types).unwrap()
        );
    }
}
