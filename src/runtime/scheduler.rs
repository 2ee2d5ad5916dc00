//! Continuous batching. Request threads hand sequences to the runtime's scheduler thread, which
//! admits them while the batch and the KV cache have room (the rest wait in arrival order),
//! reuses the longest cached prefix of each prompt, and then runs one forward pass per step over
//! every running sequence: one token for each sequence that is generating, plus chunks of the
//! prompts still being read, capped so a new prompt never holds the running streams up for
//! long. Sequences join and leave between steps; each samples with its own parameters and seed.
//! Tokens, text and the final output travel back to the request's thread over a channel, so
//! stream callbacks run on the thread that made the request and never stall the batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::request::{CancelToken, FinishReason, GenerationOutput, SamplingParams};
use super::seq_gen::{SeqGen, Step};
use crate::error::{Error, Result};
use crate::kv_cache::{blocks_for, BlockAllocator, PrefixCache, BLOCK_TOKENS};
use crate::model::adapters::LoraRef;
use crate::model::{LogitRows, SeqInput};
use crate::vocab::Vocab;

/// Prompt tokens read per step when no sequence is generating (each weight tile then serves many
/// tokens; 512 measured 5-10% faster prefill than 256 on both models).
pub(crate) const PREFILL_CHUNK: usize = 512;

/// Prompt tokens read per step beside generating sequences: a step then takes about a quarter
/// of a full prefill chunk, so running streams keep their pace while a new prompt is read.
const PREFILL_CHUNK_BESIDE_DECODE: usize = 128;

/// One prompt of a request, as the scheduler runs it.
pub(crate) struct SeqRequest {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Index of the prompt in its request.
    pub prompt_index: usize,
    /// Sampling parameters, seed resolved.
    pub sampling: SamplingParams,
    /// Most tokens to generate.
    pub max_generate_length: usize,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Log-probabilities to report per token (0: none).
    pub logprobs: usize,
    /// The request's cancel flag (the caller's: sticky, as documented).
    pub cancel: CancelToken,
    /// Set when another prompt of the same call failed: stops this one without touching the
    /// caller's cancel flag.
    pub abort: CancelToken,
    /// When the request arrived (for time to first token).
    pub started: Instant,
    /// Where its events go.
    pub events: Sender<Event>,
    /// Pieces the request's thread has handed to its stream callback, when it has one: the
    /// sequence takes its next step only after the callback saw its last piece, so a callback
    /// that cancels stops generation before another token is made (other sequences do not
    /// wait for it).
    pub streamed: Option<Arc<AtomicUsize>>,
    /// Its LoRA adapter (placed on the backend) and scale, if any.
    pub lora: Option<(Arc<dyn std::any::Any + Send + Sync>, f32)>,
    /// Prefix-cache key of the adapter and scale (0: none): keys and values computed with
    /// another adapter are never shared.
    pub adapter_key: u64,
}

impl SeqRequest {
    /// Whether the sequence should stop: cancelled by the caller or aborted with its call.
    pub fn stopped(&self) -> bool {
        self.cancel.is_cancelled() || self.abort.is_cancelled()
    }

    fn lora_ref(&self) -> Option<LoraRef<'_>> {
        self.lora.as_ref().map(|(a, scale)| LoraRef { adapter: a.as_ref(), scale: *scale })
    }
}

/// What the scheduler tells a request's thread.
pub(crate) enum Event {
    /// A generated token and the text it completed.
    Piece {
        /// Index of the prompt in its request.
        prompt_index: usize,
        /// The token (the last one again for text flushed at the end).
        token: u32,
        /// Text to stream (may be empty).
        text: String,
    },
    /// A prompt is finished.
    Done {
        /// Index of the prompt in its request.
        prompt_index: usize,
        /// Its output, or why it failed.
        result: Result<GenerationOutput>,
    },
}

/// Block bookkeeping shared by the scheduler and the runtime's direct calls.
pub(crate) struct KvState {
    /// Block reference counts.
    pub alloc: BlockAllocator,
    /// Cached prefixes.
    pub prefix: PrefixCache,
}

impl KvState {
    /// Takes `n` blocks, evicting cached prefixes as needed; `None` (and nothing taken) when
    /// that many cannot be freed.
    pub fn take(&mut self, n: usize) -> Option<Vec<u32>> {
        while self.alloc.n_free() < n && self.prefix.evict_one(&mut self.alloc) {}
        if self.alloc.n_free() < n {
            return None;
        }
        Some((0..n).filter_map(|_| self.alloc.alloc()).collect())
    }

    /// The cached blocks of the longest prefix of `tokens` computed with adapter key `key` (see
    /// [`PrefixCache::lookup`]), retained for the caller.
    pub fn lookup(&mut self, key: u64, tokens: &[u32], max_blocks: usize) -> Vec<u32> {
        self.prefix.lookup(&mut self.alloc, key, tokens, max_blocks)
    }

