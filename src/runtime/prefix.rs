//! The runtime's prefix-cache operations: caching a system prompt (pinned), and saving and
//! loading the cache, checked against the model's fingerprint.

use std::path::Path;

use super::prompt;
use super::scheduler::{lock, PREFILL_CHUNK};
use super::{Message, PromptInput, Runtime};
use crate::error::{Error, Result};
use crate::kv_cache::file as kv_file;
use crate::kv_cache::{blocks_for, PrefixCache, BLOCK_TOKENS};
use crate::model::LogitRows;

impl Runtime {
    /// Prefills a system prompt once and keeps its KV blocks pinned in the prefix cache: later
    /// requests whose templated prompt starts with the same tokens share those blocks (no copy)
    /// and prefill only the rest. With a chat template, the prefix is the part of
    /// `[system, user]` conversations that does not depend on the user's message; without one,
    /// the text itself. Returns the number of prompt tokens now cached (whole blocks).
    /// `lora_name` picks the adapter the prompt is computed with (as in a request: `None` is
    /// the default adapter, `Some("")` none); only requests with the same adapter and scale 1
    /// share the blocks.
    pub fn cache_system_prompt(&self, system_prompt: &str, lora_name: Option<&str>, style: Option<&str>) -> Result<usize> {
        let (lora, key) = self.resolve_lora(lora_name, 1.0)?;
        let lora_ref = lora.as_ref().map(|(a, scale)| crate::model::adapters::LoraRef { adapter: a.as_ref(), scale: *scale });
        let ids = self.system_prefix(system_prompt, style)?;
        if ids.len() < BLOCK_TOKENS {
            return Ok(0);
        }
        let whole = ids.len() / BLOCK_TOKENS * BLOCK_TOKENS;
        let ids = &ids[..whole];
        self.check_ids(ids)?;
        // Blocks already cached are found, not recomputed.
        let matched = lock(&self.core.shared.kv).lookup(key, ids, whole / BLOCK_TOKENS);
        let done = matched.len() * BLOCK_TOKENS;
        let result = (|| {
            if done < whole {
                let fresh = self.take_blocks(blocks_for(whole) - matched.len())?;
                let mut blocks = matched.clone();
                blocks.extend_from_slice(&fresh);
                let run = self.feed_prompt(ids, done, PREFILL_CHUNK, &blocks, lora_ref, LogitRows::None, |_, _| ());
                let mut kv = lock(&self.core.shared.kv);
                if run.is_ok() {
                    kv.cache(key, ids, &blocks);
                }
                kv.release(&fresh);
                run?;
            }
            Ok(())
        })();
        let mut kv = lock(&self.core.shared.kv);
        kv.release(&matched);
        result?;
        Ok(kv.prefix.pin(key, ids) * BLOCK_TOKENS)
    }

    /// The token ids every chat with this system prompt starts with.
    fn system_prefix(&self, system_prompt: &str, style: Option<&str>) -> Result<Vec<u32>> {
        let vocab = &self.core.vocab;
        let msg = |role: &str, content: &str| Message { role: role.into(), content: content.into() };
        let chat = |user: &str| -> Result<Vec<u32>> {
            let messages = PromptInput::Messages(vec![msg("system", system_prompt), msg("user", user)]);
            prompt::prompt_ids(&messages, true, |m: &[Message]| self.render(m, true, style), vocab)
        };
        match (chat("A"), chat("Z")) {
            (Ok(a), Ok(b)) => {
                let n = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
                Ok(a[..n].to_vec())
            }
            // No chat template: the system prompt is raw text at the start of the prompt.
            (Err(Error::Template(_)), _) | (_, Err(Error::Template(_))) => vocab.encode(system_prompt, true),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    fn cache_geometry(&self) -> kv_file::Geometry {
        let cfg = self.core.engine.config();
        kv_file::Geometry {
            model: self.core.fingerprint,
            block_tokens: BLOCK_TOKENS as u32,
            n_layers: cfg.n_layers as u32,
            kv_dim: cfg.kv_dim() as u32,
            element_bytes: self.core.engine.kv_element_bytes() as u32,
        }
    }

    /// Writes every cached prefix block (keys, values, tokens, pins) to `path`, checked against
    /// this model when loaded back. Returns the number of blocks written.
    pub fn save_prefix_cache(&self, path: &Path) -> Result<usize> {
        let g = self.cache_geometry();
        let entries = {
            // Held while reading: no cached block can be freed and reused meanwhile.
            let kv = lock(&self.core.shared.kv);
            let mut out = Vec::with_capacity(kv.prefix.len());
            for (key, e) in kv.prefix.entries_in_order() {
                let s0 = e.block as usize * BLOCK_TOKENS;
                out.push(kv_file::FileEntry {
                    key,
                    parent: e.parent,
                    adapter: e.adapter,
                    pinned: e.pinned,
                    tokens: e.tokens.to_vec(),
                    kv: self.core.engine.kv_read(s0..s0 + BLOCK_TOKENS)?,
                });
            }
            out
        };
        kv_file::write(path, &g, &entries)?;
        Ok(entries.len())
    }

    /// Loads a prefix cache written by [`Runtime::save_prefix_cache`] for this model; a file for
    /// another model, another cache layout, or a corrupt one is refused whole. Blocks already
    /// cached are kept; loading stops early when the cache is full. Returns the number of blocks
    /// added.
    pub fn load_prefix_cache(&self, path: &Path) -> Result<usize> {
        let entries = kv_file::read(path, &self.cache_geometry())?;
        for e in &entries {
            if crate::kv_cache::prefix::block_key(e.parent, e.adapter, &e.tokens) != e.key {
                return Err(Error::format(path, "an entry's key does not match its tokens (written by an incompatible build)"));
            }
        }
        let mut kv = lock(&self.core.shared.kv);
        let mut added = 0;
        for e in entries {
            let parent_ok = e.parent.is_none_or(|p| kv.prefix.contains(p));
            if kv.prefix.contains(e.key) || !parent_ok {
                continue;
            }
            let Some(block) = kv.take(1).and_then(|b| b.first().copied()) else { break };
            let s0 = block as usize * BLOCK_TOKENS;
            if let Err(err) = self.core.engine.kv_write(s0..s0 + BLOCK_TOKENS, &e.kv) {
                kv.release(&[block]);
                return Err(err);
            }
            let entry = PrefixCache::new_entry(block, e.parent, e.tokens.into(), e.adapter, e.pinned);
            kv.prefix.restore(e.key, entry);
            added += 1;
        }
        Ok(added)
    }
}

/// A fingerprint of a model: its hyperparameters, its tensor table and the first and last bytes of
/// every tensor (cheap to compute, and a different file of the same shape differs in them).
pub(super) fn model_fingerprint(cfg: &crate::model::ModelConfig, weights: &crate::tensor::WeightMap) -> u64 {
    let mut h = kv_file::fnv1a(format!("{cfg:?}").as_bytes(), kv_file::FNV_START);
    let mut tensors: Vec<_> = weights.iter().collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tensors {
        h = kv_file::fnv1a(format!("{}:{}:{:?}", t.name, t.dtype.name(), t.shape).as_bytes(), h);
        let b = t.bytes();
        h = kv_file::fnv1a(&b[..b.len().min(256)], h);
        h = kv_file::fnv1a(&b[b.len().saturating_sub(256)..], h);
    }
    h
}
