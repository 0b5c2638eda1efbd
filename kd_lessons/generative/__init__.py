"""Distilling generative models: a character-level language-model teacher and student on a CPU.

The generative half of the course (notebook 10_generative_kd): divergences between next-token
distributions (forward KL, reverse KL as in MiniLLM, the generalized JSD of GKD, top-k logit
distillation), a toy that makes the KL direction visible, a real text corpus, a tiny causal
Transformer and the methods that distil one into a smaller one. Nothing is imported here, so
importing the package changes no setting.

Modules: `text` (the verified Shakespeare corpus, CharVocab, train/val split, next-character
windows), `transformer` (CharTransformer, generate, bits_per_char, token_log_probs,
tokens_per_second), `lm` (train_lm: the one training loop, with a loss_fn hook for KD), `zoo`
(get_text_teacher: trained once and cached; make_text_student; text_model_table), `divergences`,
`toy`, `lm_plots`, `lm_objectives` (token-level, sequence-level, on-policy and top-k KD as train_lm plug-ins),
`transfer_data` (what the teacher prepares once for them: transfer corpus, top-k pool; CostMeter),
`pretrained` (optional: SmolLM2-135M as a real-LLM teacher through its top-k log-probs; extra `llm`),
`scratchpad` (addition with a scratchpad for notebook 13_reasoning_distillation) and `kv_cache`
(generation with a key/value cache, for the many traces notebook 13 writes), `subword` (a byte-level BPE
trained on the corpus, bits per character of token models) and `cross_tokenizer` (index-matched KL, ULD and
first-character alignment between a character teacher and a BPE student; lesson 16).
"""
