//! # unigrad-tests — the shared test suite
//!
//! One suite, written once against the [`Device`](unigrad_core::Device) handle, run
//! against every backend. A backend gets every test by adding one line in
//! `tests/tests/<backend>.rs`:
//!
//! ```ignore
//! unigrad_tests::backend_suite!(cpu, unigrad_cpu::cpu());
//! ```
//!
//! and a backend whose device may be missing passes a guard returning
//! `Option<Device>`; with `None` each test passes after writing
//! `SKIPPED <test>: <reason>` to stderr:
//!
//! ```ignore
//! unigrad_tests::backend_suite!(cuda, guard = unigrad_cuda::try_device(), reason = "no CUDA device");
//! ```
//!
//! ## What is in it
//!
//! | module | checks |
//! | --- | --- |
//! | [`gradcheck_ops`] | every differentiable op by central differences in f64 |
//! | [`forward`] | forward values against the naive [`reference`] code, f64 and f32 |
//! | [`autograd`] | accumulation, no_grad, detach, backward errors, anomaly mode, custom ops, dropout, RNG |
//! | [`views`] | storage sharing of views, rank-0 and zero-size tensors |
//! | [`errors`] | bad inputs return errors naming the op and shapes |
//! | [`bounds`] | every backend method rejects crafted layouts and sizes that reach past their storage |
//! | [`semantics`] | PyTorch's edge-case semantics (NaN, kinks, empty and `axes = []` reductions, log-softmax precision) and errors from composed ops naming the called op |
//! | [`training`] | a 1,000-step MLP run learns and keeps memory flat |
//! | [`fused`] | the backend's fused kernels against the composed defaults they replace |
//! | [`nn_modules`] | every nn layer by central differences in f64, and forward against naive host code |
//! | [`nn_norms`] | UN and PowerNorm: where their custom backwards are exact and where they deliberately differ; state and input checks |
//! | [`nn_replay`] | UN and PowerNorm against the reference fixtures (`tests/data/fixtures/`): f64 chained, f64 and f32 step by step |
//! | [`nn_fold`] | inference folding reproduces the eval-mode LM |
//! | [`nn_trace`] | norm statistics tracing of single layers and of the LM, Seq2Seq and ViT; gradient statistics of norm outputs, any tensor and parameters through hooks |
//! | [`nn_state`] | state a bad batch or call must not corrupt: all-padding batches, mask values, per-parameter optimizer steps |
//! | [`diff`] | every op with a PyTorch counterpart, forward and gradients, against cases PyTorch computed (`tests/data/torch_diff.safetensors`) |
//! | [`higher_order`] | every gradcheck table again through `gradgradcheck` (second derivatives, f64); `create_graph` / `grad` semantics, Hessian-vector products, gradient penalties |
//! | [`hooks`] | gradients of intermediates (`retain_grad`) and gradient hooks: values, order, removal, errors, `requires_grad` on op results, `no_grad` |
//! | [`props`] | random shapes, axes and broadcasting partners through every public op: no panic, shapes and errors as a reference predicts, gradients shaped like their inputs |
//!
//! ## Extension point: more suites, same mechanism
//!
//! Suite functions are plain `pub fn name(dev: &Device) -> Result<()>` in some
//! module. To add tests that every backend runs, either
//!
//! 1. add the module here and one group line to [`backend_suite!`]'s list, e.g.
//!    `nn_norms(Shared) = $crate::nn_norms { layer_norm_parity, un_gradcheck }` —
//!    every `tests/tests/<backend>.rs` then picks them up with no change; or
//! 2. keep them elsewhere (another crate) and instantiate them with the general
//!    [`instantiate!`] macro, which takes the same group syntax plus the device
//!    expression:
//!
//! ```ignore
//! mod cpu_nn {
//!     unigrad_tests::instantiate! {
//!         device = Some(unigrad_cpu::cpu()), reason = "";
//!         norms(Shared) = my_crate::norm_suite { layer_norm_parity, un_gradcheck }
//!     }
//! }
//! ```
//!
//! Each group becomes a module of `#[test]`s named after the functions (test path
//! `<backend>::<group>::<function>`), run through [`harness::run`], which reseeds
//! the RNG per test, handles skipping, and serialises `Exclusive` groups.
//! A unit test in this crate checks that every suite function of this crate is
//! listed in [`backend_suite!`].
//!
//! Gradcheck cases are counted per test; run with `-- --nocapture` to see
//! `<test>: N gradcheck cases` lines.

