//! A compact BPE model for GGUF vocabularies, plugged into the `tokenizers` pipeline in place of
//! its own `BPE`: same results, a fraction of the start-up time and memory.
//!
//! `tokenizers`' BPE keeps every token string twice (string → id and id → string maps, one heap
//! allocation per token each) and its builder wants merges as pairs of owned strings, which for a
//! SentencePiece vocabulary (merges generated from the vocabulary, see `gguf::generate_merges`)
//! means millions of small allocations. Here the token strings live in one buffer, the string → id
//! index stores only a 64-bit hash and an id per token, and merges are keyed by id pairs from the
//! start. The merge loop is the one `tokenizers` 0.23 runs (`Word::merge_all`: lowest rank first,
//! leftmost on ties, stale queue entries skipped), with its byte-fallback and unknown-token rules,
//! so ids stay equal to Hugging Face's (tests/vocab_matches_hf_tokenizers.rs proves it).

use std::cmp::{Ordering, Reverse};
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BpeTrainer;
use tokenizers::{Model, Token};

/// A fast hasher for the two key kinds here: 64-bit string keys and pairs of ids.
#[derive(Default)]
pub(crate) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        // splitmix64's finalizer over the running state: every input bit reaches the low bits
        // that pick a bucket. (FNV-1a's low bits, and id pairs, are poorly spread on their own;
        // a plain multiply only carries bits upward and left long probe chains.)
        let mut z = (self.0 ^ v).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = z ^ (z >> 31);
    }
}

/// A `HashMap` using [`MixHasher`].
type MixMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;

/// Longest string whose length the index key carries exactly (longer ones saturate).
const KEY_LEN_MAX: usize = 0xFFFF;

/// Index key of a token string: its length (saturated to 16 bits) over the low 48 bits of its
/// FNV-1a hash. Equal keys are still checked by comparing strings, so a crafted vocabulary can
/// only make lookups slower, never wrong; carrying the length lets that check read the string's
/// bytes straight from its end offset without a second table access (a cache miss saved on
/// every lookup, which is what building a 262k-token vocabulary's merges is bound by).
fn key(s: &str) -> u64 {
    key_from(fnv(FNV_OFFSET, s.as_bytes()), s.len())
}

/// FNV-1a's starting state.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a state `h` extended by `bytes` (so the keys of all prefixes of a string cost one pass).
pub(crate) fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The index key of a string of `len` bytes whose FNV-1a state is `h`.
pub(crate) fn key_from(h: u64, len: usize) -> u64 {
    ((len.min(KEY_LEN_MAX) as u64) << 48) | (h & ((1 << 48) - 1))
}

/// Where an indexed string is: its id and its end offset in the text buffer.
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: u32,
    end: u32,
}

/// Token strings of a vocabulary in one buffer, with a string → id index.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenTable {
    text: String,
    /// `ends[i]` is where token `i` ends in `text`.
    ends: Vec<u32>,
    /// Key of a token string → the id that string maps to.
    index: MixMap<u64, Slot>,
    /// Strings whose hash is taken in `index` by a different string.
    collisions: HashMap<String, u32>,
    /// Distinct strings (a string listed twice maps to its last id, as in a Python dict).
    distinct: usize,
}

impl TokenTable {
    /// Indexes `tokens` (id = position); a repeated string maps to its last id.
    pub(crate) fn new<S: AsRef<str>>(tokens: &[S]) -> Option<TokenTable> {
        let total: usize = tokens.iter().map(|t| t.as_ref().len()).sum();
        u32::try_from(total).ok()?;
        let mut t = TokenTable {
            text: String::with_capacity(total),
            ends: Vec::with_capacity(tokens.len()),
            index: MixMap::with_capacity_and_hasher(tokens.len(), Default::default()),
            collisions: HashMap::new(),
            distinct: 0,
        };
        for (id, tok) in tokens.iter().enumerate() {
            let s = tok.as_ref();
            t.text.push_str(s);
            t.ends.push(t.text.len() as u32);
            let slot = Slot {
                id: id as u32,
                end: t.text.len() as u32,
            };
            match t.index.entry(key(s)) {
                Entry::Vacant(e) => {
                    e.insert(slot);
                    t.distinct += 1;
                }
                Entry::Occupied(mut e) => {
                    let held = e.get().id;
                    if Self::slice(&t.text, &t.ends, held) == s {
                        e.insert(slot);
                    } else if t.collisions.insert(s.to_string(), slot.id).is_none() {
                        t.distinct += 1;
                    }
                }
            }
        }
        Some(t)
    }

