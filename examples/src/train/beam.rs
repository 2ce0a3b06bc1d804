//! Batched beam search and greedy decoding, independent of the model.
//!
//! Both searches drive a *step function* that scores the next token for a set of live
//! prefixes: it receives, for every live row, the index of the sentence the row belongs to,
//! plus all prefixes as one row-major `[rows, t]` block of ids (every prefix starts with the
//! BOS id and all have the same length `t`), and returns next-token log-probabilities as a
//! row-major `[rows, V]` block. Keeping the model behind a closure lets the search be tested
//! exactly against brute-force enumeration on hand-made distributions, and lets the caller
//! batch all sentences of a test set (and all their beams) into one model call per step.
//! Rows of sentences that are finished are dropped, so the batch shrinks as decoding goes.
//!
//! The beam search follows fairseq's `SequenceGenerator`:
//!
//! * each step takes, per sentence, the best `2·K` extensions of its (at most `K`) live
//!   beams by cumulative log-probability;
//! * an extension ending in EOS among the best `K` of them becomes a finished hypothesis,
//!   scored `logprob / len^α` (`len` counts generated tokens including EOS, `α` is the
//!   length penalty: 0 = raw log-probability, 1 = per-token average, which is fairseq's
//!   default `--lenpen 1`);
//! * the best `K` extensions not ending in EOS are the next live beams;
//! * a sentence is done when it has `K` finished hypotheses; at its length limit every live
//!   beam is finished by appending EOS;
//! * the answer is the finished hypothesis with the best normalised score.
//!
//! With `K = 1` this is exactly greedy decoding (tested).

use super::{TrainError, TrainResult};

/// Beam-search settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeamConfig {
    /// Beams per sentence `K` (at least 1).
    pub beam: usize,
    /// Length penalty exponent `α` of the final score `logprob / len^α`.
    pub len_penalty: f64,
    /// Id every prefix starts with.
    pub bos: i64,
    /// Id that ends a hypothesis.
    pub eos: i64,
}

/// A finished hypothesis.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Generated ids without BOS and without the final EOS.
    pub tokens: Vec<i64>,
    /// Sum of the token log-probabilities (EOS included).
    pub logprob: f64,
    /// `logprob / len^α` with `len = tokens.len() + 1`.
    pub score: f64,
}

struct Live {
    sent: usize,
    tokens: Vec<i64>,
    logprob: f64,
}

fn check_step(out: &[f32], rows: usize) -> TrainResult<usize> {
    if rows == 0 || out.is_empty() || out.len() % rows != 0 {
        return Err(TrainError::Invalid(format!(
            "beam step returned {} values for {rows} rows (expected rows × vocabulary)",
            out.len()
        )));
    }
    Ok(out.len() / rows)
}

fn flat_prefixes(live: &[Live]) -> (Vec<usize>, Vec<i64>) {
    let sents = live.iter().map(|l| l.sent).collect();
    let flat = live.iter().flat_map(|l| l.tokens.iter().copied()).collect();
    (sents, flat)
}

