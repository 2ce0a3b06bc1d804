//! Choosing the device from a command-line string.
//!
//! Models take a [`Device`] and never name a backend, so one program trains on the CPU
//! or a GPU depending on a flag such as `--device cuda:0`. The CUDA backend is an
//! optional dependency (feature `cuda` of this crate): a build without it still parses
//! `cuda` and answers with an error that says how to enable it.

use unigrad_core::{Device, Error, Result};

/// Parse `cpu`, `cuda` or `cuda:N` into a device.
///
/// `cuda` means `cuda:0`. Without the `cuda` feature a CUDA device is an error telling
/// the user to rebuild with `--features cuda`.
pub fn device_from_str(s: &str) -> Result<Device> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("cpu") {
        return Ok(unigrad_cpu::cpu());
    }
    let lower = s.to_ascii_lowercase();
    let ordinal = if lower == "cuda" {
        0
    } else if let Some(n) = lower.strip_prefix("cuda:") {
        n.parse::<usize>().map_err(|_| {
            Error::invalid(
                "device_from_str",
                format!("`{s}`: the CUDA ordinal must be a non-negative integer, as in cuda:0"),
            )
        })?
    } else {
        return Err(Error::invalid(
            "device_from_str",
            format!("unknown device `{s}`; expected cpu, cuda or cuda:N"),
        ));
    };
    cuda_device(ordinal)
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    unigrad_cuda::cuda(ordinal)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Err(Error::invalid(
        "device_from_str",
        format!(
            "cuda:{ordinal} requested, but this binary was built without CUDA support; rebuild with `--features cuda`"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert_eq!(device_from_str("cpu").unwrap().name(), "cpu");
        assert_eq!(device_from_str(" CPU ").unwrap().name(), "cpu");
        let e = device_from_str("tpu").unwrap_err().to_string();
        assert!(e.contains("unknown device"), "{e}");
        let e = device_from_str("cuda:x").unwrap_err().to_string();
        assert!(e.contains("ordinal"), "{e}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_says_how_to_enable_it() {
        for s in ["cuda", "cuda:1"] {
            let e = device_from_str(s).unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