    fn slice<'a>(text: &'a str, ends: &[u32], id: u32) -> &'a str {
        let i = id as usize;
        let start = if i == 0 { 0 } else { ends[i - 1] as usize };
        &text[start..ends[i] as usize]
    }

    /// Number of ids (repeated strings included).
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Number of distinct strings.
    pub(crate) fn distinct(&self) -> usize {
        self.distinct
    }

    /// The string stored at `id`, whether or not a later id repeats it.
    pub(crate) fn get(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.ends.len()).then(|| Self::slice(&self.text, &self.ends, id))
    }

    /// The id `s` maps to.
    pub(crate) fn id(&self, s: &str) -> Option<u32> {
        self.id_keyed(s, key(s))
    }

    /// [`TokenTable::id`] with the key of `s` already computed (`key_from(fnv(FNV_OFFSET, s), len)`).
    pub(crate) fn id_keyed(&self, s: &str, key: u64) -> Option<u32> {
        if let Some(&slot) = self.index.get(&key) {
            let held = if s.len() < KEY_LEN_MAX {
                // Equal keys mean equal lengths, so the held string ends at `end` and is
                // `s.len()` bytes long.
                let end = slot.end as usize;
                end.checked_sub(s.len())
                    .and_then(|start| self.text.as_bytes().get(start..end))
            } else {
                Some(Self::slice(&self.text, &self.ends, slot.id).as_bytes())
            };
            if held == Some(s.as_bytes()) {
                return Some(slot.id);
            }
        }
        self.collisions.get(s).copied()
    }

    /// The string of `id` if `id` is the id that string maps to (an id shadowed by a later
    /// repeat of its string has none, as in a Python dict inverted).
    pub(crate) fn token(&self, id: u32) -> Option<&str> {
        let s = self.get(id)?;
        (self.id(s) == Some(id)).then_some(s)
    }
}

/// Pair of adjacent ids → (rank, id of the merged token).
pub(crate) type MergeMap = MixMap<(u32, u32), (u32, u32)>;

/// A new, empty [`MergeMap`] with room for `n` merges.
pub(crate) fn merge_map(n: usize) -> MergeMap {
    MergeMap::with_capacity_and_hasher(n, Default::default())
}

/// What to do with a character that is not a token.
#[derive(Clone, Debug)]
pub(crate) struct Fallback {
    /// Spell it as `<0xNN>` byte tokens when every one of its bytes has one.
    pub byte_tokens: bool,
    /// Otherwise emit this token (its string; an error at encode time if it is not in the
    /// vocabulary, as in `tokenizers`), fusing runs of unknown characters into one.
    pub unk: Option<String>,
}

/// The BPE model: tokens, ranked merges and the fallback rules.
#[derive(Clone, Debug)]
pub(crate) struct RankedBpe {
    tokens: TokenTable,
    merges: MergeMap,
    /// Id of `<0xNN>` for every byte, when byte fallback is on.
    byte_ids: Option<Box<[Option<u32>; 256]>>,
    unk: Option<String>,
}

/// One symbol of a word being merged (a doubly linked list over a vector, as in `tokenizers`).
#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: isize,
    next: isize,
    len: usize,
}

