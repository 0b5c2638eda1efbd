"""The words and code of the coding exercises: stubs, broken snippets, hints and solutions.

Introduced in notebook 09_coding_exercises. Kept apart from the checkers so each stays short; the
broken snippets are this course's own code, modelled on the source articles' bugs (ERRATA.md).
Solutions may use only what the notebook's setup cell imports: torch, F, nn, distillation_loss.
"""

STUBS = {
    "softmax_T": '''def softmax_with_temperature(logits, T):
    """Return softmax(logits / T) over the last dimension (the classes)."""
    raise NotImplementedError("Your code here")
''',
    "kd_loss": '''def my_kd_loss(student_logits, teacher_logits, T):
    """Return T**2 * KL(teacher's soft targets || student's soft predictions), averaged over the batch."""
    raise NotImplementedError("Your code here")
''',
    "distillation_loss": '''def my_distillation_loss(student_logits, teacher_logits, y, T, alpha):
    """Return alpha * (KD loss at temperature T) + (1 - alpha) * cross-entropy with the labels y."""
    raise NotImplementedError("Your code here")
''',
    "hint_regressor": '''def make_regressor(student_channels, teacher_channels):
    """Return a trainable module mapping [B, student_channels, H, W] to [B, teacher_channels, H, W]."""
    raise NotImplementedError("Your code here")
''',
    "hint_loss": '''def my_hint_loss(student_features, teacher_features, regressor):
    """Return the mean squared error between regressor(student_features) and the teacher's features."""
    raise NotImplementedError("Your code here")
''',
    "distillation_step": '''def distillation_step(student, teacher, optimizer, x, y, T, alpha):
    """Update the student on one batch (x, y) by distillation; return the batch loss as a float."""
    raise NotImplementedError("Your code here")
''',
}

_KD = '''def kd_loss_fixed(student_logits, teacher_logits, T):
{body}'''

BROKEN = {
    "fix_reduction": _KD.format(body='''    log_q = F.log_softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits / T, dim=1)
    return T**2 * nn.KLDivLoss()(log_q, p)
'''),
    "fix_T_squared": _KD.format(body='''    log_q = F.log_softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits / T, dim=1)
    return F.kl_div(log_q, p, reduction="batchmean")
'''),
    "fix_log_probs": _KD.format(body='''    q = F.softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits / T, dim=1)
    return T**2 * F.kl_div(q, p, reduction="batchmean")
'''),
    "fix_swapped": _KD.format(body='''    log_p = F.log_softmax(teacher_logits / T, dim=1)
    q = F.softmax(student_logits / T, dim=1)
    return T**2 * F.kl_div(log_p, q, reduction="batchmean")
'''),
    "fix_one_sided_T": _KD.format(body='''    log_q = F.log_softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits, dim=1)
    return T**2 * F.kl_div(log_q, p, reduction="batchmean")
'''),
    "fix_stop_gradient": _KD.format(body='''    log_q = F.log_softmax(student_logits.detach() / T, dim=1)
    p = F.softmax(teacher_logits / T, dim=1)
    return T**2 * F.kl_div(log_q, p, reduction="batchmean")
'''),
    "fix_raw_targets": _KD.format(body='''    # cross-entropy between the softened student and the softened teacher
    return T**2 * F.cross_entropy(student_logits / T, teacher_logits / T)
'''),
    "fix_hard_target": '''def distillation_loss_fixed(student_logits, teacher_logits, y, T, alpha):
    hard_target = teacher_logits.argmax(dim=1)  # "the hard target is the teacher's prediction"
    soft = T**2 * F.kl_div(F.log_softmax(student_logits / T, dim=1),
                           F.softmax(teacher_logits / T, dim=1), reduction="batchmean")
    hard = F.cross_entropy(student_logits, hard_target)
    return alpha * soft + (1 - alpha) * hard
''',
    "fix_teacher_mode": '''def distillation_step_fixed(student, teacher, optimizer, x, y, T, alpha):
    teacher.train()
    teacher_logits = teacher(x)
    student_logits = student(x)
    loss = distillation_loss(student_logits, teacher_logits, y, T, alpha)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
''',
    "fix_softening_T": '''def soft_targets(teacher_logits):
    T = 0.5  # "soften" the teacher's predictions
    return F.softmax(teacher_logits / T, dim=1)
''',
    "fix_cached_logits": '''def aligned_batches(x, y, teacher_logits, batch_size, generator):
    order = torch.randperm(len(x), generator=generator)
    for k, start in enumerate(range(0, len(x), batch_size)):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx], teacher_logits[k * batch_size:(k + 1) * batch_size]
''',
}

_KD_SOLUTION = _KD.format(body='''    log_q = F.log_softmax(student_logits / T, dim=1)   # student: log-probabilities at T
    p = F.softmax(teacher_logits.detach() / T, dim=1)  # teacher: probabilities at the same T
    return T**2 * F.kl_div(log_q, p, reduction="batchmean")
''')