    /// Makes a sequence's whole blocks findable (see [`PrefixCache::insert`]).
    pub fn cache(&mut self, key: u64, tokens: &[u32], blocks: &[u32]) {
        self.prefix.insert(&mut self.alloc, key, tokens, blocks);
    }

    /// Drops every cached block computed with adapter key `key`.
    pub fn purge(&mut self, key: u64) {
        self.prefix.remove_adapter(&mut self.alloc, key);
    }

    /// Drops one reference to each of `blocks`.
    pub fn release(&mut self, blocks: &[u32]) {
        for &b in blocks {
            self.alloc.release(b);
        }
    }
}

/// Counters the runtime reports as metrics.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Prompts finished.
    pub sequences: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Prompt tokens admitted.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens whose KV came from the prefix cache.
    pub reused_tokens: AtomicU64,
    /// Prompts admitted that found a cached prefix.
    pub cache_hits: AtomicU64,
    /// Prompts admitted.
    pub cache_lookups: AtomicU64,
    /// Forward steps run by the scheduler.
    pub steps: AtomicU64,
    /// Sequences summed over those steps (their mean is the average batch).
    pub step_sequences: AtomicU64,
}

struct Inbox {
    queue: Vec<SeqRequest>,
    shutdown: bool,
}

/// State shared between the runtime's handle and its scheduler thread.
pub(crate) struct Shared {
    /// KV blocks and the prefix cache.
    pub kv: Mutex<KvState>,
    /// Counters.
    pub stats: Stats,
    inbox: Mutex<Inbox>,
    wake: Condvar,
}

/// Locks a mutex, carrying on if a thread panicked while holding it (the state it guards stays
/// consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Shared state over `n_blocks` KV blocks.
    pub fn new(n_blocks: usize) -> Shared {
        Shared {
            kv: Mutex::new(KvState { alloc: BlockAllocator::new(n_blocks), prefix: PrefixCache::new() }),
            stats: Stats::default(),
            inbox: Mutex::new(Inbox { queue: Vec::new(), shutdown: false }),
            wake: Condvar::new(),
        }
    }

    /// Queues sequences for the scheduler.
    pub fn submit(&self, seqs: Vec<SeqRequest>) {
        lock(&self.inbox).queue.extend(seqs);
        self.wake.notify_all();
    }

    /// Wakes the scheduler (a stream callback returned).
    pub fn notify(&self) {
        let _guard = lock(&self.inbox);
        self.wake.notify_all();
    }

    /// Asks the scheduler thread to fail what it holds and return.
    pub fn shut_down(&self) {
        lock(&self.inbox).shutdown = true;
        self.wake.notify_all();
    }
}

/// Limits the scheduler works within.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Most sequences running at once.
    pub max_batch: usize,
    /// Context window in tokens.
    pub context: usize,
}

/// Blocks a sequence may need: its prompt plus every token it may generate, within the context.
pub(crate) fn blocks_needed(prompt: usize, max_generate: usize, context: usize) -> usize {
    blocks_for(prompt.saturating_add(max_generate).min(context).max(prompt))
}

/// A sequence the scheduler is running.
struct Active<'v> {
    req: SeqRequest,
    gen: SeqGen<'v>,
    /// Prompt then generated tokens; the last one is fed next when generating.
    tokens: Vec<u32>,
    /// Positions whose keys and values are stored.
    fed: usize,
    blocks: Vec<u32>,
    /// Pieces sent to the request's thread.
    sent: usize,
}

impl Active<'_> {
    fn prefilling(&self) -> bool {
        self.fed < self.req.prompt.len()
    }

    /// Whether the sequence can take a step now (its stream callback has seen every piece).
    fn ready(&self) -> bool {
        self.req.streamed.as_ref().is_none_or(|s| s.load(Ordering::Acquire) >= self.sent)
    }

    fn send_piece(&mut self, token: u32, text: String) {
        if self.req.streamed.is_some() {
            self.sent += 1;
            let piece = Event::Piece { prompt_index: self.req.prompt_index, token, text };
            if self.req.events.send(piece).is_err() {
                // The request's thread is gone (it unwound): nobody will acknowledge the piece.
                self.req.abort.cancel();
            }
        }
    }
}

fn send_done(req: &SeqRequest, result: Result<GenerationOutput>) {
    let _ = req.events.send(Event::Done { prompt_index: req.prompt_index, result });
}

/// An output for a prompt that ended before generating (cancelled while waiting).
fn empty_output(req: &SeqRequest, reason: FinishReason) -> GenerationOutput {
    GenerationOutput {
        text: String::new(),
        token_ids: Vec::new(),
        prompt_ids: req.prompt.clone(),
        finish_reason: reason,
        ttft_ms: 0.0,
        decode_tokens_per_s: 0.0,
        cached_prompt_tokens: 0,
        logprobs: Vec::new(),
    }
}

