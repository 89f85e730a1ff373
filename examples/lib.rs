//! Shared helpers of the avto examples.