#![warn(missing_docs)]

pub mod attention;
pub mod autograd;
pub mod bounds;
pub mod diff;
pub mod errors;
pub mod forward;
pub mod fused;
pub mod gradcheck_ops;
pub mod harness;
pub mod higher_order;
pub mod hooks;
pub mod nn_fold;
pub mod nn_modules;
pub mod nn_norms;
pub mod nn_replay;
pub mod nn_state;
pub mod nn_trace;
// issue 17 (helper "ops")
pub mod ops_extra;
pub mod props;
pub mod reference;
pub mod semantics;
pub mod training;
pub mod util;
pub mod views;

/// Generate one `#[test]` per listed suite function.
///
/// Syntax: `device = <expr: Option<Device>>, reason = <&str>;` then groups
/// `group(Mode) = path::to::module { fn_a, fn_b, ... }` where `Mode` is `Shared` or
/// `Exclusive` (see [`harness::Mode`]). The device expression is evaluated in each
/// test; the generated modules `use super::*`, so it may name items of the
/// invoking module.
#[macro_export]
macro_rules! instantiate {
    (
        device = $dev:expr, reason = $reason:expr;
        $( $group:ident ( $mode:ident ) = $module:path { $( $test:ident ),* $(,)? } )*
    ) => {
        $(
            #[allow(unused_imports)]
            mod $group {
                use super::*;
                use $module as suite_module;
                $(
                    #[test]
                    fn $test() {
                        $crate::harness::run(
                            concat!(module_path!(), "::", stringify!($test)),
                            concat!(stringify!($group), "::", stringify!($test)),
                            $crate::harness::Mode::$mode,
                            suite_module::$test,
                            $dev,
                            $reason,
                        );
                    }
                )*
            }
        )*
    };
}

