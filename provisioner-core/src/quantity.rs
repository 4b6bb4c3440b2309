//! Exact `resource.Quantity` parsing and comparison.
