//! Byte-pair-encoding (BPE) subword tokenizer (Sennrich et al., 2016).
//!
//! A translation model needs a vocabulary small enough for its embedding and output layers,
//! yet able to spell rare words. BPE starts from characters and repeatedly merges the most
//! frequent adjacent pair of symbols, so frequent words become single tokens and rare words
//! split into a few known pieces.
//!
//! # How this implementation works
//! * **Pre-tokenization.** Text is split on whitespace into chunks; inside a chunk, maximal
//!   runs of alphanumeric characters form one word and every other character (punctuation,
//!   symbols) is a word of its own. Merges never cross word boundaries.
//! * **End-of-word marker.** The last word of each whitespace chunk has the marker
//!   [`EOW`] (`</w>`) attached to its final character, so `"Hello, world."` becomes
//!   `Hello` `,</w>` `world` `.</w>`. Decoding puts a space after each marked token, which
//!   is why [`Bpe::decode`] reproduces the input with its whitespace normalised (runs of
//!   whitespace become one space, leading/trailing whitespace disappears).
//! * **Training** counts the pairs once, then updates the counts incrementally after each
//!   merge, touching only the words that contain the merged pair; a lazy max-heap finds the
//!   next best pair. Ties in frequency are broken by the smaller `(left id, right id)`, and
//!   ids are assigned deterministically (characters in sorted order, then merges in order),
//!   so training is fully deterministic. Pairs seen fewer than [`MIN_PAIR_COUNT`] times are
//!   never merged.
//! * **Encoding** applies the learned merges to each word in rank order, which reproduces the
//!   segmentation of training. Characters never seen in training become [`UNK`].
//!
//! Token ids: the special tokens [`PAD`] = 0, [`BOS`] = 1, [`EOS`] = 2, [`UNK`] = 3, then a
//! bare `</w>` (used only after an unknown final character), then two ids per alphabet
//! character (`c` and `c</w>`), then one id per merge.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Padding token id.
pub const PAD: u32 = 0;
/// Beginning-of-sequence token id.
pub const BOS: u32 = 1;
/// End-of-sequence token id.
pub const EOS: u32 = 2;
/// Unknown-character token id.
pub const UNK: u32 = 3;
/// Text of the special tokens, indexed by id.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];
/// End-of-word marker appended to the last symbol of each whitespace-separated chunk.
pub const EOW: &str = "</w>";
/// Pairs occurring fewer times than this in the training data are never merged.
pub const MIN_PAIR_COUNT: u64 = 2;

/// Id of the bare end-of-word token.
const EOW_ID: u32 = 4;
/// Id of the first alphabet symbol.
const FIRST_CHAR_ID: u32 = 5;
const FORMAT_NAME: &str = "unigrad-bpe";
const FORMAT_VERSION: u32 = 1;

/// Splits `text` into words for BPE: `(word, ends_chunk)` where `ends_chunk` says whether
/// whitespace (or the end of the text) follows the word. See the module documentation.
pub fn pretokenize(text: &str) -> Vec<(&str, bool)> {
    let mut out = Vec::new();
    for chunk in text.split_whitespace() {
        let first = out.len();
        let mut run_start: Option<usize> = None;
        for (i, c) in chunk.char_indices() {
            if c.is_alphanumeric() {
                run_start.get_or_insert(i);
            } else {
                if let Some(s) = run_start.take() {
                    out.push((&chunk[s..i], false));
                }
                out.push((&chunk[i..i + c.len_utf8()], false));
            }
        }
        if let Some(s) = run_start {
            out.push((&chunk[s..], false));
        }
        if out.len() > first {
            if let Some(last) = out.last_mut() {
                last.1 = true;
            }
        }
    }
    out
}

/// Collapses every run of whitespace into one space and trims both ends: the form in which
/// [`Bpe::decode`] returns encoded text.
pub fn normalize_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A trained BPE tokenizer. Create one with [`Bpe::train`] or [`Bpe::load`].
#[derive(Debug, Clone)]
pub struct Bpe {
    alphabet: Vec<char>,
    merges: Vec<(u32, u32)>,
    /// Surface text of each token (without the end-of-word marker).
    pieces: Vec<String>,
    /// Whether each token ends a whitespace-separated chunk.
    ends_word: Vec<bool>,
    char_ids: HashMap<char, u32>,
    merge_rank: HashMap<(u32, u32), u32>,
}

