//! Views share storage and copies happen only when needed (checked by storage
//! pointer identity, `Arc::ptr_eq` on [`Tensor::storage`]); rank-0 tensors and
//! zero-size dimensions behave in forward and backward.

use crate::util::{randn, same_storage};
use unigrad_core::{DType, Device, Result, Tensor};

/// Which ops are views (same storage) and which copy.
pub fn storage_sharing(dev: &Device) -> Result<()> {
    let x = randn(dev, &[2, 3, 4])?;
    let views = [
        ("reshape", x.reshape(&[6, 4])?),
        ("reshape_infer", x.reshape_infer(&[-1])?),
        ("flatten", x.flatten(0, 1)?),
        ("permute", x.permute(&[2, 0, 1])?),
        ("transpose", x.transpose(0, 2)?),
        ("t", x.t()?),
        ("narrow", x.narrow(1, 1, 2)?),
        ("unsqueeze", x.unsqueeze(0)?),
        ("squeeze", x.unsqueeze(1)?.squeeze(1)?),
        ("broadcast_as", x.narrow(0, 0, 1)?.broadcast_as(&[5, 3, 4])?),
        ("contiguous of dense", x.contiguous()?),
        ("detach", x.detach()),
        ("requires_grad", x.clone().requires_grad()),
        ("to_dtype same", x.to_dtype(DType::F64)?),
        ("dropout eval", x.dropout(0.5, false)?),
    ];
    for (name, v) in &views {
        assert!(same_storage(&x, v), "{name} must be a view");
    }
    // views of views stay views, also when tracked
    let p = x.clone().requires_grad();
    let vv = p.t()?.narrow(1, 1, 2)?.unsqueeze(0)?.permute(&[1, 0, 2, 3])?;
    assert!(same_storage(&p, &vv));
    assert!(vv.tracks_grad());
    // narrow on the outer dim is contiguous (with an offset): contiguous() is free
    let rows = x.narrow(0, 1, 1)?;
    assert!(rows.is_contiguous());
    assert!(same_storage(&x, &rows.contiguous()?));
    assert!(
        same_storage(&x, &rows.reshape(&[12])?),
        "reshape of an offset dense view is a view"
    );
    // a transposed view is not dense: contiguous() and reshape() copy, once
    let t = x.transpose(1, 2)?;
    assert!(!t.is_contiguous());
    let c = t.contiguous()?;
    assert!(!same_storage(&x, &c), "contiguous of a transposed view copies");
    assert!(c.is_contiguous());
    assert_eq!(c.to_vec_f64()?, t.to_vec_f64()?);
    assert!(same_storage(&c, &c.contiguous()?), "and then no more");
    let r = t.reshape(&[2, 12])?;
    assert!(!same_storage(&x, &r), "reshape of a non-dense view copies");
    assert_eq!(r.to_vec_f64()?, t.to_vec_f64()?);
    // a narrowed inner dim is not dense either
    let n = x.narrow(2, 1, 2)?;
    assert!(!n.is_contiguous());
    assert!(!same_storage(&x, &n.contiguous()?));
    // ops produce fresh storage
    assert!(!same_storage(&x, &x.add_scalar(0.0)?));
    // the storage is as large as the data, views do not grow it
    assert_eq!(x.storage().len(), 24);
    assert_eq!(views[9].1.storage().len(), 24);
    // assign replaces a leaf's data; views taken before keep the old data
    let w = randn(dev, &[2, 2])?.requires_grad();
    let old = w.t()?;
    let before = old.to_vec_f64()?;
    w.assign(&Tensor::zeros(&[2, 2], DType::F64, dev)?.t()?)?;
    assert_eq!(w.to_vec_f64()?, vec![0.0; 4]);
    assert_eq!(old.to_vec_f64()?, before);
    assert!(w.is_grad_leaf());
    Ok(())
}

/// Rank-0 tensors through creation, elementwise ops with broadcasting, reductions,
/// shape ops and backward.
pub fn scalars(dev: &Device) -> Result<()> {
    let s = Tensor::scalar(1.5, DType::F64, dev)?;
    assert_eq!(s.shape(), &[] as &[usize]);
    assert_eq!((s.rank(), s.numel()), (0, 1));
    assert_eq!(s.to_scalar()?, 1.5);
    let m = randn(dev, &[2, 3])?;
    let sum = s.add(&m)?;
    assert_eq!(sum.shape(), &[2, 3]);
    assert_eq!(
        sum.sub(&m)?
            .to_vec_f64()?
            .iter()
            .map(|v| (v - 1.5).abs() < 1e-15)
            .filter(|&b| b)
            .count(),
        6
    );
    assert_eq!(s.mul(&s)?.shape(), &[] as &[usize]);
    assert_eq!(s.exp()?.to_scalar()?, 1.5f64.exp());
    assert_eq!(s.sum_all()?.shape(), &[] as &[usize]);
    assert_eq!(s.mean_all()?.to_scalar()?, 1.5);
    assert_eq!(s.unsqueeze(0)?.shape(), &[1]);
    assert_eq!(
        s.reshape(&[1, 1, 1])?.squeeze(0)?.squeeze(0)?.squeeze(0)?.to_scalar()?,
        1.5
    );
    // backward through rank-0 ops
    let a = Tensor::scalar(0.5, DType::F64, dev)?.requires_grad();
    let y = a.mul(&m)?.sum_all()?.add(&a.sqr()?)?;
    y.backward()?;
    let want = m.to_vec_f64()?.iter().sum::<f64>() + 1.0;
    assert!((a.grad().expect("grad").to_scalar()? - want).abs() < 1e-13);
    assert_eq!(a.grad().expect("grad").shape(), &[] as &[usize]);
    // the mean of a one-element tensor and 0-d f32
    let f = Tensor::scalar(2.0, DType::F32, dev)?;
    assert_eq!(f.sqrt()?.to_vec::<f32>()?, vec![2f32.sqrt()]);
    Ok(())
}

