//! Sinks: where labeled records and dead letters are written durably.

pub mod files;

pub use files::{JsonLinesFile, OutputFormat, RotatingFileWriter, Rotation, durable_rename};