/// A queued merge; the heap pops the lowest rank first, then the leftmost position.
#[derive(PartialEq, Eq)]
struct Queued {
    rank: u32,
    pos: usize,
    new_id: u32,
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.rank, self.pos).cmp(&(other.rank, other.pos))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl RankedBpe {
    /// A model over `tokens` with `merges` (pair → rank and merged id) and `fallback`.
    pub(crate) fn new(tokens: TokenTable, merges: MergeMap, fallback: Fallback) -> RankedBpe {
        let byte_ids = fallback.byte_tokens.then(|| {
            let mut ids = Box::new([None; 256]);
            for (b, slot) in ids.iter_mut().enumerate() {
                *slot = tokens.id(&format!("<0x{b:02X}>"));
            }
            ids
        });
        RankedBpe {
            tokens,
            merges,
            byte_ids,
            unk: fallback.unk,
        }
    }

    /// The token table.
    pub(crate) fn tokens(&self) -> &TokenTable {
        &self.tokens
    }

    fn push(symbols: &mut Vec<Symbol>, id: u32, len: usize) {
        let n = symbols.len() as isize;
        if let Some(last) = symbols.last_mut() {
            last.next = n;
        }
        symbols.push(Symbol {
            id,
            prev: n - 1,
            next: -1,
            len,
        });
    }

    /// Splits `word` into character tokens (with byte and unknown fallback) and merges them.
    fn merge_word(&self, word: &str) -> tokenizers::Result<Vec<Symbol>> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
        let mut unk: Option<(u32, usize)> = None;
        for (i, c) in word.char_indices() {
            let s = &word[i..i + c.len_utf8()];
            if let Some(id) = self.tokens.id(s) {
                if let Some((uid, ulen)) = unk.take() {
                    Self::push(&mut symbols, uid, ulen);
                }
                Self::push(&mut symbols, id, s.len());
                continue;
            }
            if let Some(table) = &self.byte_ids {
                let ids: Option<Vec<u32>> = s.bytes().map(|b| table[b as usize]).collect();
                if let Some(ids) = ids {
                    // The pending unknown run stays pending across byte tokens, as in tokenizers.
                    for id in ids {
                        Self::push(&mut symbols, id, 1);
                    }
                    continue;
                }
            }
            if let Some(unk_token) = &self.unk {
                unk = match unk {
                    Some((uid, ulen)) => Some((uid, ulen + s.len())),
                    None => {
                        let uid = self.tokens.id(unk_token).ok_or_else(|| {
                            format!("Unk token `{unk_token}` not found in the vocabulary")
                        })?;
                        Some((uid, s.len()))
                    }
                };
            }
        }
        if let Some((uid, ulen)) = unk {
            Self::push(&mut symbols, uid, ulen);
        }
        self.merge_all(&mut symbols);
        Ok(symbols)
    }

    /// Applies merges until none applies: `tokenizers`' `Word::merge_all` without dropout.
    fn merge_all(&self, symbols: &mut Vec<Symbol>) {
        let mut queue: BinaryHeap<Reverse<Queued>> = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                self.merges
                    .get(&(w[0].id, w[1].id))
                    .map(|&(rank, new_id)| Reverse(Queued { rank, pos, new_id }))
            })
            .collect();
        while let Some(Reverse(top)) = queue.pop() {
            let cur = symbols[top.pos];
            if cur.len == 0 || cur.next == -1 {
                continue;
            }
            let next_pos = cur.next as usize;
            let right = symbols[next_pos];
            // A queue entry whose pair has changed since it was queued is stale.
            match self.merges.get(&(cur.id, right.id)) {
                Some(&(_, new_id)) if new_id == top.new_id => {}
                _ => continue,
            }
            symbols[top.pos].id = top.new_id;
            symbols[top.pos].len += right.len;
            symbols[top.pos].next = right.next;
            symbols[next_pos].len = 0;
            if right.next > -1 && (right.next as usize) < symbols.len() {
                symbols[right.next as usize].prev = top.pos as isize;
            }
            let cur = symbols[top.pos];
            if cur.prev >= 0 {
                let prev = cur.prev as usize;
                if let Some(&(rank, new_id)) = self.merges.get(&(symbols[prev].id, cur.id)) {
                    queue.push(Reverse(Queued {
                        rank,
                        pos: prev,
                        new_id,
                    }));
                }
            }
            let next = cur.next as usize;
            if cur.next >= 0 && next < symbols.len() {
                if let Some(&(rank, new_id)) = self.merges.get(&(cur.id, symbols[next].id)) {
                    queue.push(Reverse(Queued {
                        rank,
                        pos: top.pos,
                        new_id,
                    }));
                }
            }
        }
        symbols.retain(|s| s.len != 0);
    }
}

