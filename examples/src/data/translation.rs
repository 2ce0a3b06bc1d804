//! German→English sentence pairs for sequence-to-sequence examples.
//!
//! The bundled corpus (`data/de-en/ding-de-en.tsv`, 16,093 pairs from the Ding dictionary,
//! GPL-2.0-or-later data, see the folder's README and NOTICE) is one `German<TAB>English` pair
//! per line, already shuffled. This module reads it, validates every line, and splits it
//! deterministically by position, following the data README:
//!
//! * **test**: the last [`DEFAULT_TEST`] = 500 pairs (lines 15,594–16,093),
//! * **valid**: the [`DEFAULT_VALID`] = 500 pairs before them (lines 15,094–15,593),
//! * **train**: everything else (lines 1–15,093).
//!
//! Length filters ([`LoadOptions`]) are applied *after* splitting, so a pair's split never
//! depends on the filter: a model trained with a 64-byte limit is evaluated on a subset of the
//! same test set as one trained without it.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Pairs in the test split by default (the last ones in the file).
pub const DEFAULT_TEST: usize = 500;
/// Pairs in the validation split by default (just before the test pairs).
pub const DEFAULT_VALID: usize = 500;

/// One source/target sentence pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Source sentence (German in the bundled corpus).
    pub src: String,
    /// Target sentence (English in the bundled corpus).
    pub tgt: String,
}

/// Path of the bundled TSV inside a data folder such as [`crate::data_dir`].
pub fn de_en_path(data_dir: &Path) -> PathBuf {
    data_dir.join("de-en").join("ding-de-en.tsv")
}

/// Parses TSV text with one `source<TAB>target` pair per line. Empty lines are skipped; a
/// trailing `\r` is removed. A line without exactly one tab or with an empty side is an
/// error naming the line. `context` names the source in error messages.
pub fn parse_tsv(text: &str, context: &str) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split('\t');
        let (src, tgt) = match (parts.next(), parts.next(), parts.next()) {
            (Some(s), Some(t), None) => (s.trim(), t.trim()),
            _ => {
                return Err(Error::format(
                    format!("{context}:{}", i + 1),
                    "expected exactly one tab separating source and target",
                ))
            }
        };
        if src.is_empty() || tgt.is_empty() {
            return Err(Error::format(
                format!("{context}:{}", i + 1),
                "empty source or target sentence",
            ));
        }
        pairs.push(Pair {
            src: src.to_string(),
            tgt: tgt.to_string(),
        });
    }
    Ok(pairs)
}

/// Reads a UTF-8 TSV file of pairs (see [`parse_tsv`]).
pub fn read_tsv(path: &Path) -> Result<Vec<Pair>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::format(
            path.display().to_string(),
            format!("not valid UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
        )
    })?;
    parse_tsv(&text, &path.display().to_string())
}

/// Length limits applied to each split after splitting. A pair is kept only if **both**
/// sides satisfy every limit that is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Maximum UTF-8 length of each side in bytes (the README's quick CPU setting is 64).
    pub max_bytes: Option<usize>,
    /// Maximum number of whitespace-separated words on each side.
    pub max_words: Option<usize>,
}

impl LoadOptions {
    /// Whether `pair` passes the limits.
    pub fn accepts(&self, pair: &Pair) -> bool {
        let ok = |s: &str| {
            self.max_bytes.map_or(true, |m| s.len() <= m)
                && self.max_words.map_or(true, |m| s.split_whitespace().count() <= m)
        };
        ok(&pair.src) && ok(&pair.tgt)
    }
}

/// Train / validation / test pairs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TranslationSplits {
    /// Training pairs.
    pub train: Vec<Pair>,
    /// Validation pairs.
    pub valid: Vec<Pair>,
    /// Test pairs.
    pub test: Vec<Pair>,
}

