"""Refusal directions per residual position (embedding output + each layer).

- Difference of means: r_i = normalize(mean_harmful_i - mean_harmless_i).
- Projected: r_i is orthogonalized against the harmless mean (so ablating it moves harmless
  activations as little as possible).
- Contrastive (n_directions > 1): the extra directions are the top eigenvectors of
  Cov(harmful) - Cov(harmless), found through a thin QR of the stacked, centred residuals, so
  the eigenproblem is n x n (n = prompts), not hidden x hidden, and runs on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Directions:
    basis: torch.Tensor  # (L+1, k, hidden) float32, orthonormal rows; basis[:, 0] = main direction
    harmful_mean: torch.Tensor  # (L+1, hidden)
    harmless_mean: torch.Tensor  # (L+1, hidden)

    @property
    def main(self) -> torch.Tensor:  # (L+1, hidden)
        return self.basis[:, 0]

    @property
    def k(self) -> int:
        return int(self.basis.shape[1])


def _contrastive_extra(
    harmful: torch.Tensor, harmless: torch.Tensor, main: torch.Tensor, extra: int
) -> torch.Tensor:
    """(extra, hidden) top eigenvectors of Cov_h - Cov_b orthogonal to `main`, for one layer."""
    a = torch.cat([harmful - harmful.mean(0), harmless - harmless.mean(0)], dim=0)  # (n, d)
    signs = torch.cat(
        [
            torch.full((harmful.shape[0],), 1.0 / harmful.shape[0]),
            torch.full((harmless.shape[0],), -1.0 / harmless.shape[0]),
        ]
    ).to(a)
    q, r = torch.linalg.qr(a.T)  # (d, n), (n, n)
    small = (r * signs) @ r.T  # R S R^T, symmetric n x n
    values, vectors = torch.linalg.eigh(small)
    order = torch.argsort(values, descending=True)[: extra + 1]
    candidates = (q @ vectors[:, order]).T  # (extra+1, d)
    candidates = candidates - (candidates @ main)[:, None] * main[None, :]
    q_full: torch.Tensor = torch.linalg.qr(torch.cat([main[None], candidates]).T)[0]
    basis = q_full.T  # orthonormal rows
    return basis[1 : extra + 1]


def compute_directions(
    harmful: torch.Tensor,
    harmless: torch.Tensor,
    *,
    project: bool = True,
    n_directions: int = 1,
    device: torch.device | str = "cpu",
) -> Directions:
    """harmful/harmless: (n, L+1, hidden) residuals. Everything runs in float32 on `device`."""
    harmful = harmful.to(device=device, dtype=torch.float32)
    harmless = harmless.to(device=device, dtype=torch.float32)
    mean_h = harmful.mean(0)
    mean_b = harmless.mean(0)
    main = F.normalize(mean_h - mean_b, dim=-1)
    if project:
        g = F.normalize(mean_b, dim=-1)
        main = F.normalize(main - (main * g).sum(-1, keepdim=True) * g, dim=-1)
    rows = [main]
    if n_directions > 1:
        extra = torch.stack(
            [
                _contrastive_extra(harmful[:, i], harmless[:, i], main[i], n_directions - 1)
                for i in range(main.shape[0])
            ]
        )  # (L+1, k-1, d)
        rows = [main[:, None], extra]
        basis = torch.cat(rows, dim=1)
    else:
        basis = main[:, None]
    return Directions(basis=basis.cpu(), harmful_mean=mean_h.cpu(), harmless_mean=mean_b.cpu())