impl Model for RankedBpe {
    type Trainer = BpeTrainer;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        if sequence.is_empty() {
            return Ok(Vec::new());
        }
        let symbols = self.merge_word(sequence)?;
        let mut start = 0;
        let mut out = Vec::with_capacity(symbols.len());
        for s in symbols {
            let value = self.tokens.get(s.id).unwrap_or_default().to_string();
            out.push(Token::new(s.id, value, (start, start + s.len)));
            start += s.len;
        }
        Ok(out)
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokens.id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokens.token(id).map(str::to_string)
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        (0..self.tokens.len() as u32)
            .filter_map(|id| self.tokens.token(id).map(|s| (s.to_string(), id)))
            .collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.tokens.distinct()
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("a GGUF vocabulary is not saved as tokenizer files".into())
    }

    fn get_trainer(&self) -> BpeTrainer {
        BpeTrainer::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(m: &RankedBpe, s: &str) -> Vec<u32> {
        m.tokenize(s).unwrap().iter().map(|t| t.id).collect()
    }

    #[test]
    fn repeated_strings_map_to_their_last_id() {
        let t = TokenTable::new(&["a", "b", "a", "ab"]).unwrap();
        assert_eq!(t.id("a"), Some(2));
        assert_eq!(t.token(0), None);
        assert_eq!(t.token(2), Some("a"));
        assert_eq!(t.get(0), Some("a"));
        assert_eq!(t.distinct(), 3);
        assert_eq!(t.id("zz"), None);
    }

    #[test]
    fn lowest_rank_merges_first_and_leftmost_on_ties() {
        let t = TokenTable::new(&["a", "b", "ab", "ba", "aba"]).unwrap();
        let mut m = merge_map(3);
        m.insert((1, 0), (0, 3)); // b a -> ba, best
        m.insert((0, 1), (1, 2)); // a b -> ab
        m.insert((2, 0), (2, 4)); // ab a -> aba
        let fb = Fallback {
            byte_tokens: false,
            unk: None,
        };
        let bpe = RankedBpe::new(t, m, fb);
        // "abab": b+a merges first (rank 0) → a ba b; nothing else applies.
        assert_eq!(ids(&bpe, "abab"), vec![0, 3, 1]);
        // "aba": b a (rank 0) beats a b → a ba.
        assert_eq!(ids(&bpe, "aba"), vec![0, 3]);
        // "ab": a b → ab; unknown characters vanish without a fallback.
        assert_eq!(ids(&bpe, "abz"), vec![2]);
    }

    #[test]
    fn byte_fallback_then_fused_unknown() {
        let mut toks: Vec<String> = vec!["<unk>".into(), "a".into()];
        toks.extend(
            (0..=255u8)
                .map(|b| format!("<0x{b:02X}>"))
                .filter(|t| t != "<0xC3>"),
        );
        let t = TokenTable::new(&toks).unwrap();
        let byte = |b: u8| t.id(&format!("<0x{b:02X}>")).unwrap();
        let (x, nl) = (byte(b'x'), byte(b'\n'));
        let bpe = RankedBpe::new(
            t,
            merge_map(0),
            Fallback {
                byte_tokens: true,
                unk: Some("<unk>".into()),
            },
        );
        // 'é' (C3 A9) has no <0xC3> token, so it and the next 'é' fuse into one <unk>, which
        // tokenizers 0.23 only emits at the next in-vocabulary character or the end of the word:
        // byte tokens in between come first.
        let toks = bpe.tokenize("aéé\nx").unwrap();
        let got: Vec<(u32, (usize, usize))> = toks.iter().map(|t| (t.id, t.offsets)).collect();
        assert_eq!(
            got,
            vec![(1, (0, 1)), (nl, (1, 2)), (x, (2, 3)), (0, (3, 7))]
        );
        let toks = bpe.tokenize("éa").unwrap();
        let got: Vec<(u32, (usize, usize))> = toks.iter().map(|t| (t.id, t.offsets)).collect();
        assert_eq!(got, vec![(0, (0, 2)), (1, (2, 3))]);
    }

    /// `tokenizers`' own BPE is the oracle: random words over a small alphabet (with characters
    /// outside the vocabulary, so byte fallback and unknown fusing run) must split identically,
    /// offsets included, for every fallback setting the GGUF vocabularies use.
    #[test]
    fn matches_tokenizers_bpe_on_random_words() {
        use tokenizers::models::bpe::BPE;
        let mut tokens: Vec<String> = vec!["<unk>".into()];
        tokens.extend(["a", "b", "c", "é"].iter().map(|s| s.to_string()));
        tokens.extend(
            (0..=255u8)
                .filter(|&b| b != 0xC3)
                .map(|b| format!("<0x{b:02X}>")),
        );
        // Merges in rank order; the merged tokens join the vocabulary.
        let merges = [
            ("a", "b"),
            ("b", "a"),
            ("ab", "a"),
            ("a", "a"),
            ("c", "c"),
            ("ab", "c"),
            ("é", "a"),
            ("aa", "aa"),
            ("cc", "ab"),
            ("b", "b"),
        ];
        for (a, b) in merges {
            let m = format!("{a}{b}");
            if !tokens.contains(&m) {
                tokens.push(m);
            }
        }
        // A repeated string: the later id wins in both models.
        tokens.push("b".into());
        let table = TokenTable::new(&tokens).unwrap();
        let mut map = merge_map(merges.len());
        for (rank, (a, b)) in merges.iter().enumerate() {
            let (l, r, m) = (table.id(a), table.id(b), table.id(&format!("{a}{b}")));
            map.insert((l.unwrap(), r.unwrap()), (rank as u32, m.unwrap()));
        }
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().cloned().zip(0u32..).collect();
        let pairs: Vec<(String, String)> = merges
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let alphabet = ['a', 'b', 'c', 'é', 'x', 'ß', '\n', '😀'];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (byte_tokens, unk) in [
            (false, None),
            (true, None),
            (true, Some("<unk>")),
            (false, Some("<unk>")),
        ] {
            let mut builder = BPE::builder()
                .vocab_and_merges(vocab.clone(), pairs.clone())
                .byte_fallback(byte_tokens)
                .fuse_unk(true);
            if let Some(u) = unk {
                builder = builder.unk_token(u.to_string());
            }
            let oracle = builder.build().unwrap();
            let ours = RankedBpe::new(
                table.clone(),
                map.clone(),
                Fallback {
                    byte_tokens,
                    unk: unk.map(str::to_string),
                },
            );
            for _ in 0..2000 {
                let len = 1 + next() as usize % 12;
                let word: String = (0..len)
                    .map(|_| alphabet[next() as usize % alphabet.len()])
                    .collect();
                let want: Vec<(u32, String, (usize, usize))> = oracle
                    .tokenize(&word)
                    .unwrap()
                    .into_iter()
                    .map(|t| (t.id, t.value, t.offsets))
                    .collect();
                let got: Vec<(u32, String, (usize, usize))> = ours
                    .tokenize(&word)
                    .unwrap()
                    .into_iter()
                    .map(|t| (t.id, t.value, t.offsets))
                    .collect();
                assert_eq!(got, want, "{word:?} byte_tokens={byte_tokens} unk={unk:?}");
            }
            assert_eq!(ours.get_vocab_size(), oracle.get_vocab_size());
            for id in 0..tokens.len() as u32 + 1 {
                assert_eq!(ours.id_to_token(id), oracle.id_to_token(id), "id {id}");
            }
        }
    }
}
