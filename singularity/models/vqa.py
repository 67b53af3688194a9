"""Singularity QA model: multi-modal question encoder + 3-layer BERT answer decoder ranking an answer list (spec 4.7)."""
from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from singularity.models.config_paths import cfg_get
from singularity.models.singularity import SingularityBase
from singularity.models.xbert import XBertLMHeadModel, init_bert_weights


class SingularityQA(SingularityBase):
    """``model_vqa.Singularity``: no ITC/ITM heads, no BEiT pooler, plus ``text_decoder``."""

    TASK = "vqa"

    def __init__(self, config):
        super().__init__(config, pretrain=False, with_pooler=False)
        dec_cfg = copy.deepcopy(self.bert_config)
        dec_cfg.fusion_layer = 0
        dec_cfg.num_hidden_layers = int(cfg_get(config, "num_decoder_layers", 3))
        dec_cfg.encoder_width = self.text_width
        self.text_decoder = XBertLMHeadModel(dec_cfg)
        init_bert_weights(self.text_decoder, dec_cfg.initializer_range)
        self.frame_ensemble = str(cfg_get(config, "eval_frame_ensemble", "concat"))

    def encode_question(self, image: torch.Tensor, question: dict[str, torch.Tensor]) -> torch.Tensor:
        """Question states (B, Lq, d) from all text layers with cross-attention to the clip (early fusion)."""
        image_tokens, _ = self.encode_image(image)
        return self.text_encoder(input_ids=question["input_ids"], attention_mask=question["attention_mask"],
                                 encoder_hidden_states=image_tokens, mode="multi_modal")

    def decoder_logits(self, answer_ids, answer_mask, q_states, q_mask) -> torch.Tensor:
        """Decoder vocabulary logits (N, La, V) for answers cross-attending to question states."""
        logits, _ = self.text_decoder(input_ids=answer_ids, attention_mask=answer_mask,
                                      encoder_hidden_states=q_states, encoder_attention_mask=q_mask)
        return logits

    def forward(self, image: torch.Tensor, question: dict[str, torch.Tensor], answer: dict[str, torch.Tensor],
                weights: torch.Tensor, n: list[int]) -> torch.Tensor:
        """Training loss: sum_j w_j * seq_loss_j / B over each question's distinct answers."""
        q_states = self.encode_question(image, question)
        counts = torch.as_tensor(n, device=q_states.device)
        q_rep = q_states.repeat_interleave(counts, dim=0)
        m_rep = question["attention_mask"].repeat_interleave(counts, dim=0)
        targets = answer["input_ids"].masked_fill(answer["input_ids"] == self.bert_config.pad_token_id, -100)
        logits = self.decoder_logits(answer["input_ids"], answer["attention_mask"], q_rep, m_rep)
        seq_loss = self.text_decoder.sequence_loss(logits, targets)
        return (weights * seq_loss).sum() / image.shape[0]

    def first_token_probs(self, answer_ids, q_states, q_mask) -> torch.Tensor:
        """P(first answer token | [CLS], question) for every answer -> (Nq, Nans)."""
        start = answer_ids[0, 0].repeat(q_states.shape[0], 1)
        logits = self.decoder_logits(start, torch.ones_like(start), q_states, q_mask)[:, 0]
        return F.softmax(logits.float(), dim=1).index_select(1, answer_ids[:, 1])

    def sequence_scores(self, answer_ids, answer_mask, topk_ids, q_states, q_mask) -> torch.Tensor:
        """Teacher-forced summed log-likelihood of each question's top-k answers -> (Nq, k)."""
        nq, k = topk_ids.shape
        ids = answer_ids.index_select(0, topk_ids.reshape(-1))
        mask = answer_mask.index_select(0, topk_ids.reshape(-1))
        targets = ids.masked_fill(ids == self.bert_config.pad_token_id, -100)
        logits = self.decoder_logits(ids, mask, q_states.repeat_interleave(k, 0), q_mask.repeat_interleave(k, 0))
        return -self.text_decoder.sequence_loss(logits.float(), targets).view(nq, k)

    @torch.no_grad()
    def rank_answers(self, image: torch.Tensor, question: dict[str, torch.Tensor], answer_ids: torch.Tensor,
                     answer_mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer indices (Nq, k) sorted best-first and their scores; generation-as-ranking (spec 4.7)."""
        k = min(k, answer_ids.shape[0])  # pitfall 9.28 F: answer lists shorter than k_test
        q_mask = question["attention_mask"]
        if self.frame_ensemble == "concat":
            q_states = self.encode_question(image, question)
            prob_first = self.first_token_probs(answer_ids, q_states, q_mask)
            topk_probs, topk_ids = prob_first.topk(k, dim=1)
            # first token counted twice: log p_first + full sequence log-likelihood (pitfall 9.8 K)
            scores = torch.log(topk_probs) + self.sequence_scores(answer_ids, answer_mask, topk_ids, q_states, q_mask)
        else:
            scores_first, per_frame_states = [], []
            for t in range(image.shape[1]):
                q_states = self.encode_question(image[:, t:t + 1], question)
                per_frame_states.append(q_states)
                scores_first.append(self.first_token_probs(answer_ids, q_states, q_mask))
            # late fusion: aggregated first-token probabilities go through softmax again (pitfall 9.8 K)
            prob_first = F.softmax(aggregate_frames(torch.stack(scores_first, 1), self.frame_ensemble), dim=1)
            topk_probs, topk_ids = prob_first.topk(k, dim=1)
            seq = torch.stack([self.sequence_scores(answer_ids, answer_mask, topk_ids, s, q_mask)
                               for s in per_frame_states], 1)
            scores = torch.log(topk_probs) + aggregate_frames(seq, self.frame_ensemble)
        probs = F.softmax(scores, dim=1)
        order = probs.argsort(dim=1, descending=True)
        return topk_ids.gather(1, order), probs.gather(1, order)


def aggregate_frames(scores: torch.Tensor, how: str) -> torch.Tensor:
    """Late-fusion aggregation over dim 1 (frames): ``mean`` / ``max`` / ``lse``."""
    if how == "mean":
        return scores.mean(1)
    if how == "max":
        return scores.max(1)[0]
    if how == "lse":
        return torch.logsumexp(scores, dim=1)
    raise ValueError(f"eval_frame_ensemble must be one of concat, mean, max, lse (got {how!r})")