/// On-disk JSON form of a [`Bpe`].
#[derive(Serialize, Deserialize)]
struct BpeFile {
    format: String,
    version: u32,
    end_of_word: String,
    special_tokens: Vec<String>,
    alphabet: Vec<char>,
    merges: Vec<[u32; 2]>,
    /// Every token's display form, for people reading the file; checked on load.
    #[serde(default)]
    vocab: Vec<String>,
}

impl Bpe {
    fn from_parts(alphabet: Vec<char>, merges: Vec<(u32, u32)>) -> Result<Self> {
        if alphabet.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::invalid("BPE alphabet must be sorted and unique"));
        }
        let mut bpe = Bpe::with_alphabet(alphabet);
        for (rank, &(a, b)) in merges.iter().enumerate() {
            let next = bpe.pieces.len() as u32;
            if a < EOW_ID || b < EOW_ID || a >= next || b >= next {
                return Err(Error::invalid(format!(
                    "merge {rank} ({a}, {b}) refers to an invalid or later token"
                )));
            }
            if bpe.ends_word[a as usize] {
                return Err(Error::invalid(format!(
                    "merge {rank} ({a}, {b}) continues after an end-of-word token"
                )));
            }
            if bpe.merge_rank.contains_key(&(a, b)) {
                return Err(Error::invalid(format!("merge {rank} ({a}, {b}) is repeated")));
            }
            bpe.push_merge(a, b);
        }
        Ok(bpe)
    }

    fn with_alphabet(alphabet: Vec<char>) -> Self {
        let mut pieces: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
        let mut ends_word = vec![false; SPECIAL_TOKENS.len()];
        pieces.push(String::new());
        ends_word.push(true);
        let mut char_ids = HashMap::with_capacity(alphabet.len());
        for &c in &alphabet {
            char_ids.insert(c, pieces.len() as u32);
            pieces.push(c.to_string());
            ends_word.push(false);
            pieces.push(c.to_string());
            ends_word.push(true);
        }
        Bpe {
            alphabet,
            merges: Vec::new(),
            pieces,
            ends_word,
            char_ids,
            merge_rank: HashMap::new(),
        }
    }

    fn push_merge(&mut self, a: u32, b: u32) -> u32 {
        let id = self.pieces.len() as u32;
        let piece = format!("{}{}", self.pieces[a as usize], self.pieces[b as usize]);
        self.pieces.push(piece);
        self.ends_word.push(self.ends_word[b as usize]);
        self.merge_rank.insert((a, b), self.merges.len() as u32);
        self.merges.push((a, b));
        id
    }

    fn first_merge_id(&self) -> u32 {
        FIRST_CHAR_ID + 2 * self.alphabet.len() as u32
    }

    /// The initial symbols of one word: characters, with the end-of-word variant for the last
    /// one when `eow` is set; unknown characters become [`UNK`].
    fn initial_symbols(&self, word: &str, eow: bool, out: &mut Vec<u32>) {
        let n = word.chars().count();
        for (k, c) in word.chars().enumerate() {
            let last = eow && k + 1 == n;
            match self.char_ids.get(&c) {
                Some(&id) => out.push(id + last as u32),
                None => {
                    out.push(UNK);
                    if last {
                        out.push(EOW_ID);
                    }
                }
            }
        }
    }

    /// Learns a tokenizer from `texts` with at most `vocab_size` tokens in total (special
    /// tokens and the character alphabet included). Training stops earlier when no pair
    /// occurs at least [`MIN_PAIR_COUNT`] times.
    ///
    /// Fails if `vocab_size` is smaller than the special tokens plus the alphabet (two ids per
    /// distinct character, plus the bare end-of-word token), which is the minimum vocabulary.
    pub fn train<I, S>(texts: I, vocab_size: usize) -> Result<Bpe>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        // Count words (owned keys: the texts may be temporaries).
        let mut word_counts: HashMap<(String, bool), u64> = HashMap::new();
        for text in texts {
            for (w, eow) in pretokenize(text.as_ref()) {
                match word_counts.get_mut(&(w.to_string(), eow)) {
                    Some(c) => *c += 1,
                    None => {
                        word_counts.insert((w.to_string(), eow), 1);
                    }
                }
            }
        }
        let mut keys: Vec<(String, bool)> = word_counts.keys().cloned().collect();
        keys.sort_unstable();
        let mut alphabet: Vec<char> = keys.iter().flat_map(|(w, _)| w.chars()).collect();
        alphabet.sort_unstable();
        alphabet.dedup();
        let mut bpe = Bpe::with_alphabet(alphabet);
        let min_vocab = bpe.pieces.len();
        if vocab_size < min_vocab {
            return Err(Error::invalid(format!(
                "vocab_size {vocab_size} is below the minimum {min_vocab} for this text \
                 (4 special tokens, end-of-word, and 2 per distinct character)"
            )));
        }

        let mut words: Vec<Vec<u32>> = Vec::with_capacity(keys.len());
        let mut counts: Vec<i64> = Vec::with_capacity(keys.len());
        for key in &keys {
            let mut syms = Vec::new();
            bpe.initial_symbols(&key.0, key.1, &mut syms);
            words.push(syms);
            counts.push(word_counts[key] as i64);
        }
        drop(word_counts);

        let mut pair_counts: HashMap<(u32, u32), i64> = HashMap::new();
        let mut pair_words: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
        for (wi, syms) in words.iter().enumerate() {
            for p in syms.windows(2) {
                let pair = (p[0], p[1]);
                *pair_counts.entry(pair).or_insert(0) += counts[wi];
                let list = pair_words.entry(pair).or_default();
                if list.last() != Some(&(wi as u32)) {
                    list.push(wi as u32);
                }
            }
        }
        let mut heap: BinaryHeap<(i64, Reverse<(u32, u32)>)> =
            pair_counts.iter().map(|(&pair, &c)| (c, Reverse(pair))).collect();

        let mut changed: HashSet<(u32, u32)> = HashSet::new();
        let mut merged = Vec::new();
        while bpe.pieces.len() < vocab_size {
            let Some((count, Reverse(pair))) = heap.pop() else {
                break;
            };
            if pair_counts.get(&pair).copied().unwrap_or(0) != count {
                continue; // stale heap entry
            }
            if count < MIN_PAIR_COUNT as i64 {
                break;
            }
            let new_id = bpe.push_merge(pair.0, pair.1);
            pair_counts.remove(&pair);
            let mut occurrences = pair_words.remove(&pair).unwrap_or_default();
            occurrences.sort_unstable();
            occurrences.dedup();
            changed.clear();
            for wi in occurrences {
                let wi_us = wi as usize;
                let syms = &words[wi_us];
                if !syms.windows(2).any(|p| (p[0], p[1]) == pair) {
                    continue; // the word lost this pair in an earlier merge
                }
                merge_pair(syms, pair, new_id, &mut merged);
                let c = counts[wi_us];
                for p in syms.windows(2) {
                    let q = (p[0], p[1]);
                    if q != pair {
                        if let Some(n) = pair_counts.get_mut(&q) {
                            *n -= c;
                        }
                        changed.insert(q);
                    }
                }
                for p in merged.windows(2) {
                    let q = (p[0], p[1]);
                    *pair_counts.entry(q).or_insert(0) += c;
                    changed.insert(q);
                    if q.0 == new_id || q.1 == new_id {
                        let list = pair_words.entry(q).or_default();
                        if list.last() != Some(&wi) {
                            list.push(wi);
                        }
                    }
                }
                std::mem::swap(&mut words[wi_us], &mut merged);
            }
            for &q in &changed {
                match pair_counts.get(&q).copied() {
                    Some(n) if n > 0 => heap.push((n, Reverse(q))),
                    Some(_) => {
                        pair_counts.remove(&q);
                    }
                    None => {}
                }
            }
        }
        Ok(bpe)
    }

    /// Total number of token ids (special tokens included); ids are `0..vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Number of learned merges.
    pub fn num_merges(&self) -> usize {
        self.merges.len()
    }

    /// The characters known to the tokenizer, sorted.
    pub fn alphabet(&self) -> &[char] {
        &self.alphabet
    }

    /// The display form of token `id` (its text, with `</w>` appended if it ends a word), or
    /// `None` for an id outside the vocabulary.
    pub fn token(&self, id: u32) -> Option<String> {
        let i = id as usize;
        let piece = self.pieces.get(i)?;
        if i >= EOW_ID as usize && self.ends_word[i] {
            Some(format!("{piece}{EOW}"))
        } else {
            Some(piece.clone())
        }
    }

    /// The id of a token given in display form (see [`token`](Self::token)), if it exists.
    /// This is a linear scan, meant for inspection and tests, not for encoding.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        (0..self.pieces.len() as u32).find(|&id| self.token(id).as_deref() == Some(token))
    }

    /// Encodes `text` into token ids, without [`BOS`]/[`EOS`] (add them as needed).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut syms = Vec::new();
        let mut scratch = Vec::new();
        for (word, eow) in pretokenize(text) {
            syms.clear();
            self.initial_symbols(word, eow, &mut syms);
            self.apply_merges(&mut syms, &mut scratch);
            out.extend_from_slice(&syms);
        }
        out
    }

    fn apply_merges(&self, syms: &mut Vec<u32>, scratch: &mut Vec<u32>) {
        let first_merge = self.first_merge_id();
        while syms.len() > 1 {
            let best = syms
                .windows(2)
                .filter_map(|p| self.merge_rank.get(&(p[0], p[1])).copied())
                .min();
            let Some(rank) = best else { break };
            let pair = self.merges[rank as usize];
            merge_pair(syms, pair, first_merge + rank, scratch);
            std::mem::swap(syms, scratch);
        }
    }

    /// Decodes token ids back into text. [`PAD`], [`BOS`] and [`EOS`] are skipped, [`UNK`]
    /// and ids outside the vocabulary become `<unk>`, and a space follows every token that
    /// ends a word (the final trailing space is removed).
    ///
    /// For text made only of characters seen in training,
    /// `decode(&encode(s)) == normalize_whitespace(s)`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        for &id in ids {
            let i = id as usize;
            match id {
                PAD | BOS | EOS => continue,
                _ if id == UNK || i >= self.pieces.len() => out.push_str(SPECIAL_TOKENS[3]),
                _ => {
                    out.push_str(&self.pieces[i]);
                    if self.ends_word[i] {
                        out.push(' ');
                    }
                }
            }
        }
        if out.ends_with(' ') {
            out.pop();
        }
        out
    }

    /// Serialises the tokenizer to pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        let file = BpeFile {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            end_of_word: EOW.to_string(),
            special_tokens: SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect(),
            alphabet: self.alphabet.clone(),
            merges: self.merges.iter().map(|&(a, b)| [a, b]).collect(),
            vocab: (0..self.pieces.len() as u32).filter_map(|id| self.token(id)).collect(),
        };
        Ok(serde_json::to_string_pretty(&file)?)
    }

    /// Parses a tokenizer from the JSON written by [`to_json`](Self::to_json), validating it.
    pub fn from_json(json: &str) -> Result<Bpe> {
        let file: BpeFile = serde_json::from_str(json)?;
        if file.format != FORMAT_NAME || file.version != FORMAT_VERSION {
            return Err(Error::format(
                "BPE JSON",
                format!(
                    "unsupported format {:?} version {} (expected {FORMAT_NAME:?} version {FORMAT_VERSION})",
                    file.format, file.version
                ),
            ));
        }
        if file.end_of_word != EOW || file.special_tokens != SPECIAL_TOKENS {
            return Err(Error::format(
                "BPE JSON",
                "end-of-word marker or special tokens differ from this version's",
            ));
        }
        let merges = file.merges.iter().map(|m| (m[0], m[1])).collect();
        let bpe = Bpe::from_parts(file.alphabet, merges).map_err(|e| Error::format("BPE JSON", e.to_string()))?;
        if !file.vocab.is_empty() {
            let ours: Vec<String> = (0..bpe.pieces.len() as u32).filter_map(|id| bpe.token(id)).collect();
            if ours != file.vocab {
                return Err(Error::format(
                    "BPE JSON",
                    "the \"vocab\" list does not match the alphabet and merges",
                ));
            }
        }
        Ok(bpe)
    }

    /// Writes the tokenizer as JSON to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json()?).map_err(|e| Error::io(path, e))
    }

    /// Reads a tokenizer saved by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<Bpe> {
        let json = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Bpe::from_json(&json).map_err(|e| match e {
            Error::Format { message, .. } => Error::format(path.display().to_string(), message),
            Error::Json(j) => Error::format(path.display().to_string(), j.to_string()),
            other => other,
        })
    }
}

