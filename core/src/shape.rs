//! Shapes, axis normalisation and broadcasting rules.
//!
//! Kept separate from [`crate::layout`] because these are pure functions on
//! dimension lists that every op validates its operands with before touching data.

use crate::error::{Error, Result};
use smallvec::SmallVec;

/// Dimension list. Most tensors have rank ≤ 6, so it lives on the stack.
pub type Dims = SmallVec<[usize; 6]>;

/// Number of elements of a shape (1 for a scalar, 0 when any dimension is 0).
///
/// For shapes that passed [`check_shape`] (every tensor's shape did, where it was
/// made). On any other shape the product saturates at `usize::MAX` rather than
/// wrapping, so a size compared against it can never look small.
pub fn numel(shape: &[usize]) -> usize {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX)
}

/// Validate a shape that an op is about to create, and return its element count.
///
/// Every constructor and every op that makes a new shape calls this once, so the
/// sizes behind every tensor fit `usize`. The rule is that the product of the
/// dimensions, each counted as at least 1, fits `usize`: that covers the element
/// count and also the row-major strides (a zero-size `[0, 2^40, 2^40]` has strides
/// that overflow although it holds no element). An overflow is an error naming `op`
/// and the shape as passed, instead of a wrapped count that a kernel would trust.
pub fn check_shape(op: &'static str, shape: &[usize]) -> Result<usize> {
    let fits = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d.max(1))).is_some();
    if !fits {
        return Err(Error::invalid(
            op,
            format!("shape {shape:?} is too large: its number of elements overflows usize"),
        ));
    }
    Ok(shape.iter().product())
}

/// Row-major (C-order) strides of a shape (size-0 and size-1 dimensions count as 1).
/// Saturates instead of wrapping on a shape that [`check_shape`] rejects.
pub fn contiguous_strides(shape: &[usize]) -> Dims {
    let mut strides: Dims = smallvec::smallvec![0; shape.len()];
    let mut acc = 1usize;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc = acc.saturating_mul(shape[i].max(1));
    }
    strides
}

/// Turn a possibly negative axis into an index in `0..rank`.
pub fn normalize_axis(op: &'static str, axis: isize, shape: &[usize]) -> Result<usize> {
    let rank = shape.len() as isize;
    let a = if axis < 0 { axis + rank } else { axis };
    if a < 0 || a >= rank {
        return Err(Error::InvalidAxis {
            op,
            axis,
            shape: shape.to_vec(),
        });
    }
    Ok(a as usize)
}

/// Normalise a list of axes, sort them and reject duplicates.
pub fn normalize_axes(op: &'static str, axes: &[isize], shape: &[usize]) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(op, a, shape)?;
        if out.contains(&n) {
            return Err(Error::InvalidArgument {
                op,
                msg: format!("axis {a} given twice for shape {shape:?}"),
            });
        }
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

/// NumPy broadcasting: the shape two operands broadcast to, or an error naming the op
/// (also when the broadcast shape is too large, see [`check_shape`]).
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Dims> {
    let rank = a.len().max(b.len());
    let mut out: Dims = smallvec::smallvec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::ShapeMismatch {
                op,
                lhs: a.to_vec(),
                rhs: b.to_vec(),
            });
        };
    }
    check_shape(op, &out).map_err(|_| {
        Error::invalid(
            op,
            format!("broadcasting {a:?} with {b:?} gives shape {out:?}, whose number of elements overflows usize"),
        )
    })?;
    Ok(out)
}

/// Shape after reducing `axes` (sorted, normalised), keeping them as size 1 or dropping them.
pub fn reduced_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Dims {
    let mut out = Dims::new();
    for (i, &d) in shape.iter().enumerate() {
        if axes.contains(&i) {
            if keepdim {
                out.push(1);
            }
        } else {
            out.push(d);
        }
    }
    out
}
