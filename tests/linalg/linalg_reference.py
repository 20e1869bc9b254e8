"""Dense symmetric test matrices with a prescribed spectrum."""
import torch


def sym_with_spectrum(lam, seed=0):
    """U diag(lam) Uᵀ with a seeded random orthogonal U (float64)."""
    lam = torch.as_tensor(lam, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(lam.numel(), lam.numel(), generator=g,
                                       dtype=torch.float64))
    return U @ torch.diag(lam) @ U.T
