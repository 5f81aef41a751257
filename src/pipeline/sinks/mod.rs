//! Sinks: where labeled records and dead letters are written durably.

pub mod files;

pub use files::{FileSinkSettings, JsonLinesFile, OutputFormat, RotatingFileWriter, Rotation};