SOLUTIONS = {
    "softmax_T": '''def softmax_with_temperature(logits, T):
    """Return softmax(logits / T) over the last dimension (the classes)."""
    return torch.softmax(logits / T, dim=-1)
''',
    "kd_loss": _KD_SOLUTION.replace("kd_loss_fixed", "my_kd_loss"),
    "distillation_loss": '''def my_distillation_loss(student_logits, teacher_logits, y, T, alpha):
    """Return alpha * (KD loss at temperature T) + (1 - alpha) * cross-entropy with the labels y."""
    log_q = F.log_softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits.detach() / T, dim=1)
    soft = T**2 * F.kl_div(log_q, p, reduction="batchmean")
    hard = F.cross_entropy(student_logits, y)  # plain logits, true labels
    return alpha * soft + (1 - alpha) * hard
''',
    "hint_regressor": '''def make_regressor(student_channels, teacher_channels):
    """Return a trainable module mapping [B, student_channels, H, W] to [B, teacher_channels, H, W]."""
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
''',
    "hint_loss": '''def my_hint_loss(student_features, teacher_features, regressor):
    """Return the mean squared error between regressor(student_features) and the teacher's features."""
    return F.mse_loss(regressor(student_features), teacher_features.detach())
''',
    "distillation_step": '''def distillation_step(student, teacher, optimizer, x, y, T, alpha):
    """Update the student on one batch (x, y) by distillation; return the batch loss as a float."""
    teacher.eval()                 # BatchNorm/Dropout in inference behaviour
    with torch.no_grad():          # no graph for the teacher: it never learns
        teacher_logits = teacher(x)
    student.train()
    loss = distillation_loss(student(x), teacher_logits, y, T, alpha)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
''',
    "fix_reduction": _KD_SOLUTION, "fix_T_squared": _KD_SOLUTION, "fix_log_probs": _KD_SOLUTION,
    "fix_swapped": _KD_SOLUTION, "fix_one_sided_T": _KD_SOLUTION, "fix_stop_gradient": _KD_SOLUTION,
    "fix_raw_targets": _KD_SOLUTION,
    "fix_hard_target": '''def distillation_loss_fixed(student_logits, teacher_logits, y, T, alpha):
    hard_target = y  # the ground-truth labels, not the teacher's argmax
    soft = T**2 * F.kl_div(F.log_softmax(student_logits / T, dim=1),
                           F.softmax(teacher_logits / T, dim=1), reduction="batchmean")
    hard = F.cross_entropy(student_logits, hard_target)
    return alpha * soft + (1 - alpha) * hard
''',
    "fix_teacher_mode": '''def distillation_step_fixed(student, teacher, optimizer, x, y, T, alpha):
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(x)
    student_logits = student(x)
    loss = distillation_loss(student_logits, teacher_logits, y, T, alpha)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
''',
    "fix_softening_T": '''def soft_targets(teacher_logits):
    T = 4.0  # T > 1 softens; T < 1 would sharpen
    return F.softmax(teacher_logits / T, dim=1)
''',
    "fix_cached_logits": '''def aligned_batches(x, y, teacher_logits, batch_size, generator):
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx], teacher_logits[idx]  # the same positions as x and y
''',
}

HINTS = {
    "softmax_T": "Divide the logits by T *before* the softmax and normalise over the classes (the last "
                 "dimension). T > 1 flattens the distribution, T < 1 sharpens it.",
    "kd_loss": "F.kl_div(input, target) wants the student's *log*-probabilities as input and the teacher's "
               "probabilities as target, both at the same T. Use reduction='batchmean' and multiply by T**2.",
    "distillation_loss": "alpha weights the soft term: alpha * T**2 * KL + (1 - alpha) * "
                         "F.cross_entropy(student_logits, y). The hard term uses the plain logits and the true labels.",
    "hint_regressor": "A 1x1 convolution is the same linear map between channel counts at every pixel.",
    "hint_loss": "Map the student's features with the regressor, then take the mean squared error to the "
                 "teacher's features (detached: the teacher does not learn).",
    "distillation_step": "Teacher: eval mode and torch.no_grad(). Student: train mode, distillation_loss, "
                         "zero_grad, backward, step. Return loss.item().",
    "fix_reduction": "What does nn.KLDivLoss() average over by default? The KL of one sample is a sum over classes.",
    "fix_T_squared": "Soft-target gradients shrink like 1/T**2 as T grows. What restores their scale?",
    "fix_log_probs": "Read F.kl_div's documentation: which argument must be in log space?",
    "fix_swapped": "KL is not symmetric. Hinton's soft term is KL(teacher || student): in F.kl_div(input, "
                   "target), which one is the target?",
    "fix_one_sided_T": "Both distributions must be compared at the same temperature.",
    "fix_stop_gradient": "Which tensor is cut out of the graph? The student must get gradients; only the "
                         "teacher is frozen.",
    "fix_raw_targets": "Are teacher_logits / T probabilities? And the course's soft term is the KL, which "
                       "differs from the soft cross-entropy by the teacher's entropy.",
    "fix_hard_target": "In Hinton's KD, where does the hard target come from: the teacher or the dataset?",
    "fix_teacher_mode": "Two things are wrong with how the teacher runs: its mode (BatchNorm, Dropout) and autograd.",
    "fix_softening_T": "Does T = 0.5 make the distribution flatter or sharper? Compare the entropies.",
    "fix_cached_logits": "After shuffling, batch k no longer holds examples k*batch_size to (k+1)*batch_size - 1. "
                         "Which positions does it hold?",
}
