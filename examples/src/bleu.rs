//! Corpus BLEU-4 (Papineni et al., 2002) for scoring translations.
//!
//! The translation example needs a standard, comparable quality number. BLEU is computed over
//! the whole corpus, not averaged over sentences: n-gram matches (each hypothesis n-gram
//! count clipped to its count in the reference) and n-gram totals are summed over all
//! sentences for n = 1..4, the four precisions are combined by a geometric mean, and a
//! brevity penalty `BP = exp(1 - r/c)` applies when the hypothesis length `c` is below the
//! reference length `r`. There is no smoothing: if any precision is zero, BLEU is zero.
//! One reference per hypothesis is supported.
//!
//! The conventions follow `sacrebleu` (`tokenize="none"`, `smooth_method="none"`), so scores
//! can be compared with it; [`tokenize_13a`] reimplements sacrebleu's default `13a`
//! tokenizer for scoring detokenized text the standard way ([`corpus_bleu_13a`]).

use std::collections::HashMap;
use std::fmt;

use crate::{Error, Result};

/// Maximum n-gram order.
pub const MAX_ORDER: usize = 4;

/// A BLEU score with its components, as `sacrebleu` reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BleuScore {
    /// BLEU in `0..=100`.
    pub score: f64,
    /// Modified n-gram precisions for n = 1..4, in percent (`100 * matches / totals`, or 0
    /// when there are no hypothesis n-grams).
    pub precisions: [f64; MAX_ORDER],
    /// Brevity penalty in `0..=1`.
    pub bp: f64,
    /// `hyp_len / ref_len` (0 when `ref_len` is 0).
    pub ratio: f64,
    /// Total hypothesis length in tokens.
    pub hyp_len: usize,
    /// Total reference length in tokens.
    pub ref_len: usize,
    /// Clipped n-gram matches for n = 1..4.
    pub matches: [usize; MAX_ORDER],
    /// Hypothesis n-gram counts for n = 1..4.
    pub totals: [usize; MAX_ORDER],
}

impl fmt::Display for BleuScore {
    /// Formats like sacrebleu: `BLEU = 12.34 50.0/20.0/10.0/5.0 (BP = 1.000 ratio = 1.000
    /// hyp_len = 10 ref_len = 10)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.precisions;
        write!(
            f,
            "BLEU = {:.2} {:.1}/{:.1}/{:.1}/{:.1} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score, p[0], p[1], p[2], p[3], self.bp, self.ratio, self.hyp_len, self.ref_len
        )
    }
}

/// Sufficient statistics for corpus BLEU, accumulated one sentence pair at a time.
///
/// Useful in evaluation loops; [`corpus_bleu`] and friends are built on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BleuStats {
    /// Clipped n-gram matches for n = 1..4.
    pub matches: [usize; MAX_ORDER],
    /// Hypothesis n-gram counts for n = 1..4.
    pub totals: [usize; MAX_ORDER],
    /// Total hypothesis length in tokens.
    pub hyp_len: usize,
    /// Total reference length in tokens.
    pub ref_len: usize,
}

fn ngram_counts<T: AsRef<str>>(tokens: &[T], n: usize) -> HashMap<Vec<&str>, usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            let key: Vec<&str> = w.iter().map(|t| t.as_ref()).collect();
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

impl BleuStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one tokenized hypothesis and its reference.
    pub fn add<T: AsRef<str>, U: AsRef<str>>(&mut self, hyp: &[T], reference: &[U]) {
        self.hyp_len += hyp.len();
        self.ref_len += reference.len();
        for n in 1..=MAX_ORDER {
            let h = ngram_counts(hyp, n);
            let r = ngram_counts(reference, n);
            self.totals[n - 1] += hyp.len().saturating_sub(n - 1);
            self.matches[n - 1] += h
                .iter()
                .map(|(g, &c)| c.min(r.get(g).copied().unwrap_or(0)))
                .sum::<usize>();
        }
    }

    /// Adds one hypothesis and reference given as text, tokenized on whitespace.
    pub fn add_text(&mut self, hyp: &str, reference: &str) {
        let h: Vec<&str> = hyp.split_whitespace().collect();
        let r: Vec<&str> = reference.split_whitespace().collect();
        self.add(&h, &r);
    }

    /// Merges statistics gathered elsewhere (for instance on another thread).
    pub fn merge(&mut self, other: &BleuStats) {
        for n in 0..MAX_ORDER {
            self.matches[n] += other.matches[n];
            self.totals[n] += other.totals[n];
        }
        self.hyp_len += other.hyp_len;
        self.ref_len += other.ref_len;
    }

    /// Computes the score from the accumulated statistics.
    pub fn score(&self) -> BleuScore {
        let mut precisions = [0.0; MAX_ORDER];
        let mut log_sum = 0.0;
        let mut any_zero = false;
        for ((p, &m), &t) in precisions.iter_mut().zip(&self.matches).zip(&self.totals) {
            if t > 0 {
                *p = 100.0 * m as f64 / t as f64;
            }
            if m == 0 {
                any_zero = true;
            } else {
                log_sum += (m as f64 / t as f64).ln();
            }
        }
        let (c, r) = (self.hyp_len as f64, self.ref_len as f64);
        let bp = if self.hyp_len >= self.ref_len {
            1.0
        } else if self.hyp_len == 0 {
            0.0
        } else {
            (1.0 - r / c).exp()
        };
        let score = if any_zero {
            0.0
        } else {
            100.0 * bp * (log_sum / MAX_ORDER as f64).exp()
        };
        BleuScore {
            score,
            precisions,
            bp,
            ratio: if self.ref_len > 0 { c / r } else { 0.0 },
            hyp_len: self.hyp_len,
            ref_len: self.ref_len,
            matches: self.matches,
            totals: self.totals,
        }
    }
}