/// Beam search over `max_lens.len()` sentences; sentence `s` generates at most
/// `max_lens[s]` tokens (EOS included, at least 1). `step(sentences, prefixes, t)` scores
/// the live rows (see the module docs). Returns the best hypothesis of every sentence.
pub fn beam_search<F>(cfg: &BeamConfig, max_lens: &[usize], mut step: F) -> TrainResult<Vec<Hypothesis>>
where
    F: FnMut(&[usize], &[i64], usize) -> TrainResult<Vec<f32>>,
{
    let k = cfg.beam;
    if k == 0 {
        return Err(TrainError::Invalid("beam size must be at least 1".into()));
    }
    let n = max_lens.len();
    let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); n];
    let mut live: Vec<Live> = (0..n)
        .map(|sent| Live {
            sent,
            tokens: vec![cfg.bos],
            logprob: 0.0,
        })
        .collect();
    let norm = |logprob: f64, len: usize| logprob / (len as f64).powf(cfg.len_penalty);
    while !live.is_empty() {
        let t = live[0].tokens.len();
        let (sents, flat) = flat_prefixes(&live);
        let out = step(&sents, &flat, t)?;
        let v = check_step(&out, live.len())?;
        let mut next: Vec<Live> = Vec::with_capacity(live.len());
        let mut r0 = 0;
        while r0 < live.len() {
            let s = live[r0].sent;
            let r1 = r0 + live[r0..].iter().take_while(|l| l.sent == s).count();
            let gen_len = t; // tokens generated once this step's token is appended
            if gen_len >= max_lens[s].max(1) {
                // length limit: every live beam ends here with EOS
                for (r, l) in live.iter().enumerate().take(r1).skip(r0) {
                    let lp = l.logprob + out[r * v + cfg.eos as usize] as f64;
                    finished[s].push(Hypothesis {
                        tokens: l.tokens[1..].to_vec(),
                        logprob: lp,
                        score: norm(lp, gen_len),
                    });
                }
                r0 = r1;
                continue;
            }
            // all extensions of this sentence's beams, best 2K first
            let mut cands: Vec<(f64, usize, usize)> = Vec::with_capacity((r1 - r0) * v);
            for (r, l) in live.iter().enumerate().take(r1).skip(r0) {
                for (tok, &lp) in out[r * v..(r + 1) * v].iter().enumerate() {
                    let total = l.logprob + lp as f64;
                    if total.is_finite() {
                        cands.push((total, r, tok));
                    }
                }
            }
            let keep = (2 * k).min(cands.len());
            let by_score = |a: &(f64, usize, usize), b: &(f64, usize, usize)| {
                b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
            };
            if keep < cands.len() && keep > 0 {
                cands.select_nth_unstable_by(keep - 1, by_score);
                cands.truncate(keep);
            }
            cands.sort_by(by_score);
            let mut new_beams = 0;
            for (rank, &(total, r, tok)) in cands.iter().enumerate() {
                if tok as i64 == cfg.eos {
                    if rank < k && finished[s].len() < k {
                        finished[s].push(Hypothesis {
                            tokens: live[r].tokens[1..].to_vec(),
                            logprob: total,
                            score: norm(total, gen_len),
                        });
                    }
                } else if new_beams < k {
                    let mut tokens = live[r].tokens.clone();
                    tokens.push(tok as i64);
                    next.push(Live {
                        sent: s,
                        tokens,
                        logprob: total,
                    });
                    new_beams += 1;
                }
            }
            if finished[s].len() >= k || new_beams == 0 {
                next.retain(|l| l.sent != s);
            }
            r0 = r1;
        }
        live = next;
    }
    finished
        .into_iter()
        .enumerate()
        .map(|(s, hyps)| {
            hyps.into_iter()
                .max_by(|a, b| a.score.total_cmp(&b.score))
                .ok_or_else(|| TrainError::Invalid(format!("beam search produced no hypothesis for sentence {s}")))
        })
        .collect()
}

