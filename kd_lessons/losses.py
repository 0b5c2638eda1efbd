"""Distillation losses: soft targets, the KD loss, FitNets hints and attention transfer.

Introduced in notebooks 02_temperature, 03_kl_loss and 05_feature_distillation; every loss checks
its inputs and says what to do (check_T, check_alpha, check_logits, check_labels are shared with
the objectives and runs). Notation: z = student logits, v = teacher logits, K classes, B samples, T temperature,
p = softmax(v / T) (teacher soft targets), q = softmax(z / T) (student soft predictions).
"""
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- input checks (one per kind)

def _real(name: str, value, hint: str) -> float:
    """Accept a Python/NumPy real or a one-element tensor (not a bool) and return it as a float."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single number, got a tensor of shape "
                             f"{list(value.shape)}; {hint}.")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__}); "
                         f"{hint}.")
    return float(value)


def check_T(T) -> float:
    """A temperature is a finite real > 0; say so, with typical values, when it is not."""
    hint = "pass a float such as T=4.0 (typical values are 1-20; T > 1 softens, T < 1 sharpens)"
    value = _real("T", T, hint)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"T must be finite and > 0, got T={value!r}; {hint}.")
    return value


def check_unit_interval(name: str, value, hint: str) -> float:
    """A weight or mixing coefficient must be a real number in [0, 1]; the error says what it is for."""
    value = _real(name, value, hint)
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise ValueError(f"{name} must be a number in [0, 1], got {name}={value!r}; {hint}.")
    return value


def check_alpha(alpha) -> float:
    """alpha weights the soft term, so it must lie in [0, 1]."""
    return check_unit_interval("alpha", alpha, "alpha is the weight of the soft KD term, e.g. alpha=0.9")


def check_float(name: str, x, ndim: int | None = None) -> None:
    """Reject non-tensors, integer tensors, wrong ranks and NaN/inf values with a clear message."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {kind}; "
                         "use torch.as_tensor(...).float().")
    if ndim is not None and (x.dim() != ndim or x.shape[0] == 0):
        raise ValueError(f"{name} must be a non-empty {ndim}-D tensor, got shape {list(x.shape)}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf; check the learning rate (try a smaller lr) "
                         "and the inputs (normalised? any NaN in x?).")


