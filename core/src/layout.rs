//! Strided layouts: how a tensor's logical shape maps onto its storage.
//!
//! A `Layout { shape, strides, offset }` makes reshape (of contiguous data),
//! transpose/permute, narrow, squeeze/unsqueeze and broadcast free: they only build
//! a new layout over the same storage. Kernels read any layout; `contiguous()`
//! copies only when a kernel needs dense row-major data.

use crate::error::{Error, Result};
use crate::shape::{contiguous_strides, numel, Dims};

/// Shape, element strides and start offset of a view into a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Dims,
    strides: Dims,
    offset: usize,
}

impl Layout {
    /// Dense row-major layout of `shape` starting at element 0.
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout {
            shape: shape.into(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// A layout from explicit parts (no validation against a storage size).
    pub fn new(shape: &[usize], strides: &[usize], offset: usize) -> Layout {
        Layout {
            shape: shape.into(),
            strides: strides.into(),
            offset,
        }
    }

    /// Logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element strides, one per dimension (0 for broadcast dimensions).
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Index of the first element in the storage.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// True when the elements are dense and row-major (offset may be non-zero).
    /// Size-1 dimensions may have any stride.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] == 1 {
                continue;
            }
            if self.strides[i] != expected {
                return false;
            }
            expected *= self.shape[i];
        }
        true
    }

    /// One past the largest storage index this layout touches (0 when empty), or
    /// `usize::MAX` when that index does not fit `usize` (see [`Layout::reach`]).
    pub fn storage_extent(&self) -> usize {
        self.reach().unwrap_or(usize::MAX)
    }

    /// One past the largest storage index this layout touches (`Some(0)` when it has
    /// no element), computed without wrapping: `None` when the layout is malformed
    /// (not one stride per dimension) or its element count or furthest index
    /// overflows `usize`. O(rank).
    pub fn reach(&self) -> Option<usize> {
        if self.strides.len() != self.shape.len() {
            return None;
        }
        let numel = self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        if numel == 0 {
            return Some(0);
        }
        self.shape
            .iter()
            .zip(&self.strides)
            .try_fold(self.offset, |at, (&d, &s)| at.checked_add((d - 1).checked_mul(s)?))?
            .checked_add(1)
    }

    /// Error unless every element this layout addresses lies inside a storage of
    /// `len` elements (and its sizes fit `usize`, see [`Layout::reach`]).
    ///
    /// Backends call this at each entry that hands a layout to a kernel, as defence
    /// in depth: core only builds layouts that fit their storage, but the `Backend`
    /// trait is public, and a layout that reached past its storage would read or
    /// write out of bounds in unsafe code (GEMM, device kernels). O(rank).
    pub fn check_fits(&self, op: &'static str, len: usize) -> Result<()> {
        match self.reach() {
            Some(r) if r <= len => Ok(()),
            reach => Err(Error::invalid(
                op,
                format!(
                    "view (shape {:?}, strides {:?}, offset {}) {} a storage of {len} elements",
                    self.shape,
                    self.strides,
                    self.offset,
                    match reach {
                        Some(_) => "reaches past the end of",
                        None => "has sizes that overflow usize; it cannot address",
                    }
                ),
            )),
        }
    }

    /// View with dimensions reordered by `perm` (a permutation of `0..rank`).
    pub fn permute(&self, perm: &[usize]) -> Result<Layout> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
            return Err(Error::InvalidArgument {
                op: "permute",
                msg: format!("{perm:?} is not a permutation of the axes of shape {:?}", self.shape()),
            });
        }
        Ok(Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        })
    }

    /// View of `len` elements of `dim` starting at `start` (caller validated the range).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut l = self.clone();
        l.offset += start * self.strides[dim];
        l.shape[dim] = len;
        l
    }

    /// View with a size-1 dimension inserted at `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        let stride = if dim < self.rank() {
            self.strides[dim].saturating_mul(self.shape[dim])
        } else {
            1
        };
        l.shape.insert(dim, 1);
        l.strides.insert(dim, stride);
        l
    }

    /// View with the size-1 dimension `dim` removed.
    pub fn squeeze(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        l.shape.remove(dim);
        l.strides.remove(dim);
        l
    }

    /// Broadcast view to `shape` (stride 0 on expanded dimensions), or `None` when
    /// the shapes are not broadcast-compatible.
    pub fn broadcast_to(&self, shape: &[usize]) -> Option<Layout> {
        if shape.len() < self.rank() {
            return None;
        }
        let extra = shape.len() - self.rank();
        let mut strides: Dims = smallvec::smallvec![0; shape.len()];
        for i in 0..self.rank() {
            let (d, t) = (self.shape[i], shape[i + extra]);
            strides[i + extra] = if d == t {
                self.strides[i]
            } else if d == 1 {
                0
            } else {
                return None;
            };
        }
        Some(Layout {
            shape: shape.into(),
            strides,
            offset: self.offset,
        })
    }

    /// Reshape without copying: `Some` for a contiguous layout (any offset), `None`
    /// for every other one (the data must be copied first).
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() {
            let mut l = Layout::contiguous(shape);
            l.offset = self.offset;
            Some(l)
        } else {
            None
        }
    }

    /// Storage indices of every logical element, in row-major logical order.
    /// A simple reference path for kernels that do not specialise strided access.
    pub fn indices(&self) -> StridedIndex<'_> {
        StridedIndex::new(self)
    }
}

/// Iterator over the storage indices of a layout in logical row-major order.
pub struct StridedIndex<'a> {
    layout: &'a Layout,
    pos: Dims,
    next: Option<usize>,
    remaining: usize,
}

impl<'a> StridedIndex<'a> {
    fn new(layout: &'a Layout) -> Self {
        let n = layout.numel();
        StridedIndex {
            layout,
            pos: smallvec::smallvec![0; layout.rank()],
            next: if n == 0 { None } else { Some(layout.offset) },
            remaining: n,
        }
    }
}

impl Iterator for StridedIndex<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let cur = self.next?;
        self.remaining -= 1;
        if self.remaining == 0 {
            self.next = None;
            return Some(cur);
        }
        let mut idx = cur;
        for d in (0..self.layout.rank()).rev() {
            self.pos[d] += 1;
            idx += self.layout.strides[d];
            if self.pos[d] < self.layout.shape[d] {
                break;
            }
            idx -= self.layout.strides[d] * self.layout.shape[d];
            self.pos[d] = 0;
        }
        self.next = Some(idx);
        Some(cur)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for StridedIndex<'_> {}