/// Greedy decoding: every sentence takes the most likely next token until EOS or
/// `max_lens[s]` tokens (EOS included). Returns the generated ids without BOS and EOS.
pub fn greedy_search<F>(bos: i64, eos: i64, max_lens: &[usize], mut step: F) -> TrainResult<Vec<Vec<i64>>>
where
    F: FnMut(&[usize], &[i64], usize) -> TrainResult<Vec<f32>>,
{
    let n = max_lens.len();
    let mut done: Vec<Option<Vec<i64>>> = vec![None; n];
    let mut live: Vec<Live> = (0..n)
        .map(|sent| Live {
            sent,
            tokens: vec![bos],
            logprob: 0.0,
        })
        .collect();
    while !live.is_empty() {
        let t = live[0].tokens.len();
        let (sents, flat) = flat_prefixes(&live);
        let out = step(&sents, &flat, t)?;
        let v = check_step(&out, live.len())?;
        let mut next = Vec::with_capacity(live.len());
        for (r, mut l) in live.into_iter().enumerate() {
            let row = &out[r * v..(r + 1) * v];
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0usize, f32::NEG_INFINITY),
                    |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) },
                )
                .0 as i64;
            if best == eos || t >= max_lens[l.sent].max(1) {
                done[l.sent] = Some(l.tokens[1..].to_vec());
            } else {
                l.tokens.push(best);
                next.push(l);
            }
        }
        live = next;
    }
    Ok(done.into_iter().map(|d| d.unwrap_or_default()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOS: i64 = 0;
    const BOS: i64 = 7;

    /// Deterministic pseudo-random log-probabilities over `v` tokens for a prefix.
    fn toy_logprobs(prefix: &[i64], v: usize, salt: u64) -> Vec<f32> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
        for &p in prefix {
            h = (h ^ p as u64).wrapping_mul(0x100_0000_01b3);
        }
        let logits: Vec<f64> = (0..v)
            .map(|i| {
                let x = (h ^ (i as u64 * 0x9e37_79b9)).wrapping_mul(0x2545_f491_4f6c_dd1d);
                (x >> 40) as f64 / (1u64 << 24) as f64 * 4.0
            })
            .collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
        logits.iter().map(|l| (l - m - z.ln()) as f32).collect()
    }

    fn toy_step(v: usize, salt: u64) -> impl FnMut(&[usize], &[i64], usize) -> TrainResult<Vec<f32>> {
        move |sents: &[usize], flat: &[i64], t: usize| {
            let mut out = Vec::new();
            for (r, &s) in sents.iter().enumerate() {
                out.extend(toy_logprobs(&flat[r * t..(r + 1) * t], v, salt + s as u64));
            }
            Ok(out)
        }
    }

    /// Best sequence by exhaustive enumeration (same scoring and length rules).
    fn brute_force(v: usize, max_len: usize, alpha: f64, salt: u64) -> (Vec<i64>, f64) {
        let mut best = (Vec::new(), f64::NEG_INFINITY);
        let mut stack = vec![(vec![BOS], 0.0f64)];
        while let Some((prefix, lp)) = stack.pop() {
            let probs = toy_logprobs(&prefix, v, salt);
            let len = prefix.len(); // generated count once the next token is added
            let end = lp + probs[EOS as usize] as f64;
            let score = end / (len as f64).powf(alpha);
            if score > best.1 {
                best = (prefix[1..].to_vec(), score);
            }
            if len < max_len {
                for (tok, &p) in probs.iter().enumerate().skip(1) {
                    let mut next = prefix.clone();
                    next.push(tok as i64);
                    stack.push((next, lp + p as f64));
                }
            }
        }
        best
    }

    #[test]
    fn wide_beam_is_exact() {
        for salt in 0..6u64 {
            for alpha in [0.0, 1.0] {
                let (v, max_len) = (3, 4);
                let cfg = BeamConfig {
                    beam: 64,
                    len_penalty: alpha,
                    bos: BOS,
                    eos: EOS,
                };
                let got = beam_search(&cfg, &[max_len], toy_step(v, salt)).unwrap();
                let (tokens, score) = brute_force(v, max_len, alpha, salt);
                assert_eq!(got[0].tokens, tokens, "salt {salt} alpha {alpha}");
                assert!((got[0].score - score).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn beam_one_is_greedy_and_batches_agree() {
        let (v, n) = (11, 6);
        let max_lens: Vec<usize> = (0..n).map(|i| 3 + i).collect();
        let cfg = BeamConfig {
            beam: 1,
            len_penalty: 1.0,
            bos: BOS,
            eos: EOS,
        };
        let beam = beam_search(&cfg, &max_lens, toy_step(v, 3)).unwrap();
        let greedy = greedy_search(BOS, EOS, &max_lens, toy_step(v, 3)).unwrap();
        for (b, g) in beam.iter().zip(&greedy) {
            assert_eq!(&b.tokens, g);
        }
        // a batch gives the same answer as each sentence on its own
        let cfg4 = BeamConfig { beam: 4, ..cfg };
        let all = beam_search(&cfg4, &max_lens, toy_step(v, 3)).unwrap();
        for s in 0..n {
            let salted = toy_step(v, 3 + s as u64);
            let one = beam_search(&cfg4, &max_lens[s..s + 1], salted).unwrap();
            assert_eq!(one[0], all[s]);
        }
        for (h, &m) in all.iter().zip(&max_lens) {
            assert!(h.tokens.len() < m);
        }
    }

    #[test]
    fn beam_finds_what_greedy_misses() {
        // step 1: A (id 1) 0.6, B (id 2) 0.4; after A everything is flat over 3 tokens
        // (EOS ≈ 1/3), after B EOS is almost certain: B EOS (0.4) beats A EOS (0.2).
        let step = |sents: &[usize], flat: &[i64], t: usize| -> TrainResult<Vec<f32>> {
            let mut out = Vec::new();
            for r in 0..sents.len() {
                let p = &flat[r * t..(r + 1) * t];
                let probs: [f64; 3] = match p {
                    [_] => [1e-6, 0.6, 0.4],
                    [_, 1, ..] => [1.0 / 3.0; 3],
                    _ => [1.0 - 2e-6, 1e-6, 1e-6],
                };
                out.extend(probs.iter().map(|x| x.ln() as f32));
            }
            Ok(out)
        };
        let cfg = BeamConfig {
            beam: 2,
            len_penalty: 0.0,
            bos: BOS,
            eos: EOS,
        };
        assert_eq!(beam_search(&cfg, &[5], step).unwrap()[0].tokens, vec![2]);
        assert_eq!(greedy_search(BOS, EOS, &[5], step).unwrap()[0][0], 1);
        assert!(beam_search(&BeamConfig { beam: 0, ..cfg }, &[5], step).is_err());
        let bad = |_: &[usize], _: &[i64], _: usize| Ok(vec![0.0f32; 5]);
        assert!(beam_search(&cfg, &[3, 3], bad).is_err());
    }
}
