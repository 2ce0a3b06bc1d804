//! Shapes, axis normalisation and broadcasting rules.
//!
//! Kept separate from [`crate::layout`] because these are pure functions on
//! dimension lists that every op validates its operands with before touching data.

use crate::error::{Error, Result};
use smallvec::SmallVec;

/// Dimension list. Most tensors have rank ≤ 6, so it lives on the stack.
pub type Dims = SmallVec<[usize; 6]>;

/// Number of elements of a shape (1 for a scalar, 0 when any dimension is 0).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major (C-order) strides of a shape.
pub fn contiguous_strides(shape: &[usize]) -> Dims {
    let mut strides: Dims = smallvec::smallvec![0; shape.len()];
    let mut acc = 1usize;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc *= shape[i].max(1);
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

/// NumPy broadcasting: the shape two operands broadcast to, or an error naming the op.
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