/// Instantiate the whole shared suite for one backend, as module `$name` of `#[test]`s.
///
/// - `backend_suite!(cpu, unigrad_cpu::cpu())` — the device is always present.
/// - `backend_suite!(cuda, guard = <expr: Option<Device>>, reason = "<why skipped>")`
///   — tests pass with a `SKIPPED <test>: <reason>` line on stderr when the guard
///   gives `None`.
///
/// This is the one list of the suite's functions; add new ones here.
#[macro_export]
macro_rules! backend_suite {
    ($name:ident, guard = $guard:expr, reason = $reason:expr $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::instantiate! {
                device = $guard, reason = $reason;
                forward(Shared) = $crate::forward {
                    unary_ops, binary_broadcast, select_ops, reductions, matmul, shape_ops,
                    indexing, softmax, cross_entropy, to_dtype, large_tensors, norms,
                }
                gradcheck_ops(Shared) = $crate::gradcheck_ops {
                    unary, binary, random_shapes, reductions, matmul, shape_ops, indexing,
                    softmax, cross_entropy, dropout, to_dtype, compositions, norms,
                }
                autograd(Shared) = $crate::autograd {
                    accumulation, shared_subgraphs, long_chains, no_grad_and_detach, backward_errors,
                    custom_ops, gradcheck_catches_wrong_gradient, dropout, rng_determinism,
                    device_moves,
                }
                autograd_exclusive(Exclusive) = $crate::autograd { anomaly_mode }
                views(Shared) = $crate::views { storage_sharing, scalars, zero_size, creation }
                errors(Shared) = $crate::errors {
                    shape_errors, dtype_errors, axis_errors, index_errors, argument_errors,
                    shape_overflow, huge_outputs, narrow_huge_start, non_float_grad,
                }
                bounds(Shared) = $crate::bounds {
                    elementwise, reduce, matmul, view_copy, index, softmax, softmax_backward_of_an_offset_view,
                    norm, optim,
                }
                semantics(Shared) = $crate::semantics {
                    log_softmax_large_logits, relu_propagates_nan, powf_zero_exponent, clamp_kinks,
                    extremum_nan_and_ties, empty_mean_is_nan, empty_axes_reduce_all,
                    composed_errors_name_the_called_op,
                    // issue 17 (helper "hog2"): zero-class cross-entropy with every target ignored
                    cross_entropy_zero_classes_all_ignored,
                }
                training(Exclusive) = $crate::training { mlp_memory_flat }
                fused(Shared) = $crate::fused {
                    softmax_and_moments, layer_norm, adam_update, core_entry_points,
                }
                attention(Shared) = $crate::attention {
                    forward_matches_naive, gradcheck_fused, fused_vs_composed,
                    composed_formulas_match_the_fused_op, attention_errors,
                    mha_causal_bias_runs_as_the_causal_flag,
                }
                nn_modules(Shared) = $crate::nn_modules {
                    gradcheck_linear, gradcheck_embedding, gradcheck_layer_norm, gradcheck_rms_norm,
                    gradcheck_batch_norm, gradcheck_batch_norm_masked, gradcheck_self_attention_masks,
                    gradcheck_cross_attention, gradcheck_feed_forward, gradcheck_block_pre_norm,
                    gradcheck_block_post_norm, layer_norm_matches_naive, batch_norm_matches_naive,
                    attention_matches_naive,
                }
                nn_norms(Shared) = $crate::nn_norms {
                    un_exact_mu0_in_warmup_first_step, un_exact_mu0_in_warmup_later_steps,
                    un_exact_window1_any_momentum, un_exact_on_skipped_outlier_step,
                    un_differs_with_momentum_in_warmup, un_differs_with_padding, un_differs_with_smoothing,
                    un_differs_on_normal_step_after_1000, un_r_clamp_switch, un_exact_variant_passes_everywhere,
                    un_exact_variant_has_the_same_forward, un_calibrated_equals_autograd_where_exact,
                    un_state_names_reset_and_backward_updates,
                    un_training_forward_under_no_grad_skips_the_backward_state, un_rejects_bad_input,
                    un_two_dimensional_input_takes_a_sequence_mask, group_scaling_chain_rule_is_exact,
                    pn_first_step_ignores_the_statistic_gradient, pn_after_warmup_divides_by_the_batch_statistic,
                    pn_state_names_and_validation,
                }
                nn_replay(Shared) = $crate::nn_replay {
                    f64_chained, f64_stepwise, f32_stepwise, single_case_and_skip_record, unknown_module_fails,
                    unknown_constructor_argument_fails, a_wrong_layer_is_caught,
                }
                nn_fold(Shared) = $crate::nn_fold {
                    folded_matches_eval_f32_for_every_norm, folded_matches_eval_f64_for_every_norm,
                    un_past_warmup_with_filtration_and_pn_groups_fold_exactly, fold_removes_exactly_the_affine_norms,
                    ln_scaling_sinusoids_no_bias_and_padding_fold_exactly, folded_model_is_a_snapshot,
                    post_norm_and_training_mode_are_refused, fold_into_linear_is_w_diag_a_and_b_plus_w_s,
                    power_norm_eval_is_group_scale_then_affine, un_and_pn_models_keep_padding_out_of_their_statistics,
                }
                diff(Shared) = $crate::diff {
                    torch_cases, coverage, comparison_catches_differences, replay_catches_a_wrong_case,
                }
                props(Shared) = $crate::props { random_ops, checks_catch_wrong_behaviour }
                nn_trace(Shared) = $crate::nn_trace {
                    un_records_match_the_layer_state, bn_records_batch_and_running_statistics,
                    pn_records_q_phi_and_ema_gz, ln_records_per_token_statistics,
                    model_tracing_names_steps_pauses_detaches_and_exports, tracing_changes_no_result,
                    rms_norm_is_not_traced, seq2seq_is_traced, vit_is_traced,
                    norm_sites_record_output_gradients_through_hooks,
                    any_tensor_and_parameters_are_traced_through_hooks,
                }
                higher_order(Shared) = $crate::higher_order {
                    unary, binary, random_shapes, reductions, matmul, shape_ops, indexing, softmax,
                    cross_entropy, dropout, to_dtype, compositions, norms, nn_linear, new_ops, fused_attention, grad_semantics,
                    released_graph_errors, hvp_quadratic_form, gradient_penalty_mlp, custom_op_second_order,
                    gradgradcheck_catches_wrong_second_derivative,
                    // issue 17 (helper "hog2"): the nn layers to second order
                    nn_attention, nn_attention_dropout, nn_feed_forward_and_blocks, nn_batch_norm, nn_embedding,
                    gradient_penalty_transformer_block,
                }
                nn_state(Shared) = $crate::nn_state {
                    un_all_padding_batch_changes_no_state, pn_all_padding_batch_changes_no_state,
                    bn_all_padding_batch_changes_no_state, masks_hold_only_zero_and_one,
                    mask_check_sees_assigned_values, adam_counts_steps_per_parameter,
                    sgd_counts_steps_per_parameter, optimizer_checkpoint_keeps_per_parameter_steps,
                }
                hooks(Shared) = $crate::hooks {
                    retain_grad_matches_chain_rule, hook_replacement_changes_downstream_gradients, hook_order,
                    hook_removal, hook_errors, requires_grad_on_non_leaf_keeps_the_graph, hooks_with_no_grad,
                }
                // issue 17 (helper "ops"): argmax/argmin, sort/topk, cumsum, masked_select,
                // i64 comparisons and where, arange_step, one_hot
                ops_extra(Shared) = $crate::ops_extra {
                    argmax_argmin, sort_argsort_topk, cumsum, masked_select, i64_comparisons_and_where,
                    arange_and_one_hot, random_shapes,
                }
            }
        }
    };
    ($name:ident, $device:expr $(,)?) => {
        $crate::backend_suite!($name, guard = Some($device), reason = "");
    };
}