/// Zero-size dimensions: creation, elementwise, broadcasting, reductions (sum is 0,
/// max is an error), matmul with `k = 0`, shape ops, softmax, and backward.
pub fn zero_size(dev: &Device) -> Result<()> {
    let e = Tensor::zeros(&[0, 3], DType::F64, dev)?;
    assert_eq!(e.numel(), 0);
    assert_eq!(e.to_vec_f64()?, Vec::<f64>::new());
    assert_eq!(e.exp()?.shape(), &[0, 3]);
    assert_eq!(e.add(&randn(dev, &[3])?)?.shape(), &[0, 3]);
    assert_eq!(e.add(&randn(dev, &[1, 1])?)?.shape(), &[0, 3]);
    assert_eq!(e.t()?.contiguous()?.shape(), &[3, 0]);
    assert_eq!(e.reshape(&[3, 0, 5])?.shape(), &[3, 0, 5]);
    // sums over an empty axis are 0, over a non-empty axis of an empty tensor empty
    assert_eq!(e.sum(&[0], false)?.to_vec_f64()?, vec![0.0; 3]);
    assert_eq!(e.sum(&[1], false)?.shape(), &[0]);
    assert_eq!(e.sum_all()?.to_scalar()?, 0.0);
    assert_eq!(e.max(&[1], true)?.shape(), &[0, 1]);
    assert!(e.max(&[0], false).is_err(), "max over an empty axis has no value");
    assert!(e.min(&[0, 1], false).is_err());
    // matmul: k = 0 gives zeros; m = 0 or n = 0 give empty results
    let a = Tensor::zeros(&[4, 0], DType::F64, dev)?;
    let b = Tensor::zeros(&[0, 5], DType::F64, dev)?;
    assert_eq!(a.matmul(&b)?.to_vec_f64()?, vec![0.0; 20]);
    assert_eq!(e.matmul(&randn(dev, &[3, 2])?)?.shape(), &[0, 2]);
    assert_eq!(randn(dev, &[2, 3])?.matmul(&e.t()?)?.shape(), &[2, 0]);
    // softmax over rows of an empty batch, cat with an empty part
    assert_eq!(e.softmax(-1)?.shape(), &[0, 3]);
    let x = randn(dev, &[2, 3])?;
    assert_eq!(Tensor::cat(&[&e, &x, &e], 0)?.to_vec_f64()?, x.to_vec_f64()?);
    // backward through zero-size pieces
    let w = randn(dev, &[2, 3])?.requires_grad();
    let empty_part = w.narrow(0, 0, 0)?;
    let y = Tensor::cat(&[&empty_part, &w], 0)?
        .sum_all()?
        .add(&empty_part.exp()?.sum_all()?)?;
    y.backward()?;
    assert_eq!(w.grad().expect("grad").to_vec_f64()?, vec![1.0; 6]);
    let k0 = Tensor::zeros(&[3, 0], DType::F64, dev)?.requires_grad();
    let k1 = Tensor::zeros(&[0, 2], DType::F64, dev)?.requires_grad();
    k0.matmul(&k1)?.sum_all()?.backward()?;
    assert_eq!(k0.grad().expect("grad").shape(), &[3, 0]);
    assert_eq!(k1.grad().expect("grad").shape(), &[0, 2]);
    // cross-entropy over an empty batch is 0
    let logits = Tensor::zeros(&[0, 4], DType::F64, dev)?;
    let t = Tensor::from_vec(Vec::<i64>::new(), &[0], dev)?;
    assert_eq!(logits.cross_entropy(&t, None, 0.0)?.to_scalar()?, 0.0);
    Ok(())
}

/// Creation helpers produce what they say.
pub fn creation(dev: &Device) -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        assert_eq!(Tensor::zeros(&[2, 2], dtype, dev)?.to_vec_f64()?, vec![0.0; 4]);
        assert_eq!(Tensor::ones(&[3], dtype, dev)?.to_vec_f64()?, vec![1.0; 3]);
        assert_eq!(Tensor::full(&[2], -2.5, dtype, dev)?.to_vec_f64()?, vec![-2.5; 2]);
        assert_eq!(Tensor::arange(4, dtype, dev)?.to_vec_f64()?, vec![0.0, 1.0, 2.0, 3.0]);
        let z = Tensor::ones(&[2, 3], dtype, dev)?.zeros_like()?;
        assert_eq!((z.shape(), z.dtype()), (&[2usize, 3][..], dtype));
        assert_eq!(z.ones_like()?.to_vec_f64()?, vec![1.0; 6]);
    }
    assert_eq!(Tensor::arange(3, DType::I64, dev)?.to_vec::<i64>()?, vec![0, 1, 2]);
    let v = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], dev)?;
    assert_eq!(v.dtype(), DType::F32);
    assert_eq!(v.t()?.to_vec::<f32>()?, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(v.dim(-1)?, 3);
    assert!(v.device().same(dev));
    Ok(())
}