fn check_lengths(h: usize, r: usize) -> Result<()> {
    if h != r {
        return Err(Error::invalid(format!(
            "{h} hypotheses but {r} references (need one reference per hypothesis)"
        )));
    }
    Ok(())
}

/// Corpus BLEU of pre-tokenized sentences: `hyps[i]` is scored against `refs[i]`.
/// Fails if the two lists differ in length.
pub fn corpus_bleu_tokens<T: AsRef<str>, U: AsRef<str>>(hyps: &[Vec<T>], refs: &[Vec<U>]) -> Result<BleuScore> {
    check_lengths(hyps.len(), refs.len())?;
    let mut stats = BleuStats::new();
    for (h, r) in hyps.iter().zip(refs) {
        stats.add(h, r);
    }
    Ok(stats.score())
}

/// Corpus BLEU of sentences tokenized on whitespace (sacrebleu's `tokenize="none"`).
/// Use this when hypotheses and references are already tokenized consistently.
pub fn corpus_bleu<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[R]) -> Result<BleuScore> {
    check_lengths(hyps.len(), refs.len())?;
    let mut stats = BleuStats::new();
    for (h, r) in hyps.iter().zip(refs) {
        stats.add_text(h.as_ref(), r.as_ref());
    }
    Ok(stats.score())
}

/// Corpus BLEU of detokenized sentences, tokenized with [`tokenize_13a`] first (sacrebleu's
/// default `tokenize="13a"`). This is the usual way to report BLEU on plain text.
pub fn corpus_bleu_13a<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[R]) -> Result<BleuScore> {
    check_lengths(hyps.len(), refs.len())?;
    let mut stats = BleuStats::new();
    for (h, r) in hyps.iter().zip(refs) {
        stats.add_text(&tokenize_13a(h.as_ref()), &tokenize_13a(r.as_ref()));
    }
    Ok(stats.score())
}

