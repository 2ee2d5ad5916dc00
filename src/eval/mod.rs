//! Model evaluation that needs only logits: perplexity over a text, computed the way llama.cpp's
//! `llama-perplexity` tool does so that our numbers can be compared with its numbers directly.

pub mod perplexity;

pub use perplexity::{perplexity, ChunkPlan, LogitsSource, PerplexityParams, PerplexityResult};