/// The guard path of [`instantiate!`]: with no device the suite function must not
/// run (it would panic) and the test passes after printing its `SKIPPED` line.
#[cfg(test)]
mod skipping {
    /// A stand-in suite module whose only function fails if it is ever called.
    pub mod never {
        use unigrad_core::{Device, Result};
        /// Panics: a skipped test must not reach it.
        pub fn must_not_run(dev: &Device) -> Result<()> {
            panic!("a skipped test ran on {dev}");
        }
    }
    fn no_device() -> Option<unigrad_core::Device> {
        None
    }
    crate::instantiate! {
        device = no_device(), reason = "no such device (unit test of the skip path)";
        absent(Shared) = crate::skipping::never { must_not_run }
    }
}

#[cfg(test)]
mod registry {
    /// Every `pub fn x(dev: &Device) -> Result<()>` of the suite modules is listed
    /// in `backend_suite!` (so no test is silently left out of a backend's run).
    #[test]
    fn every_suite_function_is_listed() {
        let lib = include_str!("lib.rs");
        let list = &lib[lib.find("macro_rules! backend_suite").expect("macro")..];
        // (module name, its source) for every suite module
        macro_rules! sources {
            ($($m:ident),*) => { [$((stringify!($m), include_str!(concat!(stringify!($m), ".rs")))),*] };
        }
        let sources = sources![
            forward,
            gradcheck_ops,
            autograd,
            views,
            errors,
            bounds,
            training,
            fused,
            nn_modules,
            nn_norms,
            nn_replay,
            nn_fold,
            nn_trace,
            nn_state,
            diff,
            props,
            higher_order,
            hooks,
            ops_extra
        ];
        let mut n = 0;
        for (module, src) in sources {
            for line in src.lines() {
                let Some(rest) = line.strip_prefix("pub fn ") else {
                    continue;
                };
                if !rest.contains("(dev: &Device) -> Result<()>") {
                    continue;
                }
                let name = &rest[..rest.find('(').expect("fn")];
                let found = list.match_indices(&format!("$crate::{module} {{")).any(|(at, _)| {
                    let group = list[at..].split('}').next().unwrap_or("");
                    group
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .any(|w| w == name)
                });
                assert!(found, "{module}::{name} is not listed in backend_suite!");
                n += 1;
            }
        }
        assert!(n > 40, "found only {n} suite functions");
    }
}
