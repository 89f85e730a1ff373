//! Shared helpers of the avto integration tests.
