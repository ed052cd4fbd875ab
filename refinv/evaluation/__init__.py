"""Evaluation: metrics (MSE, PSNR, SNR), the memorization report, diagnostics."""
