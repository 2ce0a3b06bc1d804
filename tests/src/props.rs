//! placeholder
use unigrad_core::{Device, Result};
/// placeholder
pub fn random_ops(_dev: &Device) -> Result<()> {
    Ok(())
}
