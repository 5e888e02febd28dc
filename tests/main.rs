//! Integration tests of the `quant` facade: one binary, a module per topic.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod alloc_probe;
mod bad_input;
mod basic;
mod checkpoints;
mod common;
mod configs;
mod dequantize_into;
mod engine;
mod fuzz_replay;
mod hostile;
mod hostile_gguf;
mod nonfinite;
mod pipeline;
mod properties;
mod registry;
mod shards;