/// Splits `pairs` by position: the last `n_test` pairs are the test set, the `n_valid`
/// before them the validation set, and the rest the training set; then applies `opts` to
/// each split. Fails if fewer than `n_valid + n_test + 1` pairs are given.
pub fn split_pairs(pairs: Vec<Pair>, n_valid: usize, n_test: usize, opts: &LoadOptions) -> Result<TranslationSplits> {
    let held = n_valid
        .checked_add(n_test)
        .ok_or_else(|| Error::invalid("n_valid + n_test overflows"))?;
    if pairs.len() <= held {
        return Err(Error::invalid(format!(
            "{} pairs are too few for {n_valid} validation + {n_test} test pairs and a training set",
            pairs.len()
        )));
    }
    let mut train = pairs;
    let mut test = train.split_off(train.len() - n_test);
    let mut valid = train.split_off(train.len() - n_valid);
    for split in [&mut train, &mut valid, &mut test] {
        split.retain(|p| opts.accepts(p));
    }
    Ok(TranslationSplits { train, valid, test })
}

/// Loads the bundled German→English corpus from `data_dir` with the default split
/// (500 test, 500 validation, the rest training) and the given length limits.
pub fn load_de_en(data_dir: &Path, opts: &LoadOptions) -> Result<TranslationSplits> {
    split_pairs(read_tsv(&de_en_path(data_dir))?, DEFAULT_VALID, DEFAULT_TEST, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str, t: &str) -> Pair {
        Pair {
            src: s.into(),
            tgt: t.into(),
        }
    }

    #[test]
    fn parse_and_validate() {
        let pairs = parse_tsv("Hallo Welt.\tHello world.\r\n\nJa.\tYes.\n", "t").unwrap();
        assert_eq!(pairs, vec![p("Hallo Welt.", "Hello world."), p("Ja.", "Yes.")]);
        let e = parse_tsv("ok\tok\nno tab here\n", "f.tsv").unwrap_err();
        assert!(e.to_string().starts_with("f.tsv:2:"), "{e}");
        assert!(parse_tsv("a\tb\tc\n", "t").is_err());
        assert!(parse_tsv("a\t \n", "t").is_err());
    }

    #[test]
    fn split_by_position_then_filter() {
        let pairs: Vec<Pair> = (0..10).map(|i| p(&format!("s{i}"), &"x".repeat(i))).collect();
        let s = split_pairs(pairs.clone(), 2, 3, &LoadOptions::default()).unwrap();
        assert_eq!(s.train.len(), 5);
        assert_eq!(s.valid, pairs[5..7].to_vec());
        assert_eq!(s.test, pairs[7..].to_vec());
        let opts = LoadOptions {
            max_bytes: Some(7),
            max_words: None,
        };
        let f = split_pairs(pairs.clone(), 2, 3, &opts).unwrap();
        // Filtering does not move pairs between splits.
        assert_eq!(f.train.len(), 5);
        assert_eq!(f.valid.len(), 2);
        assert_eq!(f.test, pairs[7..8].to_vec());
        assert!(split_pairs(pairs, 5, 5, &opts).is_err());
        let w = LoadOptions {
            max_bytes: None,
            max_words: Some(2),
        };
        assert!(w.accepts(&p("a b", "c")));
        assert!(!w.accepts(&p("a b", "c d e")));
    }

    #[test]
    fn loads_bundled_corpus() {
        let dir = crate::data_dir();
        let all = load_de_en(&dir, &LoadOptions::default()).unwrap();
        assert_eq!(all.train.len(), 15_093);
        assert_eq!(all.valid.len(), 500);
        assert_eq!(all.test.len(), 500);
        assert_eq!(
            all.train[0],
            p(
                "Diese Entscheidung ist ihm sehr schwergefallen.",
                "This was a very difficult decision for him to make."
            )
        );
        let short = load_de_en(
            &dir,
            &LoadOptions {
                max_bytes: Some(64),
                max_words: None,
            },
        )
        .unwrap();
        let n = short.train.len() + short.valid.len() + short.test.len();
        assert_eq!(n, 12_476); // as documented in the data README
    }
}
