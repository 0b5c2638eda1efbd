"""Interview practice for notebooks 09_coding_exercises (check / hint / solution) and 08_interview_questions.

The exercises work like Kaggle's learntools: `ex = exercises.KDLoss()`, then `ex.check(my_kd_loss)`,
`ex.hint()`, `ex.solution()`. Each topic module holds its exercises whole (starting code, hint,
solution, known wrong answers and checker); core holds what they share. The find-and-fix bugs are
modelled on the source articles' mistakes, summarised in docs/references.md.
"""
from kd_lessons.exercises.bn_statistics import BNStatisticsLoss
from kd_lessons.exercises.caching import FixCachedLogits
from kd_lessons.exercises.core import EXERCISES, Exercise, Result, results, summary
from kd_lessons.exercises.cross_tokenizer import ULDLoss
from kd_lessons.exercises.dino import DINOCenter, EMATeacher
from kd_lessons.exercises.hint_loss import HintLoss, MakeHintRegressor
from kd_lessons.exercises.kl_loss import (
    FixLogProbs,
    FixOneSided,
    FixRawTargets,
    FixReduction,
    FixStopGradient,
    FixSwapped,
    FixTSquared,
    KDLoss,
)
from kd_lessons.exercises.logit_store import TopKRestBucket
from kd_lessons.exercises.method_losses import DKDSplit, RKDDistance
from kd_lessons.exercises.mutual_step import MutualStep
from kd_lessons.exercises.on_policy import ClippedRatio, GRPOAdvantage, ReverseKLReward
from kd_lessons.exercises.questions import QUESTIONS
from kd_lessons.exercises.sequence_kd import GeneralizedJSD, SequenceReverseKL, TopKRenormalized
from kd_lessons.exercises.sequence_kd_fixes import FixJSDCrossEntropy, FixSameLogits, FixSwappedRoles, FixVocabMismatch
from kd_lessons.exercises.speculative import SpeculativeAccept
from kd_lessons.exercises.step import DistillationLoss, DistillationStep, FixHardTarget, FixTeacherMode
from kd_lessons.exercises.step_distillation import ProgressiveDistillationTarget
from kd_lessons.exercises.teacher_sequences import TeacherSequences
from kd_lessons.exercises.temperature import FixSofteningT, SoftmaxWithTemperature
from kd_lessons.exercises.trace_filter import KeepCorrectTraces

__all__ = [
    "EXERCISES", "Exercise", "Result", "results", "summary", "QUESTIONS",
    "SoftmaxWithTemperature", "KDLoss", "DistillationLoss", "MakeHintRegressor", "HintLoss", "DistillationStep",
    "FixReduction", "FixTSquared", "FixLogProbs", "FixSwapped", "FixOneSided", "FixStopGradient",
    "FixRawTargets", "FixHardTarget", "FixTeacherMode", "FixSofteningT", "FixCachedLogits",
    "DKDSplit", "RKDDistance", "MutualStep",
    "SequenceReverseKL", "GeneralizedJSD", "TeacherSequences", "TopKRenormalized", "FixVocabMismatch",
    "FixSwappedRoles", "FixSameLogits", "FixJSDCrossEntropy",
    "BNStatisticsLoss", "KeepCorrectTraces", "ReverseKLReward", "GRPOAdvantage", "ClippedRatio",
    "SpeculativeAccept", "ULDLoss", "TopKRestBucket", "DINOCenter", "ProgressiveDistillationTarget",
    "EMATeacher",
]
