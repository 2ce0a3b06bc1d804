use unigrad_core::gradcheck::{gradcheck, GradcheckOptions};
use unigrad_core::{DType, Tensor};

#[test]
fn smoke() -> unigrad_core::Result<()> {
    let dev = unigrad_cpu::cpu();
    let x = Tensor::randn(&[4, 3], DType::F64, &dev)?.requires_grad();
    let w = Tensor::randn(&[3, 2], DType::F64, &dev)?.requires_grad();
    let loss = x.matmul(&w)?.relu()?.sum_all()?;
    loss.backward()?;
    let gw = w.grad().expect("grad");
    assert_eq!(gw.shape(), &[3, 2]);
    let a = Tensor::randn(&[3, 4], DType::F64, &dev)?;
    let b = Tensor::randn(&[4], DType::F64, &dev)?;
    let r = gradcheck(
        |xs| {
            xs[0]
                .t()?
                .mul(&xs[1].unsqueeze(1)?)?
                .softmax(0)?
                .log()?
                .mean(&[1], false)?
                .gelu()
        },
        &[a.clone(), b.clone()],
        &GradcheckOptions::default(),
    )?;
    println!("{r:?}");
    assert!(r.passed());
    let t = Tensor::from_vec(vec![1i64, 0, 2], &[3], &dev)?;
    let r = gradcheck(
        |xs| xs[0].cross_entropy(&t, Some(2), 0.1),
        &[a.clone()],
        &GradcheckOptions::default(),
    )?;
    println!("{r:?}");
    assert!(r.passed());
    let r = gradcheck(
        |xs| {
            Tensor::cat(&[&xs[0], &xs[0].narrow(1, 1, 2)?], 1)?
                .max(&[0], false)?
                .var(&[0], false, true)
        },
        &[a.clone()],
        &GradcheckOptions::default(),
    )?;
    println!("{r:?}");
    assert!(r.passed());
    Ok(())
}
