//! The shared suite on the CPU backend.

unigrad_tests::backend_suite!(cpu, unigrad_cpu::cpu());
