//! The runtime's LoRA adapters by name: loading PEFT directories onto the backend, the default
//! adapter, per-request resolution (with the prefix-cache key of adapter and scale), unloading.

use std::path::Path;
use std::sync::Arc;

use super::scheduler::lock;
use super::Runtime;
use crate::error::{Error, Result};
use crate::kv_cache::file as kv_file;

/// A loaded adapter.
pub(super) struct LoadedLora {
    placed: Arc<dyn std::any::Any + Send + Sync>,
    identity: u64,
    bytes: usize,
    /// Prefix-cache keys used with it (one per scale), purged when it is unloaded.
    keys: std::collections::HashSet<u64>,
}

/// The runtime's adapters and the default one.
#[derive(Default)]
pub(super) struct Loras {
    by_name: std::collections::HashMap<String, LoadedLora>,
    default: String,
}

/// Prefix-cache key of an adapter used at a scale (never 0, which means no adapter).
pub(super) fn adapter_key(identity: u64, scale: f32) -> u64 {
    let mut bytes = identity.to_le_bytes().to_vec();
    bytes.extend_from_slice(&scale.to_bits().to_le_bytes());
    kv_file::fnv1a(&bytes, kv_file::FNV_START).max(1)
}

impl Runtime {
    /// The adapter a request names (see [`GenerationRequest::lora_name`]) and its prefix-cache
    /// key; an unknown name is `NotFound`, naming it and the loaded ones.
    #[allow(clippy::type_complexity)]
    pub(super) fn resolve_lora(&self, name: Option<&str>, scale: f32) -> Result<(Option<(Arc<dyn std::any::Any + Send + Sync>, f32)>, u64)> {
        if !scale.is_finite() {
            return Err(Error::InvalidArgument(format!("the LoRA scale {scale} is not finite")));
        }
        let mut loras = self.loras.write().unwrap_or_else(|p| p.into_inner());
        let name = name.map(str::to_string).unwrap_or_else(|| loras.default.clone());
        if name.is_empty() {
            return Ok((None, 0));
        }
        let known = loras.by_name.keys().cloned().collect::<Vec<_>>().join(", ");
        let l = loras
            .by_name
            .get_mut(&name)
            .ok_or_else(|| Error::NotFound(format!("no LoRA adapter named {name:?} is loaded (loaded: [{known}])")))?;
        let key = adapter_key(l.identity, scale);
        l.keys.insert(key);
        Ok((Some((Arc::clone(&l.placed), scale)), key))
    }

    /// Loads the PEFT adapter directory `dir` (`adapter_config.json` and
    /// `adapter_model.safetensors`) under `name`, checking every tensor against the model's
    /// shapes; a name already in use is replaced. Requests name it (or it becomes the default
    /// through [`Runtime::switch_lora`]); running requests keep the adapter they started with.
    pub fn load_lora(&self, name: &str, dir: &Path) -> Result<()> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("an adapter name must not be empty (\"\" means no adapter)".into()));
        }
        let adapter = crate::lora::LoraAdapter::load(dir, self.core.engine.config())?;
        let placed = self.core.engine.place_lora(&adapter)?;
        let loaded = LoadedLora { placed, identity: adapter.identity(), bytes: adapter.bytes(), keys: Default::default() };
        let old = self.loras.write().unwrap_or_else(|p| p.into_inner()).by_name.insert(name.to_string(), loaded);
        if let Some(old) = old {
            self.purge_prefixes(&old);
        }
        Ok(())
    }

    /// Unloads adapter `name` (requests already running with it finish with it) and drops the
    /// prefixes cached with it; the default adapter goes back to none if it was this one.
    pub fn unload_lora(&self, name: &str) -> Result<()> {
        let old = {
            let mut loras = self.loras.write().unwrap_or_else(|p| p.into_inner());
            let old = loras.by_name.remove(name).ok_or_else(|| Error::NotFound(format!("no LoRA adapter named {name:?} is loaded")))?;
            if loras.default == name {
                loras.default.clear();
            }
            old
        };
        self.purge_prefixes(&old);
        Ok(())
    }

    fn purge_prefixes(&self, l: &LoadedLora) {
        let mut kv = lock(&self.core.shared.kv);
        for &k in &l.keys {
            kv.purge(k);
        }
    }

    /// Makes `name` the adapter of requests that do not name one; `""` means none.
    pub fn switch_lora(&self, name: &str) -> Result<()> {
        let mut loras = self.loras.write().unwrap_or_else(|p| p.into_inner());
        if !name.is_empty() && !loras.by_name.contains_key(name) {
            return Err(Error::NotFound(format!("no LoRA adapter named {name:?} is loaded")));
        }
        loras.default = name.to_string();
        Ok(())
    }

    /// Names of the loaded adapters, sorted.
    pub fn lora_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.loras.read().unwrap_or_else(|p| p.into_inner()).by_name.keys().cloned().collect();
        v.sort();
        v
    }

    /// Bytes of the loaded adapters.
    pub(super) fn lora_bytes(&self) -> u64 {
        self.loras.read().unwrap_or_else(|p| p.into_inner()).by_name.values().map(|l| l.bytes as u64).sum()
    }
}