def check_weight(name: str, value, example: float = 1.0) -> float:
    """A loss weight is a finite real >= 0 (0 switches its term off); say so, with an example, when it is not."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not (math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"{name}={value!r}: pass a finite weight >= 0 such as {name}={float(example)} "
                         "(0 switches the term off).")
    return float(value)


def check_logits(student_logits, teacher_logits) -> None:
    """Both logits must be finite [batch_size, num_classes] float tensors of the same shape."""
    check_float("student_logits", student_logits, ndim=2)
    check_float("teacher_logits", teacher_logits, ndim=2)
    if student_logits.shape != teacher_logits.shape:
        s, t = list(student_logits.shape), list(teacher_logits.shape)
        vocab = ""
        if s[0] == t[0]:
            vocab = (f" The student has {s[1]} classes and the teacher {t[1]}: a KD loss compares the same classes "
                     "in the same order. Models with different vocabularies (tokenizers) need a cross-tokenizer "
                     "loss: kd_lessons.generative.cross_tokenizer (uld_loss, alignment_loss).")
        raise ValueError(f"student_logits has shape {s} but teacher_logits has shape {t}; both must be "
                         f"[batch_size, num_classes] for the same batch and the same classes.{vocab}")


def check_labels(y, batch_size: int, num_classes: int) -> None:
    """Labels must be int64 class indices of shape [batch_size] in [0, num_classes)."""
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype.is_complex \
            or y.dtype == torch.bool:
        kind = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be a tensor of integer class indices, got {kind}; "
                         "pass labels such as torch.tensor([3, 0, 7]) (not one-hot, not floats).")
    if y.dtype != torch.int64:
        raise ValueError(f"y has dtype {y.dtype}; class indices must be torch.int64: use y.long().")
    if y.shape != (batch_size,):
        raise ValueError(f"y must have shape [{batch_size}] (one label per row of the logits), "
                         f"got {list(y.shape)}.")
    if bool((y < 0).any()) or bool((y >= num_classes).any()):
        raise ValueError(f"y must lie in [0, {num_classes}), got values from {int(y.min())} to "
                         f"{int(y.max())}; check that labels and logits use the same classes.")


def _check_features(student_features, teacher_features, ndims: tuple[int, ...]) -> None:
    """Feature maps must be finite float tensors of the same rank and batch size."""
    check_float("student_features", student_features)
    check_float("teacher_features", teacher_features)
    s, t = student_features, teacher_features
    if s.dim() not in ndims or t.dim() != s.dim() or s.shape[0] != t.shape[0]:
        raise ValueError(f"student_features {list(s.shape)} and teacher_features {list(t.shape)} "
                         f"must both be {' or '.join(f'{n}-D' for n in ndims)} with the same "
                         "batch size; take them from the same batch x.")


# ---------------------------------------------------------------- soft targets (notebooks 01-03)

def log_soften(logits: torch.Tensor, T) -> torch.Tensor:
    """Log soft targets, stable for huge logits; the KL losses need logs. Introduced in notebook 02_temperature.

    log_soften(z, T)_i = z_i / T - logsumexp_j(z_j / T), over the last dim.
    """
    check_float("logits", logits)
    return F.log_softmax(logits / check_T(T), dim=-1)


def soften(logits: torch.Tensor, T) -> torch.Tensor:
    """Soft targets: T > 1 moves probability onto 'dark knowledge' classes. Introduced in notebook 02_temperature.

    soften(z, T)_i = exp(z_i / T) / sum_j exp(z_j / T), over the last dim (via log_soften).
    """
    return log_soften(logits, T).exp()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """How soft a target is: 0 for one-hot, log(K) for uniform. Introduced in notebook 02_temperature.

    H(p) = -sum_i p_i log p_i in nats over the last dim, with 0 log 0 = 0 (and a finite gradient).
    """
    check_float("probs", probs)
    log_p = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()  # log 0 would give a NaN gradient
    return -(probs * log_p).sum(dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T) -> torch.Tensor:
    """Hinton's soft term; the T^2 keeps its gradient size independent of T. Introduced in notebook 03_kl_loss.

    kd_loss = T^2 * KL(p || q) = T^2 * mean_b sum_i p_i (log p_i - log q_i) ("batchmean").
    The teacher is detached, so it gets no gradient even outside torch.no_grad().
    At high T, with zero-mean logits, kd_loss -> 0.5 * mean_b sum_i (z_i - v_i)^2 / K and its
    gradient -> (z - v) / (K B): logit matching (Hinton et al. 2015, sec. 2.1).
    """
    check_logits(student_logits, teacher_logits)
    return kd_term(student_logits, teacher_logits, check_T(T))


def kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """kd_loss without input checks, for training loops that checked once (a check per batch syncs a GPU)."""
    log_q = F.log_softmax(student_logits / T, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach() / T, dim=-1)  # detached: the teacher never learns
    return T * T * F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T) -> torch.Tensor:
    """Cross-entropy with soft targets: same gradient as the KL, offset by H(p). Introduced in notebook 03_kl_loss.

    soft_cross_entropy = mean_b -sum_i p_i log q_i = kd_loss / T^2 + mean_b H(p) (no T^2 here).
    """
    check_logits(student_logits, teacher_logits)
    T = check_T(T)
    log_q = F.log_softmax(student_logits / T, dim=-1)
    p = F.softmax(teacher_logits.detach() / T, dim=-1)
    return -(p * log_q).sum(dim=-1).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
                      T, alpha, return_parts: bool = False):
    """The full Hinton objective: learn from the teacher and from the labels. Introduced in notebook 03_kl_loss.

    distillation_loss = alpha * kd_loss(z, v, T) + (1 - alpha) * cross_entropy(z, y).

    alpha weights the *soft* (teacher) term. The Keras KD example puts alpha on the hard
    (student) loss instead and torchdistill-style configs vary, so alpha_ours = 1 - alpha_keras.
    With return_parts=True, returns {"total", "kd", "cross_entropy"} (the two terms unweighted).
    """
    check_logits(student_logits, teacher_logits)
    T, alpha = check_T(T), check_alpha(alpha)
    check_labels(y, *student_logits.shape)
    soft = kd_term(student_logits, teacher_logits, T)
    hard = F.cross_entropy(student_logits, y)
    total = alpha * soft + (1.0 - alpha) * hard
    return {"total": total, "kd": soft, "cross_entropy": hard} if return_parts else total


# ---------------------------------------------------------------- FitNets hints (notebook 05)

class HintRegressor(nn.Module):
    """FitNets regressor: lets a thin student match a wide teacher's features.

    Introduced in notebook 05_feature_distillation. A 1x1 conv on [B, C, H, W] features, a Linear on [B, D]
    features (the same weight).
    """

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        if min(student_channels, teacher_channels) < 1:
            raise ValueError(f"channel counts must be >= 1, got student_channels={student_channels}, "
                             f"teacher_channels={teacher_channels}; read them off the feature shapes.")
        # A 1x1 conv is the same Linear applied at every pixel, so one weight serves both cases.
        self.proj = nn.Linear(student_channels, teacher_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Project student features to the teacher's channel count, keeping the spatial layout."""
        if features.dim() not in (2, 4) or features.shape[1] != self.proj.in_features:
            raise ValueError(f"HintRegressor expects [B, {self.proj.in_features}] or "
                             f"[B, {self.proj.in_features}, H, W] features, got {list(features.shape)}; "
                             "build it with HintRegressor(student_channels, teacher_channels).")
        if features.dim() == 2:
            return self.proj(features)
        return F.conv2d(features, self.proj.weight[:, :, None, None], self.proj.bias)


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
              regressor: nn.Module | None) -> torch.Tensor:
    """FitNets hint: pull a middle student layer towards the teacher's. Introduced in notebook 05_feature_distillation.

    hint_loss = mean over all elements of (regressor(student_features) - teacher_features)^2.

    The teacher is detached. If the spatial sizes differ, both maps are adaptive-average-pooled
    to the smaller height and width. regressor=None means identity (channel counts must match).
    """
    _check_features(student_features, teacher_features, ndims=(2, 4))
    guided = student_features if regressor is None else regressor(student_features)
    target = teacher_features.detach()
    if guided.dim() == 4 and guided.shape[2:] != target.shape[2:]:
        size = (min(guided.shape[2], target.shape[2]), min(guided.shape[3], target.shape[3]))
        guided, target = F.adaptive_avg_pool2d(guided, size), F.adaptive_avg_pool2d(target, size)
    if guided.shape != target.shape:
        raise ValueError(f"after the regressor, student features are {list(guided.shape)} but teacher "
                         f"features are {list(target.shape)}; use HintRegressor(student_channels="
                         f"{student_features.shape[1]}, teacher_channels={target.shape[1]}).")
    return F.mse_loss(guided, target)