/// Writes into `out` the symbols of `syms` with every non-overlapping occurrence of `pair`
/// (scanning left to right) replaced by `new_id`.
fn merge_pair(syms: &[u32], pair: (u32, u32), new_id: u32, out: &mut Vec<u32>) {
    out.clear();
    let mut i = 0;
    while i < syms.len() {
        if i + 1 < syms.len() && syms[i] == pair.0 && syms[i + 1] == pair.1 {
            out.push(new_id);
            i += 2;
        } else {
            out.push(syms[i]);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(bpe: &Bpe, text: &str) -> Vec<String> {
        bpe.encode(text).iter().map(|&id| bpe.token(id).unwrap()).collect()
    }

    #[test]
    fn pretokenize_splits_punctuation() {
        assert_eq!(
            pretokenize("  Hello, world! don't\t3.5 "),
            vec![
                ("Hello", false),
                (",", true),
                ("world", false),
                ("!", true),
                ("don", false),
                ("'", false),
                ("t", true),
                ("3", false),
                (".", false),
                ("5", true),
            ]
        );
        assert!(pretokenize(" \n ").is_empty());
        assert_eq!(pretokenize("Übermäßig"), vec![("Übermäßig", true)]);
    }

    #[test]
    fn sennrich_toy_example() {
        // The classic corpus: low x5, lower x2, newest x6, widest x3. Words are
        // l o w</w> | l o w e r</w> | n e w e s t</w> | w i d e s t</w>.
        // Alphabet d e i l n o r s t w: ids 5 + 2k (plain) and 6 + 2k (with </w>), so
        // e=7, l=11, n=13, o=15, s=19, w=23; merges get ids 25, 26, ...
        // Initial counts: (e,s)=9, (s,t</w>)=9, (w,e)=8, (l,o)=7, (n,e)=6, (e,w)=6, ...
        // 1. tie at 9: (e,s)=(7,19) < (19,t</w>)      -> "es"       (id 25)
        // 2. (es,t</w>)=9                             -> "est</w>"  (id 26)
        // 3. (l,o)=7 ((w,e) fell to 2 after step 1)   -> "lo"       (id 27)
        // 4. tie at 6 between (n,e)=(13,7), (e,w)=(7,23), (w,est</w>)=(23,26) and
        //    (lo,w</w>) has only 5: smallest pair (7,23) -> "ew"    (id 28)
        let mut texts = Vec::new();
        texts.extend(std::iter::repeat("low").take(5));
        texts.extend(std::iter::repeat("lower").take(2));
        texts.extend(std::iter::repeat("newest").take(6));
        texts.extend(std::iter::repeat("widest").take(3));
        let bpe = Bpe::train(&texts, 29).unwrap();
        assert_eq!(bpe.num_merges(), 4);
        assert_eq!(bpe.token(7).unwrap(), "e");
        assert_eq!(bpe.token(24).unwrap(), "w</w>");
        let merged: Vec<String> = (25..29).map(|id| bpe.token(id).unwrap()).collect();
        assert_eq!(merged, vec!["es", "est</w>", "lo", "ew"]);
        assert_eq!(toks(&bpe, "lowest"), vec!["lo", "w", "est</w>"]);
        assert_eq!(toks(&bpe, "newer"), vec!["n", "ew", "e", "r</w>"]);
        assert_eq!(bpe.token_id("est</w>"), Some(26));
        // One more merge: (n,ew)=(13,28) and (ew,est</w>)=(28,26) tie at 6 -> "new".
        let bpe5 = Bpe::train(&texts, 30).unwrap();
        assert_eq!(bpe5.token(29).unwrap(), "new");
    }

    #[test]
    fn round_trip_and_unknowns() {
        let texts = [
            "The cat sat on the mat.",
            "The dog sat on the log!",
            "Der Hund saß auf dem Baumstamm.",
        ];
        let bpe = Bpe::train(texts, 200).unwrap();
        for t in texts {
            let ids = bpe.encode(t);
            assert!(ids.iter().all(|&i| (i as usize) < bpe.vocab_size()));
            assert_eq!(bpe.decode(&ids), t);
        }
        let messy = "  the   cat!\tsat on\nthe mat .  ";
        assert_eq!(bpe.decode(&bpe.encode(messy)), normalize_whitespace(messy));
        // 'z' and '€' were never seen: they become <unk>, keeping the word boundary.
        let ids = bpe.encode("zag €");
        assert!(ids.contains(&UNK));
        assert_eq!(bpe.decode(&ids), "<unk>ag <unk>");
        // Specials are skipped, junk ids become <unk>.
        let mut with_specials = vec![BOS];
        with_specials.extend(bpe.encode("the cat"));
        with_specials.extend([EOS, PAD, PAD]);
        assert_eq!(bpe.decode(&with_specials), "the cat");
        assert_eq!(bpe.decode(&[u32::MAX]), "<unk>");
        assert!(bpe.encode("").is_empty());
    }

    #[test]
    fn training_is_deterministic_and_respects_limits() {
        let texts: Vec<String> = (0..200)
            .map(|i| format!("sentence number {i} has words like alpha beta gamma {}", i % 7))
            .collect();
        // 29 distinct characters -> 5 + 58 = 63 base ids; only about 40 pairs repeat.
        // Whole words are learned after 30 merges, then digit pairs like "12".
        let a = Bpe::train(&texts, 100).unwrap();
        let b = Bpe::train(texts.iter().rev(), 100).unwrap();
        assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
        assert_eq!(a.vocab_size(), 100);
        let id = a.token_id("sentence</w>").unwrap();
        assert_eq!(a.encode("sentence"), vec![id]);
        assert!(Bpe::train(&texts, 10).is_err());
        // With a huge budget training stops when no pair repeats.
        let c = Bpe::train(&texts, 100_000).unwrap();
        assert!(c.vocab_size() < 100_000);
        for t in &texts {
            assert_eq!(c.decode(&c.encode(t)), *t);
        }
    }

    #[test]
    fn json_round_trip_and_validation() {
        let bpe = Bpe::train(["hello hello world", "held world"], 40).unwrap();
        let json = bpe.to_json().unwrap();
        let back = Bpe::from_json(&json).unwrap();
        assert_eq!(back.to_json().unwrap(), json);
        assert_eq!(back.encode("hello world"), bpe.encode("hello world"));

        let dir = std::env::temp_dir().join(format!("unigrad-bpe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bpe.json");
        bpe.save(&path).unwrap();
        assert_eq!(Bpe::load(&path).unwrap().to_json().unwrap(), json);
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(Bpe::from_json("{}").is_err());
        let bad = json.replace("\"unigrad-bpe\"", "\"other\"");
        assert!(Bpe::from_json(&bad).is_err());
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["merges"] = serde_json::json!([[5, 9999]]);
        v["vocab"] = serde_json::json!([]);
        assert!(Bpe::from_json(&v.to_string()).is_err());
        assert!(Bpe::load(Path::new("/nonexistent/bpe.json")).is_err());
    }

    #[test]
    fn learns_thousands_of_merges_on_real_data_quickly() {
        let splits =
            crate::data::translation::load_de_en(&crate::data_dir(), &crate::data::translation::LoadOptions::default())
                .unwrap();
        let texts: Vec<&str> = splits
            .train
            .iter()
            .flat_map(|p| [p.src.as_str(), p.tgt.as_str()])
            .collect();
        let start = std::time::Instant::now();
        let bpe = Bpe::train(&texts, 8000).unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(bpe.vocab_size(), 8000);
        assert!(bpe.num_merges() > 7000);
        // Generous bound for a debug-ish test build on a slow machine.
        assert!(secs < 20.0, "training took {secs:.1} s");
        // Everything in the held-out data made of known characters round-trips.
        for p in splits.test.iter() {
            for s in [&p.src, &p.tgt] {
                if s.chars().all(|c| c.is_whitespace() || bpe.alphabet().contains(&c)) {
                    assert_eq!(bpe.decode(&bpe.encode(s)), normalize_whitespace(s));
                }
            }
        }
        // Subwords compress: far fewer tokens than characters.
        let chars: usize = splits.test.iter().map(|p| p.tgt.chars().count()).sum();
        let tokens: usize = splits.test.iter().map(|p| bpe.encode(&p.tgt).len()).sum();
        assert!(tokens * 3 < chars, "{tokens} tokens for {chars} chars");
    }
}