/// Whether `c` is in sacrebleu 13a's class `[\{-\~\[-\` -\&\(-\+\:-\@\/]`.
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// Tokenizes one line the way sacrebleu's `13a` tokenizer (mteval-v13a) does: unescapes a
/// few HTML entities, splits off punctuation and symbols, splits `.` and `,` unless they sit
/// between digits, splits `-` after a digit, and collapses whitespace. Apostrophes and hyphens
/// inside words stay attached (`don't`, `well-known`).
pub fn tokenize_13a(line: &str) -> String {
    let mut s = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if s.contains('&') {
        s = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let chars: Vec<char> = format!(" {s} ").chars().collect();

    // 1. Surround every symbol with spaces.
    let mut a = Vec::with_capacity(chars.len() * 2);
    for &c in &chars {
        if is_13a_symbol(c) {
            a.extend([' ', c, ' ']);
        } else {
            a.push(c);
        }
    }
    // 2-4. Two-character rules, applied like Python's re.sub: leftmost, non-overlapping.
    let apply = |input: &[char], matches: &dyn Fn(char, char) -> bool, repl: &dyn Fn(char, char, &mut Vec<char>)| {
        let mut out = Vec::with_capacity(input.len() * 2);
        let mut i = 0;
        while i < input.len() {
            if i + 1 < input.len() && matches(input[i], input[i + 1]) {
                repl(input[i], input[i + 1], &mut out);
                i += 2;
            } else {
                out.push(input[i]);
                i += 1;
            }
        }
        out
    };
    let dot_comma = |c: char| c == '.' || c == ',';
    // ([^0-9])([\.,]) -> \1 \2 (space after)
    let b = apply(&a, &|x, y| !x.is_ascii_digit() && dot_comma(y), &|x, y, o| {
        o.extend([x, ' ', y, ' '])
    });
    // ([\.,])([^0-9]) -> space before, \1 \2
    let c = apply(&b, &|x, y| dot_comma(x) && !y.is_ascii_digit(), &|x, y, o| {
        o.extend([' ', x, ' ', y])
    });
    // ([0-9])(-) -> \1 \2 (space after)
    let d = apply(&c, &|x, y| x.is_ascii_digit() && y == '-', &|x, y, o| {
        o.extend([x, ' ', y, ' '])
    });
    let joined: String = d.into_iter().collect();
    joined.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn identical_corpus_scores_100() {
        let refs = ["the cat sat on the mat", "a b c d e"];
        let s = corpus_bleu(&refs, &refs).unwrap();
        assert!(close(s.score, 100.0), "{s}");
        assert_eq!(s.precisions, [100.0; 4]);
        assert_eq!((s.bp, s.ratio, s.hyp_len, s.ref_len), (1.0, 1.0, 11, 11));
        // totals: 1-grams 6+5, 2-grams 5+4, 3-grams 4+3, 4-grams 3+2
        assert_eq!(s.totals, [11, 9, 7, 5]);
    }

    #[test]
    fn partial_match_by_hand() {
        // hyp: the cat sat on the red mat (7)   ref: the cat sat on the mat (6)
        // 1-grams: the x2, cat, sat, on, mat match; red does not      -> 6/7
        // 2-grams: the cat, cat sat, sat on, on the match; the red, red mat do not -> 4/6
        // 3-grams: the cat sat, cat sat on, sat on the                -> 3/5
        // 4-grams: the cat sat on, cat sat on the                     -> 2/4
        // c = 7 >= r = 6 so BP = 1.
        // BLEU = 100 * (6/7 * 4/6 * 3/5 * 2/4)^(1/4) = 100 * (6/35)^(1/4) = 64.3459...
        // sacrebleu 2.6.0 (tokenize="none", smooth_method="none", force=True): 64.34588841607616
        let s = corpus_bleu(&["the cat sat on the red mat"], &["the cat sat on the mat"]).unwrap();
        let expect = 100.0 * (6.0f64 / 7.0 * 4.0 / 6.0 * 3.0 / 5.0 * 2.0 / 4.0).powf(0.25);
        assert!(close(s.score, expect), "{s}");
        assert!((s.score - 64.34588841607616).abs() < 1e-9);
        assert_eq!(s.matches, [6, 4, 3, 2]);
        assert_eq!(s.totals, [7, 6, 5, 4]);
        assert!(close(s.ratio, 7.0 / 6.0));
    }

    #[test]
    fn corpus_level_aggregation() {
        // A: "a b c d" vs "a b c d": matches 4/4, 3/3, 2/2, 1/1.
        // B: "w x y z" vs "w x q z": 1-grams w x z -> 3/4; 2-grams only "w x" -> 1/3;
        //    3-grams 0/2; 4-grams 0/1. Alone, B scores 0.
        // Summed: 7/8, 4/6, 2/4, 1/2 -> BLEU = 100 * (7/48)^(1/4) = 61.7965...
        // sacrebleu 2.6.0 (same settings): 61.79654585112238
        let hyps = ["a b c d", "w x y z"];
        let refs = ["a b c d", "w x q z"];
        let s = corpus_bleu(&hyps, &refs).unwrap();
        assert_eq!(s.matches, [7, 4, 2, 1]);
        assert_eq!(s.totals, [8, 6, 4, 2]);
        let expect = 100.0 * (7.0f64 / 8.0 * 4.0 / 6.0 * 0.5 * 0.5).powf(0.25);
        assert!(close(s.score, expect), "{s}");
        assert!((s.score - 61.79654585112238).abs() < 1e-9);
        assert_eq!(corpus_bleu(&hyps[1..], &refs[1..]).unwrap().score, 0.0);
    }

    #[test]
    fn brevity_penalty() {
        // hyp "the cat sat on" (c = 4) is a prefix of the 6-token reference: all precisions
        // are 1, BP = exp(1 - 6/4) = exp(-0.5) = 0.60653..., BLEU = 60.653...
        // sacrebleu 2.6.0: 60.653065971263366
        let s = corpus_bleu(&["the cat sat on"], &["the cat sat on the mat"]).unwrap();
        assert_eq!(s.precisions, [100.0; 4]);
        assert!(close(s.bp, (-0.5f64).exp()));
        assert!(close(s.score, 100.0 * (-0.5f64).exp()), "{s}");
        assert!((s.score - 60.653065971263366).abs() < 1e-9);
        assert!(close(s.ratio, 4.0 / 6.0));
        // A longer hypothesis is not penalised for length (BP = 1), only through precision.
        let long = corpus_bleu(&["the cat sat on the mat today"], &["the cat sat on the mat"]);
        assert_eq!(long.unwrap().bp, 1.0);
    }

    #[test]
    fn clipping_and_zero_matches() {
        // hyp: the x7; ref: the cat is on the mat. "the" counts 7 in hyp but is clipped to 2
        // -> 1-gram precision 2/7; no 2-gram "the the" in the ref -> 0 -> BLEU 0.
        let s = corpus_bleu(&["the the the the the the the"], &["the cat is on the mat"]).unwrap();
        assert_eq!(s.matches, [2, 0, 0, 0]);
        assert!(close(s.precisions[0], 200.0 / 7.0));
        assert_eq!(s.score, 0.0);
        // "the cat sat on the mat" vs "the cat is on the mat": 5/6, 3/5, 1/4, 0/3 -> 0.
        let s = corpus_bleu(&["the cat sat on the mat"], &["the cat is on the mat"]).unwrap();
        assert_eq!(s.matches, [5, 3, 1, 0]);
        assert_eq!(s.score, 0.0);
        // Hypotheses shorter than 4 tokens have no 4-grams: 0 without smoothing.
        let s = corpus_bleu(&["a b c"], &["a b c"]).unwrap();
        assert_eq!(s.totals[3], 0);
        assert_eq!(s.score, 0.0);
        // Empty hypothesis: BP 0, score 0, no NaN.
        let s = corpus_bleu(&[""], &["a b c d"]).unwrap();
        assert_eq!((s.score, s.bp), (0.0, 0.0));
        let s = corpus_bleu::<&str, &str>(&[], &[]).unwrap();
        assert_eq!(s.score, 0.0);
        assert!(corpus_bleu(&["a"], &["a", "b"]).is_err());
    }

    #[test]
    fn stats_merge_and_token_api() {
        let mut a = BleuStats::new();
        a.add_text("a b c d", "a b c d");
        let mut b = BleuStats::new();
        b.add_text("w x y z", "w x q z");
        a.merge(&b);
        let direct = corpus_bleu_tokens(
            &[vec!["a", "b", "c", "d"], vec!["w", "x", "y", "z"]],
            &[vec!["a", "b", "c", "d"], vec!["w", "x", "q", "z"]],
        )
        .unwrap();
        assert_eq!(a.score(), direct);
        let text = format!("{direct}");
        assert!(
            text.starts_with("BLEU = 61.80 87.5/66.7/50.0/50.0 (BP = 1.000"),
            "{text}"
        );
    }

    #[test]
    fn tokenizer_13a() {
        // Expected strings produced by sacrebleu 2.6.0's Tokenizer13a.
        assert_eq!(
            tokenize_13a("Hello, world! It's 3.5 dollars-ish (really)."),
            "Hello , world ! It's 3.5 dollars-ish ( really ) ."
        );
        assert_eq!(tokenize_13a("1,000 and 2-3 a.b"), "1,000 and 2 - 3 a . b");
        assert_eq!(tokenize_13a("&quot;Yes&quot; &amp; no"), "\" Yes \" & no");
        assert_eq!(tokenize_13a("  spaced\tout  "), "spaced out");
        assert_eq!(tokenize_13a(""), "");
        assert_eq!(
            tokenize_13a("Er sagte: \"Nein!\" {x} [y] 5-7. a,b.c, 3."),
            "Er sagte : \" Nein ! \" { x } [ y ] 5 - 7 . a , b . c , 3 ."
        );
        assert_eq!(
            tokenize_13a("x. .y ,,, 1.. ..2 a-b 9-"),
            "x . . y , , , 1 . . . .2 a-b 9 -"
        );
        // 13a tokenization changes the score of punctuated text.
        let h = ["The cat sat on the mat."];
        let r = ["The cat sat on the mat ."];
        assert!(corpus_bleu(&h, &r).unwrap().score < 100.0);
        assert!(close(corpus_bleu_13a(&h, &r).unwrap().score, 100.0));
    }
}