# ---------------------------------------------------------------- attention transfer (notebook 05)

def _raw_attention(features: torch.Tensor, p: float) -> torch.Tensor:
    """sum_c |A_c|^p: a [B, H, W] 'where does this layer look' map, independent of channel count."""
    return features.abs().pow(p).sum(dim=1)


def attention_map(features: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Where a layer 'looks', comparable across widths. Introduced in notebook 05_feature_distillation.

    Zagoruyko & Komodakis 2017: Q = vec(sum_c |A_c|^p) / ||vec(sum_c |A_c|^p)||_2, shape [B, H*W].
    (The paper's mean over channels gives the same Q after normalisation.)
    """
    check_float("features", features, ndim=4)
    return F.normalize(_raw_attention(features, p).flatten(1), dim=1)


def attention_transfer_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                            p: float = 2) -> torch.Tensor:
    """Attention transfer: teach the student where the teacher looks. Introduced in notebook 05_feature_distillation.

    attention_transfer_loss = mean_b ||Q_s - Q_t||_2^2, with Q from attention_map.

    Variant: the squared L2 distance per sample (range [0, 4]), averaged over the batch. The paper
    writes beta/2 * ||Q_s - Q_t||_2 (not squared); the authors' code takes the mean of the squared
    difference over batch and positions (ours is H*W times that). beta is left to the caller. Channel counts may differ;
    if spatial sizes differ, the larger raw map is bilinearly resized to the smaller. Teacher detached.
    """
    _check_features(student_features, teacher_features, ndims=(4,))
    a_s = _raw_attention(student_features, p)
    a_t = _raw_attention(teacher_features.detach(), p)
    size = (min(a_s.shape[1], a_t.shape[1]), min(a_s.shape[2], a_t.shape[2]))
    a_s, a_t = (_resize(a, size) for a in (a_s, a_t))
    q_s, q_t = F.normalize(a_s.flatten(1), dim=1), F.normalize(a_t.flatten(1), dim=1)
    return (q_s - q_t).pow(2).sum(dim=1).mean()


def _resize(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a [B, H, W] map to size (no-op when it already fits)."""
    if tuple(a.shape[1:]) == size:
        return a
    return F.interpolate(a[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