/// The scheduler thread's loop; returns after [`Shared::shut_down`].
pub(crate) fn serve(engine: &dyn Engine, vocab: &Vocab, shared: &Shared, lim: Limits) {
    let mut waiting: VecDeque<SeqRequest> = VecDeque::new();
    let mut running: Vec<Active<'_>> = Vec::new();
    loop {
        {
            let mut inbox = lock(&shared.inbox);
            while inbox.queue.is_empty() && waiting.is_empty() && running.is_empty() && !inbox.shutdown {
                inbox = shared.wake.wait(inbox).unwrap_or_else(|p| p.into_inner());
            }
            // Every running sequence waits for its stream callback: sleep until one returns.
            // (A request cancelled while it waits for a slot is finished below, so it wakes us too.)
            while inbox.queue.is_empty()
                && !inbox.shutdown
                && !running.is_empty()
                && !running.iter().any(Active::ready)
                && !waiting.iter().any(SeqRequest::stopped)
            {
                let timeout = Duration::from_millis(5);
                inbox = shared.wake.wait_timeout(inbox, timeout).unwrap_or_else(|p| p.into_inner()).0;
            }
            if inbox.shutdown {
                let gone = || Err(Error::InvalidArgument("the runtime was destroyed while the request ran".into()));
                inbox.queue.drain(..).for_each(|r| send_done(&r, gone()));
                waiting.drain(..).for_each(|r| send_done(&r, gone()));
                running.drain(..).for_each(|a| send_done(&a.req, gone()));
                return;
            }
            waiting.extend(inbox.queue.drain(..));
        }
        waiting.retain(|r| {
            if r.stopped() {
                send_done(r, Ok(empty_output(r, FinishReason::Cancelled)));
                return false;
            }
            true
        });
        admit(vocab, shared, lim, &mut waiting, &mut running);
        // Cancelled sequences leave before the step.
        let mut i = 0;
        while i < running.len() {
            if running[i].req.stopped() {
                let mut a = running.swap_remove(i);
                let step = a.gen.finish(FinishReason::Cancelled, None);
                finish(shared, a, step);
            } else {
                i += 1;
            }
        }
        if !running.iter().any(Active::ready) {
            continue;
        }
        step(engine, shared, lim, &mut running);
    }
}

/// Moves waiting sequences into the batch, in arrival order, while it and the cache have room.
fn admit<'v>(vocab: &'v Vocab, shared: &Shared, lim: Limits, waiting: &mut VecDeque<SeqRequest>, running: &mut Vec<Active<'v>>) {
    while running.len() < lim.max_batch {
        let Some(req) = waiting.front() else { break };
        let n = req.prompt.len();
        let mut kv = lock(&shared.kv);
        // Whole cached blocks, leaving at least one prompt token to compute the first logits from.
        let matched = kv.lookup(req.adapter_key, &req.prompt, (n - 1) / BLOCK_TOKENS);
        let need = blocks_needed(n, req.max_generate_length, lim.context).saturating_sub(matched.len());
        let Some(fresh) = kv.take(need) else {
            kv.release(&matched);
            if running.is_empty() {
                // Nothing will free blocks: pinned prompts hold the rest of the cache.
                let req = waiting.pop_front().expect("front exists");
                drop(kv);
                send_done(
                    &req,
                    Err(Error::OutOfMemory(format!(
                        "the prompt needs {need} free KV blocks but cached system prompts hold the rest of the cache; raise the KV budget"
                    ))),
                );
                continue;
            }
            break;
        };
        drop(kv);
        let req = waiting.pop_front().expect("front exists");
        let reused = matched.len() * BLOCK_TOKENS;
        let st = &shared.stats;
        st.cache_lookups.fetch_add(1, Ordering::Relaxed);
        st.prompt_tokens.fetch_add(n as u64, Ordering::Relaxed);
        if reused > 0 {
            st.cache_hits.fetch_add(1, Ordering::Relaxed);
            st.reused_tokens.fetch_add(reused as u64, Ordering::Relaxed);
        }
        match SeqGen::new(&req, vocab) {
            Ok(mut gen) => {
                gen.out.cached_prompt_tokens = reused;
                let mut blocks = matched;
                blocks.extend(fresh);
                running.push(Active { tokens: req.prompt.clone(), req, gen, fed: reused, blocks, sent: 0 });
            }
            Err(e) => {
                let mut kv = lock(&shared.kv);
                kv.release(&matched);
                kv.release(&fresh);
                drop(kv);
                send_done(&req, Err(e));
            }
        }
    }
}

