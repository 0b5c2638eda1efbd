"""The question bank of notebook 08_interview_questions as data: which question comes from which article.

Notebook 08's "### Qnn." headings follow this list (tests/test_exercises_questions.py checks that).
`source` names the Chinese source article, numbered 000 to 004 as in docs/references.md (section
"Sources", one anchor per article): "000 Q3" = article 000, question 3; "000 C1" = its first coding
exercise; "001 FAQ Q2" = its FAQ appendix; "(known mistake)" = the question corrects one of the
article's errors ("Known mistakes in the sources"). `source` is None for questions real interviews
ask beyond the articles, and `zh` is None where the article has no question of that wording.
"""

# One question a row: id | source | the article's Chinese wording | English ("-": none). A row goes on
# in indented lines; "##" lines name the notebook's sections.
_BANK = """
## basics
Q01 | 000 Q1; 004 Q1 | 什么是知识蒸馏？知识蒸馏的基本原理是什么？ | What is knowledge distillation and how does it work?
Q02 | 000 Q2 | 知识蒸馏的目标是什么？ | What is the goal of knowledge distillation?
Q03 | 000 Q3; 004 Q2 | 软标签（软目标）和硬标签（硬目标）有什么区别？ |
    What are soft and hard labels (targets), and how do they differ?
Q04 | 004 Q3; 002 | 蒸馏温度是什么？ | What is the distillation temperature?
Q05 | - | - | Why use T > 1, and why multiply the soft loss by T^2?
Q06 | - | - | What is dark knowledge?
Q07 | 000 Q4; 002; 003 section 3.2 | 知识蒸馏的训练过程是怎样的？ | What are the steps of the distillation training
    procedure?
Q08 | 004 Q4 | 如何设计一个知识蒸馏模型？ | How do you design a distillation setup?
Q09 | 001 (references); 003 section 7.3; 004 (references) | 知识蒸馏是谁提出的？ |
    Who introduced knowledge distillation, and what came before?
## the loss
Q10 | 003 section 4.2 (known mistake: 1/K) | - | KL divergence or cross-entropy for the soft term?
Q11 | 000 C1-C3 (known mistake) | - | Why reduction='batchmean' and not the default 'mean' in nn.KLDivLoss?
Q12 | - | - | What does alpha weight, and which conventions exist?
Q13 | - | - | How do you choose T and alpha?
Q14 | - | - | What happens in the high-temperature limit?
Q15 | 003 section 4.2 (label smoothing) | - | How does KD relate to label smoothing?
Q16 | - | - | Why is the teacher in eval mode (and under no_grad) during distillation?
## kinds of distillation
Q17 | 001 (feature vs output distillation) | 特征蒸馏和输出蒸馏有什么区别？ |
    Response-based vs feature-based vs relation-based distillation?
Q18 | - | - | Offline vs online (mutual learning) vs self-distillation?
Q19 | 003 section 3.3 (模型差距) | 学生模型与教师模型差距太大怎么办？ | What is the capacity gap, and what do teacher
    assistants do?
Q20 | 003 FAQ Q2 | 如何进行无监督蒸馏？ | Can you distill without labels, or without the training data (data-free KD)?
Q21 | 001 FAQ Q3; 002 FAQ Q3 | 如何选择教师网络和学生网络？ | How do you choose the teacher and the student?
Q22 | 003 section 1.2 (known mistake) | 教师模型必须用大规模无标签数据预训练吗？ |
    Where does the teacher come from? Must it be pre-trained on unlabeled data?
Q23 | - | - | How does DistilBERT combine its losses?
Q24 | - | - | Can the student beat the teacher?
## evaluation and practice
Q25 | 000 Q5 | 如何评估知识蒸馏的效果？ | How do you evaluate a distilled model?
Q26 | 000 Q6; 002 FAQ Q1; 003 section 3.3 | 知识蒸馏的优势是什么？ | What are the advantages of knowledge distillation?
Q27 | 000 Q7; 002 FAQ Q2; 003 section 3.3 | 知识蒸馏的局限性是什么？ | What are the limitations of knowledge
    distillation?
Q28 | 000 Q8; 003 section 3.4; 001 (应用场景) | 知识蒸馏在哪些领域有应用？ | Where is knowledge distillation used?
Q29 | 004 Q5 | 知识蒸馏适用于哪些场景？ | When is distillation the right tool?
Q30 | 003 FAQ Q1 | 知识蒸馏是否适用于所有深度学习任务？ | Does distillation work for every task?
Q31 | 000 Q9 | 如何优化知识蒸馏过程？ | How can you improve a distillation run?
Q32 | 003 FAQ Q3 | 如何缓解知识蒸馏过程中的过拟合问题？ | How do you fight overfitting when distilling?
Q33 | 000 Q10 | 知识蒸馏在工业界的应用有哪些挑战？ | What challenges does distillation face in industry?
Q34 | 001 FAQ Q1; 003 FAQ Q4 | 知识蒸馏与传统的模型压缩方法（剪枝、量化）有什么区别？ |
    How does KD differ from pruning and quantisation, and where does it fit in compression?
Q35 | 001 FAQ Q2; 001 (迁移学习) | 知识蒸馏在迁移学习中的应用有哪些？ | How does distillation relate to transfer
    learning?
Q36 | 001 FAQ Q4 | 知识蒸馏如何处理多标签分类任务？ | How do you distill a multi-label classifier?
Q37 | - | - | How do cached teacher logits interact with shuffling and augmentation?
## the articles' coding exercises
Q38 | 000 C1; 004 C1 | 实现一个简单的知识蒸馏模型 | Coding: implement a simple distillation model (MLP teacher and
    student).
Q39 | 004 C2; 002 (code) | 实现一个带蒸馏温度的知识蒸馏模型 | Coding: implement distillation with a temperature.
Q40 | 000 C2 | 实现一个基于知识蒸馏的文本分类模型 | Coding: distill a text classifier.
Q41 | 000 C3; 001 (ResNet-18 example) | 实现一个基于知识蒸馏的图像识别模型 | Coding: distill an image classifier (CNN).
Q42 | 003 sections 4.3 and 5.2 (Keras code) | 用TensorFlow/Keras实现知识蒸馏 |
    Coding: what is wrong with a Keras distillation loop that stops the student's gradient?
## methods beyond Hinton's loss
Q43 | - | - | What does decoupled KD (DKD) decouple, and why would that help?
Q44 | - | - | DIST matches correlations instead of probabilities: what does it transfer, and why?
Q45 | - | - | Why standardise the logits before KD (logit standardisation)?
Q46 | - | - | What do relation-based (RKD) and contrastive (CRD) distillation transfer?
## generative and LLM distillation
Q47 | - | - | Forward or reverse KL for a language model: which covers, which seeks, and what does each do to
    generated text?
Q48 | - | - | What is GKD's generalized JSD(beta), and what happens at its two ends?
Q49 | - | - | What is exposure bias, and why does on-policy distillation reduce it?
Q50 | - | - | Word-level vs sequence-level KD (Kim & Rush): what does each train on, and what does each minimise?
Q51 | - | - | How does MiniLLM optimise the reverse KL, and how is that different from GKD's on-policy KD?
Q52 | - | - | What does each generative KD method cost in teacher forward passes per student token?
Q53 | - | - | An API returns only the top-k log-probabilities: how do you distil from them, and what does
    renormalising do?
Q54 | - | - | Can you distil from an API's generated text alone (synthetic data, 'distilled' reasoning models)? What
    is lost?
Q55 | - | - | DistilBERT's triple loss vs TinyBERT's layer-wise losses: what does each match?
Q56 | - | - | Teacher and student use different tokenizers: what breaks, and what can you do?
Q57 | - | - | What is "Distilling step-by-step" (Hsieh et al., 2023)?
Q58 | - | - | How does a speculative-decoding drafter relate to distillation?
Q59 | - | - | How do you evaluate a distilled language model?
Q60 | - | - | A token-level KD loss for an LLM trains nothing or behaves oddly: which bugs do you check first?
## data-free distillation and compression
Q61 | 003 FAQ Q2 | 如何进行无监督蒸馏？ | Data-free KD: where does the transfer set come from, and why do BatchNorm
    statistics carry information about the training data?
Q62 | - | - | What does DeepInversion optimise, and what is each term of its loss for?
Q63 | - | - | What are the failure modes of a synthetic transfer set, and what helps against each?
Q64 | - | - | The teacher agrees with the wanted class on 99% of your synthetic images. Is the transfer set good?
Q65 | 001 FAQ Q1; 003 FAQ Q4 | 知识蒸馏与传统的模型压缩方法（剪枝、量化）有什么区别？ |
    KD, quantization, pruning: what does each shrink, and in which order do you combine them?
Q66 | - | - | Why does unstructured pruning not make a dense model smaller or faster, and when is int8 not faster?
## reasoning distillation
Q67 | - | - | Chain-of-thought distillation on a teacher's traces vs token-level soft KD on the same traces: what
    does each train on, and what does each need from the teacher?
Q68 | - | - | What is rejection sampling of reasoning traces (STaR, R1's distillation data), and what does it miss?
Q69 | - | - | Why can a student trained on a teacher's traces beat one trained on its answers, and when would
    answers alone do?
Q70 | - | - | What can a toy reasoning-distillation experiment not tell you about distilling a large reasoning model?
## on-policy distillation and RL
Q71 | - | - | Why can a dense per-token reward (on-policy distillation) train faster than a sparse 0/1 verifier
    reward?
Q72 | - | - | The one-token estimate log p_student(x) - log p_teacher(x), x sampled from the student: is it biased,
    and what is its variance?
Q73 | - | - | Why does reverse KL, not forward KL, go with training on the student's own samples?
Q74 | - | - | What must the teacher see, and share with the student, for on-policy distillation?
Q75 | - | - | In GRPO, what is the advantage of a group whose rewards are all equal, and why does it matter in
    code?
Q76 | - | - | What does the clipped importance ratio in PPO / GRPO do, and when is it inactive?
Q77 | - | - | How do RL, SFT on teacher traces and on-policy distillation compare in compute, and what does each
    count?
Q78 | - | - | When would you expect on-policy distillation to fail, or to lose to plain SFT?
## LLM distillation in practice
Q79 | - | - | Why do people store the teacher's top-k log-probs instead of its logits, and what does each cost in
    bytes?
Q80 | - | - | What does a rest bucket buy over renormalising the top-k, and how do you compute it without NaNs?
Q81 | - | - | Teacher and student have different tokenizers of the same size: why does index-matched KL train
    silently, and why is it wrong?
Q82 | - | - | How do ULD and alignment through the shared text distil across tokenizers?
Q83 | - | - | Why is speculative decoding's acceptance rate 1 - TV(p, q), and why does the draft's training
    divergence matter?
Q84 | - | - | Why does DistillSpec train the draft on its own samples (on-policy), and what does that need?
"""


def _parse(bank: str) -> list[dict]:
    """The table above as dicts with keys id, source, zh, en (None where the table says "-")."""
    questions = []
    for line in bank.strip().splitlines():
        if line.startswith(" "):
            questions[-1]["en"] = " ".join(filter(None, (questions[-1]["en"], line.strip())))
        elif not line.startswith("##"):
            fields = [None if f == "-" else f for f in (part.strip() for part in line.split("|"))]
            questions.append(dict(zip(("id", "source", "zh", "en"), fields, strict=True)))
    return questions


QUESTIONS = _parse(_BANK)
