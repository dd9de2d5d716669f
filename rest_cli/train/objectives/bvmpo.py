"""BVMPO (ReST Appendix A.8.1): V-MPO's policy loss (Song et al. 2020) with a state value learned
from the behaviour data, and a KL to the behaviour-cloning policy whose weight is annealed.

    A_t   = G_t - V(s_t)                                    as in oac, no gradient
    H     = the top half of the batch's trained tokens by A (V-MPO's selection)
    psi_t = w_i exp(A_t / eta) / sum_{H} w_j exp(A_j / eta)  for t in H, else 0 (no gradient)
    L_pi  = sum_{H} psi_t l_t
    L_eta = eta eps_eta + eta log(sum_{H} w_t exp(A_t / eta) / sum_{H} w_t)   (trains eta alone)
    KL_t  = sum_a pi_BC(a | s_t) (log pi_BC(a | s_t) - log pi(a | s_t))
    loss  = n [(1 - eps) L_pi + L_eta] + sum_t w_i [lambda KL_t - eps mean_a log pi(a | s_t)]
            + sum_t w_i 0.5 (V(s_t) - G_t)^2                 over n = sum_t w_i, the batch's weighted tokens

so that, over n, the step minimises L_pi + L_eta + lambda mean KL + the value loss. eta is learned
(V-MPO's dual: the weights psi stay within eps_eta of uniform in KL). lambda falls geometrically
from kl_start to kl_end over the policy's steps; pi_BC is the parent (--init), frozen. The paper
uses V-trace and separate networks; here the head of objectives.value and the plain advantage.
V-MPO selects and normalises within a batch: with --accumulate or torchrun, within each batch a
process holds, so those steps are not exactly one big batch's (as they are for the other objectives).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rest_cli.models.base import Batch, PolicyKind
from rest_cli.train.objectives.base import Context, LossSums, frozen_copy, token_terms
from rest_cli.train.objectives.settings import BVMPOSettings
from rest_cli.train.objectives.value import ValueObjective, value_loss_sum


class Temperature(torch.nn.Module):
    """V-MPO's temperature eta > 0, learned through a softplus."""

    def __init__(self, initial: float):
        super().__init__()
        self.raw = torch.nn.Parameter(torch.tensor(math.log(math.expm1(initial))))

    def forward(self) -> torch.Tensor:
        return F.softplus(self.raw)


def top_half(advantage: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Bool [B, T]: the ceil(n / 2) trained tokens of highest advantage (n trained tokens)."""
    trained = weights > 0
    scores = advantage.masked_fill(~trained, -math.inf).flatten()
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    chosen[scores.topk((int(trained.sum()) + 1) // 2).indices] = True
    return chosen.view_as(advantage)


class BVMPO(ValueObjective):
    name = "bvmpo"
    settings_class = BVMPOSettings

    def __init__(self, settings: BVMPOSettings | None = None, label_smoothing: float = 0.0):
        super().__init__(settings, label_smoothing)
        self.temperature = Temperature(self.settings.eta)
        self.reference: torch.nn.Module | None = None  # pi_BC
        self.kl_weight = self.settings.kl_start

    def setup(self, context: Context) -> None:
        super().setup(context)
        self.temperature.to(context.device)
        self.reference = frozen_copy(context.model)

    def on_step(self, step: int, total: int) -> None:
        super().on_step(step, total)
        s, start = self.settings, int(self.settings.value_warmup * total)
        progress = min(max(step - start, 0) / max(total - 1 - start, 1), 1.0)
        self.kl_weight = s.kl_start * (s.kl_end / s.kl_start) ** progress if s.kl_start else 0.0

    def modules(self) -> dict[str, torch.nn.Module]:
        return {**super().modules(), "temperature": self.temperature}

    def batch_loss(self, kind: PolicyKind, model: torch.nn.Module, batch: Batch) -> LossSums:
        logits, values, returns = self.forward_with_values(kind, model, batch)
        with torch.no_grad():  # while the head fits alone, no KL is taken: pi_BC need not run
            reference = logits if self.policy_scale == 0 else kind.logits(self.reference, batch)
            reference = F.log_softmax(reference.float(), dim=-1)
        return self.loss(logits, batch, values, returns, reference)

    def loss(self, logits: torch.Tensor, batch: Batch, values: torch.Tensor, returns: torch.Tensor,
             reference_logprobs: torch.Tensor) -> LossSums:
        """`values` V(s_t), `returns` G_t [B, T]; `reference_logprobs`: log pi_BC [B, T, V]."""
        logprobs, nll, weights = token_terms(logits, batch)
        n, eps = weights.sum(), self.label_smoothing
        vmpo = self.vmpo_terms((returns - values).detach(), nll, weights)
        kl = (reference_logprobs.exp() * (reference_logprobs - logprobs)).sum(-1)
        tokens = (weights * (self.kl_weight * kl - eps * logprobs.mean(-1))).sum()
        policy = n * ((1 - eps) * vmpo[0] + vmpo[1]) + tokens
        total = self.policy_scale * policy + value_loss_sum(values, returns, weights)
        return total, (nll * weights).sum().detach(), n.detach()

    def vmpo_terms(self, advantage: torch.Tensor, nll: torch.Tensor,
                   weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_pi, L_eta) of one batch: the policy's loss on its top half, and the temperature's."""
        chosen = top_half(advantage, weights)
        eta = self.temperature()
        scaled = (advantage / eta + torch.log(weights)).masked_fill(~chosen, -math.inf)  # log(w exp(A/eta))
        psi = torch.softmax(scaled.detach().flatten(), 0).view_as(nll)
        log_mean = torch.logsumexp(scaled.flatten(), 0) - torch.log(weights[chosen].sum())
        return (psi * nll).sum(), eta * self.settings.eps_eta + eta * log_mean