/// Runs one forward pass over the running sequences and hands each its logits.
fn step(engine: &dyn Engine, shared: &Shared, lim: Limits, running: &mut Vec<Active<'_>>) {
    // Generating sequences first (their rows form one decode-attention run), then prompt chunks.
    running.sort_by_key(|a| a.prefilling());
    let decoding = running.iter().filter(|a| !a.prefilling()).count();
    let mut budget = if decoding == 0 { PREFILL_CHUNK } else { PREFILL_CHUNK_BESIDE_DECODE };
    let mut inputs = Vec::with_capacity(running.len());
    let mut members = Vec::with_capacity(running.len());
    for (i, a) in running.iter().enumerate() {
        if !a.ready() {
            continue;
        }
        if a.prefilling() {
            if budget == 0 {
                continue;
            }
            let take = budget.min(a.req.prompt.len() - a.fed);
            budget -= take;
            let last = a.fed + take == a.req.prompt.len();
            inputs.push(SeqInput {
                ids: &a.tokens[a.fed..a.fed + take],
                pos0: a.fed,
                blocks: &a.blocks,
                prompt: true,
                logits: if last { LogitRows::Last } else { LogitRows::None },
                lora: a.req.lora_ref(),
            });
        } else {
            let ids = &a.tokens[a.fed..a.fed + 1];
            inputs.push(SeqInput { ids, pos0: a.fed, blocks: &a.blocks, prompt: false, logits: LogitRows::Last, lora: a.req.lora_ref() });
        }
        members.push(i);
    }
    shared.stats.steps.fetch_add(1, Ordering::Relaxed);
    shared.stats.step_sequences.fetch_add(members.len() as u64, Ordering::Relaxed);
    let fed: Vec<usize> = inputs.iter().map(|s| s.ids.len()).collect();
    let result = engine.forward(&inputs);
    drop(inputs);
    let results = match result {
        Ok(r) => r,
        Err(e) => {
            // The pass failed for everyone in it: they end with the error, the rest go on.
            let msg = e.to_string();
            let mut first = Some(e);
            for &i in members.iter().rev() {
                let a = running.swap_remove(i);
                let err = first.take().unwrap_or_else(|| Error::Internal(msg.clone()));
                fail(shared, &a, err);
            }
            return;
        }
    };
    let mut done = Vec::new();
    for ((&i, n), mut rows) in members.iter().zip(fed).zip(results) {
        let a = &mut running[i];
        a.fed += n;
        if a.fed == a.req.prompt.len() && n > 0 && a.gen.out.token_ids.is_empty() {
            // The prompt is read: make its whole blocks findable by later prompts right away.
            lock(&shared.kv).cache(a.req.adapter_key, &a.tokens[..a.fed], &a.blocks);
        }
        let Some(logits) = rows.last_mut() else { continue };
        match a.gen.on_logits(&a.req, logits, a.fed, lim.context) {
            Ok(Step::Next { token, text }) => {
                a.tokens.push(token);
                a.send_piece(token, text);
            }
            Ok(fin @ Step::Finished { .. }) => done.push((i, Ok(fin))),
            Err(e) => done.push((i, Err(e))),
        }
    }
    done.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
    for (i, r) in done {
        let a = running.swap_remove(i);
        match r {
            Ok(fin) => finish(shared, a, Ok(fin)),
            Err(e) => {
                fail(shared, &a, e);
            }
        }
    }
}

/// Streams a finished sequence's last piece, caches its whole blocks, frees the rest, and sends
/// its output.
fn finish(shared: &Shared, mut a: Active<'_>, step: Result<Step>) {
    match step {
        Ok(Step::Finished { token, text }) => {
            if token.is_some() || !text.is_empty() {
                let token = token.or(a.gen.out.token_ids.last().copied()).unwrap_or(0);
                a.send_piece(token, text);
            }
            let st = &shared.stats;
            st.sequences.fetch_add(1, Ordering::Relaxed);
            st.generated_tokens.fetch_add(a.gen.out.token_ids.len() as u64, Ordering::Relaxed);
            lock(&shared.kv).cache(a.req.adapter_key, &a.tokens[..a.fed], &a.blocks);
            release(shared, &a);
            send_done(&a.req, Ok(a.gen.out));
        }
        Ok(Step::Next { .. }) => {
            fail(shared, &a, Error::Internal("a finished sequence asked for another step".into()));
        }
        Err(e) => fail(shared, &a, e),
    }
}

fn release(shared: &Shared, a: &Active<'_>) {
    lock(&shared.kv).release(&a.blocks);
}

/// Ends a sequence with an error: its blocks are freed (not cached) and the error sent.
fn fail(shared: &Shared, a: &Active<'_>, e: Error) {
    release(shared, a);
    send_done(&a.req, Err(e));
}
